"""TF Serving's HTTP/REST API on the standard library's ThreadingHTTPServer.

Routes (case-insensitive, as ``http_rest_api_util.cc`` matches them)::

    GET  /v1/models/<m>[/versions/<n>|/labels/<l>]            model status
    GET  /v1/models/<m>[/versions/<n>|/labels/<l>]/metadata   signature defs
    POST /v1/models/<m>[/versions/<n>|/labels/<l>]:predict|:classify|:regress
    GET  <prometheus path>                                    metrics (with --monitoring_config_file)

Errors are ``{"error": "..."}`` with TF Serving's status -> HTTP mapping. The stdlib server is
enough here (no new dependency, one thread per connection); on top of it this module caps the
number of connections, the body size (413) and the time a client may take to send its body (408),
and runs requests on a bounded worker pool with ``--rest_api_timeout_in_ms`` (504 when exceeded).
"""
from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import grpc

from edge.model_server import rest_json, rest_output
from edge.model_server.handlers import ServingCore
from edge.model_server.status import ServingError
from edge.serving.protos import messages
from edge.serving.tensors import from_ndarray, to_ndarray

logger = logging.getLogger(__name__)

_PREDICT_RE = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
                         re.IGNORECASE)
_STATUS_RE = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
                        re.IGNORECASE)
_V1_RE = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)

LINGER_S = 2.0  # after refusing a request mid-body: how long, and how much, of the rest to discard
LINGER_BYTES = 8 << 20

