"""TF Serving's REST JSON -> tensors/Examples (``tensorflow_serving/util/json_tensor.cc``); the way
back is :mod:`edge.model_server.rest_output`.

Predict: row format ``{"instances": [...]}`` -> ``{"predictions": [...]}``, columnar
``{"inputs": ...}`` -> ``{"outputs": ...}``; binary strings as ``{"b64": "..."}``; output tensors whose
alias ends in ``_bytes`` are written as ``{"b64": ...}``. Classify/Regress: ``{"examples": [...],
"context": {...}}`` -> tf.Examples. Error wording follows json_tensor.cc; all errors are
INVALID_ARGUMENT (HTTP 400). Floats are written as TF Serving's WriteDecimal writes them (``%g``, else
``%.9g``/``%.17g`` when that does not read back to the same float32/float64, a trailing ``.0`` on whole
numbers, NaN/Infinity); input numbers for float tensors are taken as any JSON number (TF Serving >= 2.5).
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import grpc
import numpy as np

from edge.model_server.status import ServingError

_FLOAT_KINDS = {"DT_FLOAT": (np.float32, 2**24 - 1), "DT_DOUBLE": (np.float64, 2**53 - 1),
                "DT_HALF": (np.float16, 2**11 - 1), "DT_BFLOAT16": (np.float32, 2**8 - 1)}
_INT_KINDS = {"DT_INT32": np.int32, "DT_INT16": np.int16, "DT_INT8": np.int8, "DT_UINT8": np.uint8,
              "DT_INT64": np.int64, "DT_UINT32": np.uint32, "DT_UINT64": np.uint64, "DT_UINT16": np.uint16}


def bad(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def dumps_value(val: Any) -> str:
    try:
        return json.dumps(val, separators=(",", ":"), allow_nan=True)[:200]
    except (TypeError, ValueError):
        return str(val)[:200]


def _type_name(val: Any) -> str:
    if val is None:
        return "Null"
    if isinstance(val, bool):
        return "True" if val else "False"
    if isinstance(val, dict):
        return "Object"
    if isinstance(val, list):
        return "Array"
    if isinstance(val, str):
        return "String"
    return "Number"


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # rapidjson (TF Serving) refuses it too: a literal overflowing a double
        raise ValueError(f"Number too big to be stored in double: {text[:40]}")
    return value


def _parse_int(text: str) -> int | float:
    if len(text.lstrip("-")) > 20:  # beyond any int64/uint64: read as a double, like rapidjson
        return _parse_float(text)
    return int(text)


def parse_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise bad("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body, parse_float=_parse_float, parse_int=_parse_int)
    except UnicodeDecodeError as exc:
        raise bad(f"JSON Parse error: Invalid encoding in string. at offset: {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise bad(f"JSON Parse error: {exc.msg} at offset: {exc.pos}") from None
    except RecursionError:
        raise bad("JSON Parse error: nesting too deep") from None
    except ValueError as exc:  # a number the hooks refused (too big for a double / too many digits)
        raise bad(f"JSON Parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise bad(f"JSON Value: {dumps_value(doc)} Is not object")
    return doc


def _signature_name(doc: dict[str, Any]) -> str | None:
    if "signature_name" not in doc:
        return None
    if not isinstance(doc["signature_name"], str):
        raise bad(f"JSON Value: {dumps_value(doc)} not formatted correctly. 'signature_name' key must be a string value.")
    return doc["signature_name"]


def _b64(val: Any) -> bytes:
    if not (isinstance(val, dict) and len(val) == 1 and isinstance(val.get("b64"), str)):
        raise bad(f"JSON Value: {dumps_value(val)} not formatted correctly for base64 data")
    try:
        return base64.b64decode(val["b64"], validate=True)
    except (binascii.Error, ValueError):
        try:  # TF Serving (absl) also accepts web-safe and unpadded base64
            text = val["b64"].translate(str.maketrans("-_", "+/"))
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise bad("Unable to base64 decode") from None


def _is_b64(val: Any) -> bool:
    return isinstance(val, dict) and len(val) == 1 and isinstance(val.get("b64"), str)


def _leaf(val: Any, dt: str) -> Any:
    """One JSON scalar converted for dtype `dt` (raises TF Serving's type errors)."""
    if dt == "DT_STRING":
        if isinstance(val, str):
            return val.encode("utf-8")
        if isinstance(val, dict):
            return _b64(val)
    elif dt in _FLOAT_KINDS:
        # Any number, as TF Serving >= 2.5 takes it (GetFloat/GetDouble; a float32 overflow becomes inf).
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            return float(val)
    elif dt in _INT_KINDS:
        if isinstance(val, int) and not isinstance(val, bool):
            return val
    elif dt == "DT_BOOL":
        if isinstance(val, bool):
            return val
    else:
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"Conversion of JSON Value: {dumps_value(val)} to type: {dt}")
    raise bad(f"JSON Value: {dumps_value(val)} Type: {_type_name(val)} is not of expected type: {dt[3:].lower()}")


