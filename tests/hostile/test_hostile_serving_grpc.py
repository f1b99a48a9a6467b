"""Hostile gRPC requests to a real `edge-model-server` (one server for the hostile suites: the
`hostile_model_server` fixture), driven with the official `tensorflow_serving.apis` client.

Contract: every bad request gets a non-OK status and a clear message; never UNKNOWN/INTERNAL from a
Python exception, never a traceback, never a hang; and after every hostile batch the server PID is
alive and half_plus_two still answers x=2 -> 3 (REST: test_hostile_serving_rest.py).
"""
from __future__ import annotations

from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    predict_pb2,
    regression_pb2,
)

from tests.support.hostile_serving import (
    BAD_CODES,
    GRPC_TIMEOUT_S,
    MODEL,
    assert_clean_refusal,
    assert_still_serving,
    predict_request,
    tensor,
)

pytestmark = pytest.mark.slow  # the hostile server of its own (edge-model-server) and 60-example hypothesis runs

HYPO = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


ALL_DTYPES = sorted(set(types_pb2.DataType.values())) + [999, 12345]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_predict_every_dtype_on_a_float_input(hostile_model_server, hostile_stubs, dtype: int) -> None:
    tp = tensor_pb2.TensorProto(dtype=dtype)
    tp.tensor_shape.dim.add(size=1)
    tp.tensor_shape.dim.add(size=1)
    tp.tensor_content = b"\x00" * 8
    if dtype == types_pb2.DT_FLOAT:
        tp.tensor_content = b"\x00\x00\x00\x40"  # 2.0: the one dtype that is right
        reply = hostile_stubs[0].Predict(predict_request(tp), timeout=GRPC_TIMEOUT_S)
        assert reply.outputs["y"]
        return
    error = assert_clean_refusal(hostile_stubs[0].Predict, predict_request(tp), {grpc.StatusCode.INVALID_ARGUMENT})
    assert "Expects arg[0] to be float" in error.details()


def test_predict_malformed_tensors(hostile_model_server, hostile_stubs) -> None:
    cases = {
        "huge dim, no content": tensor([], [2**40]),
        "huge dim, one value": tensor([1.0], [2**40]),
        "huge dims, product overflows": tensor([1.0], [2**40, 2**40, 2**40]),
        "many dims": tensor([1.0], [2] * 40),
        "negative dim": tensor([1.0], [-1, 1]),
        "content too short": tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\x00" * 3,
                                                    tensor_shape=tensor_shape_pb2.TensorShapeProto(
                                                        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)])),
        "content too long": tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\x00" * 400,
                                                   tensor_shape=tensor_shape_pb2.TensorShapeProto(
                                                       dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)])),
        "too many values": tensor([1.0] * 10, [1, 1]),
        "unknown rank": tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT,
                                               tensor_shape=tensor_shape_pb2.TensorShapeProto(unknown_rank=True)),
        "scalar": tensor([2.0], []),
        "empty": tensor([], [0]),
        "empty 2-d": tensor([], [0, 1]),
        "wrong inner dim": tensor([1.0] * 6, [2, 3]),
        "rank 3": tensor([1.0] * 8, [2, 2, 2]),
    }
    for label, tp in cases.items():
        request = predict_request(tp)
        try:
            hostile_stubs[0].Predict(request, timeout=GRPC_TIMEOUT_S)  # TF Serving does not check shapes: some may pass
        except grpc.RpcError as error:
            assert error.code() not in BAD_CODES, (label, error.code(), error.details()[:500])
            assert "Traceback" not in (error.details() or ""), label
    assert_still_serving(hostile_model_server, hostile_stubs)


