"""edge.serving.tensors against TensorFlow's own tf.make_tensor_proto / tf.make_ndarray."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

from edge.errors import TensorConversionError
from edge.serving.protos import messages
from edge.serving.tensors import datatype_of, dtype_name, from_ndarray, numpy_dtype, to_ndarray
from tests.support.paths import REPO

pb = messages()
RNG = np.random.default_rng(7)


def _sample(dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "b":
        return RNG.integers(0, 2, size=(2, 3)).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return RNG.integers(info.min, info.max, size=(2, 3), dtype=dtype, endpoint=True)
    if dtype.kind == "c":
        return (RNG.standard_normal((2, 3)) + 1j * RNG.standard_normal((2, 3))).astype(dtype)
    return (RNG.standard_normal((2, 3)) * 100).astype(dtype)


NUMERIC = [
    np.float32, np.float64, np.float16, tf.bfloat16.as_numpy_dtype, np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64, np.bool_, np.complex64, np.complex128,
]


def _ours(official_proto) -> object:
    return pb.TensorProto.FromString(official_proto.SerializeToString())


def _theirs(our_proto) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto.FromString(our_proto.SerializeToString())


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
def test_numeric_round_trips_with_tensorflow(dtype) -> None:
    x = _sample(np.dtype(dtype))
    got = to_ndarray(_ours(tf.make_tensor_proto(x)))
    assert got.dtype == x.dtype and got.shape == x.shape
    assert np.array_equal(got, x)
    back = tf.make_ndarray(_theirs(from_ndarray(x)))
    assert back.dtype == x.dtype and np.array_equal(back, x)
    assert tf.as_dtype(x.dtype).as_datatype_enum == datatype_of(x)


@pytest.mark.parametrize("shape", [(), (0,), (1,), (4, 0, 2)])
def test_scalar_and_empty_shapes(shape) -> None:
    x = np.full(shape, 2.5, dtype=np.float32)
    assert np.array_equal(to_ndarray(_ours(tf.make_tensor_proto(x))), x)
    back = tf.make_ndarray(_theirs(from_ndarray(x)))
    assert back.shape == shape and np.array_equal(back, x)


def test_strings_and_jpeg_bytes() -> None:
    jpeg = tf.io.encode_jpeg(tf.constant(RNG.integers(0, 255, (8, 8, 3), dtype=np.uint8))).numpy()
    assert jpeg[:2] == b"\xff\xd8"
    x = np.array([jpeg, b"tail\x00\x00", b""], dtype=object)
    got = to_ndarray(_ours(tf.make_tensor_proto(x)))
    assert got.dtype == object and list(got) == list(x)
    proto = from_ndarray(x)
    assert proto.dtype == pb.DT_STRING and list(proto.string_val) == list(x)
    back = tf.make_ndarray(_theirs(proto))
    assert list(back) == list(x)
    assert tf.io.decode_jpeg(back[0]).shape == (8, 8, 3)
    text = from_ndarray(np.array([["ä", "b"]]))
    assert list(text.string_val) == ["ä".encode(), b"b"] and [d.size for d in text.tensor_shape.dim] == [1, 2]


def _typed(dt: int, field: str, values: list, shape: list[int]):
    proto = pb.TensorProto(dtype=dt)
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    getattr(proto, field).extend(values)
    return proto


TYPED = [
    (pb.DT_FLOAT, "float_val", [1.5, -2.0, 3.25, 4.0], [2, 2]),
    (pb.DT_DOUBLE, "double_val", [1e300, -2.5], [2]),
    (pb.DT_INT32, "int_val", [1, -2, 2**31 - 1], [3]),
    (pb.DT_UINT8, "int_val", [0, 255, 7], [3]),
    (pb.DT_INT16, "int_val", [-32768, 5], [2]),
    (pb.DT_INT64, "int64_val", [2**62, -(2**63)], [2]),
    (pb.DT_BOOL, "bool_val", [True, False, True], [3]),
    (pb.DT_HALF, "half_val", [int(v) for v in np.array([1.5, -0.25, 65504], np.float16).view(np.uint16)], [3]),
    (pb.DT_STRING, "string_val", [b"a", b"\xff\xd8\x00"], [2]),
    (pb.DT_COMPLEX64, "scomplex_val", [1.0, 2.0, 3.0, -4.0], [2]),
    (pb.DT_UINT32, "uint32_val", [0, 2**32 - 1], [2]),
    (pb.DT_UINT64, "uint64_val", [2**64 - 1], [1]),
]


@pytest.mark.parametrize("dt,field,values,shape", TYPED, ids=[f"{dtype_name(t[0])}-{t[1]}" for t in TYPED])
def test_typed_val_fields_match_tensorflow(dt, field, values, shape) -> None:
    proto = _typed(dt, field, values, shape)
    got = to_ndarray(proto)
    expected = tf.make_ndarray(_theirs(proto))
    assert got.dtype == expected.dtype and got.shape == expected.shape == tuple(shape)
    assert got.tolist() == expected.tolist()


@pytest.mark.parametrize(
    "dt,field,values,shape",
    [
        (pb.DT_FLOAT, "float_val", [7.0], [2, 3]),  # one value fills the shape
        (pb.DT_INT32, "int_val", [1, 2], [5]),  # the last value is repeated
        (pb.DT_STRING, "string_val", [b"x"], [3]),
        (pb.DT_HALF, "half_val", [int(np.float16(0.5).view(np.uint16))], [2, 2]),
        (pb.DT_INT64, "int64_val", [], [2]),  # no values: zeros
    ],
)
def test_broadcast_like_tensorflow(dt, field, values, shape) -> None:
    proto = _typed(dt, field, values, shape)
    got = to_ndarray(proto)
    expected = tf.make_ndarray(_theirs(proto))
    assert got.shape == tuple(shape) and got.tolist() == expected.tolist()


def test_large_float_batch_round_trip() -> None:
    x = RNG.random((32, 224, 224, 3), dtype=np.float32)
    proto = from_ndarray(x)
    assert len(proto.tensor_content) == x.nbytes and not proto.float_val
    got = to_ndarray(pb.TensorProto.FromString(proto.SerializeToString()))
    assert got.shape == x.shape and np.array_equal(got, x)


def test_from_ndarray_with_explicit_dtype() -> None:
    proto = from_ndarray([1, 2, 3], dtype=pb.DT_FLOAT)
    assert proto.dtype == pb.DT_FLOAT
    assert tf.make_ndarray(_theirs(proto)).tolist() == [1.0, 2.0, 3.0]


def test_dtype_tables_agree_with_tensorflow() -> None:
    for dt in (1, 2, 3, 4, 5, 6, 8, 9, 10, 14, 17, 18, 19, 22, 23):
        assert numpy_dtype(dt) == np.dtype(tf.as_dtype(dt).as_numpy_dtype), dtype_name(dt)
        assert dtype_name(dt) == pb.DataType.Name(dt)
    assert numpy_dtype(pb.DT_STRING) == np.dtype(object)
    assert dtype_name(1) == "DT_FLOAT" and dtype_name(999) == "DT_999"


def test_tensor_content_size_mismatch() -> None:
    proto = pb.TensorProto(dtype=pb.DT_FLOAT, tensor_content=b"\0" * 8)
    proto.tensor_shape.dim.add().size = 3
    with pytest.raises(TensorConversionError, match=r"Input size was 8 and expected 12: .*DT_FLOAT.*\[3\]"):
        to_ndarray(proto)


def test_negative_and_unknown_dims() -> None:
    proto = _typed(pb.DT_FLOAT, "float_val", [1.0], [2, -1])
    with pytest.raises(TensorConversionError, match=r"Shape \[2,-1\] has negative dimensions"):
        to_ndarray(proto)
    unknown = pb.TensorProto(dtype=pb.DT_FLOAT)
    unknown.tensor_shape.unknown_rank = True
    with pytest.raises(TensorConversionError, match="unknown rank"):
        to_ndarray(unknown)


@pytest.mark.parametrize("dt", ["DT_VARIANT", "DT_RESOURCE", "DT_QINT8", "DT_INVALID"])
def test_unsupported_dtypes(dt) -> None:
    proto = pb.TensorProto(dtype=pb.DataType.Value(dt))
    with pytest.raises(TensorConversionError, match=dt if dt != "DT_INVALID" else "not set"):
        to_ndarray(proto)


def test_too_many_values_and_bad_inputs() -> None:
    with pytest.raises(TensorConversionError, match=r"has 3 values but its shape \[2\] holds 2"):
        to_ndarray(_typed(pb.DT_FLOAT, "float_val", [1.0, 2.0, 3.0], [2]))
    with pytest.raises(TensorConversionError, match="no TensorFlow DataType"):
        from_ndarray(np.array(["2020-01-01"], dtype="datetime64[D]"))
    with pytest.raises(TensorConversionError, match="bytes or str, not int"):
        from_ndarray(np.array([1, b"a"], dtype=object))


def test_no_tensorflow_import() -> None:
    code = (
        "import sys, numpy as np\n"
        "from edge.serving.tensors import from_ndarray, to_ndarray\n"
        "assert to_ndarray(from_ndarray(np.ones((2, 2), np.float32))).sum() == 4\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
