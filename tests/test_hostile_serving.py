"""Hostile gRPC and REST requests to a real `edge-model-server` (started once for this module).

Contract: every bad request gets a non-OK status (gRPC) or a 4xx with ``{"error": ...}`` (REST) and a
clear message; never UNKNOWN/INTERNAL from a Python exception, never a traceback, never a hang; and
after every hostile batch the server PID is alive and half_plus_two still answers x=2 -> 3.
Driven with the official `tensorflow_serving.apis` client (gRPC) and raw sockets/http.client (REST).
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
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
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.fixtures.model_server import TESTDATA, ModelServerProcess, launch

MODEL = "default"  # half_plus_two (TF1): serving_default x float [-1,1] -> y; classify_x_to_y; regress_x_to_y
MAX_BODY = 1 << 20
READ_TIMEOUT_S = 3
GRPC_TIMEOUT_S = 60.0
BAD_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.OK}
HYPO = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServerProcess]:
    work = tmp_path_factory.mktemp("hostile-server")
    proc = launch([f"--model_name={MODEL}", f"--model_base_path={TESTDATA / 'saved_model_half_plus_two_cpu'}",
                   f"--rest_api_max_body_bytes={MAX_BODY}", f"--rest_api_read_timeout_seconds={READ_TIMEOUT_S}",
                   "--rest_api_timeout_in_ms=30000"], work)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def stubs(server: ModelServerProcess):
    channel = grpc.insecure_channel(server.grpc_target, options=[("grpc.max_receive_message_length", 64 << 20),
                                                                 ("grpc.max_send_message_length", 64 << 20)])
    yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
           model_service_pb2_grpc.ModelServiceStub(channel), channel)
    channel.close()


def tensor(values: list[float], shape: list[int], dtype: int = types_pb2.DT_FLOAT) -> tensor_pb2.TensorProto:
    tp = tensor_pb2.TensorProto(dtype=dtype)
    tp.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape)
    tp.float_val.extend(values)
    return tp


def predict_request(tp: tensor_pb2.TensorProto | None = None, name: str = MODEL, alias: str = "x") -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs[alias].CopyFrom(tp if tp is not None else tensor([2.0], [1, 1]))
    return request


def assert_still_serving(server: ModelServerProcess, stubs) -> None:
    """The server process is alive and the known answer still comes back (gRPC and REST)."""
    assert server.alive(), server.log()[-3000:]
    reply = stubs[0].Predict(predict_request(), timeout=GRPC_TIMEOUT_S)
    assert list(reply.outputs["y"].float_val) == [3.0] or reply.outputs["y"].tensor_content, reply
    import numpy as np
    y = reply.outputs["y"]
    value = list(y.float_val) or np.frombuffer(y.tensor_content, dtype="<f4").tolist()
    assert value == [3.0]
    status, doc = rest(server, "POST", f"/v1/models/{MODEL}:predict", b'{"instances": [[2.0]]}')
    assert (status, doc) == (200, {"predictions": [[3.0]]})


def assert_clean_refusal(call, request: Any, allowed: set[grpc.StatusCode] | None = None) -> grpc.RpcError:
    """`call(request)` fails with a clear, non-internal status."""
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=GRPC_TIMEOUT_S)
    error = info.value
    code, details = error.code(), error.details() or ""
    assert code not in BAD_CODES, (code, details[:500])
    if allowed is not None:
        assert code in allowed, (code, details[:500])
    assert details and "Traceback" not in details and 'File "' not in details, details[:500]
    assert len(details) <= 64 << 10
    return error


# --- gRPC ---------------------------------------------------------------------------------------

ALL_DTYPES = sorted(set(types_pb2.DataType.values())) + [999, 12345]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_predict_every_dtype_on_a_float_input(server, stubs, dtype: int) -> None:
    tp = tensor_pb2.TensorProto(dtype=dtype)
    tp.tensor_shape.dim.add(size=1)
    tp.tensor_shape.dim.add(size=1)
    tp.tensor_content = b"\x00" * 8
    if dtype == types_pb2.DT_FLOAT:
        tp.tensor_content = b"\x00\x00\x00\x40"  # 2.0: the one dtype that is right
        reply = stubs[0].Predict(predict_request(tp), timeout=GRPC_TIMEOUT_S)
        assert reply.outputs["y"]
        return
    error = assert_clean_refusal(stubs[0].Predict, predict_request(tp), {grpc.StatusCode.INVALID_ARGUMENT})
    assert "Expects arg[0] to be float" in error.details()


def test_predict_malformed_tensors(server, stubs) -> None:
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
            stubs[0].Predict(request, timeout=GRPC_TIMEOUT_S)  # TF Serving does not check shapes: some may pass
        except grpc.RpcError as error:
            assert error.code() not in BAD_CODES, (label, error.code(), error.details()[:500])
            assert "Traceback" not in (error.details() or ""), label
    assert_still_serving(server, stubs)


def test_predict_bad_specs(server, stubs) -> None:
    predict = stubs[0].Predict
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
    assert_still_serving(server, stubs)


def test_garbage_bytes_instead_of_a_request(server, stubs) -> None:
    channel = stubs[2]
    for method in ("Predict", "Classify", "Regress", "MultiInference", "GetModelMetadata"):
        call = channel.unary_unary(f"/tensorflow.serving.PredictionService/{method}",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)
        for garbage in (b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x05abc"):
            assert_clean_refusal(call, garbage, {grpc.StatusCode.INVALID_ARGUMENT})
    assert_still_serving(server, stubs)


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


def test_classify_regress_malformed_examples(server, stubs) -> None:
    predict_stub = stubs[0]
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
    assert_still_serving(server, stubs)


def test_multi_inference_bad_tasks(server, stubs) -> None:
    call = stubs[0].MultiInference
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
    assert_still_serving(server, stubs)


def test_metadata_and_status_bad_requests(server, stubs) -> None:
    meta = stubs[0].GetModelMetadata
    assert_clean_refusal(meta, get_model_metadata_pb2.GetModelMetadataRequest(), {grpc.StatusCode.INVALID_ARGUMENT})
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def", "x" * 10_000])
    req.model_spec.name = MODEL
    assert_clean_refusal(meta, req, {grpc.StatusCode.INVALID_ARGUMENT})
    status = stubs[1].GetModelStatus
    assert_clean_refusal(status, get_model_status_pb2.GetModelStatusRequest(), {grpc.StatusCode.INVALID_ARGUMENT})
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "n" * 100_000
    assert_clean_refusal(status, req, {grpc.StatusCode.NOT_FOUND})
    req.model_spec.name = MODEL
    req.model_spec.version.value = -5
    assert_clean_refusal(status, req, {grpc.StatusCode.NOT_FOUND})
    assert_still_serving(server, stubs)


dims = st.lists(st.one_of(st.integers(min_value=0, max_value=4), st.sampled_from([2**31, 2**40, 2**62, -1, -(2**40)])),
                max_size=6)


@HYPO
@given(dtype=st.sampled_from(ALL_DTYPES + [types_pb2.DT_FLOAT] * 20), shape=dims, unknown_rank=st.booleans(),
       content=st.one_of(st.just(b""), st.binary(max_size=64)),
       values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=20),
       ints=st.lists(st.integers(min_value=-(2**31), max_value=2**31 - 1), max_size=5),
       strings=st.lists(st.binary(max_size=20), max_size=3))
def test_random_tensor_protos(server, stubs, dtype, shape, unknown_rank, content, values, ints, strings) -> None:
    tp = tensor_pb2.TensorProto(dtype=dtype, tensor_content=content)
    tp.tensor_shape.unknown_rank = unknown_rank
    tp.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape)
    tp.float_val.extend(values)
    tp.int_val.extend(ints)
    tp.string_val.extend(strings)
    try:
        reply = stubs[0].Predict(predict_request(tp), timeout=GRPC_TIMEOUT_S)
    except grpc.RpcError as error:
        assert error.code() not in BAD_CODES, (error.code(), (error.details() or "")[:500])
        assert error.details() and "Traceback" not in error.details()
    else:
        assert "y" in reply.outputs
    assert server.alive()


def test_random_tensor_protos_left_the_server_serving(server, stubs) -> None:
    assert_still_serving(server, stubs)


# --- REST ---------------------------------------------------------------------------------------

def rest(server: ModelServerProcess, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw) if raw else None
    except ValueError:
        return response.status, raw


def assert_rest_error(status: int, doc: Any, allowed: tuple[int, ...] = (400,)) -> None:
    assert status in allowed, (status, doc)
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], doc
    assert "Traceback" not in doc["error"]


def test_rest_malformed_bodies(server, stubs) -> None:
    path = f"/v1/models/{MODEL}:predict"
    bodies = [
        b"", b"   ", b"{", b"nul\x00l", b"\xff\xfe\x00", b"[1,2]", b'"str"', b"42", b"null", b"true",
        b'{"instances": 5}', b'{"instances": "x"}', b'{"instances": {}}', b'{"instances": [[1.0], [1.0, 2.0]]}',
        b'{"instances": [[1.0], 2.0]}', b'{"instances": [[1.0]], "inputs": [[1.0]]}', b'{"inputs": {"nope": [1]}}',
        b'{"instances": [{"b64": "%%%"}]}', b'{"instances": [{"b64": 5}]}', b'{"instances": [{"x": {"b64": "!!"}}]}',
        b'{"instances": [[1e400]]}', b'{"instances": [[' + b"9" * 5000 + b"]]}",
        b'{"instances": [["a string"]]}', b'{"instances": [[true]]}', b'{"instances": [[null]]}',
        b'{"signature_name": 5, "instances": [[1.0]]}', b'{"signature_name": "nope", "instances": [[1.0]]}',
        b'{"instances": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", b'{"a": ' * 5000 + b"1" + b"}" * 5000,
        b'{"instances": [], "extra": 1}', b'{"instances": []}',
    ]
    for body in bodies:
        status, doc = rest(server, "POST", path, body, {"Content-Type": "application/json"})
        assert_rest_error(status, doc)
    for verb in ("classify", "regress"):
        for body in (b'{"examples": 5}', b'{"examples": [{"x": {"b64": "**"}}]}', b'{"examples": [[1]]}',
                     b'{"examples": [{"x": [[1]]}]}', b'{"context": 1, "examples": []}', b'{}'):
            status, doc = rest(server, "POST", f"/v1/models/{MODEL}:{verb}", body)
            assert_rest_error(status, doc)
    assert_still_serving(server, stubs)


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10))
json_doc = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(["instances", "inputs", "signature_name", "x", "b64", "examples", "context"]), inner, max_size=3),
    max_leaves=20)


@HYPO
@given(doc=json_doc, verb=st.sampled_from(["predict", "classify", "regress"]))
def test_random_json_bodies(server, doc, verb) -> None:
    status, reply = rest(server, "POST", f"/v1/models/{MODEL}:{verb}", json.dumps(doc).encode())
    assert status in (200, 400), (status, reply, doc)
    assert isinstance(reply, dict)
    if status == 400:
        assert isinstance(reply.get("error"), str) and "Traceback" not in reply["error"]


def test_rest_paths_methods_and_protocols(server, stubs) -> None:
    assert_rest_error(*rest(server, "GET", "/nope"), allowed=(404,))
    assert_rest_error(*rest(server, "GET", "/v1/models/nope"), allowed=(404,))
    assert_rest_error(*rest(server, "GET", "/v1/models/" + "n" * 50_000), allowed=(404, 400, 414, 431))
    assert_rest_error(*rest(server, "DELETE", f"/v1/models/{MODEL}"))
    assert_rest_error(*rest(server, "PUT", f"/v1/models/{MODEL}:predict", b"{}"))
    assert_rest_error(*rest(server, "POST", f"/v1/models/{MODEL}/versions/99999999999999999999999:predict",
                            b'{"instances": [[1.0]]}'), allowed=(400, 404))
    assert_rest_error(*rest(server, "POST", f"/v1/models/{MODEL}:explode", b"{}"))
    assert_rest_error(*rest(server, "POST", f"/v1/models/{MODEL}:predict", b"{}", {"Content-Length": "-5"}),
                      allowed=(400,))
    # HTTP/1.0, no Host header, connection closed by the server after the reply
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as sock:
        sock.sendall(f"GET /v1/models/{MODEL} HTTP/1.0\r\n\r\n".encode())
        data = b"".join(iter(lambda: sock.recv(65536), b""))
    assert data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0] and b"AVAILABLE" in data
    # keep-alive: several requests, good and bad, over one HTTP/1.1 connection
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        for body, want in ((b'{"instances": [[2.0]]}', 200), (b"{", 400), (b'{"instances": [[2.0]]}', 200)):
            conn.request("POST", f"/v1/models/{MODEL}:predict", body=body)
            response = conn.getresponse()
            assert response.status == want and json.loads(response.read())
    finally:
        conn.close()
    # a method the stdlib server does not know, and a garbage request line
    for raw in (b"BREW /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x02\x00garbage\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as sock:
            sock.sendall(raw)
            first = sock.recv(65536)
        # an unparseable request line gets the stdlib's HTTP/0.9-style answer: no status line, the 400 page
        assert (first.startswith(b"HTTP/1.") and (b" 400 " in first or b" 501 " in first)) \
            or b"Error code: 400" in first, first[:300]
    assert_still_serving(server, stubs)


def test_rest_oversized_body_is_refused_without_reading_it(server, stubs) -> None:
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as sock:
        sock.sendall((f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
                      f"Content-Length: {MAX_BODY + 1}\r\n\r\n").encode() + b"{" * 100)
        reply = b"".join(iter(lambda: sock.recv(65536), b""))  # the server answers and closes at once
    assert b" 413 " in reply.split(b"\r\n", 1)[0], reply[:300]
    assert b"exceeds the limit" in reply
    # chunked upload over the cap
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as sock:
        head = f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        sock.sendall(head + f"{MAX_BODY + 10:x}\r\n".encode() + b"{" * 100)
        reply = b"".join(iter(lambda: sock.recv(65536), b""))
    assert b" 413 " in reply.split(b"\r\n", 1)[0], reply[:300]
    # ~1.1 MiB really sent: refused, and a body just under the cap is still parsed
    status, doc = rest(server, "POST", f"/v1/models/{MODEL}:predict", b" " * (MAX_BODY + 1000))
    assert_rest_error(status, doc, allowed=(413,))
    status, doc = rest(server, "POST", f"/v1/models/{MODEL}:predict",
                       b'{"instances": [[2.0]]}' + b" " * (MAX_BODY - 100))
    assert (status, doc) == (200, {"predictions": [[3.0]]})
    assert_still_serving(server, stubs)


def test_rest_slow_client_does_not_block_others_and_times_out(server, stubs) -> None:
    body = b'{"instances": [[2.0]]}'
    sock = socket.create_connection(("127.0.0.1", server.rest_port), timeout=60)
    reply: list[bytes] = []
    stop = threading.Event()

    def dribble() -> None:
        try:
            sock.sendall((f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n").encode())
            for byte in body[:-1]:  # one byte a second, never the last one
                if stop.wait(1.0):
                    break
                sock.sendall(bytes([byte]))
        except OSError:
            pass  # the server hung up on us: that is the point

    sender = threading.Thread(target=dribble, daemon=True)
    sender.start()
    try:
        time.sleep(1.5)  # the slow request is in progress ...
        assert_still_serving(server, stubs)  # ... and others are served meanwhile
        sock.settimeout(60)
        data = b"".join(iter(lambda: sock.recv(65536), b""))  # bounded by the server's read timeout
        reply.append(data)
    finally:
        stop.set()
        sender.join(10)
        sock.close()
    assert b" 408 " in reply[0].split(b"\r\n", 1)[0], reply[0][:300]
    assert b"Timed out" in reply[0]
    assert_still_serving(server, stubs)


# --- who may connect ----------------------------------------------------------------------------

def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets in LISTEN state that process `pid` holds."""
    import psutil

    return [(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN]


def test_ports_bind_to_loopback_by_default(server) -> None:
    found = listening_sockets(server.pid)
    ports = {port for _, port in found}
    assert {server.port, server.rest_port} <= ports, found
    assert all(is_loopback(ip) for ip, _ in found), found


def is_loopback(ip: str) -> bool:
    import ipaddress

    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def test_ports_bind_where_configured(model_server_factory) -> None:
    """Exposing the ports is an explicit choice: --grpc_host / --rest_api_host."""
    server = model_server_factory(f"--model_name={MODEL}", f"--model_base_path={TESTDATA / 'saved_model_half_plus_two_cpu'}",
                                  "--grpc_host=0.0.0.0", "--rest_api_host=0.0.0.0")
    found = dict((port, ip) for ip, port in listening_sockets(server.pid))
    assert found[server.port] in ("0.0.0.0", "::") and found[server.rest_port] in ("0.0.0.0", "::"), found
