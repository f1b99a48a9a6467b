"""numpy <-> tensorflow.TensorProto, without importing TensorFlow.

Decoding follows TensorFlow's own rules (C++ `Tensor::FromProto`, Python `tf.make_ndarray`):
`tensor_content` holds the raw little-endian bytes and must be exactly shape x itemsize long;
otherwise the typed `*_val` field of the dtype holds the values in row-major order, and when it
holds fewer values than the shape needs the last value is repeated (so one value fills a shape)
and no value at all means zeros.

Encoding has TF Serving's two forms (``Tensor::AsProtoField`` / ``AsProtoTensorContent``):

- :func:`to_proto_field` writes every value into the dtype's typed field (``float_val``,
  ``int_val``, ``half_val``...): what TF Serving's Predict answers by default, and what clients
  that read ``response.outputs[...].float_val`` expect. Half and bfloat16 travel as their 16-bit
  patterns in ``half_val``; complex values as interleaved (real, imaginary) pairs; the shape is
  always present, also for scalars.
- :func:`to_proto_content` packs the raw little-endian bytes into ``tensor_content`` (strings as
  TensorFlow's string list: every length as a varint, then the bytes): what TF Serving answers with
  ``--enable_serialization_as_tensor_content``, and the cheap form for requests (:func:`from_ndarray`,
  which keeps strings in ``string_val`` so every client can read them).

Numeric tensors are converted with `np.frombuffer` / `tobytes` only: a 19 MB float32 image batch
costs one copy each way. Arrays returned by `to_ndarray` for `tensor_content` tensors are
read-only views of the message's bytes; call `.copy()` before writing into one.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import numpy as np

from edge.errors import TensorConversionError
from edge.serving.protos import messages

__all__ = [
    "TensorConversionError",
    "datatype_of",
    "dtype_name",
    "from_ndarray",
    "numpy_dtype",
    "to_ndarray",
    "to_proto_content",
    "to_proto_field",
]

logger = logging.getLogger(__name__)

# A typed `*_val` field may hold fewer values than its shape (TF pads with the last value), so a few
# bytes on the wire could ask for terabytes; refuse expansions beyond what a request may carry.
MAX_EXPANDED_BYTES = 512 * 1024 * 1024


@functools.cache
def _bfloat16() -> np.dtype | None:
    """ml_dtypes' bfloat16 (TF's own dependency), imported on the first bfloat16 tensor: ~6 MB RSS and
    ~0.6 s that a gateway, which never sends one, does not pay."""
    try:
        import ml_dtypes  # optional: only bfloat16 tensors need it
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    bfloat16: np.dtype = np.dtype(ml_dtypes.bfloat16)
    return bfloat16


# tensorflow.DataType numbers (types.proto; fixed by the wire format).
DT_INVALID, DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = range(8)
DT_COMPLEX64, DT_INT64, DT_BOOL = 8, 9, 10
DT_BFLOAT16, DT_UINT16, DT_COMPLEX128, DT_HALF = 14, 17, 18, 19
DT_UINT32, DT_UINT64 = 22, 23

_NUMPY_BY_DT: dict[int, np.dtype] = {
    DT_FLOAT: np.dtype(np.float32),
    DT_DOUBLE: np.dtype(np.float64),
    DT_INT32: np.dtype(np.int32),
    DT_UINT8: np.dtype(np.uint8),
    DT_INT16: np.dtype(np.int16),
    DT_INT8: np.dtype(np.int8),
    DT_STRING: np.dtype(object),
    DT_COMPLEX64: np.dtype(np.complex64),
    DT_INT64: np.dtype(np.int64),
    DT_BOOL: np.dtype(np.bool_),
    DT_UINT16: np.dtype(np.uint16),
    DT_COMPLEX128: np.dtype(np.complex128),
    DT_HALF: np.dtype(np.float16),
    DT_UINT32: np.dtype(np.uint32),
    DT_UINT64: np.dtype(np.uint64),
}

# numpy (kind, itemsize) -> DataType, for datatype_of.
_DT_BY_KIND: dict[tuple[str, int], int] = {
    ("f", 2): DT_HALF,
    ("f", 4): DT_FLOAT,
    ("f", 8): DT_DOUBLE,
    ("i", 1): DT_INT8,
    ("i", 2): DT_INT16,
    ("i", 4): DT_INT32,
    ("i", 8): DT_INT64,
    ("u", 1): DT_UINT8,
    ("u", 2): DT_UINT16,
    ("u", 4): DT_UINT32,
    ("u", 8): DT_UINT64,
    ("b", 1): DT_BOOL,
    ("c", 8): DT_COMPLEX64,
    ("c", 16): DT_COMPLEX128,
}

# The typed repeated field that carries each dtype's values when tensor_content is empty.
_VAL_FIELD: dict[int, str] = {
    DT_FLOAT: "float_val",
    DT_DOUBLE: "double_val",
    DT_INT32: "int_val",
    DT_INT16: "int_val",
    DT_INT8: "int_val",
    DT_UINT8: "int_val",
    DT_UINT16: "int_val",
    DT_INT64: "int64_val",
    DT_BOOL: "bool_val",
    DT_HALF: "half_val",
    DT_BFLOAT16: "half_val",
    DT_COMPLEX64: "scomplex_val",
    DT_COMPLEX128: "dcomplex_val",
    DT_UINT32: "uint32_val",
    DT_UINT64: "uint64_val",
}
# numpy dtype the repeated field's values are read as before the cast to the tensor's dtype.
_VAL_READ_AS: dict[str, np.dtype] = {
    "float_val": np.dtype(np.float32),
    "double_val": np.dtype(np.float64),
    "int_val": np.dtype(np.int64),  # int32 on the wire; wide enough for any sender's value
    "int64_val": np.dtype(np.int64),
    "bool_val": np.dtype(np.bool_),
    "half_val": np.dtype(np.int64),
    "scomplex_val": np.dtype(np.float32),
    "dcomplex_val": np.dtype(np.float64),
    "uint32_val": np.dtype(np.uint32),
    "uint64_val": np.dtype(np.uint64),
}


def dtype_name(dt: int) -> str:
    """'DT_FLOAT' for 1; 'DT_<number>' for a number the enum does not know."""
    try:
        return str(messages().DataType.Name(dt))
    except ValueError:
        return f"DT_{dt}"


def numpy_dtype(dt: int) -> np.dtype:
    """The numpy dtype of a tensorflow.DataType (object for DT_STRING)."""
    found = _NUMPY_BY_DT.get(dt) if dt != DT_BFLOAT16 else _bfloat16()
    if found is not None:
        return found
    if dt == DT_BFLOAT16:
        raise TensorConversionError("DT_BFLOAT16 needs the ml_dtypes package (pip install ml_dtypes)")
    if dt == DT_INVALID:
        raise TensorConversionError("tensor dtype is not set (DT_INVALID)")
    raise TensorConversionError(
        f"Unsupported tensor type: {dtype_name(dt)} (supported: "
        f"{', '.join(dtype_name(d) for d in sorted([*_NUMPY_BY_DT, DT_BFLOAT16]))})"
    )


def datatype_of(array: Any) -> int:
    """The tensorflow.DataType number for an array's dtype (DT_STRING for bytes/str/object)."""
    dtype = np.asarray(array).dtype if not isinstance(array, np.dtype) else array
    if dtype.kind in "SUO":
        return DT_STRING
    if dtype.name == "bfloat16":  # ml_dtypes' (imported by whoever made the array)
        return DT_BFLOAT16
    found = _DT_BY_KIND.get((dtype.kind, dtype.itemsize))
    if found is None:
        raise TensorConversionError(f"numpy dtype {dtype} has no TensorFlow DataType")
    return found


