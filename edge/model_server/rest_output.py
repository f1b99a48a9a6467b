"""Tensors and results -> TF Serving's REST JSON (``json_tensor.cc`` MakeJsonFromTensors & co).

Predict answers ``{"predictions": [...]}`` (row format) or ``{"outputs": ...}`` (columnar); output
tensors whose alias ends in ``_bytes`` are written as ``{"b64": ...}``. Floats are written as TF
Serving's WriteDecimal writes them (``%g``, else ``%.9g``/``%.17g`` when that does not read back to
the same float32/float64, a trailing ``.0`` on whole numbers, NaN/Infinity).
"""
from __future__ import annotations

import base64
import json
import logging
import math
from typing import Any

import numpy as np
from google.protobuf import json_format

from edge.model_server.rest_json import bad

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------ output JSON
def _float_text(v: Any, bits: int) -> str:
    """json_tensor.cc WriteDecimal: ``%g``, or ``%.9g`` (float) / ``%.17g`` (double) when ``%g`` does not
    read back to the same value; ``.0`` added to whole numbers; NaN and Infinity as rapidjson writes them."""
    f = float(v)
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "-Infinity" if f < 0 else "Infinity"
    same = (lambda text: np.float32(text) == np.float32(f)) if bits == 32 else (lambda text: float(text) == f)
    text = "%g" % f
    if not same(text):
        text = ("%.9g" if bits == 32 else "%.17g") % f
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _scalar_text(v: Any, as_b64: bool) -> str:
    if isinstance(v, (bytes, bytearray)):
        if not as_b64:
            try:
                return json.dumps(bytes(v).decode("utf-8"), ensure_ascii=False)
            except UnicodeDecodeError:
                pass  # not text: send it as base64 rather than invalid JSON
        return '{"b64": "%s"}' % base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, (np.bool_, bool)):
        return "true" if v else "false"
    if isinstance(v, (np.floating, float)):
        return _float_text(v, 32 if isinstance(v, (np.float32, np.float16)) else 64)
    if isinstance(v, (np.integer, int)):
        return str(int(v))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    raise bad(f"Failed to write JSON value for tensor type: {type(v).__name__}")


def tensor_json(arr: np.ndarray, as_b64: bool) -> str:
    """Nested JSON arrays for a tensor (a bare value for a scalar)."""
    if arr.ndim == 0:
        return _scalar_text(arr[()], as_b64)
    if arr.ndim == 1:
        items = arr.tolist() if arr.dtype == object else arr
        return "[" + ", ".join(_scalar_text(x, as_b64) for x in items) + "]"
    return "[" + ", ".join(tensor_json(a, as_b64) for a in arr) + "]"


def predictions_json(outputs: dict[str, np.ndarray], fmt: str) -> str:
    if not outputs:
        raise bad("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    b64 = {n: n.endswith("_bytes") and outputs[n].dtype == object for n in names}
    if fmt == "columnar":
        if len(names) == 1:
            return '{"outputs": ' + tensor_json(outputs[names[0]], b64[names[0]]) + "}"
        return '{"outputs": {' + ", ".join(
            f"{json.dumps(n)}: {tensor_json(outputs[n], b64[n])}" for n in names) + "}}"
    batch = None
    for n in names:
        if outputs[n].ndim == 0:
            raise bad(f"Tensor name: {n} has no shape information ")
        if batch is not None and outputs[n].shape[0] != batch:
            raise bad(f"Tensor name: {n} has inconsistent batch size: {outputs[n].shape[0]} expecting: {batch}")
        batch = outputs[n].shape[0]
    rows = []
    for i in range(batch or 0):
        if len(names) == 1:
            rows.append(tensor_json(outputs[names[0]][i], b64[names[0]]))
        else:
            rows.append("{" + ", ".join(f"{json.dumps(n)}: {tensor_json(outputs[n][i], b64[n])}" for n in names) + "}")
    return '{"predictions": [' + ", ".join(rows) + "]}"


def classification_json(result: Any) -> str:
    if not len(result.classifications):
        raise bad("Cannot convert empty ClassificationResults to JSON")
    rows = []
    for item in result.classifications:
        rows.append("[" + ", ".join(f"[{json.dumps(c.label, ensure_ascii=False)}, {_float_text(np.float32(c.score), 32)}]"
                                    for c in item.classes) + "]")
    return '{"results": [' + ", ".join(rows) + "]}"


def regression_json(result: Any) -> str:
    if not len(result.regressions):
        raise bad("Cannot convert empty RegressionResults to JSON")
    return '{"results": [' + ", ".join(_float_text(np.float32(r.value), 32) for r in result.regressions) + "]}"


def error_json(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)


def proto_json(message: Any) -> str:
    """A message as TF Serving prints it (field names kept, defaults printed, 1-space indent)."""
    return str(json_format.MessageToJson(message, preserving_proto_field_name=True, indent=1,
                                     always_print_fields_with_no_presence=True))