def test_predict_bad_specs(hostile_model_server, hostile_stubs) -> None:
    predict = hostile_stubs[0].Predict
    no_spec = predict_pb2.PredictRequest()
    no_spec.inputs["x"].CopyFrom(tensor([2.0], [1, 1]))
    assert_clean_refusal(predict, no_spec, {grpc.StatusCode.INVALID_ARGUMENT})
    assert "Servable" in assert_clean_refusal(predict, predict_request(name="nope"), {grpc.StatusCode.NOT_FOUND}).details()
    assert_clean_refusal(predict, predict_request(name=""), {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT})
    long_name = predict_request(name="m" * 200_000)
    assert_clean_refusal(predict, long_name, {grpc.StatusCode.NOT_FOUND})
    assert_clean_refusal(predict, predict_request(name="é\x00\n\u202e"), {grpc.StatusCode.NOT_FOUND})
    for version in (0, -1, 2**63 - 1, -(2**63), 124):
        request = predict_request()
        request.model_spec.version.value = version
        assert_clean_refusal(predict, request, {grpc.StatusCode.NOT_FOUND})
    request = predict_request()
    request.model_spec.version_label = "x" * 100_000
    assert_clean_refusal(predict, request, {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT,
                                            grpc.StatusCode.FAILED_PRECONDITION})
    request = predict_request()
    request.model_spec.signature_name = "s" * 100_000
    assert_clean_refusal(predict, request, {grpc.StatusCode.FAILED_PRECONDITION})
    assert_clean_refusal(predict, predict_request(alias="not_x"), {grpc.StatusCode.INVALID_ARGUMENT})
    two = predict_request()
    two.inputs["y"].CopyFrom(tensor([1.0], [1, 1]))
    assert_clean_refusal(predict, two, {grpc.StatusCode.INVALID_ARGUMENT})
    filtered = predict_request()
    filtered.output_filter.extend(["y", "y"])
    assert_clean_refusal(predict, filtered, {grpc.StatusCode.INVALID_ARGUMENT})
    filtered = predict_request()
    filtered.output_filter.append("nope")
    assert_clean_refusal(predict, filtered, {grpc.StatusCode.INVALID_ARGUMENT})
    assert_still_serving(hostile_model_server, hostile_stubs)


