"""Command-line flags of ``edge-model-server``, spelled as ``tensorflow_model_server`` spells them.

A command written for TF Serving runs with only the program name changed::

    edge-model-server --port=9000 --model_name=image_classifier --model_base_path=/models/ic

Both ``--flag=value`` and ``--flag value`` are accepted; booleans as ``--flag`` or
``--flag=true|false|1|0``. An unknown flag or a bad value raises :class:`FlagError` whose message
is one line naming the flag (and the closest known flag); ``main`` prints it and exits with 2.

One deliberate difference: the gRPC and REST listeners bind to ``--grpc_host`` / ``--rest_api_host``,
both 127.0.0.1 by default (TF Serving binds 0.0.0.0). Pass ``--grpc_host=0.0.0.0`` to expose them.
Flags of TF Serving that change nothing here (GPU memory, XLA, profiler...) are accepted and logged
as ignored, so existing command lines keep working; the few that would change security or semantics
in ways this server cannot honour (``--ssl_config_file``, ``--platform_config_file``) are refused.
"""
from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from edge.errors import FlagError

PROG = "edge-model-server"



@dataclass
class ServerFlags:
    port: int = 8500
    grpc_host: str = "127.0.0.1"
    grpc_socket_path: str = ""
    grpc_channel_arguments: str = ""
    grpc_max_threads: int = 0
    rest_api_port: int = 0
    rest_api_host: str = "127.0.0.1"
    rest_api_num_threads: int = 0
    rest_api_timeout_in_ms: int = 5000
    rest_api_enable_cors_support: bool = False
    rest_api_max_body_bytes: int = 256 * 1024 * 1024
    rest_api_read_timeout_seconds: int = 30
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    monitoring_config_file: str = ""
    enable_batching: bool = False
    batching_parameters_file: str = ""
    allow_version_labels_for_unavailable_models: bool = False
    enable_model_warmup: bool = True
    prefer_tflite_model: bool = False
    use_tflite_model: bool = False
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    enable_signature_method_name_check: bool = False
    enable_serialization_as_tensor_content: bool = False
    enable_grpc_healthcheck_service: bool = False
    ssl_config_file: str = ""
    platform_config_file: str = ""
    log_level: str = "info"
    version: bool = False
    help: bool = False
    ignored: list[str] = field(default_factory=list)  # compatibility flags accepted but not used

    @property
    def runner_threads(self) -> int:
        return self.tensorflow_intra_op_parallelism or self.tensorflow_session_parallelism

    @property
    def prefer_tflite(self) -> bool:
        return self.prefer_tflite_model or self.use_tflite_model


