"""Model warm-up: replay ``<version>/assets.extra/tf_serving_warmup_requests`` before serving.

The file is a TFRecord file (each record: uint64 length, uint32 masked CRC-32C of the length,
the data, uint32 masked CRC-32C of the data) whose records are serialized
``tensorflow.serving.PredictionLog`` messages. Read and written here without TensorFlow. As in TF
Serving's saved_model_warmup_util.cc: at most 1000 records, a record that does not parse fails
the load (INVALID_ARGUMENT), a corrupt file fails it with DATA_LOSS.
"""
from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc

from edge.model_server.examples import serialized_examples
from edge.model_server.runtime import Servable
from edge.model_server.status import ServingError
from edge.serving.protos import messages
from edge.serving.tensors import to_ndarray
from edge.util.fsutil import atomic_write_bytes

logger = logging.getLogger(__name__)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_NUM_RECORDS = 1000  # WarmupConsts::kMaxNumRecords


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file; ServingError(DATA_LOSS) on a corrupt or truncated record."""
    with open(path, "rb") as fh:
        offset = 0
        while True:
            header = fh.read(12)
            if not header:
                return
            if len(header) < 12:
                raise ServingError(grpc.StatusCode.DATA_LOSS, f"truncated record at {offset}")
            length_bytes, length_crc = header[:8], struct.unpack("<I", header[8:])[0]
            if masked_crc(length_bytes) != length_crc:
                raise ServingError(grpc.StatusCode.DATA_LOSS, f"corrupted record at {offset}")
            (length,) = struct.unpack("<Q", length_bytes)
            body = fh.read(length + 4)
            if len(body) < length + 4:
                raise ServingError(grpc.StatusCode.DATA_LOSS, f"truncated record at {offset}")
            data, (data_crc,) = body[:length], struct.unpack("<I", body[length:])
            if masked_crc(data) != data_crc:
                raise ServingError(grpc.StatusCode.DATA_LOSS, f"corrupted record at {offset}")
            offset += 12 + length + 4
            yield data


def encode_record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


def write_warmup_records(path: Path, prediction_logs: Iterable[Any]) -> int:
    """Write PredictionLog messages (or their serialized bytes) as a TFRecord file, atomically.

    ``path`` is the file itself (usually ``<version>/assets.extra/tf_serving_warmup_requests``).
    Returns the number of records written.
    """
    records = [encode_record(bytes(log if isinstance(log, (bytes, bytearray)) else log.SerializeToString()))
               for log in prediction_logs]
    atomic_write_bytes(Path(path), b"".join(records), 0o644, mkdir=True)
    count = len(records)
    return count


# ----------------------------------------------------------------------------- replay
def _run_examples(servable: Servable, signature_name: str, request_input: Any) -> None:
    sig = servable.signature(signature_name or None)
    key = "inputs" if "inputs" in sig.inputs else next(iter(sig.inputs), "inputs")
    servable.run({key: serialized_examples(request_input)}, sig.name)


def replay(servable: Servable, log: Any) -> None:
    """Run one PredictionLog against a freshly loaded servable."""
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        requests = [log.predict_log.request]
    elif kind == "predict_streamed_log":
        requests = list(log.predict_streamed_log.request)
    elif kind in ("classify_log", "regress_log"):
        request = getattr(log, kind).request
        _run_examples(servable, request.model_spec.signature_name, request.input)
        return
    elif kind == "multi_inference_log":
        request = log.multi_inference_log.request
        for task in request.tasks:
            _run_examples(servable, task.model_spec.signature_name, request.input)
        return
    else:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Unsupported log_type for warmup: {kind}")
    for request in requests:
        inputs = {alias: to_ndarray(tp) for alias, tp in request.inputs.items()}
        servable.run(inputs, request.model_spec.signature_name or None, list(request.output_filter) or None)


def run_warmup(servable: Servable, version_dir: Path | None = None) -> int:
    """Replay the version's warm-up file; return the number of records (0 when there is none)."""
    path = Path(version_dir or servable.path) / WARMUP_FILE
    if not path.is_file():
        logger.debug("No warmup data file found at %s", path)
        return 0

    log_cls = messages().PredictionLog
    count = 0
    try:
        for record in read_records(path):
            log = log_cls()
            try:
                log.ParseFromString(record)
            except Exception:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Failed to parse warmup record: {record[:64]!r} from {path}",
                ) from None
            replay(servable, log)
            count += 1
            if count > MAX_NUM_RECORDS:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Number of warmup records exceeds the maximum ({MAX_NUM_RECORDS}) at {path}",
                )
    except ServingError as exc:
        if exc.code == grpc.StatusCode.DATA_LOSS:
            raise ServingError(
                exc.code, f"{exc.message}. Please verify your warmup data is in TFRecord format."
            ) from None
        raise
    logger.info("Finished reading warmup data for model at %s. Number of warmup records read: %d.", path, count)
    return count