def test_garbage_bytes_instead_of_a_request(hostile_model_server, hostile_stubs) -> None:
    channel = hostile_stubs[2]
    for method in ("Predict", "Classify", "Regress", "MultiInference", "GetModelMetadata"):
        call = channel.unary_unary(f"/tensorflow.serving.PredictionService/{method}",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)
        for garbage in (b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x05abc"):
            assert_clean_refusal(call, garbage, {grpc.StatusCode.INVALID_ARGUMENT})
    assert_still_serving(hostile_model_server, hostile_stubs)


def example(**features: Any) -> example_pb2.Example:
    ex = example_pb2.Example()
    for key, value in features.items():
        feature = ex.features.feature[key]
        if isinstance(value, bytes):
            feature.bytes_list.value.append(value)
        elif isinstance(value, list) and value and isinstance(value[0], int):
            feature.int64_list.value.extend(value)
        else:
            feature.float_list.value.extend(value if isinstance(value, list) else [value])
    return ex


def test_classify_regress_malformed_examples(hostile_model_server, hostile_stubs) -> None:
    predict_stub = hostile_stubs[0]
    good = example(x=2.0)
    inputs = {
        "no examples": input_pb2.Input(),
        "empty list": input_pb2.Input(example_list=input_pb2.ExampleList()),
        "wrong feature type": input_pb2.Input(example_list=input_pb2.ExampleList(examples=[example(x=b"two")])),
        "int feature": input_pb2.Input(example_list=input_pb2.ExampleList(examples=[example(x=[2])])),
        "too many values": input_pb2.Input(example_list=input_pb2.ExampleList(examples=[example(x=[1.0] * 100)])),
        "missing feature": input_pb2.Input(example_list=input_pb2.ExampleList(examples=[example(z=1.0)])),
        "empty example": input_pb2.Input(example_list=input_pb2.ExampleList(examples=[example_pb2.Example()])),
        "context clash": input_pb2.Input(example_list_with_context=input_pb2.ExampleListWithContext(
            examples=[good], context=example(x=b"\xff" * 10))),
    }
    for label, inp in inputs.items():
        for sig, call, req_cls in (("classify_x_to_y", predict_stub.Classify, classification_pb2.ClassificationRequest),
                                   ("regress_x_to_y", predict_stub.Regress, regression_pb2.RegressionRequest)):
            request = req_cls(input=inp)
            request.model_spec.name = MODEL
            request.model_spec.signature_name = sig
            try:
                call(request, timeout=GRPC_TIMEOUT_S)
            except grpc.RpcError as error:
                assert error.code() not in BAD_CODES, (label, sig, error.code(), error.details()[:500])
                assert "Traceback" not in (error.details() or "")
    # a predict signature asked to classify, a missing spec
    request = classification_pb2.ClassificationRequest(input=input_pb2.Input(example_list=input_pb2.ExampleList(examples=[good])))
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "serving_default"
    assert_clean_refusal(predict_stub.Classify, request, {grpc.StatusCode.INVALID_ARGUMENT})
    assert_clean_refusal(predict_stub.Regress, regression_pb2.RegressionRequest(), {grpc.StatusCode.INVALID_ARGUMENT})
    assert_still_serving(hostile_model_server, hostile_stubs)


def test_multi_inference_bad_tasks(hostile_model_server, hostile_stubs) -> None:
    call = hostile_stubs[0].MultiInference
    good_input = input_pb2.Input(example_list=input_pb2.ExampleList(examples=[example(x=2.0)]))

    def request(*tasks: tuple[str, str, str]) -> inference_pb2.MultiInferenceRequest:
        req = inference_pb2.MultiInferenceRequest(input=good_input)
        for name, sig, method in tasks:
            task = req.tasks.add()
            task.model_spec.name = name
            task.model_spec.signature_name = sig
            task.method_name = method
        return req

    classify, regress = "tensorflow/serving/classify", "tensorflow/serving/regress"
    assert_clean_refusal(call, request(), {grpc.StatusCode.INVALID_ARGUMENT})
    assert_clean_refusal(call, request(("", "classify_x_to_y", classify)), {grpc.StatusCode.INVALID_ARGUMENT})
    assert_clean_refusal(call, request((MODEL, "classify_x_to_y", classify), ("other", "regress_x_to_y", regress)),
                         {grpc.StatusCode.INVALID_ARGUMENT})
    assert_clean_refusal(call, request((MODEL, "classify_x_to_y", classify), (MODEL, "classify_x_to_y", classify)),
                         {grpc.StatusCode.INVALID_ARGUMENT})
    assert_clean_refusal(call, request((MODEL, "classify_x_to_y", "tensorflow/serving/predict")),
                         {grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INVALID_ARGUMENT})
    assert_clean_refusal(call, request((MODEL, "nope", classify)), {grpc.StatusCode.INVALID_ARGUMENT})
    assert_clean_refusal(call, request((MODEL, "regress_x_to_y", classify)), {grpc.StatusCode.INVALID_ARGUMENT})
    assert_clean_refusal(call, request(("nope", "classify_x_to_y", classify)), {grpc.StatusCode.NOT_FOUND})
    many = request(*[(MODEL, f"sig{i}", classify) for i in range(2000)])
    assert_clean_refusal(call, many, {grpc.StatusCode.INVALID_ARGUMENT})
    no_input = request((MODEL, "classify_x_to_y", classify))
    no_input.ClearField("input")
    assert_clean_refusal(call, no_input, {grpc.StatusCode.INVALID_ARGUMENT})
    assert_still_serving(hostile_model_server, hostile_stubs)


def test_metadata_and_status_bad_requests(hostile_model_server, hostile_stubs) -> None:
    meta = hostile_stubs[0].GetModelMetadata
    assert_clean_refusal(meta, get_model_metadata_pb2.GetModelMetadataRequest(), {grpc.StatusCode.INVALID_ARGUMENT})
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def", "x" * 10_000])
    req.model_spec.name = MODEL
    assert_clean_refusal(meta, req, {grpc.StatusCode.INVALID_ARGUMENT})
    status = hostile_stubs[1].GetModelStatus
    assert_clean_refusal(status, get_model_status_pb2.GetModelStatusRequest(), {grpc.StatusCode.INVALID_ARGUMENT})
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "n" * 100_000
    assert_clean_refusal(status, req, {grpc.StatusCode.NOT_FOUND})
    req.model_spec.name = MODEL
    req.model_spec.version.value = -5
    assert_clean_refusal(status, req, {grpc.StatusCode.NOT_FOUND})
    assert_still_serving(hostile_model_server, hostile_stubs)


dims = st.lists(st.one_of(st.integers(min_value=0, max_value=4), st.sampled_from([2**31, 2**40, 2**62, -1, -(2**40)])),
                max_size=6)


@HYPO
@given(dtype=st.sampled_from(ALL_DTYPES + [types_pb2.DT_FLOAT] * 20), shape=dims, unknown_rank=st.booleans(),
       content=st.one_of(st.just(b""), st.binary(max_size=64)),
       values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=20),
       ints=st.lists(st.integers(min_value=-(2**31), max_value=2**31 - 1), max_size=5),
       strings=st.lists(st.binary(max_size=20), max_size=3))
def test_random_tensor_protos(hostile_model_server, hostile_stubs, dtype, shape, unknown_rank, content, values, ints, strings) -> None:
    tp = tensor_pb2.TensorProto(dtype=dtype, tensor_content=content)
    tp.tensor_shape.unknown_rank = unknown_rank
    tp.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape)
    tp.float_val.extend(values)
    tp.int_val.extend(ints)
    tp.string_val.extend(strings)
    try:
        reply = hostile_stubs[0].Predict(predict_request(tp), timeout=GRPC_TIMEOUT_S)
    except grpc.RpcError as error:
        assert error.code() not in BAD_CODES, (error.code(), (error.details() or "")[:500])
        assert error.details() and "Traceback" not in error.details()
    else:
        assert "y" in reply.outputs
    assert hostile_model_server.alive()


def test_random_tensor_protos_left_the_server_serving(hostile_model_server, hostile_stubs) -> None:
    assert_still_serving(hostile_model_server, hostile_stubs)
