"""edge-model-server's warm-up records (assets.extra/tf_serving_warmup_requests): replayed before a
version is AVAILABLE, bad records fail the load, and the TFRecord file format matches TensorFlow's."""
from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from edge.model_server import ModelSource, ServableState, write_warmup_records
from edge.model_server.warmup import WARMUP_FILE, read_records
from edge.serving.protos import messages
from edge.serving.tensors import from_ndarray
from tests.support.servables import TWO_VERSIONS, add_version, copy_model, predict, x


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


def test_warmup_records_are_replayed_before_available(tmp_path: Path, servable_managers) -> None:
    base = copy_model(tmp_path, "saved_model_half_plus_two_cpu")
    assert write_warmup_records(base / "00000123" / WARMUP_FILE, warmup_logs()) == 5
    manager = servable_managers()
    manager.set_models([ModelSource("m", base)])
    with manager.acquire("m") as servable:
        assert servable.runtime_calls == 5  # the five records ran before the version became AVAILABLE
    assert manager.metrics().warmup_records == 5

    skipped = servable_managers(enable_warmup=False)
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
def test_bad_warmup_record_fails_the_load(tmp_path: Path, servable_managers, damage: str, code, words: str) -> None:
    base = copy_model(tmp_path, TWO_VERSIONS)
    manager = servable_managers()
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