HTTP_STATUS = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_API = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RestApi:
    """Transport-independent REST dispatch: (method, path, body) -> (HTTP status, content type, body)."""

    def __init__(self, core: ServingCore, *, timeout_ms: int = 5000, prometheus_path: str | None = None,
                 num_threads: int = 0) -> None:
        self.core = core
        self.pb = messages()
        self.timeout_s = timeout_ms / 1000.0 if timeout_ms > 0 else None
        self.prometheus_path = prometheus_path
        self.pool = futures.ThreadPoolExecutor(max_workers=num_threads or 16, thread_name_prefix="rest")

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        path = path.split("?", 1)[0]
        if self.prometheus_path and path == self.prometheus_path:
            if method not in ("GET", "HEAD"):
                return 400, "text/plain", f"Unexpected method: {method}".encode()
            return 200, "text/plain; version=0.0.4", self.core.metrics.render().encode()
        if not _V1_RE.fullmatch(path):
            return 404, "application/json", rest_output.error_json(f"Not found: {method} {path}").encode()
        deadline = time.monotonic() + self.timeout_s if self.timeout_s else None
        job = self.pool.submit(self._process, method, path, body, deadline)
        try:
            status, text = job.result(timeout=self.timeout_s)
        except futures.TimeoutError:
            job.cancel()
            status, text = 504, rest_output.error_json("Deadline exceeded: request took longer than "
                                                     f"--rest_api_timeout_in_ms={int((self.timeout_s or 0) * 1000)}")
        return status, "application/json", text.encode("utf-8")

    def _process(self, method: str, path: str, body: bytes, deadline: float | None) -> tuple[int, str]:
        start = time.monotonic()
        api, model, code = None, "", grpc.StatusCode.OK
        try:
            if deadline is not None and time.monotonic() > deadline:
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            match = (_PREDICT_RE.fullmatch(path) if method == "POST"
                     else _STATUS_RE.fullmatch(path) if method == "GET" else None)
            if match is None:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Malformed request: {method} {path}")
            name, version, label, verb = match.groups()
            model = unquote(name or "")
            spec = self.pb.ModelSpec(name=model)
            if version:
                if int(version) >= 2**63:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"Failed to convert version: {version} to numeric.")
                spec.version.value = int(version)
            if label:
                spec.version_label = unquote(label)
            if method == "POST":
                api = _API[verb.lower()]
                text = getattr(self, f"_{verb.lower()}")(spec, body, deadline)
            else:
                if not model:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing model name in request.")
                text = self._metadata(spec) if verb else self._status(spec)
            return 200, text
        except ServingError as exc:
            code = exc.code if isinstance(exc.code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
            logger.debug("REST %s %s failed: %s", method, path, exc.message)
            return HTTP_STATUS.get(code, 500), rest_output.error_json(exc.message)
        except Exception as exc:  # a bug must not kill the server: answer 500 and log it
            code = grpc.StatusCode.INTERNAL
            logger.exception("REST %s %s failed unexpectedly", method, path)
            return 500, rest_output.error_json(f"{type(exc).__name__}: {exc}")
        finally:
            if api:
                self.core.metrics.record_request(model, api, "REST", code.name, time.monotonic() - start)

    # ------------------------------------------------------------ operations
    def _predict(self, spec: Any, body: bytes, deadline: float | None) -> str:
        doc = rest_json.parse_body(body)
        request = self.pb.PredictRequest()
        request.model_spec.CopyFrom(spec)
        sig = rest_json.signature_name(doc)
        if sig is not None:
            request.model_spec.signature_name = sig
        types = self.core.signature_input_types(request.model_spec)
        names = {alias: self.pb.DataType.Name(dt) for alias, dt in types.items()}
        arrays, fmt = rest_json.predict_inputs(doc, names)
        for alias, arr in arrays.items():
            request.inputs[alias].CopyFrom(from_ndarray(arr, types[alias]))
        response = self.core.predict(request, deadline)
        outputs = {alias: to_ndarray(t) for alias, t in response.outputs.items()}
        return rest_output.predictions_json(outputs, fmt)

    def _classify(self, spec: Any, body: bytes, deadline: float | None) -> str:
        doc = rest_json.parse_body(body)
        request = self.pb.ClassificationRequest()
        request.model_spec.CopyFrom(spec)
        rest_json.fill_examples(doc, request, "classify")
        return rest_output.classification_json(self.core.classify(request, deadline).result)

    def _regress(self, spec: Any, body: bytes, deadline: float | None) -> str:
        doc = rest_json.parse_body(body)
        request = self.pb.RegressionRequest()
        request.model_spec.CopyFrom(spec)
        rest_json.fill_examples(doc, request, "regress")
        return rest_output.regression_json(self.core.regress(request, deadline).result)

    def _status(self, spec: Any) -> str:
        request = self.pb.GetModelStatusRequest()
        request.model_spec.CopyFrom(spec)
        return rest_output.proto_json(self.core.get_model_status(request))

    def _metadata(self, spec: Any) -> str:
        request = self.pb.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.CopyFrom(spec)
        response = self.core.get_model_metadata(request)
        sdm = self.pb.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sdm)
        doc = {"model_spec": json.loads(rest_output.proto_json(response.model_spec)),
               "metadata": {"signature_def": json.loads(rest_output.proto_json(sdm))}}
        return json.dumps(doc, indent=1, ensure_ascii=False)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "edge-model-server"
    sys_version = ""
    api: RestApi
    cors = False
    max_body = 256 * 1024 * 1024
    read_timeout_s = 30.0
    timeout = 30.0  # socket timeout for every read/write: idle and slow clients are dropped

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, ctype: str, body: bytes, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if self.cors:
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Methods", "POST, GET")
            self.send_header("Access-Control-Allow-Headers", "Content-Type")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_exact(self, n: int, deadline: float) -> bytes:
        chunks, left = [], n
        while left > 0:
            if time.monotonic() > deadline:
                raise _Reject(408, "Timed out reading the request body")
            chunk = self.rfile.read1(min(left, 1 << 20)) if hasattr(self.rfile, "read1") else self.rfile.read(min(left, 1 << 20))
            if not chunk:
                raise _Reject(400, "Request body ended before Content-Length bytes")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _body(self) -> bytes:
        deadline = time.monotonic() + self.read_timeout_s
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";", 1)[0].strip() or b"x", 16)
                except ValueError:
                    raise _Reject(400, "Malformed chunked request body") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > self.max_body:
                    raise _Reject(413, f"Request body exceeds the limit of {self.max_body} bytes")
                parts.append(self._read_exact(size, deadline))
                self._read_exact(2, deadline)
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise _Reject(400, f"Bad Content-Length: {length!r}") from None
        if n < 0:
            raise _Reject(400, f"Bad Content-Length: {length!r}")
        if n > self.max_body:
            raise _Reject(413, f"Request body of {n} bytes exceeds the limit of {self.max_body} bytes "
                               "(--rest_api_max_body_bytes)")
        return self._read_exact(n, deadline)

    def _discard_rest_of_request(self) -> None:
        """After refusing a request mid-body: close our side and throw away what the client is still
        sending (at most LINGER_BYTES for LINGER_S), so it can finish its send and read the error;
        closing at once would reset the connection under a client still writing (a lingering close)."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.25)
            deadline, drained = time.monotonic() + LINGER_S, 0
            while drained < LINGER_BYTES and time.monotonic() < deadline:
                chunk = self.connection.recv(1 << 16)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:  # the client went away or stopped sending: nothing more to do
            pass

    def _dispatch(self) -> None:
        try:
            body = self._body() if self.command in ("POST", "PUT", "PATCH") else b""
        except _Reject as exc:
            self._send(exc.status, "application/json", rest_output.error_json(exc.message).encode(), close=True)
            self._discard_rest_of_request()
            return
        except (TimeoutError, ConnectionError):
            self.close_connection = True
            return
        status, ctype, payload = self.api.handle(self.command, self.path, body)
        self._send(status, ctype, payload)

    def do_OPTIONS(self) -> None:
        if self.cors:
            self._send(204, "application/json", b"")
        else:
            self._dispatch()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    max_connections = 256

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(self.max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            logger.warning("REST connection from %s refused: %d connections open", client_address, self.max_connections)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class RestServer:
    """The HTTP listener for :class:`RestApi`."""

    def __init__(self, api: RestApi, *, host: str = "127.0.0.1", port: int = 8501, cors: bool = False,
                 max_body_bytes: int = 256 * 1024 * 1024, read_timeout_s: float = 30.0) -> None:
        handler = type("Handler", (_Handler,), {"api": api, "cors": cors, "max_body": max_body_bytes,
                                                "read_timeout_s": read_timeout_s,
                                                "timeout": max(read_timeout_s, 5.0)})
        server_cls: type[_Server] = _Server
        if ":" in host:
            server_cls = type("Server6", (_Server,), {"address_family": socket.AF_INET6})
        self.api = api
        self.httpd = server_cls((host.strip("[]"), port), handler)
        self.address = f"{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="rest-accept", daemon=True)

    def start(self) -> None:
        self._thread.start()
        logger.info("Exporting HTTP/REST API at:%s ...", self.address)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.api.pool.shutdown(wait=False, cancel_futures=True)
