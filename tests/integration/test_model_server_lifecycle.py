"""edge-model-server's model lifecycle on TF Serving's own test models (copied into tmp dirs).

Known answers and TF Serving's error words, version policies, labels, availability-preserving swaps
under load, reference-counted unloads, failed loads, LiteRT loading. The policy alone:
tests/unit/test_model_server_policy.py; the model config file: test_model_server_config.py;
warm-up records: test_model_server_warmup.py.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from edge.model_server import All, Latest, ModelSource, ServableState, ServingError, Specific
from tests.support.paths import TFSERVING_TESTDATA
from tests.support.servables import TWO_VERSIONS, add_version, copy_model, predict, states, x
from tests.support.waits import wait_until


# ----------------------------------------------------------------------------- known answers
def test_known_answers_and_status(tmp_path: Path, servable_managers) -> None:
    two = copy_model(tmp_path, "saved_model_half_plus_two_cpu")
    three = copy_model(tmp_path, "saved_model_half_plus_three")
    manager = servable_managers()
    manager.set_models([ModelSource("half_plus_two", two), ModelSource("half_plus_three", three)])
    assert manager.model_names() == ["half_plus_three", "half_plus_two"]
    assert predict(manager, "half_plus_two") == (123, 3.0)
    assert predict(manager, "half_plus_three") == (123, 4.0)
    for name, expected in (("half_plus_two", [3.0, 3.5, 4.0]), ("half_plus_three", [4.0, 4.5, 5.0])):
        with manager.acquire(name) as servable:  # TF Serving does not check shapes against the signature
            assert servable.run({"x": np.array([2, 3, 4], np.float32)})["y"].tolist() == expected
    with manager.acquire("half_plus_two", version=123) as servable:
        assert servable.runtime == "tensorflow" and servable.path == two / "00000123"
        assert servable.run({"x": x(2, 3, 4)})["y"].ravel().tolist() == [3.0, 3.5, 4.0]
        methods = {name: sig.method_name for name, sig in servable.signatures.items()}
        assert methods["serving_default"] == "tensorflow/serving/predict"
        assert methods["classify_x_to_y"] == "tensorflow/serving/classify"
        assert methods["regress_x_to_y"] == "tensorflow/serving/regress"
    status = manager.statuses("half_plus_two")
    assert [(s.version, s.state, s.error_code, s.error_message) for s in status] == [
        (123, ServableState.AVAILABLE, 0, "")
    ]
    metrics = manager.metrics()
    assert metrics.loads == 2 and metrics.load_failures == 0
    assert metrics.version_states["half_plus_two"] == {123: ServableState.AVAILABLE}


def test_request_errors_use_tf_serving_codes_and_words(tmp_path: Path, servable_managers) -> None:
    manager = servable_managers()
    manager.set_models([ModelSource("m", copy_model(tmp_path, "saved_model_half_plus_two_cpu"))])
    cases = [
        (lambda: manager.acquire("nope").__enter__(), grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Latest(nope)"),
        (lambda: manager.acquire("m", version=7).__enter__(), grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Specific(m, 7)"),
        (lambda: manager.acquire("m", label="gold").__enter__(), grpc.StatusCode.INVALID_ARGUMENT,
         "Unrecognized servable version label: gold"),
        (lambda: manager.statuses("nope"), grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope"),
        (lambda: manager.statuses("m", 7), grpc.StatusCode.NOT_FOUND, "Could not find version 7 of model m"),
    ]
    with manager.acquire("m") as s:
        cases += [
            (lambda: s.run({"x": x(1)}, "nope"), grpc.StatusCode.FAILED_PRECONDITION,
             'Serving signature key "nope" not found.'),
            (lambda: s.run({"z": x(1)}), grpc.StatusCode.INVALID_ARGUMENT,
             "Signature input alias: x(feed name: x:0) not found in request and no default value provided. "
             "Inputs expected to be in the request {z}, or default input alias set: "),
            (lambda: s.run({"x": x(1), "z": x(1)}), grpc.StatusCode.INVALID_ARGUMENT,
             "input size does not match signature: 2!=1 len({x,z}) != len({x}). Sent extra: {z}. "
             "Missing but required: {}."),
            (lambda: s.run({"x": x(1)}, output_filter=["q"]), grpc.StatusCode.INVALID_ARGUMENT,
             "output tensor alias not found in signature: q Outputs expected to be in the set {y}."),
            (lambda: s.run({"x": x(1)}, output_filter=["y", "y"]), grpc.StatusCode.INVALID_ARGUMENT,
             "duplicate output tensor alias: y"),
            (lambda: s.run({"x": np.array([["a"]], dtype=object)}), grpc.StatusCode.INVALID_ARGUMENT, ""),
        ]
        for call, code, message in cases:
            with pytest.raises(ServingError) as info:
                call()
            assert info.value.code == code, info.value
            assert info.value.message == message or (not message and info.value.message)


# ----------------------------------------------------------------------------- policies & labels
@pytest.mark.parametrize(
    "policy, expected",
    [
        (Latest(1), {124: ServableState.AVAILABLE}),
        (Latest(2), {123: ServableState.AVAILABLE, 124: ServableState.AVAILABLE}),
        (All(), {123: ServableState.AVAILABLE, 124: ServableState.AVAILABLE}),
        (Specific((123,)), {123: ServableState.AVAILABLE}),
    ],
)
def test_version_policies(tmp_path: Path, servable_managers, policy, expected) -> None:
    manager = servable_managers()
    manager.set_models([ModelSource("m", copy_model(tmp_path, TWO_VERSIONS), policy)])
    assert states(manager, "m") == expected
    assert predict(manager, "m")[0] == max(expected)  # Latest(m) = highest available
    for version in expected:
        assert predict(manager, "m", version=version) == (version, 3.0)


def test_version_labels(tmp_path: Path, servable_managers) -> None:
    base = copy_model(tmp_path, TWO_VERSIONS)
    labelled = ModelSource("m", base, All(), {"stable": 123, "canary": 124})
    manager = servable_managers()
    # TF Serving: a label may only name a version that is already AVAILABLE.
    with pytest.raises(ServingError) as info:
        manager.set_models([labelled])
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.message == (
        "Request to assign label to version 123 of model m, which is not currently available for inference"
    )
    manager.set_models([ModelSource("m", base, All())])
    manager.set_models([labelled])
    assert manager.labels("m") == {"stable": 123, "canary": 124}
    assert predict(manager, "m", label="stable") == (123, 3.0)
    assert predict(manager, "m", label="canary") == (124, 3.0)
    with pytest.raises(ServingError, match="Unrecognized servable version label: beta") as info:
        predict(manager, "m", label="beta")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT

    # --allow_version_labels_for_unavailable_models: accepted before anything loaded.
    other = servable_managers(allow_version_labels_for_unavailable_models=True)
    other.set_models([labelled])
    assert predict(other, "m", label="canary") == (124, 3.0)


# ----------------------------------------------------------------------------- swaps
def test_new_version_swaps_in_without_a_failed_request(tmp_path: Path, servable_managers) -> None:
    base = copy_model(tmp_path, TWO_VERSIONS)
    manager = servable_managers()
    manager.set_models([ModelSource("m", base)])
    assert states(manager, "m") == {124: ServableState.AVAILABLE}
    manager.start(file_system_poll_wait_s=0.2)

    stop = threading.Event()
    seen: list[int] = []
    failures: list[BaseException] = []
    zero_available: list[dict] = []

    def requests() -> None:
        while not stop.is_set():
            try:
                version, y = predict(manager, "m")
                assert y == 3.0
                seen.append(version)
                snapshot = states(manager, "m")
                if ServableState.AVAILABLE not in snapshot.values():
                    zero_available.append(snapshot)
            except BaseException as exc:
                failures.append(exc)

    worker = threading.Thread(target=requests)
    worker.start()
    try:
        wait_until(lambda: len(seen) >= 3, 120, message="three answered requests")
        add_version(base, 125, like=124)
        assert manager.wait_available("m", 125, timeout_s=120)
        wait_until(lambda: states(manager, "m").get(124) == ServableState.END, 120, message="version 124 unloaded (END)")
        wait_until(lambda: seen[-1] == 125, 120, message="requests answered by version 125")
    finally:
        stop.set()
        worker.join(timeout=60)
    assert failures == []
    assert zero_available == []
    first_new = seen.index(125)
    assert set(seen[:first_new]) == {124} and set(seen[first_new:]) == {125}
    assert states(manager, "m") == {125: ServableState.AVAILABLE, 124: ServableState.END}
    assert manager.metrics().unloads == 1


def test_in_flight_request_finishes_on_the_old_version(tmp_path: Path, servable_managers) -> None:
    base = copy_model(tmp_path, TWO_VERSIONS)
    manager = servable_managers()
    manager.set_models([ModelSource("m", base)])
    with manager.acquire("m") as old:
        assert old.version == 124
        add_version(base, 125, like=124)
        manager.poll()
        # The new version serves new requests; the held one is UNLOADING, not gone.
        assert states(manager, "m") == {125: ServableState.AVAILABLE, 124: ServableState.UNLOADING}
        assert predict(manager, "m") == (125, 3.0)
        with pytest.raises(ServingError, match=r"Specific\(m, 124\)"):
            predict(manager, "m", version=124)
        assert old.run({"x": x(2)})["y"].tolist() == [[3.0]]
    assert states(manager, "m")[124] == ServableState.END


def test_failed_version_never_replaces_a_good_one(tmp_path: Path, servable_managers) -> None:
    base = copy_model(tmp_path, TWO_VERSIONS)
    shutil.rmtree(base / "00000124")
    manager = servable_managers()
    manager.set_models([ModelSource("m", base)])
    bad = add_version(base, 124, like=123)
    (bad / "saved_model.pb").write_bytes(b"this is not a protobuf")
    manager.poll()
    status = {s.version: s for s in manager.statuses("m")}
    assert status[123].state == ServableState.AVAILABLE
    assert status[124].state == ServableState.END
    assert status[124].error_code != 0 and str(bad) in status[124].error_message
    assert predict(manager, "m") == (123, 3.0)
    # Not retried on every poll ...
    manager.poll()
    manager.poll()
    assert manager.metrics().load_failures == 1
    # ... but when the folder changes.
    shutil.copy(base / "00000123" / "saved_model.pb", bad / "saved_model.pb")
    future = time.time() + 5
    os.utime(bad / "saved_model.pb", (future, future))
    manager.poll()
    assert states(manager, "m") == {124: ServableState.AVAILABLE, 123: ServableState.END}
    assert predict(manager, "m") == (124, 3.0)


def test_savedmodel_in_base_path_gets_a_clear_status(tmp_path: Path, servable_managers, caplog) -> None:
    base = tmp_path / "flat"
    shutil.copytree(TFSERVING_TESTDATA / "saved_model_half_plus_two_cpu" / "00000123", base)
    manager = servable_managers()
    caplog.set_level(logging.WARNING, logger="edge.model_server.source")
    with pytest.raises(ServingError, match="did not become available") as info:
        manager.set_models([ModelSource("flat", base)])
    assert info.value.code == grpc.StatusCode.UNKNOWN
    manager.poll()
    manager.poll()
    with pytest.raises(ServingError) as info:
        manager.statuses("flat")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert info.value.message.startswith("Could not find any versions of model flat: ")
    assert f"move its contents into {base}/1/" in info.value.message
    warnings = [r for r in caplog.records if "No versions of servable flat" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not on every poll


# ----------------------------------------------------------------------------- LiteRT
@pytest.mark.parametrize("model", ["saved_model_half_plus_two_tflite", "saved_model_half_plus_two_tflite_with_sigdef"])
def test_tflite_models(tmp_path: Path, servable_managers, model: str) -> None:
    manager = servable_managers()
    manager.set_models([ModelSource("m", copy_model(tmp_path, model))])
    with manager.acquire("m") as servable:
        assert servable.runtime == "tflite"
        sig = servable.signatures["serving_default"]
        assert list(sig.inputs) == ["x"] and list(sig.outputs) == ["y"]
        assert sig.method_name == "tensorflow/serving/predict"
        assert sig.inputs["x"].dtype == "float32"
        assert servable.run({"x": x(2)})["y"].tolist() == [[3.0]]
        assert servable.run({"x": x(2, 3, 4)})["y"].ravel().tolist() == [3.0, 3.5, 4.0]


@pytest.mark.parametrize("prefer_tflite, runtime", [(True, "tflite"), (False, "tensorflow")])
def test_prefer_tflite(tmp_path: Path, servable_managers, prefer_tflite: bool, runtime: str) -> None:
    base = copy_model(tmp_path, "saved_model_half_plus_two_cpu")
    shutil.copy(TFSERVING_TESTDATA / "saved_model_half_plus_two_tflite" / "00000123" / "model.tflite", base / "00000123")
    manager = servable_managers(prefer_tflite=prefer_tflite)
    manager.set_models([ModelSource("m", base)])
    with manager.acquire("m") as servable:
        assert servable.runtime == runtime
        assert servable.run({"x": x(2)})["y"].tolist() == [[3.0]]
