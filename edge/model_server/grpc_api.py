"""gRPC PredictionService and ModelService on grpcio, without generated stubs.

Handlers are registered with ``grpc.method_handlers_generic_handler`` for every method in
``edge.serving.protos.RPCS``, with the private pool's message classes as (de)serializers, so the
wire format is TF Serving's own. Requests run in the server's thread pool; deadlines are checked
before inference starts; every error leaves as a gRPC status with TF Serving's code and message.
"""
from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from edge.model_server.handlers import ServingCore
from edge.model_server.status import ServingError
from edge.serving.protos import RPCS, messages

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 512 * 1024 * 1024  # TF Serving uses INT32_MAX; 512 MiB is plenty for image batches
# the status message travels in a header (grpc-message; clients refuse headers over 8-16 KiB): messages that
# echo a client's input (a 100 KB model name) are shortened so the client still gets the status
MAX_STATUS_BYTES = 1024  # grpc_status_util.cc kErrorMessageLimit


class _Undecodable:
    """What the deserializer hands over when the request bytes are not the expected protobuf."""

    def __init__(self, type_name: str, reason: str) -> None:
        self.type_name = type_name
        self.reason = reason


def _safe_deserializer(cls: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except Exception as exc:  # google.protobuf.message.DecodeError and friends
            return _Undecodable(cls.DESCRIPTOR.full_name, str(exc) or type(exc).__name__)
    return parse


def _short(message: str) -> str:
    """TF Serving's ToGRPCStatus: at most 1024 bytes of the message, then ``...TRUNCATED``."""
    data = message.encode("utf-8")
    if len(data) <= MAX_STATUS_BYTES:
        return message
    return data[:MAX_STATUS_BYTES].decode("utf-8", "ignore") + "...TRUNCATED"

# TF Serving (server.cc) sets "" (gRPC's default service), "ModelService" and "PredictionService"; the fully
# qualified names are there too for probes configured with them
HEALTH_SERVICES = ("", "PredictionService", "ModelService", "tensorflow.serving.PredictionService",
                   "tensorflow.serving.ModelService")

# method name -> (core operation name, takes deadline, counts as an inference request)
_OPERATIONS: dict[str, tuple[str, bool, bool]] = {
    "Predict": ("predict", True, True),
    "Classify": ("classify", True, True),
    "Regress": ("regress", True, True),
    "MultiInference": ("multi_inference", True, True),
    "GetModelMetadata": ("get_model_metadata", False, False),
    "GetModelStatus": ("get_model_status", False, False),
    "HandleReloadConfigRequest": ("reload_config", False, False),
}


def _model_name(request: Any) -> str:
    if isinstance(request, _Undecodable):
        return ""
    if hasattr(request, "model_spec"):
        return str(request.model_spec.name)
    tasks = getattr(request, "tasks", None)
    return tasks[0].model_spec.name if tasks else ""


def _behavior(core: ServingCore, method: str) -> Callable[[Any, grpc.ServicerContext], Any]:
    operation, takes_deadline, inference = _OPERATIONS[method]
    fn = getattr(core, operation)

    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        start = time.monotonic()
        status = "OK"
        try:
            if isinstance(request, _Undecodable):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"the request is not a valid {request.type_name} message: {request.reason}")
            if takes_deadline:
                remaining = context.time_remaining()
                deadline = None if remaining is None else start + remaining
                if deadline is not None and remaining <= 0:
                    raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
                return fn(request, deadline)
            return fn(request)
        except ServingError as exc:
            code = exc.code if isinstance(exc.code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
            status = code.name
            logger.debug("%s failed: %s", method, exc.message)
            context.abort(code, _short(exc.message))
        except Exception as exc:  # never let a bug take the connection down without a status
            status = "INTERNAL"
            logger.exception("%s failed unexpectedly", method)
            context.abort(grpc.StatusCode.INTERNAL, _short(f"{type(exc).__name__}: {exc}"))
        finally:
            if inference:
                core.metrics.record_request(_model_name(request), method, "GRPC", status, time.monotonic() - start)

    return handle


def build_handlers(core: ServingCore) -> list[grpc.GenericRpcHandler]:
    pb = messages()
    services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for path, (service, request_name, response_name) in RPCS.items():
        method = path.rsplit("/", 1)[-1]
        if method not in _OPERATIONS:
            logger.warning("gRPC method %s has no handler; it will answer UNIMPLEMENTED", path)
            continue
        req_cls, resp_cls = getattr(pb, request_name), getattr(pb, response_name)
        full_service = path.strip("/").rsplit("/", 1)[0] if path.count("/") >= 2 else service
        services.setdefault(full_service, {})[method] = grpc.unary_unary_rpc_method_handler(
            _behavior(core, method),
            request_deserializer=_safe_deserializer(req_cls),
            response_serializer=resp_cls.SerializeToString,
        )
    return [grpc.method_handlers_generic_handler(name, methods) for name, methods in services.items()]


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class GrpcServer:
    """The gRPC listener(s): TCP on host:port (port 0 = none) and optionally a UNIX socket."""

    def __init__(self, core: ServingCore, *, host: str = "127.0.0.1", port: int = 8500,
                 socket_path: str = "", channel_arguments: list[tuple[str, Any]] | None = None,
                 max_workers: int = 0, health_check: bool = False) -> None:
        """`health_check`: serve grpc.health.v1.Health (--enable_grpc_healthcheck_service): SERVING for the
        server (""), PredictionService and ModelService (short and qualified names) while it runs."""
        options: dict[str, Any] = {
            "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
            "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
            "grpc.so_reuseport": 0,
        }
        options.update(dict(channel_arguments or []))
        workers = max_workers or max(8, 4 * (os.cpu_count() or 1))
        self._pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc")
        self.server = grpc.server(self._pool, handlers=build_handlers(core), options=list(options.items()))
        self.health: health.HealthServicer | None = None
        if health_check:
            self.health = health.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
            for service in HEALTH_SERVICES:
                self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.addresses: list[str] = []
        self.socket_path = socket_path
        if port:
            address = _address(host, port)
            self._bind(address)
        if socket_path:
            try:
                if stat.S_ISSOCK(os.stat(socket_path).st_mode):
                    os.unlink(socket_path)  # a stale socket from an earlier run
            except FileNotFoundError:
                pass
            self._bind(f"unix:{socket_path}")

    def _bind(self, address: str) -> None:
        try:
            bound = self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen for gRPC on {address}: {exc}") from None
        if not bound and not address.startswith("unix:"):
            raise OSError(f"cannot listen for gRPC on {address} (address in use or not available)")
        self.addresses.append(address)

    def start(self) -> None:
        self.server.start()
        for address in self.addresses:
            if address.startswith("unix:"):
                logger.info("Running gRPC ModelServer at UNIX socket %s ...", address[5:])
            else:
                logger.info("Running gRPC ModelServer at %s ...", address)

    def stop(self, grace_s: float = 5.0) -> None:
        if self.health is not None:  # NOT_SERVING for every service while draining
            self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait(grace_s + 1)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.socket_path:
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass
