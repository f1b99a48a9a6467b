"""The rollout manager: registry tag -> install -> validate -> switch -> probation -> keep or roll back.

One thread. The watcher (:mod:`edge.rollout.watcher`) says when to resolve the followed reference
and holds operator requests; every decision comes from :mod:`edge.rollout.policy`. A new digest
that is not known bad goes:

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
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from edge.errors import CandidateLoadError, RolloutError
from edge.models.state import ModelState, RolloutState, StateStore
from edge.models.store import ModelVersion, is_version_dir
from edge.rollout.channels import ChannelWatch
from edge.rollout.installer import ModelInstaller
from edge.rollout.policy import Check, RolloutSettings, decide_check, install_failure, stale_version
from edge.rollout.switch import ServingPipeline, VersionSwitch
from edge.rollout.validation import ValidationReport, validate
from edge.rollout.watcher import Request, RequestKind, TagWatcher
from edge.serving.base import Classifier
from edge.util.ociref import Reference

logger = logging.getLogger(__name__)

EventSink = Callable[[str, dict[str, Any]], None]
Loader = Callable[[ModelVersion], Classifier]


class RolloutManager:
    """Keeps one model's serving version in step with a registry reference."""

    def __init__(self, *, ref: Reference, installer: ModelInstaller, state_store: StateStore, state: ModelState,
                 loader: Loader, settings: RolloutSettings, emit: EventSink,
                 publish_state: Callable[[dict[str, Any]], None] | None = None,
                 pipeline: ServingPipeline | None = None) -> None:
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
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.watcher = TagWatcher(ref, installer.resolve, settings, self._wake)
        self._thread: threading.Thread | None = None
        self.switch = VersionSwitch(state=state, lock=self._lock, installer=installer, loader=loader,
                                    settings=settings, set_state=self._set, emit=self._emit)
        self.switch.pipeline = pipeline
        self.channels = ChannelWatch(installer, state, self._lock, self._emit, self._set)
        self._digest_failures: dict[str, int] = {}
        self._last_problem: str | None = None

    # -- public ------------------------------------------------------------------------------

    @property
    def pipeline(self) -> ServingPipeline | None:
        return self.switch.pipeline

    @pipeline.setter
    def pipeline(self, pipeline: ServingPipeline | None) -> None:
        self.switch.pipeline = pipeline

    @property
    def checks(self) -> int:
        return self.watcher.checks

    @property
    def check_failures(self) -> int:
        return self.watcher.check_failures

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
        return self.watcher.active_ref(self.state.ref)

    def deploy(self, ref: str | None = None) -> dict[str, Any]:
        """Follow `ref` from now on (None: back to the configured ref) and check it at once.

        Returns immediately; progress comes as events."""
        target = self.watcher.parse_deploy_ref(ref) if ref is not None else None
        self.watcher.submit(RequestKind.DEPLOY, target)
        return {"queued": True, "ref": str(target or self.ref)}

    def allow_rollback(self, version: int, digest: str, expires: float, counter: int) -> None:
        """Record a signed rollback's allowance (persisted): `version` with `digest` may be installed
        although newer versions were accepted, until `expires` or until it is switched in."""
        with self._lock:
            self.state.rollback_allowed[digest] = {"version": version, "expires": expires, "counter": counter}
            self.state.bad.pop(digest, None)  # refused as stale before: it is wanted now
            self.state_store.save(self.state)
        self._publish()

    def rollback(self, wait_s: float = 120.0) -> dict[str, Any]:
        """Serve the previous version again (the current digest is marked bad); waits for the result."""
        future = self.watcher.submit(RequestKind.ROLLBACK)
        try:
            return future.result(timeout=wait_s)
        except TimeoutError:
            raise RolloutError(f"rollback still running after {wait_s:.0f}s; watch the events") from None

    def state_snapshot(self) -> ModelState:
        """A copy of the model state, taken under the rollout's lock (desired state converges on it)."""
        with self._lock:
            return ModelState.from_json(self.state.to_json())

    def forget_bad(self, digest: str) -> None:
        """A new desired generation asks for `digest` again: it is tried once more (as an explicit deploy)."""
        with self._lock:
            if self.state.bad.pop(digest, None) is None:
                return
            self.state_store.save(self.state)
        self._publish()

    def summary(self) -> dict[str, Any]:
        with self._lock:
            doc = self.state.summary()
            doc["name"] = self.model_name
            doc["ref"] = str(self.active_ref())
            doc["configured_ref"] = str(self.ref)
            probation = self.switch.probation
            doc["probation_left_s"] = round(max(0.0, probation.ends - time.monotonic()), 1) if probation else None
            doc["checks"] = self.checks
            doc["check_failures"] = self.check_failures
            doc["channel"] = self.channels.summary(self.active_ref())
            problem = self.channels.problem(self.active_ref())
            doc["problems"] = [problem] if problem else []
            pipeline = self.switch.pipeline
        backend = pipeline.classifier.health() if pipeline is not None else {}
        doc["runtime"] = backend.get("runtime")  # which runtime and precision serve (embedded: runtime selection)
        doc["precision"] = backend.get("precision")
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
        deploys: list[Request] = []
        for request in self.watcher.take_requests():
            if request.kind is RequestKind.ROLLBACK:
                try:
                    request.future.set_result(self.switch.rollback("rolled back by operator", automatic=False))
                except Exception as exc:
                    request.future.set_exception(exc)
            else:
                deploys.append(request)
        self.switch.tick(now)
        if deploys and self.switch.probation is not None:  # finish probation first; keep the requests
            self.watcher.put_back(deploys)
            return
        for request in deploys[-1:]:  # the newest request wins
            with self._lock:
                self.state.ref = str(request.ref) if request.ref is not None else None
            self._check(self.active_ref(), forced=True)
        for request in deploys:
            request.future.set_result({})
        if not deploys and self.switch.probation is None and self.watcher.due(now):
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

    def _set(self, state: RolloutState | None = None, error: str | bool | None = False) -> None:
        with self._lock:
            if state is not None:
                self.state.state = state
            if error is not False:
                self.state.last_error = error if isinstance(error, str) else None
            self.state_store.save(self.state)
        self._publish()

    def _idle_state(self) -> RolloutState:
        if self.state.state is RolloutState.ROLLED_BACK:
            return RolloutState.ROLLED_BACK
        return RolloutState.SERVING if self.state.serving_version is not None else RolloutState.IDLE

    def _check(self, ref: Reference, forced: bool, bootstrap: bool = False) -> Classifier | None:
        """One pass: resolve, and install/validate/switch when the digest is new. Returns the
        validated classifier in bootstrap mode (the caller starts serving it)."""
        try:
            digest = self.watcher.resolve(ref)
        except Exception as exc:  # RegistryError and anything the network throws
            problem = f"cannot resolve {ref}: {exc}"
            if problem != self._last_problem:
                self._emit("model_check_failed", ref=str(ref), reason=str(exc),
                           retry_in_s=round(self.watcher.backoff_s, 1))
                self._last_problem = problem
            self._set(error=problem)
            self.watcher.failed(problem)
            self.channels.unreachable(ref)
            return None
        stale_channel = self.channels.check(ref, digest)
        recorded = self.state.version_of(digest)
        present = recorded is not None and is_version_dir(self.model_base / str(recorded))
        decision = decide_check(digest, self.state, forced=forced, version_present=present)
        if decision.action is Check.UP_TO_DATE:
            if self._last_problem is not None:
                self._last_problem = None
                self._set(error=None)
            return None
        if decision.action is Check.SKIP_BAD:
            if self._last_problem != f"bad {digest}":
                logger.info("%s points to %s, known bad (%s); not deploying", ref, digest, self.state.bad[digest])
                self._last_problem = f"bad {digest}"
            return None
        if stale_channel:  # a new digest needs a fresh signed statement on this channel; wait for one
            logger.info("%s points to %s without a fresh channel statement; not installing it", ref, digest)
            return None
        if decision.retry_bad:
            with self._lock:
                self.state.bad.pop(digest, None)  # an operator asked for it explicitly: try once more
        version = decision.version
        if version is not None:  # installed before (e.g. kept for rollback): still subject to freshness
            stale = stale_version(self.state, version, digest, time.time())
            if stale is not None:
                self._install_failed(digest, stale, permanent=True)
                return None
        if decision.action is Check.INSTALL:
            version = self._install(replace(ref, digest=digest), digest)
            if version is None:
                return None
        assert version is not None
        return self._validate_and_switch(version, digest, bootstrap)

    def _install(self, ref: Reference, digest: str) -> int | None:
        self._emit("model_download_started", ref=str(ref), digest=digest)
        self._set(RolloutState.DOWNLOADING)
        try:
            installed = self.installer.install(ref, self.state)
        except Exception as exc:
            failures = self._digest_failures.get(digest, 0) + 1
            self._digest_failures[digest] = failures
            failure = install_failure(exc, failures)
            if failure.unexpected:
                logger.exception("install of %s failed", digest)
            self._install_failed(digest, failure.reason, permanent=failure.permanent)
            return None
        self._digest_failures.pop(digest, None)
        self._emit("model_downloaded", ref=str(ref), digest=digest, version=installed.version,
                   signed_by=installed.signed_by, signature=installed.signature, variant=installed.variant)
        return installed.version

    def _install_failed(self, digest: str, reason: str, permanent: bool) -> None:
        with self._lock:
            if permanent:
                self.state.bad[digest] = reason
        self._emit("model_install_failed", digest=digest, reason=reason, permanent=permanent,
                   retry_in_s=None if permanent else round(self.watcher.backoff_s, 1))
        self._last_problem = None if permanent else reason
        self._set(self._idle_state(), error=reason)
        if not permanent:
            self.watcher.failed(reason)

    def _validate_and_switch(self, version: int, digest: str, bootstrap: bool) -> Classifier | None:
        self._set(RolloutState.VALIDATING)
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
            self.state.accepted(version, digest)
        if bootstrap or self.pipeline is None:
            with self._lock:
                self.state.serving_version, self.state.serving_digest = version, digest
            self._set(RolloutState.SERVING, error=None)
            self._emit("model_switched", version=version, digest=digest, from_version=None, from_digest=None,
                       validation=report.as_dict())
            return candidate
        self.switch.switch(candidate, version, digest, report)
        return None
