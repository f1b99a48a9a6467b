"""Hostile REST requests to a real `edge-model-server` (the `hostile_model_server` fixture), over raw
sockets and http.client: every bad request gets a 4xx with ``{"error": ...}`` and a clear message,
oversized bodies are refused unread, a slow client neither blocks others nor stays forever; after
each batch the server still answers x=2 -> 3 (gRPC: test_hostile_serving_grpc.py).
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.hostile_serving import MAX_BODY, MODEL, assert_rest_error, assert_still_serving, rest

pytestmark = pytest.mark.slow  # the hostile server of its own (edge-model-server) and 60-example hypothesis runs

HYPO = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_rest_malformed_bodies(hostile_model_server, hostile_stubs) -> None:
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
        status, doc = rest(hostile_model_server, "POST", path, body, {"Content-Type": "application/json"})
        assert_rest_error(status, doc)
    for verb in ("classify", "regress"):
        for body in (b'{"examples": 5}', b'{"examples": [{"x": {"b64": "**"}}]}', b'{"examples": [[1]]}',
                     b'{"examples": [{"x": [[1]]}]}', b'{"context": 1, "examples": []}', b'{}'):
            status, doc = rest(hostile_model_server, "POST", f"/v1/models/{MODEL}:{verb}", body)
            assert_rest_error(status, doc)
    assert_still_serving(hostile_model_server, hostile_stubs)


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10))
json_doc = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(["instances", "inputs", "signature_name", "x", "b64", "examples", "context"]), inner, max_size=3),
    max_leaves=20)


@HYPO
@given(doc=json_doc, verb=st.sampled_from(["predict", "classify", "regress"]))
def test_random_json_bodies(hostile_model_server, doc, verb) -> None:
    status, reply = rest(hostile_model_server, "POST", f"/v1/models/{MODEL}:{verb}", json.dumps(doc).encode())
    assert status in (200, 400), (status, reply, doc)
    assert isinstance(reply, dict)
    if status == 400:
        assert isinstance(reply.get("error"), str) and "Traceback" not in reply["error"]


def test_rest_paths_methods_and_protocols(hostile_model_server, hostile_stubs) -> None:
    assert_rest_error(*rest(hostile_model_server, "GET", "/nope"), allowed=(404,))
    assert_rest_error(*rest(hostile_model_server, "GET", "/v1/models/nope"), allowed=(404,))
    assert_rest_error(*rest(hostile_model_server, "GET", "/v1/models/" + "n" * 50_000), allowed=(404, 400, 414, 431))
    assert_rest_error(*rest(hostile_model_server, "DELETE", f"/v1/models/{MODEL}"))
    assert_rest_error(*rest(hostile_model_server, "PUT", f"/v1/models/{MODEL}:predict", b"{}"))
    assert_rest_error(*rest(hostile_model_server, "POST", f"/v1/models/{MODEL}/versions/99999999999999999999999:predict",
                            b'{"instances": [[1.0]]}'), allowed=(400, 404))
    assert_rest_error(*rest(hostile_model_server, "POST", f"/v1/models/{MODEL}:explode", b"{}"))
    assert_rest_error(*rest(hostile_model_server, "POST", f"/v1/models/{MODEL}:predict", b"{}", {"Content-Length": "-5"}),
                      allowed=(400,))
    # HTTP/1.0, no Host header, connection closed by the hostile_model_server after the reply
    with socket.create_connection(("127.0.0.1", hostile_model_server.rest_port), timeout=30) as sock:
        sock.sendall(f"GET /v1/models/{MODEL} HTTP/1.0\r\n\r\n".encode())
        data = b"".join(iter(lambda: sock.recv(65536), b""))
    assert data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0] and b"AVAILABLE" in data
    # keep-alive: several requests, good and bad, over one HTTP/1.1 connection
    conn = http.client.HTTPConnection("127.0.0.1", hostile_model_server.rest_port, timeout=30)
    try:
        for body, want in ((b'{"instances": [[2.0]]}', 200), (b"{", 400), (b'{"instances": [[2.0]]}', 200)):
            conn.request("POST", f"/v1/models/{MODEL}:predict", body=body)
            response = conn.getresponse()
            assert response.status == want and json.loads(response.read())
    finally:
        conn.close()
    # a method the stdlib hostile_model_server does not know, and a garbage request line
    for raw in (b"BREW /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x02\x00garbage\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", hostile_model_server.rest_port), timeout=30) as sock:
            sock.sendall(raw)
            first = sock.recv(65536)
        # an unparseable request line gets the stdlib's HTTP/0.9-style answer: no status line, the 400 page
        assert (first.startswith(b"HTTP/1.") and (b" 400 " in first or b" 501 " in first)) \
            or b"Error code: 400" in first, first[:300]
    assert_still_serving(hostile_model_server, hostile_stubs)


def test_rest_oversized_body_is_refused_without_reading_it(hostile_model_server, hostile_stubs) -> None:
    with socket.create_connection(("127.0.0.1", hostile_model_server.rest_port), timeout=30) as sock:
        sock.sendall((f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
                      f"Content-Length: {MAX_BODY + 1}\r\n\r\n").encode() + b"{" * 100)
        reply = b"".join(iter(lambda: sock.recv(65536), b""))  # the hostile_model_server answers and closes at once
    assert b" 413 " in reply.split(b"\r\n", 1)[0], reply[:300]
    assert b"exceeds the limit" in reply
    # chunked upload over the cap
    with socket.create_connection(("127.0.0.1", hostile_model_server.rest_port), timeout=30) as sock:
        head = f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        sock.sendall(head + f"{MAX_BODY + 10:x}\r\n".encode() + b"{" * 100)
        reply = b"".join(iter(lambda: sock.recv(65536), b""))
    assert b" 413 " in reply.split(b"\r\n", 1)[0], reply[:300]
    # ~1.1 MiB really sent: refused, and a body just under the cap is still parsed
    status, doc = rest(hostile_model_server, "POST", f"/v1/models/{MODEL}:predict", b" " * (MAX_BODY + 1000))
    assert_rest_error(status, doc, allowed=(413,))
    status, doc = rest(hostile_model_server, "POST", f"/v1/models/{MODEL}:predict",
                       b'{"instances": [[2.0]]}' + b" " * (MAX_BODY - 100))
    assert (status, doc) == (200, {"predictions": [[3.0]]})
    assert_still_serving(hostile_model_server, hostile_stubs)


def test_rest_slow_client_does_not_block_others_and_times_out(hostile_model_server, hostile_stubs) -> None:
    body = b'{"instances": [[2.0]]}'
    sock = socket.create_connection(("127.0.0.1", hostile_model_server.rest_port), timeout=60)
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
            pass  # the hostile_model_server hung up on us: that is the point

    sender = threading.Thread(target=dribble, daemon=True)
    sender.start()
    try:
        time.sleep(1.5)  # the slow request is in progress ...
        assert_still_serving(hostile_model_server, hostile_stubs)  # ... and others are served meanwhile
        sock.settimeout(60)
        data = b"".join(iter(lambda: sock.recv(65536), b""))  # bounded by the hostile_model_server's read timeout
        reply.append(data)
    finally:
        stop.set()
        sender.join(10)
        sock.close()
    assert b" 408 " in reply[0].split(b"\r\n", 1)[0], reply[0][:300]
    assert b"Timed out" in reply[0]
    assert_still_serving(hostile_model_server, hostile_stubs)
