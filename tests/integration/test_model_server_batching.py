"""Server-side batching (``--enable_batching``) on the real half_plus_two SavedModel."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

from edge.model_server import ModelSource, ServableManager, ServingError
from edge.model_server.batching import QUEUE_FULL, BatchingOptions, BatchScheduler
from edge.serving.protos import messages, parse_text_config
from tests.support.paths import TFSERVING_TESTDATA


def batching(**fields) -> object:
    params = messages().BatchingParameters()
    for name, value in fields.items():
        if name == "allowed_batch_sizes":
            params.allowed_batch_sizes.extend(value)
        else:
            getattr(params, name).value = value
    return params


@pytest.fixture
def serve(tmp_path: Path):
    made: list[ServableManager] = []

    def start(**fields) -> ServableManager:
        base = tmp_path / f"m{len(made)}"
        shutil.copytree(TFSERVING_TESTDATA / "saved_model_half_plus_two_cpu", base)
        manager = ServableManager(batching=batching(**fields))
        made.append(manager)
        manager.set_models([ModelSource("m", base)])
        return manager

    yield start
    for manager in made:
        manager.stop()


def run_concurrently(servable, inputs: list[dict], signature: str | None = None) -> list:
    """Start every call at once (barrier); return each call's result or exception."""
    results: list = [None] * len(inputs)
    barrier = threading.Barrier(len(inputs))

    def call(i: int) -> None:
        barrier.wait()
        try:
            results[i] = servable.run(inputs[i], signature)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_concurrent_requests_are_merged(serve) -> None:
    n = 8
    manager = serve(max_batch_size=n, batch_timeout_micros=1_000_000, num_batch_threads=1)
    with manager.acquire("m") as servable:
        before = servable.runtime_calls
        results = run_concurrently(servable, [{"x": np.array([[float(i)]], np.float32)} for i in range(n)])
        for i, result in enumerate(results):
            assert not isinstance(result, BaseException), result
            assert result["y"].tolist() == [[0.5 * i + 2]]
        assert servable.runtime_calls - before < n


def test_padding_to_allowed_batch_sizes(serve) -> None:
    manager = serve(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=1, allowed_batch_sizes=[2, 4, 8])
    with manager.acquire("m") as servable:
        out = servable.run({"x": np.array([[2.0], [3.0], [4.0]], np.float32)})
        assert out["y"].ravel().tolist() == [3.0, 3.5, 4.0]  # the padding rows are cut off again
        assert servable.batcher.batch_sizes[-1] == 4
        out = servable.run({"x": np.array([[6.0]], np.float32)})
        assert out["y"].tolist() == [[5.0]] and servable.batcher.batch_sizes[-1] == 2


def test_incompatible_requests_are_not_merged(serve) -> None:
    manager = serve(max_batch_size=8, batch_timeout_micros=1_000_000, num_batch_threads=1)
    with manager.acquire("m") as servable:
        before = servable.runtime_calls
        inputs = [
            {"x": np.array([[2.0]], np.float32)},
            {"x": np.array([[2.0, 4.0]], np.float32)},  # other shape past dim 0
            {"x": np.array([[4.0]], np.float32)},
            {"x": np.array([[6.0, 8.0]], np.float32)},
        ]
        results = run_concurrently(servable, inputs)
        assert [r["y"].tolist() for r in results] == [[[3.0]], [[3.0, 4.0]], [[4.0]], [[5.0, 6.0]]]
        assert servable.runtime_calls - before == 2  # one batch per shape


def test_batching_errors(serve) -> None:
    manager = serve(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=1)
    with manager.acquire("m") as servable:
        with pytest.raises(ServingError, match="Task size 5 is larger than maximum input batch size 4") as info:
            servable.run({"x": np.ones((5, 1), np.float32)})
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(ServingError, match="must have at least one dimension"):
            servable.run({"x": np.float32(1.0)})
        with pytest.raises(ServingError, match='Serving signature key "nope" not found.'):
            servable.run({"x": np.ones((1, 1), np.float32)}, "nope")


def test_full_queue_is_unavailable(serve) -> None:
    manager = serve()
    with manager.acquire("m") as servable:
        entered, release = threading.Event(), threading.Event()

        def slow_call(signature, inputs, outputs):
            entered.set()
            release.wait(60)
            return servable.call(signature, inputs, outputs)

        scheduler = BatchScheduler(
            slow_call, BatchingOptions(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1), "t"
        )
        sig = servable.signature(None)
        results: dict[int, object] = {}

        def submit(i: int) -> None:
            results[i] = scheduler.submit(sig, {"x": np.array([[float(i)]], np.float32)}, ["y"])

        try:
            first = threading.Thread(target=submit, args=(0,))
            first.start()
            assert entered.wait(60)  # batch 0 is running; the queue is empty
            second = threading.Thread(target=submit, args=(1,))
            second.start()
            deadline = threading.Event()
            while not scheduler._batches and not deadline.wait(0.01):  # batch 1 waits in the queue
                pass
            with pytest.raises(ServingError) as info:
                scheduler.submit(sig, {"x": np.array([[9.0]], np.float32)}, ["y"])
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
            assert info.value.message == QUEUE_FULL
        finally:
            release.set()
            first.join(60)
            second.join(60)
            scheduler.stop()
        assert results[0]["y"].tolist() == [[2.0]] and results[1]["y"].tolist() == [[2.5]]


def test_batching_parameters_file_and_validation() -> None:
    text = (TFSERVING_TESTDATA / "batching_config.txt").read_text()
    options = BatchingOptions.from_proto(parse_text_config(text, "BatchingParameters"))
    assert (options.max_batch_size, options.batch_timeout_micros, options.max_enqueued_batches) == (128, 0, 1000000)
    assert options.num_batch_threads == 8
    with pytest.raises(ServingError, match="final entry in allowed_batch_sizes must equal max_batch_size") as info:
        ServableManager(batching=batching(max_batch_size=8, allowed_batch_sizes=[2, 4]))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ServingError, match="monotonically increasing"):
        ServableManager(batching=batching(max_batch_size=8, allowed_batch_sizes=[4, 2, 8]))
