"""Startup errors in the words tensorflow_model_server uses, for scripts that look for them.

TF Serving reports a config file that does not parse twice: protobuf's text parser logs to stderr

    Error parsing text-format tensorflow.serving.ModelServerConfig: 4:16: Message type "..." has no field named "x".

and ``main.cc`` prints to stdout

    Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '/models/models.config'

The line, column and wording of the first line are C++ protobuf's (``TextFormat::Parser``). When
protoc (grpcio-tools) is importable the same parser runs on the file (``protoc --encode``, ~0.15 s,
only on failure) and its words are used; otherwise Python protobuf's line, column and message.
The exit status is 2 (TF Serving: 255), so that systemd's RestartPreventExitStatus=2 does not
restart a server whose config is broken; docs/model-server.md lists that difference.
"""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from edge.errors import ProtoConfigError
from edge.serving.protos._compile import PROTO_ROOT

logger = logging.getLogger(__name__)

PROTO_FILES = {
    "tensorflow.serving.ModelServerConfig": "tensorflow_serving/config/model_server_config.proto",
    "tensorflow.serving.BatchingParameters": "tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
    "tensorflow.serving.MonitoringConfig": "tensorflow_serving/config/monitoring_config.proto",
}


def failed_to_start(code: str, message: str) -> str:
    """``Failed to start server. Error: <CODE>: <message>`` (main.cc, stdout)."""
    return f"Failed to start server. Error: {code}: {message}"


def _protoc_detail(text: str, message_type: str) -> str | None:
    """C++ protobuf's ``L:C: message`` for `text`, or None when protoc cannot run here."""
    proto = PROTO_FILES.get(message_type)
    if proto is None:
        return None
    try:
        import grpc_tools  # build/test dependency: absent on most devices, then Python's parser speaks

        include = str(Path(grpc_tools.__file__).resolve().parent / "_proto")
        proc = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}",
             f"--encode={message_type}", proto],
            input=text.encode("utf-8"), capture_output=True, timeout=30)
    except (ImportError, OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode == 0:
        return None
    for line in proc.stderr.decode("utf-8", "replace").splitlines():
        if line.startswith("input:") and ": warning:" not in line:
            return line[len("input:"):]
    return None


def parse_error_line(error: ProtoConfigError) -> str:
    """``Error parsing text-format <type>: L:C: detail`` as TF Serving's log line says it."""
    detail = _protoc_detail(error.text, error.message_type) if error.text else None
    if detail is None:
        where = f"{error.line}:{error.column}: " if error.line is not None else ""
        detail = f"{where}{error.detail}"
    return f"Error parsing text-format {error.message_type}: {detail}"


def invalid_file(path: str) -> str:
    return failed_to_start("INVALID_ARGUMENT", f"Invalid protobuf file: '{path}'")


def missing_file(path: str) -> str:
    return failed_to_start("NOT_FOUND", f"{path}; No such file or directory")
