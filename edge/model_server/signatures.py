"""The SignatureDefs of a loaded servable, exactly as stored in its ``saved_model.pb``.

TF Serving answers GetModelMetadata and checks requests against the MetaGraphDef's SignatureDefs:
tensor names (``x:0``), method names (``tensorflow/serving/classify``), ``__saved_model_init_op``...
TensorFlow's Python loader loses some of that, so we read the SignatureDef map straight from the
protobuf file with a tiny wire-format walk (SavedModel.meta_graphs[serve].signature_def) and parse
each SignatureDef with the server's private message classes. A servable without a saved_model.pb
(a TFLite model) gets SignatureDefs built from its runtime's SignatureInfo instead.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge.serving.protos import messages

logger = logging.getLogger(__name__)

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
DEFAULT_SIGNATURE = "serving_default"

# numpy dtype name (as SignatureInfo spells it) -> tensorflow.DataType enum name
_NP_TO_DT = {
    "float32": "DT_FLOAT", "float64": "DT_DOUBLE", "int32": "DT_INT32", "uint8": "DT_UINT8",
    "int16": "DT_INT16", "int8": "DT_INT8", "string": "DT_STRING", "object": "DT_STRING",
    "bytes": "DT_STRING", "int64": "DT_INT64", "bool": "DT_BOOL", "float16": "DT_HALF",
    "uint16": "DT_UINT16", "uint32": "DT_UINT32", "uint64": "DT_UINT64", "complex64": "DT_COMPLEX64",
    "complex128": "DT_COMPLEX128", "bfloat16": "DT_BFLOAT16",
}

_cache: dict[tuple[str, str, int], dict[str, Any]] = {}
_cache_lock = threading.Lock()


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    pos, end = 0, len(buf)
    value: int | memoryview
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > end:
            raise ValueError("truncated message")
        yield number, wire, value


def _meta_graph_tags(meta_graph: memoryview) -> list[str]:
    for number, wire, value in _fields(meta_graph):
        if number == 1 and wire == 2:  # MetaGraphDef.meta_info_def
            return [bytes(v).decode("utf-8", "replace") for n, w, v in _fields(value) if n == 4 and w == 2]
    return []


def read_signature_defs(saved_model_pb: Path, tag: str = "serve") -> dict[str, Any]:
    """SignatureDef messages keyed by signature name, from the MetaGraphDef tagged `tag`."""
    pb = messages()
    data = memoryview(Path(saved_model_pb).read_bytes())
    graphs = [value for number, wire, value in _fields(data) if number == 2 and wire == 2]
    if not graphs:
        raise ValueError(f"{saved_model_pb}: no MetaGraphDef")
    chosen = next((g for g in graphs if tag in _meta_graph_tags(g)), graphs[0])
    result: dict[str, Any] = {}
    for number, wire, entry in _fields(chosen):
        if number != 5 or wire != 2:  # MetaGraphDef.signature_def (map entry)
            continue
        key, sig = "", pb.SignatureDef()
        for n, w, v in _fields(entry):
            if n == 1 and w == 2:
                key = bytes(v).decode("utf-8")
            elif n == 2 and w == 2:
                sig = pb.SignatureDef.FromString(bytes(v))
        result[key] = sig
    return result


def _from_signature_info(signatures: dict[str, Any]) -> dict[str, Any]:
    pb = messages()
    result = {}
    for name, info in signatures.items():
        sig = pb.SignatureDef(method_name=getattr(info, "method_name", PREDICT_METHOD) or PREDICT_METHOD)
        for target, tensors in ((sig.inputs, info.inputs), (sig.outputs, info.outputs)):
            for alias, t in tensors.items():
                ti = target[alias]
                ti.name = t.name or alias
                ti.dtype = pb.DataType.Value(_NP_TO_DT.get(str(t.dtype), "DT_INVALID"))
                if t.shape is None:
                    ti.tensor_shape.unknown_rank = True
                else:
                    for d in t.shape:
                        ti.tensor_shape.dim.add(size=-1 if d is None else int(d))
        result[name] = sig
    return result


def signature_defs(servable: Any) -> dict[str, Any]:
    """The servable's SignatureDefs (cached per name/version/path)."""
    path = Path(str(getattr(servable, "path", "") or ""))
    key = (str(servable.name), str(path), int(servable.version))
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    defs: dict[str, Any] | None = None
    pb_file = path / "saved_model.pb"
    runtime = str(getattr(servable, "runtime", "") or "").lower()
    if pb_file.is_file() and "tflite" not in runtime and "lite" not in runtime:
        try:
            defs = read_signature_defs(pb_file)
        except Exception as exc:  # a damaged file: fall back to what the runtime knows
            logger.warning("cannot read SignatureDefs from %s (%s); using the runtime's signatures", pb_file, exc)
    if defs is None:
        defs = _from_signature_info(servable.signatures)
    with _cache_lock:
        if len(_cache) > 256:
            _cache.clear()
        _cache[key] = defs
    return defs


def dtype_label(dt: int) -> str:
    """DT_FLOAT -> 'float' (the spelling TF uses in its error messages)."""
    name = messages().DataType.Name(dt) if dt in messages().DataType.values() else "DT_INVALID"
    return name[3:].lower() if name.startswith("DT_") else name.lower()