def _shape_debug_string(tensor_shape: Any) -> str:
    if tensor_shape.unknown_rank:
        return "<unknown>"
    return "[" + ",".join(str(d.size) for d in tensor_shape.dim) + "]"


def _shape_of(tp: Any) -> tuple[int, ...]:
    tensor_shape = tp.tensor_shape
    if tensor_shape.unknown_rank:
        if len(tensor_shape.dim):
            raise TensorConversionError("An unknown shape must not have any dimensions set.")
        raise TensorConversionError("tensor_shape has unknown rank; a tensor needs a fully defined shape")
    shape = tuple(int(d.size) for d in tensor_shape.dim)
    if any(size < 0 for size in shape):
        raise TensorConversionError(
            f"Shape {_shape_debug_string(tensor_shape)} has negative dimensions "
            "(unknown dimensions (-1) are only allowed in signatures, not in tensors)"
        )
    return shape


def _little_endian(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype


def _from_content(tp: Any, dt: int, dtype: np.dtype, shape: tuple[int, ...], count: int) -> np.ndarray:
    if dt == DT_STRING:
        raise TensorConversionError(
            "DT_STRING tensors in tensor_content are not supported; send the strings in string_val"
        )
    content = tp.tensor_content
    expected = count * dtype.itemsize
    if len(content) != expected:
        raise TensorConversionError(
            f"Input size was {len(content)} and expected {expected}: tensor_content of a "
            f"{dtype_name(dt)} tensor with shape {_shape_debug_string(tp.tensor_shape)} must hold "
            f"{count} x {dtype.itemsize} bytes"
        )
    array = np.frombuffer(content, dtype=_little_endian(dtype)).reshape(shape)
    return array if array.dtype == dtype else array.astype(dtype)


def _fill(values: np.ndarray, dt: int, dtype: np.dtype, shape: tuple[int, ...], count: int) -> np.ndarray:
    """TF's rule for typed fields: pad with the last value, zeros when empty, error when too many."""
    if values.size == count:
        return values.reshape(shape)
    if values.size == 0:
        return np.zeros(shape, dtype=dtype) if dt != DT_STRING else np.full(shape, b"", dtype=object)
    if values.size > count:
        raise TensorConversionError(
            f"{dtype_name(dt)} tensor has {values.size} values but its shape "
            f"{list(shape)} holds {count} elements"
        )
    padded = np.empty(count, dtype=dtype)
    padded[: values.size] = values
    padded[values.size :] = values[-1]
    return padded.reshape(shape)


def _from_typed_field(tp: Any, dt: int, dtype: np.dtype) -> np.ndarray:
    if dt == DT_STRING:
        values = np.empty(len(tp.string_val), dtype=object)
        values[:] = list(tp.string_val)
        return values
    field = _VAL_FIELD[dt]
    repeated = getattr(tp, field)
    raw = np.array(repeated, dtype=_VAL_READ_AS[field])  # upb's containers convert in C (~200x fromiter)
    if field == "half_val":  # 16-bit patterns carried in int32
        return raw.astype(np.uint16).view(dtype)
    if field in ("scomplex_val", "dcomplex_val"):
        if raw.size % 2:
            raise TensorConversionError(f"{field} has an odd number of values ({raw.size}); expected pairs")
        return raw.view(dtype)
    return raw.astype(dtype, copy=False)


def to_ndarray(tp: Any) -> np.ndarray:
    """The ndarray of a tensorflow.TensorProto (ours or any with the same fields).

    Raises TensorConversionError for an unsupported dtype, an unknown or negative dimension,
    a tensor_content whose length does not match the shape, or more values than the shape holds.
    """
    dt = int(tp.dtype)
    dtype = numpy_dtype(dt)
    shape = _shape_of(tp)
    count = math.prod(shape)
    if tp.tensor_content:
        return _from_content(tp, dt, dtype, shape, count)
    if count * max(dtype.itemsize, 1) > MAX_EXPANDED_BYTES:
        raise TensorConversionError(
            f"{dtype_name(dt)} tensor with shape {_shape_debug_string(tp.tensor_shape)} holds {count} elements, "
            f"more than the {MAX_EXPANDED_BYTES} bytes a request may expand to"
        )
    return _fill(_from_typed_field(tp, dt, dtype), dt, dtype, shape, count)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview, np.bytes_)):
        return bytes(value)
    raise TensorConversionError(f"a DT_STRING tensor holds bytes or str, not {type(value).__name__}")


