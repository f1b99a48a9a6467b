"""edge-model-server's model lifecycle on TF Serving's own test models (copied into tmp dirs).

Version policies, labels, availability-preserving swaps under load, reference-counted unloads,
failed loads, the model config file and its watcher, warm-up records, LiteRT loading.
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

from edge.model_server import (
    All,
    Latest,
    ModelConfigError,
    ModelConfigWatcher,
    ModelSource,
    ServableManager,
    ServableState,
    ServingError,
    Specific,
    aspired_versions,
    load_model_config_file,
    sources_from_flags,
    sources_from_proto,
    write_warmup_records,
)
from edge.model_server.policy import Action, next_action
from edge.model_server.warmup import WARMUP_FILE, read_records
from edge.serving.protos import messages, parse_text_config
from edge.serving.tensors import from_ndarray

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "tfserving"
TWO_VERSIONS = "saved_model_half_plus_two_2_versions"


def copy_model(tmp_path: Path, name: str, dest: str | None = None) -> Path:
    target = tmp_path / (dest or name)
    shutil.copytree(TESTDATA / name, target)
    return target


def add_version(base: Path, version: int, like: int) -> Path:
    """Copy version ``like`` to ``version`` the way an installer does: stage hidden, then rename."""
    staging = base / f".staging-{version}"
    shutil.copytree(base / f"{like:08d}", staging)
    final = base / str(version)
    os.rename(staging, final)
    return final


def x(*values: float) -> np.ndarray:
    return np.array([[v] for v in values], dtype=np.float32)


def predict(manager: ServableManager, name: str, value: float = 2.0, **kw) -> tuple[int, float]:
    with manager.acquire(name, **kw) as servable:
        return servable.version, float(servable.run({"x": x(value)})["y"][0][0])


def states(manager: ServableManager, name: str) -> dict[int, ServableState]:
    return {s.version: s.state for s in manager.statuses(name)}


def wait_for(predicate, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def managers():
    made: list[ServableManager] = []

    def make(**kwargs) -> ServableManager:
        made.append(ServableManager(**kwargs))
        return made[-1]

    yield make
    for manager in made:
        manager.stop()


# ----------------------------------------------------------------------------- policy (alone)
def test_aspired_versions_policies() -> None:
    found = [124, 7, 123]
    assert aspired_versions(Latest(), found) == [124]
    assert aspired_versions(Latest(2), found) == [123, 124]
    assert aspired_versions(Latest(5), found) == [7, 123, 124]
    assert aspired_versions(All(), found) == [7, 123, 124]
    assert aspired_versions(Specific((123, 999)), found) == [123]
    assert aspired_versions(Latest(), []) == []
    with pytest.raises(ValueError):
        Latest(0)


def test_next_action_preserves_availability() -> None:
    # New version aspired, old one serving: load the new first.
    assert next_action({2}, {1: "available", 2: "new"}) == Action("load", 2)
    # New one available: now the old one may go.
    assert next_action({2}, {1: "available", 2: "available"}) == Action("unload", 1)
    # New one failed: the old one stays.
    assert next_action({2}, {1: "available", 2: "end"}) is None
    # All versions gone from disk: keep the last one serving, unload the extra ones lowest first.
    assert next_action(set(), {1: "available"}) is None
    assert next_action(set(), {1: "available", 2: "available"}) == Action("unload", 1)
    # Several new versions: highest first.
    assert next_action({1, 2, 3}, {1: "new", 2: "new", 3: "new"}) == Action("load", 3)


# ----------------------------------------------------------------------------- known answers
def test_known_answers_and_status(tmp_path: Path, managers) -> None:
    two = copy_model(tmp_path, "saved_model_half_plus_two_cpu")
    three = copy_model(tmp_path, "saved_model_half_plus_three")
    manager = managers()
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


def test_request_errors_use_tf_serving_codes_and_words(tmp_path: Path, managers) -> None:
    manager = managers()
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
def test_version_policies(tmp_path: Path, managers, policy, expected) -> None:
    manager = managers()
    manager.set_models([ModelSource("m", copy_model(tmp_path, TWO_VERSIONS), policy)])
    assert states(manager, "m") == expected
    assert predict(manager, "m")[0] == max(expected)  # Latest(m) = highest available
    for version in expected:
        assert predict(manager, "m", version=version) == (version, 3.0)


def test_version_labels(tmp_path: Path, managers) -> None:
    base = copy_model(tmp_path, TWO_VERSIONS)
    labelled = ModelSource("m", base, All(), {"stable": 123, "canary": 124})
    manager = managers()
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
    other = managers(allow_version_labels_for_unavailable_models=True)
    other.set_models([labelled])
    assert predict(other, "m", label="canary") == (124, 3.0)


# ----------------------------------------------------------------------------- swaps
def test_new_version_swaps_in_without_a_failed_request(tmp_path: Path, managers) -> None:
    base = copy_model(tmp_path, TWO_VERSIONS)
    manager = managers()
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
        assert wait_for(lambda: len(seen) >= 3)
        add_version(base, 125, like=124)
        assert manager.wait_available("m", 125, timeout_s=120)
        assert wait_for(lambda: states(manager, "m").get(124) == ServableState.END)
        assert wait_for(lambda: seen[-1] == 125)
    finally:
        stop.set()
        worker.join(timeout=60)
    assert failures == []
    assert zero_available == []
    first_new = seen.index(125)
    assert set(seen[:first_new]) == {124} and set(seen[first_new:]) == {125}
    assert states(manager, "m") == {125: ServableState.AVAILABLE, 124: ServableState.END}
    assert manager.metrics().unloads == 1


def test_in_flight_request_finishes_on_the_old_version(tmp_path: Path, managers) -> None:
    base = copy_model(tmp_path, TWO_VERSIONS)
    manager = managers()
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


def test_failed_version_never_replaces_a_good_one(tmp_path: Path, managers) -> None:
    base = copy_model(tmp_path, TWO_VERSIONS)
    shutil.rmtree(base / "00000124")
    manager = managers()
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


def test_savedmodel_in_base_path_gets_a_clear_status(tmp_path: Path, managers, caplog) -> None:
    base = tmp_path / "flat"
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu" / "00000123", base)
    manager = managers()
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


# ----------------------------------------------------------------------------- config
def good_config_text(tmp_path: Path) -> str:
    text = (TESTDATA / "good_model_config.txt").read_text()
    text = text.replace("${TEST_HALF_PLUS_TWO_DIR}", str(copy_model(tmp_path, "saved_model_half_plus_two_cpu")))
    return text.replace("${TEST_HALF_PLUS_THREE_DIR}", str(copy_model(tmp_path, "saved_model_half_plus_three")))


def test_model_config_file(tmp_path: Path, managers) -> None:
    path = tmp_path / "models.config"
    path.write_text(good_config_text(tmp_path))
    sources = load_model_config_file(path)
    assert [(s.name, s.base_path.name, s.policy, s.platform) for s in sources] == [
        ("half_plus_two", "saved_model_half_plus_two_cpu", Latest(1), "tensorflow"),
        ("half_plus_three", "saved_model_half_plus_three", Latest(1), "tensorflow"),
    ]
    manager = managers()
    manager.set_models(sources)
    assert predict(manager, "half_plus_two") == (123, 3.0)
    assert predict(manager, "half_plus_three") == (123, 4.0)

    with pytest.raises(ModelConfigError, match=r"bad_model_config\.txt: line 1, column \d+") as info:
        load_model_config_file(TESTDATA / "bad_model_config.txt")
    assert "\n" not in str(info.value)
    with pytest.raises(ModelConfigError, match="cannot read"):
        load_model_config_file(tmp_path / "absent.config")


@pytest.mark.parametrize(
    "text, message",
    [
        ('model_config_list { config { name: "a" base_path: "/m" model_platform: "tensorflow" } '
         'config { name: "a" base_path: "/n" model_platform: "tensorflow" } }',
         "Illegal to list model a multiple times in config list"),
        ('model_config_list { config { name: "a" base_path: "models/a" model_platform: "tensorflow" } }',
         "Expected model a to have an absolute path or URI; got base_path()=models/a"),
        ('model_config_list { config { name: "a" base_path: "/m" model_platform: "pytorch" } }',
         "Model a requests unsupported platform pytorch"),
        ('model_config_list { config { name: "a" base_path: "/m" } }',
         "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
         "ModelServerConfig::model_platform."),
        ('custom_model_config { }', "ModelServer does not yet support custom model config."),
    ],
)
def test_model_config_content_errors(text: str, message: str) -> None:
    with pytest.raises(ServingError) as info:
        sources_from_proto(parse_text_config(text, "ModelServerConfig"))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == message


def test_model_config_policies_labels_and_flags() -> None:
    config = parse_text_config(
        """model_config_list {
             config { name: "a" base_path: "/m/a" model_platform: "tensorflow"
                      model_version_policy { specific { versions: 2 versions: 1 } }
                      version_labels { key: "stable" value: 1 } }
             config { name: "b" base_path: "file:///m/b" model_platform: "tensorflow"
                      model_version_policy { all { } } }
             config { name: "c" base_path: "/m/c" model_platform: "tensorflow"
                      model_version_policy { latest { num_versions: 2 } } } }""",
        "ModelServerConfig",
    )
    a, b, c = sources_from_proto(config)
    assert a.policy == Specific((1, 2)) and dict(a.labels) == {"stable": 1}
    assert b.policy == All() and b.base_path == Path("/m/b")
    assert c.policy == Latest(2)
    assert sources_from_proto(messages().ModelServerConfig()) == []
    assert sources_from_flags("default", "/models/x") == [ModelSource("default", Path("/models/x"))]
    with pytest.raises(ServingError, match="absolute path"):
        sources_from_flags("default", "models/x")


def test_config_watcher_applies_edits_and_ignores_bad_files(tmp_path: Path, managers) -> None:
    path = tmp_path / "models.config"
    text = good_config_text(tmp_path)
    path.write_text(text)
    manager = managers()
    manager.set_models(load_model_config_file(path))
    watcher = ModelConfigWatcher(path, 0.1, manager)
    watcher.start()
    try:
        # Remove half_plus_three from the file: it is unloaded, half_plus_two keeps serving.
        only_two = text[: text.index("  config: {\n    name: \"half_plus_three\"")].rstrip().rstrip(",") + "\n}\n"
        path.write_text(only_two)
        assert wait_for(lambda: manager.model_names() == ["half_plus_two"])
        assert wait_for(lambda: states(manager, "half_plus_three") == {123: ServableState.END})
        with pytest.raises(ServingError, match=r"Latest\(half_plus_three\)"):
            predict(manager, "half_plus_three")
        # A broken file is logged and ignored.
        path.write_text("improperly formatted file")
        assert wait_for(lambda: watcher.errors == 1)
        assert predict(manager, "half_plus_two") == (123, 3.0)
        # Put it back: half_plus_three loads again.
        path.write_text(text)
        assert wait_for(lambda: manager.model_names() == ["half_plus_three", "half_plus_two"])
        assert manager.wait_available("half_plus_three", timeout_s=120)
        assert predict(manager, "half_plus_three") == (123, 4.0)
    finally:
        watcher.stop()


# ----------------------------------------------------------------------------- warm-up
def warmup_logs() -> list:
    pb = messages()
    logs = []
    for value in (1.0, 2.0, 3.0):
        log = pb.PredictionLog()
        log.predict_log.request.model_spec.name = "m"
        log.predict_log.request.inputs["x"].CopyFrom(from_ndarray(x(value)))
        logs.append(log)
    log = pb.PredictionLog()
    req = log.classify_log.request
    req.model_spec.signature_name = "classify_x_to_y"
    req.input.example_list.examples.add().features.feature["x"].float_list.value.append(2.0)
    logs.append(log)
    log = pb.PredictionLog()
    req = log.regress_log.request
    req.model_spec.signature_name = "regress_x_to_y"
    req.input.example_list.examples.add().features.feature["x"].float_list.value.append(4.0)
    logs.append(log)
    return logs


def test_warmup_records_are_replayed_before_available(tmp_path: Path, managers) -> None:
    base = copy_model(tmp_path, "saved_model_half_plus_two_cpu")
    assert write_warmup_records(base / "00000123" / WARMUP_FILE, warmup_logs()) == 5
    manager = managers()
    manager.set_models([ModelSource("m", base)])
    with manager.acquire("m") as servable:
        assert servable.runtime_calls == 5  # the five records ran before the version became AVAILABLE
    assert manager.metrics().warmup_records == 5

    skipped = managers(enable_warmup=False)
    skipped.set_models([ModelSource("m", base)])
    with skipped.acquire("m") as servable:
        assert servable.runtime_calls == 0


@pytest.mark.parametrize(
    "damage, code, words",
    [
        ("bad_proto", grpc.StatusCode.INVALID_ARGUMENT, "Failed to parse warmup record"),
        ("bad_crc", grpc.StatusCode.DATA_LOSS, "Please verify your warmup data is in TFRecord format."),
        ("bad_request", grpc.StatusCode.INVALID_ARGUMENT, "input size does not match signature"),
    ],
)
def test_bad_warmup_record_fails_the_load(tmp_path: Path, managers, damage: str, code, words: str) -> None:
    base = copy_model(tmp_path, TWO_VERSIONS)
    manager = managers()
    manager.set_models([ModelSource("m", base)])
    new = add_version(base, 125, like=124)
    logs = warmup_logs()
    if damage == "bad_proto":
        logs.append(b"\xff\xff\xff\xff")
    elif damage == "bad_request":
        logs[0].predict_log.request.inputs["extra"].CopyFrom(from_ndarray(x(1)))
    path = new / WARMUP_FILE
    write_warmup_records(path, logs)
    if damage == "bad_crc":
        data = bytearray(path.read_bytes())
        data[20] ^= 0xFF
        path.write_bytes(bytes(data))
    manager.poll()
    status = {s.version: s for s in manager.statuses("m")}
    assert status[125].state == ServableState.END
    assert status[125].error_code == code.value[0]
    assert words in status[125].error_message
    assert predict(manager, "m") == (124, 3.0)


def test_warmup_file_round_trip_and_tensorflow_compatibility(tmp_path: Path) -> None:
    import tensorflow as tf

    blobs = [log.SerializeToString() for log in warmup_logs()] + [b""]
    ours = tmp_path / "ours"
    assert write_warmup_records(ours, blobs) == len(blobs)
    assert list(read_records(ours)) == blobs
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours))] == blobs

    theirs = tmp_path / "theirs"
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for blob in blobs:
            writer.write(blob)
    assert list(read_records(theirs)) == blobs
    assert theirs.read_bytes() == ours.read_bytes()


# ----------------------------------------------------------------------------- LiteRT
@pytest.mark.parametrize("model", ["saved_model_half_plus_two_tflite", "saved_model_half_plus_two_tflite_with_sigdef"])
def test_tflite_models(tmp_path: Path, managers, model: str) -> None:
    manager = managers()
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
def test_prefer_tflite(tmp_path: Path, managers, prefer_tflite: bool, runtime: str) -> None:
    base = copy_model(tmp_path, "saved_model_half_plus_two_cpu")
    shutil.copy(TESTDATA / "saved_model_half_plus_two_tflite" / "00000123" / "model.tflite", base / "00000123")
    manager = managers(prefer_tflite=prefer_tflite)
    manager.set_models([ModelSource("m", base)])
    with manager.acquire("m") as servable:
        assert servable.runtime == runtime
        assert servable.run({"x": x(2)})["y"].tolist() == [[3.0]]
