"""The rollout manager: registry tag -> install -> validate -> switch -> probation -> keep or roll back.

One thread. It polls the configured reference every ``poll_interval_s`` (a HEAD request) and at
once when :meth:`RolloutManager.deploy` is called. A new digest that is not known bad goes:

    serving --(new digest)--> downloading --> validating --(ok)--> probation --(quiet)--> serving
                                  |               |                    |
                                  v               v                    v (error rate / latency regression)
                               serving         serving              rolled-back (old version serves again)
                            (install failed)  (validation failed)

The switch is ``pipeline.set_classifier()``: the batch in flight finishes on the old version, the
next one runs on the new one, so no frame fails and results change version exactly once. During
probation the old classifier stays loaded, so an automatic rollback is one more pointer swap.
Registry trouble (down, auth, 404) is retried with capped exponential backoff and never touches
the serving version; a bad artifact (tampered, unsigned, unsafe, failing validation, rolled
back) is recorded as a bad digest and never deployed again automatically (an explicit `deploy`
command retries it). Everything is published as `events` and in the retained `model` topic.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

from edge.errors import (
    CandidateLoadError,
    DigestMismatch,
    ModelInstallError,
    RegistryError,
    RolloutError,
)
from edge.models.state import ModelState, StateStore
from edge.models.store import ModelVersion, is_version_dir
from edge.rollout.installer import ModelInstaller
from edge.rollout.validation import ValidationReport, validate
from edge.serving.base import Classifier
from edge.util.ociref import Reference

logger = logging.getLogger(__name__)

EventSink = Callable[[str, dict[str, Any]], None]
Loader = Callable[[ModelVersion], Classifier]
DIGEST_RETRIES = 3  # a blob that keeps hashing wrong is treated as corrupt at the source
MIN_PROBATION_FRAMES = 20
MIN_LATENCY_BATCHES = 10
WARMUP_BATCHES = 10  # the first batches on a new version (allocations, new batch shapes) do not count
LATENCY_SLACK_MS = 2.0  # differences below this are noise, not regressions, whatever the ratio



@dataclass(frozen=True)
class RolloutSettings:
    poll_interval_s: float = 300.0
    keep_versions: int = 3
    tolerance: float = 1e-3
    latency_factor: float = 2.0
    require_golden: bool = True
    probation_s: float = 60.0
    probation_max_error_rate: float = 0.05
    probation_latency_factor: float = 2.0
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 300.0


@dataclass(frozen=True)
class _Counters:
    mono: float
    classified: int
    failed: int
    batches: int
    inference_ms: float


@dataclass
class _Probation:
    version: int
    digest: str
    old: Classifier
    baseline: _Counters
    baseline_ms: float | None
    ends: float
    latency_from: _Counters | None = None  # counters after the warm-up batches


class RolloutManager:
    """Keeps one model's serving version in step with a registry reference."""

    def __init__(self, *, ref: Reference, installer: ModelInstaller, state_store: StateStore, state: ModelState,
                 loader: Loader, settings: RolloutSettings, emit: EventSink,
                 publish_state: Callable[[dict[str, Any]], None] | None = None,
                 pipeline: Any = None) -> None:
        self.ref = ref
        self.installer = installer
        self.state_store = state_store
        self.state = state
        self.model_base = installer.model_base
        self.model_name = installer.model_name
        self._load = loader
        self.settings = settings
        self._emit_sink = emit
        self._publish_sink = publish_state
        self.pipeline = pipeline
        self._lock = threading.RLock()
        self._commands: queue.Queue[tuple[str, Any, Future]] = queue.Queue(maxsize=32)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._probation: _Probation | None = None
        self._samples: deque[_Counters] = deque(maxlen=120)
        self._retired: list[tuple[float, Classifier]] = []
        self._next_poll = time.monotonic()
        self._backoff = settings.backoff_initial_s
        self._digest_failures: dict[str, int] = {}
        self._last_problem: str | None = None
        self.checks = 0
        self.check_failures = 0

    # -- public ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rollout", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def active_ref(self) -> Reference:
        """What the manager follows: the last ref an operator deployed, else the configured one."""
        if self.state.ref:
            try:
                return Reference.parse(self.state.ref)
            except ValueError:
                logger.error("ignoring unreadable deployed ref %r in the model state", self.state.ref)
        return self.ref

    def deploy(self, ref: str | None = None) -> dict[str, Any]:
        """Follow `ref` from now on (None: back to the configured ref) and check it at once.

        Returns immediately; progress comes as events."""
        target = self.ref
        if ref is not None:
            try:
                target = Reference.parse(ref)
            except ValueError as exc:
                raise RolloutError(str(exc)) from None
            if target.registry != self.ref.registry:
                raise RolloutError(f"ref {ref!r} is on registry {target.registry}; this device is configured "
                                   f"for {self.ref.registry} (credentials and TLS settings are per registry)")
        self._submit("deploy", target if ref is not None else None)
        return {"queued": True, "ref": str(target)}

    def rollback(self, wait_s: float = 120.0) -> dict[str, Any]:
        """Serve the previous version again (the current digest is marked bad); waits for the result."""
        future = self._submit("rollback", None)
        try:
            return future.result(timeout=wait_s)
        except TimeoutError:
            raise RolloutError(f"rollback still running after {wait_s:.0f}s; watch the events") from None

    def summary(self) -> dict[str, Any]:
        with self._lock:
            doc = self.state.summary()
            doc["name"] = self.model_name
            doc["ref"] = str(self.active_ref())
            doc["configured_ref"] = str(self.ref)
            probation = self._probation
            doc["probation_left_s"] = round(max(0.0, probation.ends - time.monotonic()), 1) if probation else None
            doc["checks"] = self.checks
            doc["check_failures"] = self.check_failures
        return doc

    def bootstrap(self, stop: threading.Event, on_wait: Callable[[str], None] | None = None) -> Classifier | None:
        """First install on a device without a servable version: retry until one validates (or stop)."""
        delay = self.settings.backoff_initial_s
        while not stop.is_set():
            try:
                classifier = self._check(self.active_ref(), forced=False, bootstrap=True)
                if classifier is not None:
                    return classifier
                problem = self.state.last_error or "the registry has no usable version yet"
            except Exception as exc:  # keep the daemon up whatever happens; say why
                logger.exception("first install failed")
                problem = str(exc)
            message = f"no model version to serve yet: {problem}; retrying in {delay:.0f}s"
            logger.warning("%s", message)
            if on_wait is not None:
                on_wait(message)
            stop.wait(delay)
            delay = min(delay * 2, self.settings.backoff_max_s, max(self.settings.poll_interval_s, 2.0))
        return None

    # -- thread ------------------------------------------------------------------------------

    def _submit(self, kind: str, arg: Any) -> Future:
        future: Future = Future()
        try:
            self._commands.put_nowait((kind, arg, future))
        except queue.Full:
            raise RolloutError("too many rollout requests queued; retry later") from None
        self._wake.set()
        return future

    def _run(self) -> None:
        self._publish()
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self._tick()
            except Exception:  # never let the manager die; the serving version is untouched
                logger.exception("rollout step failed")

    def _tick(self) -> None:
        now = time.monotonic()
        if self.pipeline is not None:
            self._samples.append(self._counters())
        self._close_retired(now)
        deploys: list[tuple[Reference | None, Future]] = []
        while True:
            try:
                kind, arg, future = self._commands.get_nowait()
            except queue.Empty:
                break
            if kind == "rollback":
                try:
                    future.set_result(self._rollback("rolled back by operator", automatic=False))
                except Exception as exc:
                    future.set_exception(exc)
            else:
                deploys.append((arg, future))
        if self._probation is not None:
            self._check_probation(now)
        if deploys and self._probation is not None:  # finish probation first; keep the request
            for ref, future in deploys:
                self._commands.put_nowait(("deploy", ref, future))
            return
        for ref, future in deploys[-1:]:  # the newest request wins
            with self._lock:
                self.state.ref = str(ref) if ref is not None else None
            self._check(self.active_ref(), forced=True)
            future.set_result({})
        if not deploys and self._probation is None and now >= self._next_poll:
            self._check(self.active_ref(), forced=False)

    # -- steps -------------------------------------------------------------------------------

    def _emit(self, kind: str, **payload: Any) -> None:
        payload.setdefault("model", self.model_name)
        try:
            self._emit_sink(kind, payload)
        except Exception:
            logger.exception("could not emit %s", kind)

    def _publish(self) -> None:
        if self._publish_sink is None:
            return
        try:
            self._publish_sink(self.summary())
        except Exception:
            logger.exception("could not publish the model state")

    def _set(self, state: str | None = None, error: str | bool | None = False) -> None:
        with self._lock:
            if state is not None:
                self.state.state = state
            if error is not False:
                self.state.last_error = error  # type: ignore[assignment]
            self.state_store.save(self.state)
        self._publish()

    def _retry_later(self, problem: str) -> None:
        self.check_failures += 1
        self._next_poll = time.monotonic() + self._backoff
        logger.warning("model check failed: %s; retrying in %.0fs", problem, self._backoff)
        self._backoff = min(self._backoff * 2, self.settings.backoff_max_s,
                            max(self.settings.poll_interval_s, self.settings.backoff_initial_s))

    def _idle_state(self) -> str:
        if self.state.state == "rolled-back":
            return "rolled-back"
        return "serving" if self.state.serving_version is not None else "idle"

    def _check(self, ref: Reference, forced: bool, bootstrap: bool = False) -> Classifier | None:
        """One pass: resolve, and install/validate/switch when the digest is new. Returns the
        validated classifier in bootstrap mode (the caller starts serving it)."""
        self.checks += 1
        try:
            digest = self.installer.resolve(ref)
        except Exception as exc:  # RegistryError and anything the network throws
            problem = f"cannot resolve {ref}: {exc}"
            if problem != self._last_problem:
                self._emit("model_check_failed", ref=str(ref), reason=str(exc), retry_in_s=round(self._backoff, 1))
                self._last_problem = problem
            self._set(error=problem)
            self._retry_later(problem)
            return None
        self._next_poll = time.monotonic() + self.settings.poll_interval_s
        self._backoff = self.settings.backoff_initial_s
        if digest == self.state.serving_digest:
            if self._last_problem is not None:
                self._last_problem = None
                self._set(error=None)
            return None
        if digest in self.state.bad:
            if not forced:
                if self._last_problem != f"bad {digest}":
                    logger.info("%s points to %s, known bad (%s); not deploying", ref, digest, self.state.bad[digest])
                    self._last_problem = f"bad {digest}"
                return None
            with self._lock:
                self.state.bad.pop(digest)  # an operator asked for it explicitly: try once more
        pinned = replace(ref, digest=digest)
        version = self.state.version_of(digest)
        if version is not None and not is_version_dir(self.model_base / str(version)):
            version = None
        if version is None:
            version = self._install(pinned, digest)
            if version is None:
                return None
        return self._validate_and_switch(version, digest, bootstrap)

    def _install(self, ref: Reference, digest: str) -> int | None:
        self._emit("model_download_started", ref=str(ref), digest=digest)
        self._set("downloading")
        try:
            installed = self.installer.install(ref, self.state)
        except DigestMismatch as exc:
            count = self._digest_failures.get(digest, 0) + 1
            self._digest_failures[digest] = count
            return self._install_failed(digest, str(exc), permanent=count >= DIGEST_RETRIES)
        except RegistryError as exc:  # down, auth, not found: the registry's problem, not the artifact's
            return self._install_failed(digest, str(exc), permanent=False)
        except Exception as exc:
            from edge.errors import ArtifactError

            if isinstance(exc, (ArtifactError, ModelInstallError)):
                return self._install_failed(digest, str(exc), permanent=True)
            logger.exception("install of %s failed", digest)
            return self._install_failed(digest, f"{type(exc).__name__}: {exc}", permanent=False)
        self._digest_failures.pop(digest, None)
        self._emit("model_downloaded", ref=str(ref), digest=digest, version=installed.version,
                   signed_by=installed.signed_by)
        return installed.version

    def _install_failed(self, digest: str, reason: str, permanent: bool) -> None:
        with self._lock:
            if permanent:
                self.state.bad[digest] = reason
        self._emit("model_install_failed", digest=digest, reason=reason, permanent=permanent,
                   retry_in_s=None if permanent else round(self._backoff, 1))
        self._last_problem = None if permanent else reason
        self._set(self._idle_state(), error=reason)
        if not permanent:
            self._retry_later(reason)
        return None

    def _validate_and_switch(self, version: int, digest: str, bootstrap: bool) -> Classifier | None:
        self._set("validating")
        path = self.model_base / str(version)
        current = None if bootstrap or self.pipeline is None else self.pipeline.classifier
        candidate = None
        try:
            candidate = self._load(ModelVersion(self.model_name, version, path))
            report = validate(candidate, path, current, self.settings.tolerance, self.settings.latency_factor,
                              self.settings.require_golden)
        except CandidateLoadError as exc:
            report = ValidationReport(ok=False, reasons=[str(exc)])
        except Exception as exc:
            logger.exception("validation of version %d crashed", version)
            report = ValidationReport(ok=False, reasons=[f"{type(exc).__name__}: {exc}"])
        if not report.ok:
            if candidate is not None:
                candidate.close()
            reason = f"version {version}: {report.reason}"
            with self._lock:
                self.state.bad[digest] = reason
                if version not in (self.state.serving_version, self.state.previous_version):
                    self.installer.remove(version, self.state)
            self._emit("model_validation_failed", version=version, digest=digest, reason=report.reason,
                       report=report.as_dict())
            self._set(self._idle_state(), error=reason)
            return None
        assert candidate is not None
        with self._lock:
            if digest not in self.state.validated:
                self.state.validated.append(digest)
        if bootstrap or self.pipeline is None:
            with self._lock:
                self.state.serving_version, self.state.serving_digest = version, digest
            self._set("serving", error=None)
            self._emit("model_switched", version=version, digest=digest, from_version=None, from_digest=None,
                       validation=report.as_dict())
            return candidate
        self._switch(candidate, version, digest, report)
        return None

    def _switch(self, candidate: Classifier, version: int, digest: str, report: ValidationReport) -> None:
        old = self.pipeline.classifier
        baseline_ms = self._baseline_ms()
        baseline = self._counters()
        self.pipeline.set_classifier(candidate)
        with self._lock:
            from_version, from_digest = self.state.serving_version, self.state.serving_digest
            self.state.previous_version, self.state.previous_digest = from_version, from_digest
            self.state.serving_version, self.state.serving_digest = version, digest
            self._probation = _Probation(version, digest, old, baseline, baseline_ms,
                                         time.monotonic() + self.settings.probation_s)
        self._set("probation", error=None)
        logger.info("switched %s from version %s to %d", self.model_name, from_version, version)
        self._emit("model_switched", version=version, digest=digest, from_version=from_version,
                   from_digest=from_digest, probation_s=self.settings.probation_s, validation=report.as_dict())

    # -- probation -----------------------------------------------------------------------------

    def _counters(self) -> _Counters:
        p = self.pipeline
        return _Counters(time.monotonic(), p.frames_classified, p.frames_failed, p.batches,
                         getattr(p, "inference_ms_total", 0.0))

    def _baseline_ms(self) -> float | None:
        recent = [s for s in self._samples if s.mono >= time.monotonic() - max(30.0, self.settings.probation_s)]
        if len(recent) < 2:
            return None
        first, last = recent[0], recent[-1]
        batches = last.batches - first.batches
        return (last.inference_ms - first.inference_ms) / batches if batches >= MIN_LATENCY_BATCHES else None

    def _check_probation(self, now: float) -> None:
        probation = self._probation
        assert probation is not None
        current = self._counters()
        ok = current.classified - probation.baseline.classified
        failed = current.failed - probation.baseline.failed
        total = ok + failed
        finished = now >= probation.ends
        if total >= MIN_PROBATION_FRAMES or (finished and total):
            rate = failed / total
            if rate > self.settings.probation_max_error_rate:
                self._rollback(f"probation: error rate {rate:.2f} > {self.settings.probation_max_error_rate:g} "
                               f"({failed} of {total} frames failed)", automatic=True)
                return
        if probation.latency_from is None and current.batches - probation.baseline.batches >= WARMUP_BATCHES:
            probation.latency_from = current
        start = probation.latency_from
        batches = current.batches - start.batches if start is not None else 0
        if probation.baseline_ms and start is not None and batches >= MIN_LATENCY_BATCHES:
            mean = (current.inference_ms - start.inference_ms) / batches
            if mean > self.settings.probation_latency_factor * probation.baseline_ms \
                    and mean - probation.baseline_ms > LATENCY_SLACK_MS:
                self._rollback(f"probation: mean inference {mean:.1f} ms > {self.settings.probation_latency_factor:g}"
                               f" x {probation.baseline_ms:.1f} ms before the switch", automatic=True)
                return
        if finished:
            self._probation = None
            self._retire(probation.old)
            self._emit("model_probation_passed", version=probation.version, digest=probation.digest,
                       frames=total, failed=failed)
            self._set("serving")
            with self._lock:
                removed = self.installer.prune(self.state, self.settings.keep_versions)
            if removed:
                self._emit("model_versions_removed", versions=removed)
                self._publish()

    def _retire(self, classifier: Classifier) -> None:
        """Close a classifier a little later: the batch in flight may still be using it."""
        self._retired.append((time.monotonic() + 5.0, classifier))

    def _close_retired(self, now: float) -> None:
        due = [c for t, c in self._retired if t <= now]
        self._retired = [(t, c) for t, c in self._retired if t > now]
        for classifier in due:
            try:
                classifier.close()
            except Exception:
                logger.exception("closing a retired classifier failed")

    def _rollback(self, reason: str, automatic: bool) -> dict[str, Any]:
        if self.pipeline is None:
            raise RolloutError("the gateway is not serving yet")
        probation = self._probation
        with self._lock:
            from_version, from_digest = self.state.serving_version, self.state.serving_digest
            to_version, to_digest = self.state.previous_version, self.state.previous_digest
        if to_version is None:
            raise RolloutError("no previous version to roll back to")
        if probation is not None:
            target = probation.old  # still loaded: an instant swap
        else:
            path = self.model_base / str(to_version)
            if not is_version_dir(path):
                raise RolloutError(f"previous version {to_version} is no longer on disk")
            try:
                target = self._load(ModelVersion(self.model_name, to_version, path))
            except Exception as exc:
                raise RolloutError(f"previous version {to_version} cannot be loaded: {exc}") from None
        current = self.pipeline.classifier
        self.pipeline.set_classifier(target)
        self._probation = None
        self._retire(current)
        with self._lock:
            if from_digest:
                self.state.bad[from_digest] = reason
            self.state.serving_version, self.state.serving_digest = to_version, to_digest
            self.state.previous_version = self.state.previous_digest = None
            if from_version is not None and from_version != to_version:
                # Gone from disk at once: TF Serving's "latest N" policy must not keep serving it
                # (the in-process copy is still loaded until retired; deleting files under it is safe).
                self.installer.remove(from_version, self.state)
        self._set("rolled-back", error=reason)
        logger.warning("rolled back %s from version %s to %s: %s", self.model_name, from_version, to_version, reason)
        self._emit("model_rolled_back", version=to_version, digest=to_digest, from_version=from_version,
                   from_digest=from_digest, reason=reason, automatic=automatic)
        return {"version": to_version, "digest": to_digest, "from_version": from_version}
