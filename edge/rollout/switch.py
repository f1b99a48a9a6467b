"""The switch stage of a rollout: swap the serving classifier, watch the probation, roll back, retire.

The switch is ``pipeline.set_classifier()``: the batch in flight finishes on the old version, the
next one runs on the new one, so no frame fails and results change version exactly once. During
probation the old classifier stays loaded, so an automatic rollback is one more pointer swap; the
verdicts come from :func:`edge.rollout.policy.judge_probation`. A replaced classifier is closed
:data:`RETIRE_DELAY_S` later, when no batch can still be using it.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from edge.errors import RolloutError
from edge.models.state import ModelState, RolloutState
from edge.models.store import ModelVersion, is_version_dir
from edge.rollout.installer import ModelInstaller
from edge.rollout.policy import Counters, Probation, RolloutSettings, Verdict, baseline_latency_ms, judge_probation
from edge.rollout.validation import ValidationReport
from edge.serving.base import Classifier

logger = logging.getLogger(__name__)

RETIRE_DELAY_S = 5.0  # a replaced classifier is closed this much later: the batch in flight may still use it
Loader = Callable[[ModelVersion], Classifier]
Emit = Callable[..., None]  # emit(kind, **payload)
SetState = Callable[..., None]  # set_state(state=None, error=False)


class ServingPipeline(Protocol):
    """What the switch needs from the inference pipeline: its classifier and its counters."""

    frames_classified: int
    frames_failed: int
    batches: int
    inference_ms_total: float

    @property
    def classifier(self) -> Classifier: ...

    def set_classifier(self, classifier: Classifier) -> None: ...


class VersionSwitch:
    """Owns the probation and the retired classifiers of one model; runs on the rollout thread."""

    def __init__(self, *, state: ModelState, lock: threading.RLock, installer: ModelInstaller, loader: Loader,
                 settings: RolloutSettings, set_state: SetState, emit: Emit) -> None:
        self.pipeline: ServingPipeline | None = None
        self.probation: Probation | None = None
        self._state = state
        self._lock = lock
        self._installer = installer
        self._load = loader
        self._settings = settings
        self._set = set_state
        self._emit = emit
        self._old: Classifier | None = None  # the version before the switch, loaded during probation
        self._samples: deque[Counters] = deque(maxlen=120)
        self._retired: list[tuple[float, Classifier]] = []

    def tick(self, now: float) -> None:
        """Once per rollout turn: sample the counters, close retired classifiers, judge the probation."""
        if self.pipeline is not None:
            self._samples.append(self._counters())
        self._close_retired(now)
        if self.probation is not None:
            self._watch_probation(now)

    def switch(self, candidate: Classifier, version: int, digest: str, report: ValidationReport) -> None:
        assert self.pipeline is not None
        old = self.pipeline.classifier
        baseline_ms = baseline_latency_ms(self._samples, time.monotonic(), self._settings)
        baseline = self._counters()
        self.pipeline.set_classifier(candidate)
        with self._lock:
            from_version, from_digest = self._state.serving_version, self._state.serving_digest
            self._state.previous_version, self._state.previous_digest = from_version, from_digest
            self._state.serving_version, self._state.serving_digest = version, digest
            self.probation = Probation(version, digest, baseline, baseline_ms,
                                        time.monotonic() + self._settings.probation_s)
            self._old = old
        self._set(RolloutState.PROBATION, error=None)
        logger.info("switched %s from version %s to %d", self._installer.model_name, from_version, version)
        self._emit("model_switched", version=version, digest=digest, from_version=from_version,
                   from_digest=from_digest, probation_s=self._settings.probation_s, validation=report.as_dict())

    def _counters(self) -> Counters:
        p = self.pipeline
        assert p is not None
        return Counters(time.monotonic(), p.frames_classified, p.frames_failed, p.batches, p.inference_ms_total)

    def _watch_probation(self, now: float) -> None:
        assert self.probation is not None
        judgement = judge_probation(self.probation, self._counters(), now, self._settings)
        self.probation = judgement.probation
        if judgement.verdict is Verdict.ROLL_BACK:
            self.rollback(judgement.reason or "probation failed", automatic=True)
        elif judgement.verdict is Verdict.PASSED:
            probation, old = judgement.probation, self._old
            self.probation = self._old = None
            if old is not None:
                self._retire(old)
            self._emit("model_probation_passed", version=probation.version, digest=probation.digest,
                       frames=judgement.frames, failed=judgement.failed)
            self._set(RolloutState.SERVING)
            with self._lock:
                removed = self._installer.prune(self._state, self._settings.keep_versions)
            if removed:
                self._emit("model_versions_removed", versions=removed)
                self._set()

    def _retire(self, classifier: Classifier) -> None:
        """Close a classifier a little later: the batch in flight may still be using it."""
        self._retired.append((time.monotonic() + RETIRE_DELAY_S, classifier))

    def _close_retired(self, now: float) -> None:
        due = [c for t, c in self._retired if t <= now]
        self._retired = [(t, c) for t, c in self._retired if t > now]
        for classifier in due:
            try:
                classifier.close()
            except Exception:
                logger.exception("closing a retired classifier failed")

    def rollback(self, reason: str, automatic: bool) -> dict[str, Any]:
        if self.pipeline is None:
            raise RolloutError("the gateway is not serving yet")
        in_probation = self.probation is not None
        with self._lock:
            from_version, from_digest = self._state.serving_version, self._state.serving_digest
            to_version, to_digest = self._state.previous_version, self._state.previous_digest
        if to_version is None:
            raise RolloutError("no previous version to roll back to")
        if in_probation and self._old is not None:
            target = self._old  # still loaded: an instant swap
        else:
            path = self._installer.model_base / str(to_version)
            if not is_version_dir(path):
                raise RolloutError(f"previous version {to_version} is no longer on disk")
            try:
                target = self._load(ModelVersion(self._installer.model_name, to_version, path))
            except Exception as exc:
                raise RolloutError(f"previous version {to_version} cannot be loaded: {exc}") from None
        current = self.pipeline.classifier
        self.pipeline.set_classifier(target)
        self.probation = self._old = None
        self._retire(current)
        with self._lock:
            if from_digest:
                self._state.bad[from_digest] = reason
            self._state.serving_version, self._state.serving_digest = to_version, to_digest
            self._state.previous_version = self._state.previous_digest = None
            if from_version is not None and from_version != to_version:
                # Gone from disk at once: TF Serving's "latest N" policy must not keep serving it
                # (the in-process copy is still loaded until retired; deleting files under it is safe).
                self._installer.remove(from_version, self._state)
        self._set(RolloutState.ROLLED_BACK, error=reason)
        logger.warning("rolled back %s from version %s to %s: %s", self._installer.model_name, from_version, to_version, reason)
        self._emit("model_rolled_back", version=to_version, digest=to_digest, from_version=from_version,
                   from_digest=from_digest, reason=reason, automatic=automatic)
        return {"version": to_version, "digest": to_digest, "from_version": from_version}
