"""Several inference threads: the batcher shared between threads, and the thread count following
the serving classifier (fakes; the LiteRT interpreter pool: tests/integration/test_inference_threads_litert.py)."""
from __future__ import annotations

import threading
import time

import pytest

from edge.inference.batcher import FrameBatcher
from edge.inference.pipeline import ClassifiedBatch, InferencePipeline
from tests.support.fakes import EndlessCamera, FixedClassifier
from tests.support.waits import wait_until


def test_pool_shape_fills_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.serving import litert

    for cores, asked, expected in [
        (2, (0, 0), (2, 1)), (4, (0, 0), (4, 1)), (8, (0, 0), (4, 2)), (1, (0, 0), (1, 1)),
        (8, (0, 2), (4, 2)), (8, (0, 4), (2, 4)), (2, (0, 4), (1, 4)), (4, (2, 0), (2, 2)), (2, (3, 1), (3, 1)),
    ]:
        monkeypatch.setattr(litert, "default_threads", lambda threads=0, cores=cores: threads or cores)
        assert litert.pool_shape(*asked) == expected, (cores, asked)


def test_batcher_skips_a_camera_until_its_items_are_done() -> None:
    a, b = EndlessCamera("a", (255, 0, 0)), EndlessCamera("b", (0, 255, 0))
    batcher = FrameBatcher([a, b], threading.Event(), max_batch_size=1, max_wait_s=0.0)
    stop = threading.Event()
    first = batcher.next_batch(stop)
    second = batcher.next_batch(stop)
    assert {first[0].frame.camera, second[0].frame.camera} == {"a", "b"}
    # both cameras busy: nothing to hand out although both slots hold frames
    assert batcher.next_batch(stop, idle_timeout_s=0.05) == []
    batcher.done(first)
    again = batcher.next_batch(stop, idle_timeout_s=1.0)
    assert [i.frame.camera for i in again] == [first[0].frame.camera]
    assert again[0].frame.number == first[0].frame.number + 1


def test_thread_count_follows_the_serving_classifier() -> None:
    delivered: list[ClassifiedBatch] = []
    cameras = [EndlessCamera(n, (9, 9, 9)) for n in "abc"]
    pipeline = InferencePipeline(FrameBatcher(cameras, threading.Event(), 1, 0.0), FixedClassifier(1),
                                 delivered.append)
    pipeline.start()
    try:
        for concurrency in (1, 3, 1, 2):
            classifier = FixedClassifier(concurrency)
            pipeline.set_classifier(classifier)
            wait_until(lambda: pipeline.workers == concurrency and classifier.calls >= 20, 10, interval_s=0.01,
                       message=f"{concurrency} worker(s) and 20 calls")
            assert pipeline.workers == concurrency and classifier.calls >= 20
            assert time.monotonic() - pipeline.last_progress_mono < 5.0
    finally:
        pipeline.stop()
    assert {b.model_version for b in delivered} >= {1, 2, 3}