def from_ndarray(array: Any, dtype: int | None = None) -> Any:
    """A tensorflow.TensorProto for an array (or anything np.asarray accepts).

    Numeric arrays become packed little-endian `tensor_content`; bytes/str/object arrays become
    `string_val` (str is UTF-8 encoded). `dtype` (a DataType number) converts the values first.
    Note that numpy 'S' arrays drop trailing NUL bytes; keep binary blobs (JPEG...) in object arrays.
    """
    arr = np.asarray(array)
    dt = datatype_of(arr) if dtype is None else int(dtype)
    target = numpy_dtype(dt)
    tp = messages().TensorProto()
    tp.dtype = dt
    dims = tp.tensor_shape.dim
    for size in arr.shape:
        dims.add().size = size
    if dt == DT_STRING:
        tp.string_val.extend([_as_bytes(v) for v in arr.reshape(-1).tolist()])
        return tp
    if arr.dtype.kind in "SUO":
        raise TensorConversionError(f"cannot store a {arr.dtype} array as {dtype_name(dt)}")
    try:
        data = np.ascontiguousarray(arr, dtype=_little_endian(target))
    except (TypeError, ValueError) as exc:
        raise TensorConversionError(f"cannot convert {arr.dtype} to {dtype_name(dt)}: {exc}") from None
    tp.tensor_content = data.tobytes()
    return tp


