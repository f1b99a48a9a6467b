"""Helpers for the hostile-request suites against edge-model-server (tests/hostile/test_hostile_serving_*.py).

The server is the `hostile_model_server` fixture (half_plus_two as `default`, REST body limit
`HOSTILE_MAX_BODY`); `hostile_stubs` are (PredictionService, ModelService, channel) to it. A bad
request must get a non-OK gRPC status that is not UNKNOWN/INTERNAL, or a 4xx with ``{"error": ...}``,
a clear message, never a traceback; `assert_still_serving` checks the known answer x=2 -> 3.
"""
from __future__ import annotations

import http.client
import ipaddress
import json
from typing import Any

import grpc
import numpy as np
import psutil
import pytest
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from tests.support.servables import HOSTILE_MAX_BODY, HOSTILE_MODEL

MODEL = HOSTILE_MODEL
MAX_BODY = HOSTILE_MAX_BODY
GRPC_TIMEOUT_S = 60.0
BAD_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.OK}


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


def assert_still_serving(server: Any, stubs) -> None:
    """The server process is alive and the known answer still comes back (gRPC and REST)."""
    assert server.alive(), server.log()[-3000:]
    reply = stubs[0].Predict(predict_request(), timeout=GRPC_TIMEOUT_S)
    assert list(reply.outputs["y"].float_val) == [3.0] or reply.outputs["y"].tensor_content, reply
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


def rest(server: Any, method: str, path: str, body: bytes | None = None,
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


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets in LISTEN state that process `pid` holds."""
    return [(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN]


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)