HELP: dict[str, str] = {
    "port": "Port to listen on for gRPC API (0 = no TCP listener; then --grpc_socket_path is required)",
    "grpc_host": "Address the gRPC API binds to (edge-model-server only; TF Serving binds 0.0.0.0)",
    "grpc_socket_path": "If non-empty, also listen to a UNIX socket for gRPC API on the given path",
    "grpc_channel_arguments": "A comma separated list of arguments to be passed to the grpc server (e.g. grpc.max_connection_age_ms=2000)",
    "grpc_max_threads": "Max gRPC server worker threads (0 = automatic)",
    "rest_api_port": "Port to listen on for HTTP/REST API. If set to zero HTTP/REST API will not be exported",
    "rest_api_host": "Address the HTTP/REST API binds to (edge-model-server only; TF Serving binds 0.0.0.0)",
    "rest_api_num_threads": "Number of threads for HTTP/REST API processing (0 = automatic)",
    "rest_api_timeout_in_ms": "Timeout for HTTP/REST API calls",
    "rest_api_enable_cors_support": "Enable CORS headers in REST API responses",
    "rest_api_max_body_bytes": "Largest accepted REST request body (edge-model-server only)",
    "rest_api_read_timeout_seconds": "Longest time a client may take to send one request body; slower ones get 408 "
                                     "(edge-model-server only)",
    "model_name": "name of model (ignored if --model_config_file flag is set)",
    "model_base_path": "path to export (ignored if --model_config_file flag is set, otherwise required)",
    "model_config_file": "If non-empty, read an ascii ModelServerConfig protobuf from the supplied file name, and serve the models in that file",
    "model_config_file_poll_wait_seconds": "Interval in seconds between each poll of the filesystem for model_config_file. If unset or set to zero, poll will be done exactly once and not periodically",
    "file_system_poll_wait_seconds": "Interval in seconds between each poll of the filesystem for new model version. If set to zero poll will be exactly done once and not periodically",
    "monitoring_config_file": "If non-empty, read an ascii MonitoringConfig protobuf from the supplied file name",
    "enable_batching": "enable batching",
    "batching_parameters_file": "If non-empty, read an ascii BatchingParameters protobuf from the supplied file name and use the contained values instead of the defaults",
    "allow_version_labels_for_unavailable_models": "If true, allows assigning unused version labels to models that are not available yet",
    "enable_model_warmup": "Enables model warmup, which triggers lazy initializations (such as TF optimizations) at load time, to reduce first request latency",
    "prefer_tflite_model": "EXPERIMENTAL; If true, try to use the TensorFlow Lite model (model.tflite) when both a SavedModel and a TFLite model exist",
    "use_tflite_model": "Deprecated spelling of --prefer_tflite_model",
    "tensorflow_session_parallelism": "Number of threads to use for running a Tensorflow session (0 = automatic)",
    "tensorflow_intra_op_parallelism": "Number of threads to use to parallelize the execution of an individual op (0 = automatic)",
    "tensorflow_inter_op_parallelism": "Accepted for compatibility",
    "enable_signature_method_name_check": "Enable method_name check for SignatureDef. Disable this if serving native TF2 regression/classification models.",
    "enable_serialization_as_tensor_content": "Enable serialization of predict response as tensor content.",
    "enable_grpc_healthcheck_service": "Enable the standard gRPC healthcheck service (grpc.health.v1.Health).",
    "ssl_config_file": "Not supported by edge-model-server (refused)",
    "platform_config_file": "Not supported by edge-model-server (refused)",
    "log_level": "debug | info | warning | error (edge-model-server only)",
    "version": "Display version",
    "help": "Show this help",
}

# TF Serving flags accepted for compatibility that have no effect here (value type for checking).
IGNORED: dict[str, type] = {
    "per_process_gpu_memory_fraction": float,
    "saved_model_tags": str,
    "max_num_load_retries": int,
    "load_retry_interval_micros": int,
    "flush_filesystem_caches": bool,
    "xla_cpu_compilation_enabled": bool,
    "num_request_iterations_for_warmup": int,
    "remove_unused_fields_from_bundle_metagraph": bool,
    "enable_profiler": bool,
    "thread_pool_factory_config_file": str,
    "mixed_precision": str,
    "skip_initialize_tpu": bool,
    "tensorflow_session_config_file": str,
    "enforce_session_run_timeout": bool,
    "enable_per_model_batching_parameters": bool,
    "num_load_threads": int,
    "num_unload_threads": int,
    "use_alts_credentials": bool,
    "num_tflite_pools": int,
    "num_tflite_interpreters_per_pool": int,
    "xla_gpu_compilation_enabled": bool,
}

_TYPES: dict[str, Any] = {f.name: f.type for f in fields(ServerFlags) if f.name != "ignored"}
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _known() -> list[str]:
    return sorted(list(_TYPES) + list(IGNORED))


def _kind(name: str) -> str:
    if name in IGNORED:
        return {bool: "bool", int: "int", float: "float", str: "str"}[IGNORED[name]]
    return str(_TYPES[name])


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, _known(), n=1, cutoff=0.6)
    return f" (did you mean --{close[0]}?)" if close else ""


def _convert(name: str, kind: str, raw: str) -> Any:
    if kind == "bool":
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise FlagError(f"invalid value {raw!r} for --{name}: expected true, false, 1 or 0")
    if kind == "int":
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise FlagError(f"invalid value {raw!r} for --{name}: expected an integer") from None
        if value < 0 or value > 2**31 - 1:
            raise FlagError(f"invalid value {raw!r} for --{name}: expected 0..2147483647")
        return value
    if kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise FlagError(f"invalid value {raw!r} for --{name}: expected a number") from None
    return raw


