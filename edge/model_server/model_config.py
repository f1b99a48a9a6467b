"""Which models to serve: from ``--model_name``/``--model_base_path`` or a ``ModelServerConfig`` file.

Validation mirrors TF Serving's server_core.cc (same codes and words): duplicate names, relative
base paths, platforms other than "tensorflow", custom_model_config. ``ModelConfigWatcher`` is
``--model_config_file_poll_wait_seconds``: it re-reads the file and hands changes to the manager;
a file that does not parse or validate is logged and ignored (the served models stay).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc

from edge.errors import ModelConfigError, ProtoConfigError
from edge.model_server.policy import All, Latest, Specific, VersionPolicy
from edge.model_server.status import ServingError
from edge.serving.protos import parse_text_config

logger = logging.getLogger(__name__)

TENSORFLOW_PLATFORM = "tensorflow"



@dataclass(frozen=True)
class ModelSource:
    name: str
    base_path: Path
    policy: VersionPolicy = Latest(1)
    labels: Mapping[str, int] = field(default_factory=dict)
    platform: str = TENSORFLOW_PLATFORM


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _local_path(name: str, base_path: str) -> Path:
    if base_path.startswith("file://"):
        base_path = base_path[len("file://") :]
    elif "://" in base_path:
        raise _invalid(
            f"Model {name}: base_path {base_path} is a URI; edge-model-server reads local paths only"
        )
    if not base_path.startswith("/"):
        # server_core.cc ValidateModelConfigList (no model_config_list_root_dir here).
        raise _invalid(f"Expected model {name} to have an absolute path or URI; got base_path()={base_path}")
    return Path(base_path)


def sources_from_flags(model_name: str, model_base_path: str) -> list[ModelSource]:
    """BuildSingleModelConfig: one model, latest version, platform tensorflow."""
    return [ModelSource(model_name, _local_path(model_name, model_base_path))]


def _platform(config: Any) -> str:
    """server_core.cc GetPlatform."""
    if config.model_type != 0:  # MODEL_TYPE_UNSPECIFIED
        if config.model_platform:
            raise _invalid(
                "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                "ModelServerConfig::model_platform."
            )
        if config.model_type == 1:  # TENSORFLOW
            return TENSORFLOW_PLATFORM
        raise _invalid(f"ModelServerConfig::model_type choice {config.model_type} not supported.")
    if not config.model_platform:
        raise _invalid(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            "ModelServerConfig::model_platform."
        )
    return str(config.model_platform)


def _policy(config: Any) -> VersionPolicy:
    if not config.HasField("model_version_policy"):
        return Latest(1)
    vp = config.model_version_policy
    choice = vp.WhichOneof("policy_choice")
    if choice == "all":
        return All()
    if choice == "specific":
        return Specific(tuple(int(v) for v in vp.specific.versions))
    if choice == "latest":
        return Latest(max(1, int(vp.latest.num_versions)))
    return Latest(1)


def sources_from_proto(config: Any) -> list[ModelSource]:
    """A ``tensorflow.serving.ModelServerConfig`` message -> validated model sources."""
    which = config.WhichOneof("config")
    if which is None:
        return []  # "Taking no action for empty config."
    if which == "custom_model_config":
        raise _invalid("ModelServer does not yet support custom model config.")
    sources: list[ModelSource] = []
    seen: set[str] = set()
    for mc in config.model_config_list.config:
        if mc.name in seen:
            raise _invalid(f"Illegal to list model {mc.name} multiple times in config list")
        seen.add(mc.name)
    for mc in config.model_config_list.config:
        base = _local_path(mc.name, mc.base_path)
        platform = _platform(mc)
        if platform != TENSORFLOW_PLATFORM:
            raise _invalid(f"Model {mc.name} requests unsupported platform {platform}")
        sources.append(
            ModelSource(mc.name, base, _policy(mc), {k: int(v) for k, v in mc.version_labels.items()}, platform)
        )
    return sources


def parse_model_config(text: str, source: str = "model config") -> list[ModelSource]:
    try:
        config = parse_text_config(text, "ModelServerConfig", source)
    except ProtoConfigError as exc:
        raise ModelConfigError(" ".join(str(exc).split())) from exc
    return sources_from_proto(config)


def load_model_config_file(path: Path) -> list[ModelSource]:
    """Read a text ``ModelServerConfig`` (``--model_config_file``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelConfigError(f"{path}: cannot read model config file: {exc}") from None
    return parse_model_config(text, str(path))


class _Manager(Protocol):
    def set_models(self, sources: Sequence[ModelSource]) -> None: ...


class ModelConfigWatcher:
    """Re-reads the model config file every ``poll_wait_s`` seconds (0 = never) and applies changes."""

    def __init__(self, path: Path, poll_wait_s: float, manager: _Manager) -> None:
        self.path = Path(path)
        self.poll_wait_s = poll_wait_s
        self.manager = manager
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_text: str | None = None
        self._last_error: str | None = None
        self.reloads = 0  # successful applications of a changed file
        self.errors = 0  # changed files refused

    def _read(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self._report(f"{self.path}: cannot read model config file: {exc}")
            return None

    def _report(self, message: str) -> None:
        if message != self._last_error:
            logger.error("model config not reloaded (the served models stay): %s", message)
            self._last_error = message
            self.errors += 1

    def check_once(self) -> bool:
        """Apply the file if its content changed since the last look; True when models were set."""
        text = self._read()
        if text is None or text == self._last_text:
            return False
        try:
            sources = parse_model_config(text, str(self.path))
            self.manager.set_models(sources)
        except (ModelConfigError, ServingError) as exc:
            self._report(str(exc))
            if isinstance(exc, ServingError) and exc.code == grpc.StatusCode.UNKNOWN:
                self._last_text = text  # applied, but some model did not become available
            return False
        self._last_text = text
        self._last_error = None
        self.reloads += 1
        logger.info("model config %s reloaded (%d model(s))", self.path, len(sources))
        return True

    def start(self) -> None:
        self._last_text = self._read()  # the content the server started with
        if self.poll_wait_s <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="model-config-watcher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_wait_s):
            try:
                self.check_once()
            except Exception:  # never let the watcher die
                logger.exception("model config watcher failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
