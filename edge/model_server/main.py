"""``edge-model-server``: a drop-in replacement for ``tensorflow_model_server``.

    edge-model-server --port=8500 --rest_api_port=8501 --model_name=m --model_base_path=/models/m

Parses TF Serving's flags (``flags.py``), reads the config files (model config, batching,
monitoring: a file that does not parse stops the server with exit status 2 and one line naming
the problem), loads the models, then serves gRPC (``grpc_api.py``) and optionally REST
(``rest_api.py``) until SIGTERM/SIGINT, when it stops gracefully and exits 0.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from edge.errors import FlagError, ProtoConfigError
from edge.model_server.flags import PROG, ServerFlags, channel_arguments, parse_flags, usage, validate
from edge.model_server.grpc_api import GrpcServer
from edge.model_server.handlers import ServingCore
from edge.model_server.manager import ServableManager
from edge.model_server.metrics import ServerMetrics
from edge.model_server.model_config import ModelConfigWatcher, sources_from_flags, sources_from_proto
from edge.model_server.rest_api import RestApi, RestServer
from edge.model_server.startup_errors import failed_to_start, invalid_file, missing_file, parse_error_line
from edge.model_server.status import ServingError
from edge.serving.protos import messages, parse_text_config
from edge.util.logsetup import setup_logging
from edge.util.paths import version

logger = logging.getLogger("edge.model_server")

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
STOP_GRACE_S = 5.0





class StartupFailure(Exception):
    """A config file TF Serving would refuse: `stderr` and `stdout` are what tensorflow_model_server prints."""

    def __init__(self, stdout: str, stderr: str | None = None) -> None:
        super().__init__(stdout)
        self.stdout = stdout
        self.stderr = stderr


def _read_text_proto(path: str, message: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StartupFailure(missing_file(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupFailure(failed_to_start("INVALID_ARGUMENT", f"{path}: cannot read {message} file: {exc}")) \
            from None
    try:
        return parse_text_config(text, message, path)
    except ProtoConfigError as exc:
        raise StartupFailure(invalid_file(path), parse_error_line(exc)) from None


def _load_config(flags: ServerFlags) -> tuple[list[Any], Any, str | None]:
    """(model sources, BatchingParameters or None, prometheus path or None); raises StartupFailure.

    --model_config_file wins over --model_name/--model_base_path, as in TF Serving (its Docker image
    always passes both)."""
    if flags.model_config_file:
        if flags.model_base_path:
            logger.info("--model_config_file is set: --model_name/--model_base_path are ignored")
        config = _read_text_proto(flags.model_config_file, "ModelServerConfig")
        try:
            sources = sources_from_proto(config)
        except ServingError as exc:
            raise StartupFailure(failed_to_start(exc.code.name, exc.message)) from None
    else:
        try:
            sources = sources_from_flags(flags.model_name, flags.model_base_path)
        except ServingError as exc:
            raise StartupFailure(failed_to_start(exc.code.name, exc.message)) from None
    batching = None
    if flags.enable_batching:
        batching = (_read_text_proto(flags.batching_parameters_file, "BatchingParameters")
                    if flags.batching_parameters_file else messages().BatchingParameters())
    prometheus = None
    if flags.monitoring_config_file:
        monitoring = _read_text_proto(flags.monitoring_config_file, "MonitoringConfig")
        if monitoring.prometheus_config.enable:
            prometheus = monitoring.prometheus_config.path or DEFAULT_PROMETHEUS_PATH
    return sources, batching, prometheus


def _serve(flags: ServerFlags) -> int:

    try:
        sources, batching, prometheus_path = _load_config(flags)
    except StartupFailure as exc:  # TF Serving's words; exit 2 (not 255) so systemd does not restart it
        if exc.stderr:
            print(exc.stderr, file=sys.stderr)
        print(exc.stdout)
        return 2
    if flags.ignored:
        logger.warning("flags accepted for compatibility and ignored: %s", ", ".join(f"--{n}" for n in flags.ignored))

    try:
        manager = ServableManager(
            enable_warmup=flags.enable_model_warmup,
            prefer_tflite=flags.prefer_tflite,
            allow_version_labels_for_unavailable_models=flags.allow_version_labels_for_unavailable_models,
            batching=batching,
            runner_threads=flags.runner_threads,
        )
    except ServingError as exc:
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        return 2
    metrics = ServerMetrics()

    def reload_config(config: Any) -> None:
        manager.set_models(sources_from_proto(config))

    core = ServingCore(manager, metrics, method_name_check=flags.enable_signature_method_name_check,
                       tensor_content=flags.enable_serialization_as_tensor_content, reload_config=reload_config)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        logger.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    for source in sources:
        logger.info("serving model %s from %s", source.name, source.base_path)
    try:
        manager.set_models(sources)  # the initial load, as ServerCore::Create does, before listening
    except ServingError as exc:
        if exc.code != grpc.StatusCode.UNKNOWN:  # the config itself was refused (bad label, path...)
            logger.error("Failed to start server. Error: %s", exc.message)
            manager.stop()
            return 1
        # TF Serving exits here; an edge box keeps serving what loaded and keeps polling instead.
        logger.error("not every model became available at startup (still polling): %s", exc.message)
    manager.start(flags.file_system_poll_wait_seconds)
    watcher = None
    if flags.model_config_file and flags.model_config_file_poll_wait_seconds > 0:
        watcher = ModelConfigWatcher(Path(flags.model_config_file), flags.model_config_file_poll_wait_seconds, manager)
        watcher.start()

    grpc_server = rest_server = None
    try:
        grpc_server = GrpcServer(core, host=flags.grpc_host, port=flags.port, socket_path=flags.grpc_socket_path,
                                 channel_arguments=channel_arguments(flags.grpc_channel_arguments),
                                 max_workers=flags.grpc_max_threads,
                                 health_check=flags.enable_grpc_healthcheck_service)
        grpc_server.start()
        if flags.rest_api_port:
            api = RestApi(core, timeout_ms=flags.rest_api_timeout_in_ms, prometheus_path=prometheus_path,
                          num_threads=flags.rest_api_num_threads)
            rest_server = RestServer(api, host=flags.rest_api_host, port=flags.rest_api_port,
                                     cors=flags.rest_api_enable_cors_support,
                                     max_body_bytes=flags.rest_api_max_body_bytes,
                                     read_timeout_s=float(flags.rest_api_read_timeout_seconds))
            rest_server.start()
    except OSError as exc:
        logger.error("Failed to start server: %s", exc)
        stop.set()
        code = 1
    else:
        code = 0
    while not stop.wait(1.0):
        pass
    if rest_server is not None:
        rest_server.stop()
    if grpc_server is not None:
        grpc_server.stop(STOP_GRACE_S)
    if watcher is not None:
        watcher.stop()
    manager.stop()
    logger.info("edge-model-server stopped")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        flags = parse_flags(args)
        validate(flags)
    except FlagError as exc:
        print(f"{PROG}: {exc} (see {PROG} --help)", file=sys.stderr)
        return 2
    if flags.help:
        print(usage())
        return 0
    if flags.version:
        print(f"{PROG} {version()} (TensorFlow Serving-compatible ModelServer: PredictionService, ModelService)")
        return 0

    setup_logging(flags.log_level, identifier="edge-model-server")
    return _serve(flags)


if __name__ == "__main__":
    sys.exit(main())