def parse_flags(argv: Sequence[str]) -> ServerFlags:
    """Parse argv (without the program name). Raises FlagError with a one-line message."""
    flags = ServerFlags()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg in ("-h", "-help", "--help", "-?"):
            flags.help = True
            continue
        if not arg.startswith("-") or arg in ("-", "--"):
            raise FlagError(f"unexpected argument {arg!r}: every option is a --flag=value")
        body = arg[2:] if arg.startswith("--") else arg[1:]  # TF's parser also accepts -flag
        name, has_value, raw = body.partition("=")
        name = name.strip()
        if name not in _TYPES and name not in IGNORED:
            raise FlagError(f"unknown flag --{name}{_suggest(name)}")
        kind = _kind(name)
        if not has_value:
            if kind == "bool":
                if i < len(args) and args[i].lower() in _TRUE | _FALSE:
                    raw = args[i]
                    i += 1
                else:
                    raw = "true"
            elif i < len(args):
                raw = args[i]
                i += 1
            else:
                raise FlagError(f"flag --{name} needs a value (--{name}=VALUE)")
        value = _convert(name, kind, raw)
        if name in IGNORED:
            flags.ignored.append(name)
        else:
            setattr(flags, name, value)
    return flags


def validate(flags: ServerFlags) -> None:
    """Cross-flag checks, as TF Serving makes them (raises FlagError)."""
    if flags.help or flags.version:
        return
    if flags.ssl_config_file:
        raise FlagError("--ssl_config_file is not supported by edge-model-server (terminate TLS in front of it)")
    if flags.platform_config_file:
        raise FlagError("--platform_config_file is not supported by edge-model-server (use --model_config_file)")
    if not flags.model_base_path and not flags.model_config_file:
        raise FlagError("--model_base_path or --model_config_file is required")
    if flags.batching_parameters_file and not flags.enable_batching:
        raise FlagError("--batching_parameters_file is set without setting --enable_batching to true")
    if flags.port == 0 and not flags.grpc_socket_path:
        raise FlagError("--port is 0 and --grpc_socket_path is empty: nothing to listen on")
    if flags.rest_api_port and flags.rest_api_port == flags.port:
        raise FlagError("--rest_api_port cannot be same as --port; use a different port for HTTP/REST API")
    if flags.rest_api_read_timeout_seconds < 1:
        raise FlagError("--rest_api_read_timeout_seconds must be at least 1")
    if flags.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise FlagError(f"invalid value {flags.log_level!r} for --log_level: expected debug, info, warning or error")
    for item in filter(None, flags.grpc_channel_arguments.split(",")):
        if "=" not in item or not item.partition("=")[0].strip():
            raise FlagError(f"invalid value {flags.grpc_channel_arguments!r} for --grpc_channel_arguments: "
                            f"{item!r} is not key=value")


def channel_arguments(spec: str) -> list[tuple[str, Any]]:
    """``a=1,b=x`` -> [("a", 1), ("b", "x")]: int32 values as ints, others as strings (TF Serving)."""
    result: list[tuple[str, Any]] = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, _, value = item.partition("=")
        try:
            number = int(value)
            result.append((key.strip(), number if -(2**31) <= number < 2**31 else value))
        except ValueError:
            result.append((key.strip(), value))
    return result


def usage() -> str:
    lines = [f"usage: {PROG} --model_base_path=PATH [--model_name=NAME] [--port=8500] [--rest_api_port=0] ...",
             f"       {PROG} --model_config_file=FILE [...]", "Flags:"]
    for name in sorted(HELP):
        kind = _kind(name)
        default = getattr(ServerFlags(), name)
        shown = str(default).lower() if kind == "bool" else repr(default) if kind == "str" else default
        lines.append(f"\t--{name}={shown}\t{kind}\t{HELP[name]}")
    lines.append("Accepted for compatibility with tensorflow_model_server and ignored: "
                 + ", ".join(f"--{n}" for n in sorted(IGNORED)))
    return "\n".join(lines)