# -- TF Serving's response encodings ---------------------------------------------------------------

# TensorProto field numbers (tensor.proto) of the typed fields written as packed bytes by hand:
# one tag + length + the little-endian values is what protobuf itself writes for a packed repeated
# fixed-width field, without building a Python list of a million floats first.
_PACKED_FIELD: dict[str, tuple[int, np.dtype]] = {"float_val": (5, np.dtype("<f4")), "double_val": (6, np.dtype("<f8")),
                 "scomplex_val": (9, np.dtype("<f4")), "dcomplex_val": (12, np.dtype("<f8")),
                 "bool_val": (11, np.dtype(np.uint8))}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _prepare(array: Any, dtype: int | None) -> tuple[np.ndarray, int, Any]:
    arr = np.asarray(array)
    dt = datatype_of(arr) if dtype is None else int(dtype)
    tp = messages().TensorProto()
    tp.dtype = dt
    tp.tensor_shape.SetInParent()  # present also for a scalar, as TensorShape::AsProto writes it
    dims = tp.tensor_shape.dim
    for size in arr.shape:
        dims.add().size = size
    return arr, dt, tp


def _typed(arr: np.ndarray, dt: int) -> np.ndarray:
    """`arr` converted to the numpy dtype of `dt` (numbers only)."""
    if arr.dtype.kind in "SUO":
        raise TensorConversionError(f"cannot store a {arr.dtype} array as {dtype_name(dt)}")
    try:
        return np.ascontiguousarray(arr, dtype=numpy_dtype(dt))
    except (TypeError, ValueError) as exc:
        raise TensorConversionError(f"cannot convert {arr.dtype} to {dtype_name(dt)}: {exc}") from None


def to_proto_field(array: Any, dtype: int | None = None) -> Any:
    """A TensorProto with every value in the dtype's typed field (TF's ``Tensor::AsProtoField``)."""
    arr, dt, tp = _prepare(array, dtype)
    if dt == DT_STRING:
        tp.string_val.extend([_as_bytes(v) for v in arr.reshape(-1).tolist()])
        return tp
    field = _VAL_FIELD.get(dt)
    if field is None:
        numpy_dtype(dt)  # raises the clear "unsupported dtype" error
        raise TensorConversionError(f"{dtype_name(dt)} has no typed field")
    values = _typed(arr, dt).reshape(-1)
    if values.size == 0:
        return tp
    packed = _PACKED_FIELD.get(field)
    if packed is not None:
        number, wire = packed
        if field in ("scomplex_val", "dcomplex_val"):
            payload = values.view(values.real.dtype).astype(wire, copy=False).tobytes()
        else:
            payload = values.astype(wire, copy=False).tobytes()
        tp.MergeFromString(_varint(number << 3 | 2) + _varint(len(payload)) + payload)
        return tp
    if field == "half_val":  # half and bfloat16: their 16-bit patterns, one per int32
        getattr(tp, field).extend(values.view(np.uint16).astype(np.int64).tolist())
    else:
        getattr(tp, field).extend(values.tolist())
    return tp


def to_proto_content(array: Any, dtype: int | None = None) -> Any:
    """A TensorProto with the values packed in ``tensor_content`` (TF's ``Tensor::AsProtoTensorContent``).

    Strings too: every length as a varint, then all the bytes (``port::EncodeStringList``). C++
    readers decode that; ``tf.make_ndarray`` cannot, exactly as against TF Serving with
    ``--enable_serialization_as_tensor_content``."""
    arr, dt, tp = _prepare(array, dtype)
    if dt == DT_STRING:
        items = [_as_bytes(v) for v in arr.reshape(-1).tolist()]
        tp.tensor_content = b"".join(_varint(len(item)) for item in items) + b"".join(items)
        return tp
    tp.tensor_content = _typed(arr, dt).astype(_little_endian(numpy_dtype(dt)), copy=False).tobytes()
    return tp