def _shape_of(val: Any) -> list[int]:
    shape: list[int] = []
    while isinstance(val, list):
        shape.append(len(val))
        if not val:
            break
        val = val[0]
    return shape


def _fill(val: Any, level: int, shape: list[int], dt: str, out: list[Any]) -> None:
    if not isinstance(val, list):
        if level != len(shape):
            raise bad(f"JSON Value: {dumps_value(val)} found at incorrect level: {level + 1} in the JSON DOM. "
                      f"Expected at level: {len(shape)}")
        out.append(_leaf(val, dt))
        return
    if level >= len(shape):
        raise bad(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(val) != shape[level]:
        raise bad(f"Encountered list at unexpected size: {len(val)} at level: {level} expected size: {shape[level]}")
    for v in val:
        _fill(v, level + 1, shape, dt, out)


def _np_type(dt: str) -> Any:
    if dt in _FLOAT_KINDS:
        return _FLOAT_KINDS[dt][0]
    return _INT_KINDS.get(dt, bool if dt == "DT_BOOL" else object)


def to_array(val: Any, dt: str) -> np.ndarray:
    """A JSON value (scalar or nested lists) as an ndarray of the signature dtype `dt`."""
    if dt in _FLOAT_KINDS or dt in _INT_KINDS or dt == "DT_BOOL":
        try:  # fast path: a regular numeric array whose kind fits the dtype
            raw = np.array(val)
        except (ValueError, OverflowError):
            raw = None
        if raw is not None and raw.dtype != object and raw.size:
            kind = raw.dtype.kind
            ok = (kind in "if" if dt in _FLOAT_KINDS else kind in "iu" if dt in _INT_KINDS else kind == "b")
            if ok and not (dt in _FLOAT_KINDS and kind == "i" and np.abs(raw).max() > _FLOAT_KINDS[dt][1]):
                with np.errstate(over="ignore"):
                    arr = raw.astype(_np_type(dt))
                if dt in _INT_KINDS and not np.array_equal(arr, raw):
                    raise bad(f"JSON Value: {dumps_value(val)} Type: Number is not of expected type: {dt[3:].lower()}")
                if dt == "DT_FLOAT" and kind == "f" and np.isinf(arr).sum() != np.isinf(raw).sum():
                    raise bad(f"Cannot convert JSON value: {dumps_value(val)} to float without loss of precision.")
                return arr
    shape = _shape_of(val)
    values: list[Any] = []
    _fill(val, 0, shape, dt, values)
    if dt == "DT_STRING":
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr.reshape(shape)
    return np.array(values, dtype=_np_type(dt)).reshape(shape)


def _instances(items: list[Any], types: dict[str, str]) -> dict[str, np.ndarray]:
    if not isinstance(items[0], dict) and len(types) > 1:
        raise bad("instances is a plain list, but expecting list of objects as multiple input tensors "
                  "required as per tensorinfo_map")
    objects = isinstance(items[0], dict) and not _is_b64(items[0])
    if not objects:
        name = sorted(types)[0]
        for i, item in enumerate(items):
            if isinstance(item, dict) and not _is_b64(item):
                raise bad(f"Expecting value/list but got object at item {i} of input list")
        try:
            return {name: to_array(items, types[name])}
        except ServingError as exc:
            raise bad(_per_item_error(items, name, types[name]) or
                      f"Failed to process element: 0 of 'instances' list. Error: {exc.message}") from None
    columns: dict[str, list[Any]] = {k: [] for k in types}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or _is_b64(item):
            raise bad(f"Expecting object but got list at item {i} of input list")
        for key in item:
            if key not in types:
                raise bad(f"Failed to process element: {i} key: {key} of 'instances' list. Error: "
                          f"INVALID_ARGUMENT: JSON object: does not have named input: {key}")
        if set(item) != set(types):
            raise bad(f"Failed to process element: {i} of 'instances' list. JSON object: {dumps_value(item)} "
                      f"keys must be equal to: {','.join(sorted(types))}")
        for key, value in item.items():
            columns[key].append(value)
    result = {}
    for key, values in columns.items():
        try:
            result[key] = to_array(values, types[key])
        except ServingError as exc:
            raise bad(_per_item_error(values, key, types[key]) or
                      f"Failed to process element: 0 key: {key} of 'instances' list. Error: {exc.message}") from None
    return result


def _per_item_error(items: list[Any], name: str, dt: str) -> str | None:
    """Re-check item by item to name the first bad element as TF Serving does."""
    first_shape = None
    for i, item in enumerate(items):
        try:
            arr = to_array(item, dt)
        except ServingError as exc:
            return f"Failed to process element: {i} of 'instances' list. Error: INVALID_ARGUMENT: {exc.message}"
        if first_shape is None:
            first_shape = arr.shape
        elif arr.size != int(np.prod(first_shape)):
            return (f"Failed to process element: {i} of 'instances' list. Error: INVALID_ARGUMENT: "
                    f"Expecting tensor size: {int(np.prod(first_shape))} but got: {arr.size}")
        elif arr.shape != first_shape:
            return (f"Failed to process element: {i} of 'instances' list. Error: INVALID_ARGUMENT: "
                    f"Expecting shape [{','.join(map(str, first_shape))}] but got: [{','.join(map(str, arr.shape))}]")
    return None


def predict_inputs(doc: dict[str, Any], types: dict[str, str]) -> tuple[dict[str, np.ndarray], str]:
    """The request's input arrays and its format ("row" or "columnar")."""
    if not types:
        raise bad(f"Failed to get input map for signature: {doc.get('signature_name') or 'DEFAULT'}")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise bad(f"JSON Value: {dumps_value(doc)} Not formatted correctly expecting only one of 'inputs' or "
                  "'instances' keys to exist ")
    if has_instances:
        items = doc["instances"]
        if not isinstance(items, list):
            raise bad(f"JSON Value: {dumps_value(doc)} Excepting 'instances' to be an list/array")
        if not items:
            raise bad(f"JSON Value: {dumps_value(doc)} No values in 'instances' array")
        return _instances(items, types), "row"
    if has_inputs:
        val = doc["inputs"]
        if not isinstance(val, dict) or _is_b64(val):
            if len(types) > 1:
                raise bad("inputs is a plain value/list, but expecting an object as multiple input tensors "
                          "required as per tensorinfo_map")
            name = sorted(types)[0]
            return {name: to_array(val, types[name])}, "columnar"
        result = {}
        for name in sorted(types):
            if name not in val:
                raise bad(f"Missing named input: {name} in 'inputs' object.")
            result[name] = to_array(val[name], types[name])
        return result, "columnar"
    raise bad("Missing 'inputs' or 'instances' key")


def signature_name(doc: dict[str, Any]) -> str | None:
    return _signature_name(doc)


# ------------------------------------------------------------------ Examples (classify/regress)
def _add_feature_value(feature: Any, name: str, val: Any) -> None:
    kind = feature.WhichOneof("kind")

    def want(k: str) -> None:
        if kind not in (None, k):
            names = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}
            raise bad(f"Unexpected element type in feature: {name} expecting type: {names[kind]}")

    if val is None or isinstance(val, list):
        raise bad(f"Feature: {name} has element with unexpected JSON type: {_type_name(val)}")
    if isinstance(val, bool):
        want("int64_list")
        feature.int64_list.value.append(1 if val else 0)
    elif isinstance(val, dict):
        if not _is_b64(val):
            raise bad(f"Feature: {name} has element with unexpected JSON type: Object")
        want("bytes_list")
        feature.bytes_list.value.append(_b64(val))
    elif isinstance(val, str):
        want("bytes_list")
        feature.bytes_list.value.append(val.encode("utf-8"))
    elif isinstance(val, float):
        want("float_list")
        feature.float_list.value.append(val)
    else:
        want("int64_list")
        if val >= 2**63:
            raise bad(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.append(val)


def _example(obj: Any, example: Any) -> None:
    if not isinstance(obj, dict):
        raise bad(f"Example must be JSON object but got JSON {_type_name(obj)}")
    for name, content in obj.items():
        feature = example.features.feature[name]
        for v in content if isinstance(content, list) else [content]:
            _add_feature_value(feature, name, v)


def fill_examples(doc: dict[str, Any], request: Any, method: str) -> None:
    """Fill a Classification/RegressionRequest's signature and Input from the JSON document."""
    sig = _signature_name(doc)
    if sig is not None:
        request.model_spec.signature_name = sig
    context = "context" in doc
    if context:
        _example(doc["context"], request.input.example_list_with_context.context)
    if "examples" not in doc:
        raise bad(f"JSON Value: {dumps_value(doc)} When method is {method}, key 'examples' is expected and was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise bad(f"JSON Value: {dumps_value(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise bad(f"JSON Value: {dumps_value(doc)} 'examples' value is an empty array")
    target = request.input.example_list_with_context.examples if context else request.input.example_list.examples
    for obj in examples:
        _example(obj, target.add())


