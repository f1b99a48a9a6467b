"""The servable manager: decides, loads, serves and unloads model versions.

Source (``source.FileSystemSource``) -> policy (``policy.next_action``, availability preserving)
-> loader (``runtime.load_backend`` + ``warmup.run_warmup``), as in TF Serving's
AspiredVersionsManager. Loads run off the request path (``poll()`` on the polling thread, or on
the caller of ``set_models``); requests only take a short lock to pick a version and count a
reference, so a version is torn down only after the last request holding it has finished.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import grpc

from edge.model_server.batching import BatchingOptions, BatchScheduler
from edge.model_server.model_config import ModelSource
from edge.model_server.policy import next_action
from edge.model_server.runtime import Servable, load_backend, runtime_error
from edge.model_server.source import FileSystemSource
from edge.model_server.status import ServingError
from edge.model_server.warmup import run_warmup

logger = logging.getLogger(__name__)

__all__ = ["ManagerMetrics", "Servable", "ServableManager", "ServableState", "ServingError", "VersionStatus"]


class ServableState(str, Enum):
    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: ServableState
    error_code: int  # gRPC/TF canonical code, 0 = OK
    error_message: str


@dataclass(frozen=True)
class ManagerMetrics:
    loads: int
    load_failures: int
    unloads: int
    warmup_records: int
    version_states: dict[str, dict[int, ServableState]]


@dataclass
class _Version:
    version: int
    path: Path
    fingerprint: float
    state: ServableState = ServableState.START
    error_code: int = 0
    error_message: str = ""
    servable: Servable | None = None
    refs: int = 0

    def policy_state(self) -> str:
        if self.state == ServableState.START:
            return "new"
        return "available" if self.state == ServableState.AVAILABLE else self.state.value.lower()


@dataclass
class _Model:
    source: ModelSource | None
    versions: dict[int, _Version] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    aspired: set[int] = field(default_factory=set)
    problem: str | None = None


def _not_found(name: str, version: int | None) -> ServingError:
    request = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
    return ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request}")


class ServableManager:
    def __init__(
        self,
        *,
        enable_warmup: bool = True,
        prefer_tflite: bool = False,
        allow_version_labels_for_unavailable_models: bool = False,
        batching: Any | None = None,
        runner_threads: int = 0,
    ) -> None:
        self.enable_warmup = enable_warmup
        self.prefer_tflite = prefer_tflite
        self.allow_version_labels_for_unavailable_models = allow_version_labels_for_unavailable_models
        self.runner_threads = runner_threads
        try:
            self.batching = BatchingOptions.from_proto(batching) if batching is not None else None
        except ValueError as exc:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"batching parameters: {exc}") from None
        self._cond = threading.Condition(threading.RLock())
        self._reconcile = threading.Lock()
        self._models: dict[str, _Model] = {}
        self._source = FileSystemSource()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loads = self._load_failures = self._unloads = self._warmup_records = 0

    # ------------------------------------------------------------------ configuration
    def set_models(self, sources: Sequence[ModelSource]) -> None:
        """Serve exactly these models (reconciles now; models left out are unloaded)."""
        names = [s.name for s in sources]
        for name in names:
            if names.count(name) > 1:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"Illegal to list model {name} multiple times in config list"
                )
        with self._cond:
            self._check_labels(sources)
            new = [s.name for s in sources if self._models.get(s.name) is None or self._models[s.name].source is None]
            wanted = {s.name: s for s in sources}
            for name, model in self._models.items():
                if name not in wanted and model.source is not None:
                    logger.info("model %s removed from the config: unloading it", name)
                    model.source, model.labels = None, {}
            for src in sources:
                model = self._models.setdefault(src.name, _Model(src))
                model.source, model.labels = src, dict(src.labels)
        self.poll()
        failed = []
        with self._cond:
            for name in new:
                model = self._models[name]
                if not any(v.state == ServableState.AVAILABLE for v in model.versions.values()):
                    errors = [v.error_message for v in model.versions.values() if v.error_code]
                    detail = errors[-1] if errors else (model.problem or "no version loaded")
                    failed.append(f"{{Latest({name}) due to error: {detail}}}, ")
        if failed:
            raise ServingError(
                grpc.StatusCode.UNKNOWN, f"{len(failed)} model(s) did not become available: {{{''.join(failed)}}}"
            )

    def _check_labels(self, sources: Sequence[ModelSource]) -> None:
        """server_core.cc UpdateModelVersionLabelMap: a label must name an AVAILABLE version."""
        for src in sources:
            model = self._models.get(src.name)
            for label, version in src.labels.items():
                allowed = False
                if self.allow_version_labels_for_unavailable_models:
                    existing = model.labels.get(label) if model else None
                    allowed = existing is None or existing == version
                entry = model.versions.get(version) if model else None
                if not allowed and (entry is None or entry.state != ServableState.AVAILABLE):
                    raise ServingError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"Request to assign label to version {version} of model {src.name}, "
                        "which is not currently available for inference",
                    )

    # ------------------------------------------------------------------ reconciliation
    def poll(self) -> None:
        """Scan every base path once, then load / unload until the policy is satisfied."""
        with self._reconcile:
            with self._cond:
                configured = {n: m.source for n, m in self._models.items() if m.source is not None}
            scans = {n: self._source.scan(n, s.base_path, s.policy) for n, s in configured.items()}
            with self._cond:
                for name, model in self._models.items():
                    scan = scans.get(name)
                    if scan is None or model.source is None:
                        model.aspired = set()
                        model.versions = {v: e for v, e in model.versions.items() if e.state != ServableState.START}
                        continue
                    model.problem = scan.problem
                    model.aspired = set(scan.aspired)
                    for version, path in scan.aspired.items():
                        entry = model.versions.get(version)
                        fp = scan.fingerprints.get(version, 0.0)
                        retry = entry is not None and entry.state == ServableState.END and (
                            entry.error_code == 0 or entry.fingerprint != fp
                        )
                        if entry is None or retry:
                            model.versions[version] = _Version(version, path, fp)
                    for version, entry in list(model.versions.items()):
                        if version not in model.aspired and entry.state == ServableState.START:
                            del model.versions[version]
                names = list(self._models)
            for name in names:
                self._step_model(name)

    def _step_model(self, name: str) -> None:
        while True:
            with self._cond:
                model = self._models[name]
                if model.source is None:  # removed from the config: unload everything
                    serving = [v for v, e in model.versions.items() if e.state == ServableState.AVAILABLE]
                    action = ("unload", serving[0]) if serving else None
                else:
                    act = next_action(model.aspired, {v: e.policy_state() for v, e in model.versions.items()})
                    action = (act.kind, act.version) if act else None
                if action is None:
                    return
                entry = model.versions[action[1]]
                if action[0] == "unload":
                    self._begin_unload(name, entry)
                    continue
                entry.state = ServableState.LOADING
                self._cond.notify_all()
            self._load(name, entry)

    def _load(self, name: str, entry: _Version) -> None:
        logger.info("Loading servable: {name: %s version: %d} from %s", name, entry.version, entry.path)
        servable = None
        try:
            backend = load_backend(entry.path, prefer_tflite=self.prefer_tflite, threads=self.runner_threads)
            servable = Servable(name, entry.version, entry.path, backend)
            if self.batching is not None:
                servable.batcher = BatchScheduler(servable.call, self.batching, f"{name}-{entry.version}")
            records = run_warmup(servable) if self.enable_warmup else 0
        except Exception as exc:
            error = exc if isinstance(exc, ServingError) else runtime_error(exc)
            if not isinstance(exc, ServingError) and error.code == grpc.StatusCode.INVALID_ARGUMENT:
                error = ServingError(grpc.StatusCode.UNKNOWN, error.message)  # a load error, not a request error
            logger.error("Loading servable: {name: %s version: %d} failed: %s", name, entry.version, error.message)
            if servable is not None:
                servable.close()
            with self._cond:
                entry.state, entry.error_code, entry.error_message = ServableState.END, error.error_code, error.message
                self._load_failures += 1
                self._cond.notify_all()
            return
        with self._cond:
            entry.servable, entry.state = servable, ServableState.AVAILABLE
            self._loads += 1
            self._warmup_records += records
            self._cond.notify_all()
        logger.info("Successfully loaded servable version {name: %s version: %d}", name, entry.version)

    def _begin_unload(self, name: str, entry: _Version) -> None:
        """Called with the lock held: stop handing the version out; tear down when unreferenced."""
        entry.state = ServableState.UNLOADING
        logger.info("Unloading servable version {name: %s version: %d}", name, entry.version)
        self._cond.notify_all()
        if entry.refs == 0:
            self._finish_unload(name, entry)

    def _finish_unload(self, name: str, entry: _Version) -> None:
        servable, entry.servable = entry.servable, None
        entry.state = ServableState.END
        self._unloads += 1
        self._cond.notify_all()
        if servable is not None:
            threading.Thread(target=servable.close, name=f"unload-{name}-{entry.version}", daemon=True).start()
        logger.info("Done unloading servable version {name: %s version: %d}", name, entry.version)

    # ------------------------------------------------------------------ background polling
    def start(self, file_system_poll_wait_s: float) -> None:
        """Poll in a background thread every N seconds; 0 polls exactly once (TF Serving's semantics)."""
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.poll()
                except Exception:
                    logger.exception("file system poll failed")
                if file_system_poll_wait_s <= 0 or self._stop.wait(file_system_poll_wait_s):
                    return

        self._thread = threading.Thread(target=loop, name="servable-manager-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and unload every version (each as soon as no request holds it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
            self._thread = None
        with self._reconcile, self._cond:
            for name, model in self._models.items():
                for entry in model.versions.values():
                    if entry.state == ServableState.AVAILABLE:
                        self._begin_unload(name, entry)

    # ------------------------------------------------------------------ requests
    @contextlib.contextmanager
    def acquire(self, name: str, version: int | None = None, label: str | None = None) -> Iterator[Servable]:
        """Hold one AVAILABLE version for the duration of a request."""
        if not name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        with self._cond:
            model = self._models.get(name)
            if label is not None and version is None:
                if model is None or label not in model.labels:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}"
                    )
                version = model.labels[label]
            entry = None
            if model is not None:
                serving = [e for e in model.versions.values() if e.state == ServableState.AVAILABLE]
                if version is None:
                    entry = max(serving, key=lambda e: e.version, default=None)
                else:
                    entry = next((e for e in serving if e.version == version), None)
            if entry is None or entry.servable is None:
                raise _not_found(name, version)
            entry.refs += 1
            servable = entry.servable
        try:
            yield servable
        finally:
            with self._cond:
                entry.refs -= 1
                if entry.refs == 0 and entry.state == ServableState.UNLOADING:
                    self._finish_unload(name, entry)

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """GetModelStatus: versions newest first; NOT_FOUND in get_model_status_impl.cc's words."""
        with self._cond:
            model = self._models.get(name)
            entries = model.versions if model is not None else {}
            if version is not None:
                if version not in entries:
                    raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
                picked = [entries[version]]
            else:
                if not entries:
                    message = f"Could not find any versions of model {name}"
                    if model is not None and model.problem:
                        message += f": {model.problem}"
                    raise ServingError(grpc.StatusCode.NOT_FOUND, message)
                picked = sorted(entries.values(), key=lambda e: -e.version)
            return [VersionStatus(e.version, e.state, e.error_code, e.error_message) for e in picked]

    def model_names(self) -> list[str]:
        with self._cond:
            return sorted(n for n, m in self._models.items() if m.source is not None)

    def labels(self, name: str) -> dict[str, int]:
        with self._cond:
            model = self._models.get(name)
            return dict(model.labels) if model is not None else {}

    def wait_available(self, name: str, version: int | None = None, timeout_s: float = 60) -> bool:
        def ready() -> bool:
            model = self._models.get(name)
            if model is None:
                return False
            return any(
                e.state == ServableState.AVAILABLE and (version is None or e.version == version)
                for e in model.versions.values()
            )

        with self._cond:
            return self._cond.wait_for(ready, timeout=timeout_s)

    def metrics(self) -> ManagerMetrics:
        """Counters for the API layer's /monitoring endpoint."""
        with self._cond:
            return ManagerMetrics(
                loads=self._loads,
                load_failures=self._load_failures,
                unloads=self._unloads,
                warmup_records=self._warmup_records,
                version_states={
                    n: {v: e.state for v, e in m.versions.items()} for n, m in sorted(self._models.items())
                },
            )
