"""The device side of desired state: accept ``<prefix>/<device>/desired``, converge, report.

:class:`DesiredStateAgent` gets every copy of the retained desired document (on every connect,
and on every change) and keeps one worker thread that

1. parses it (:func:`edge.util.shadow.parse_desired`): a malformed document, an unknown or wrongly
   typed field, a stale generation or a reused generation with another target is **refused**: the
   reason goes into ``reported.refused`` and a ``desired_state_refused`` event, and the device keeps
   converging to the generation it accepted before;
2. records a new generation on disk (:mod:`edge.device.desired_record`) before acting on it;
3. applies the config revision (:mod:`edge.device.desired_config`: one unsigned merge patch, so a
   trust anchor is refused as for ``cmd/config``; live, or persisted and a restart);
4. converges the model (:func:`edge.rollout.convergence.converge`): deploy ``ref@digest`` through
   the normal rollout (signature, freshness, golden images, probation) or the one-step rollback;
5. publishes ``reported`` (retained) whenever what it says changes, on every desired copy received
   and on the health tick until the broker took it, with one event per outcome
   (``desired_state_converged`` / ``desired_state_failed``).

Desired state can do what an operator's ``deploy``, ``rollback`` and unsigned ``config`` commands
can do and nothing more: the trust anchors (registry, broker, keys, credentials, paths) change only
locally or by a document signed by the fleet root key.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edge.config.patch import LiveConfig, PatchOutcome, read_document
from edge.device.desired_config import ConfigRecord, flatten, lookup, plan, values_sha256
from edge.device.desired_record import DesiredRecordStore
from edge.errors import DesiredStateError, PatchError, RolloutError, TrustError
from edge.models.state import ModelState
from edge.rollout.convergence import Action, Convergence, converge
from edge.util.shadow import (
    ENDED_BADLY,
    ConfigProgress,
    DesiredState,
    GenerationVerdict,
    ModelProgress,
    ShadowState,
    judge_generation,
    parse_desired,
    refusal_reason,
    reported_document,
)

logger = logging.getLogger(__name__)

# A reconnect delivers what the persistent session queued while the device was away, then the retained
# copy: documents arriving this close together are taken as one burst, and only the newest is acted on.
SETTLE_S = 0.3


class ModelControl(Protocol):
    """What the agent needs of the model rollout (edge.app.model_updates.ModelUpdates)."""

    def model_state(self) -> ModelState: ...  # a copy
    def deploy(self, ref: str, retry: bool) -> None: ...  # retry: forget that the digest was refused first
    def rollback(self) -> None: ...  # RolloutError when there is nothing to go back to


@dataclass(frozen=True)
class DesiredContext:
    device_id: str
    config: LiveConfig
    apply_live: Callable[[PatchOutcome], None]
    request_restart: Callable[[str], None]
    emit: Callable[[str, dict[str, Any]], None]
    publish_reported: Callable[[dict[str, Any]], bool]  # retained, QoS 1; False while offline
    state_path: Path
    model: ModelControl | None  # None: no [registry]


class DesiredStateAgent:
    def __init__(self, ctx: DesiredContext) -> None:
        self._ctx = ctx
        self._store = DesiredRecordStore(ctx.state_path)
        self.record = self._store.load()
        self.desired: DesiredState | None = None
        if self.record.desired is not None:
            try:
                self.desired = parse_desired(self.record.desired)
            except DesiredStateError as exc:
                logger.error("recorded desired state unreadable (%s); waiting for the broker's copy", exc)
        if self.record.config_outcome and self.record.config_outcome.get("state") == ConfigProgress.RESTARTING:
            self._settle_restart()
        self._slot: bytes | None = None
        self._slot_at = 0.0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._acted: set[tuple[int, Action, str]] = set()
        self._failed: dict[tuple[int, Action, str], Convergence] = {}
        self._model: Convergence | None = None
        self._published: dict[str, Any] | None = None
        self._force_publish = True
        self.received = 0
        self.refused = 0

    # -- called by other threads -------------------------------------------------------------

    def on_message(self, payload: bytes) -> None:
        """A copy of the retained desired document (paho's thread: keep the newest, hand over)."""
        with self._lock:
            self._slot, self._slot_at = payload, time.monotonic()
        self._wake.set()

    def poke(self) -> None:
        """The model state changed, or the health tick: look again."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="desired-state", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def stats(self) -> dict[str, Any]:
        return {"generation": self.record.generation, "received": self.received, "refused": self.refused,
                "state": (self._published or {}).get("state")}

    # -- worker --------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            while not self._stop.is_set():  # let a burst of copies settle: only the newest counts
                with self._lock:
                    quiet = time.monotonic() - self._slot_at
                if self._slot is None or quiet >= SETTLE_S:
                    break
                self._stop.wait(SETTLE_S - quiet)
            try:
                self.step()
            except Exception:  # never let the agent die: the device keeps serving what it serves
                logger.exception("desired-state step failed")

    def step(self) -> None:
        with self._lock:
            payload, self._slot = self._slot, None
        if payload is not None:
            self.received += 1
            self._force_publish = True
            if payload.strip():
                self._receive(payload)
            else:
                logger.info("desired state cleared on the broker; keeping generation %d", self.record.generation)
        if self.desired is not None:
            self._converge_config(self.desired)
            self._converge_model(self.desired)
        self._publish()

    def _receive(self, payload: bytes) -> None:
        try:
            doc = parse_desired(payload)
        except DesiredStateError as exc:
            self._refuse(None, f"desired state refused: {exc}")
            return
        verdict = judge_generation(self.record.generation, self.record.target_sha256, doc)
        if verdict in (GenerationVerdict.STALE, GenerationVerdict.CONFLICT):
            self._refuse(doc.generation, refusal_reason(verdict, doc, self.record.generation))
            return
        if verdict is GenerationVerdict.SAME:
            return
        record = self.record
        record.generation, record.target_sha256 = doc.generation, doc.target_sha256
        record.desired, record.accepted_at = doc.to_json(), time.time()
        self._store.save(record)
        self.desired = doc
        self._model = None
        logger.info("desired state generation %d accepted (rollout %s)", doc.generation, doc.rollout)
        self._ctx.emit("desired_state_accepted", {
            "generation": doc.generation, "rollout": doc.rollout,
            "model": doc.model.to_json() if doc.model else None,
            "config_revision": doc.config.revision if doc.config else None})

    def _refuse(self, generation: int | None, reason: str) -> None:
        self.refused += 1
        logger.warning("%s", reason)
        self.record.refused = {"generation": generation, "reason": reason, "at": round(time.time(), 3)}
        self._store.save(self.record)
        self._ctx.emit("desired_state_refused", {"generation": generation, "reason": reason})

    # -- config --------------------------------------------------------------------------------

    def _settle_restart(self) -> None:
        """The gateway restarted for a config revision: it runs with it, or it could not start with it and
        put the previous file back (edge.config.pending; event config_reverted): then it is refused."""
        outcome = self.record.config_outcome or {}
        target = self.desired.config if self.desired is not None else None
        path = self._ctx.config.path
        took = True
        if target is not None and target.revision == outcome.get("revision") and path is not None:
            try:
                document = read_document(path)
                took = all(lookup(document, key) == (True, value) for key, value in flatten(target.values).items())
            except PatchError as exc:
                logger.error("cannot check the config after the restart: %s", exc)
        if took:
            self.record.config_outcome = {**outcome, "state": ConfigProgress.APPLIED.value}
        else:
            self.record.config = self.record.config_before or ConfigRecord()
            self.record.config_outcome = {
                "revision": outcome.get("revision"), "state": ConfigProgress.REFUSED.value,
                "reason": "the gateway could not start with this revision and put the previous config back "
                          "(event config_reverted says why)"}
        self.record.config_before = None
        self._store.save(self.record)

    def _config_outcome(self, revision: int, state: ConfigProgress, reason: str | None) -> None:
        self.record.config_outcome = {"revision": revision, "state": state.value, "reason": reason}

    def _converge_config(self, desired: DesiredState) -> None:
        target = desired.config
        record = self.record
        if target is None:
            return
        outcome = record.config_outcome or {}
        if outcome.get("revision") == target.revision and outcome.get("state") in (
                ConfigProgress.APPLIED.value, ConfigProgress.RESTARTING.value, ConfigProgress.REFUSED.value):
            return  # done for this revision (refusals are final until a new revision)
        sha = values_sha256(target.values)
        applied = record.config.revision
        if applied is not None and target.revision < applied:
            self._config_refused(target.revision, f"config revision {target.revision} is older than revision "
                                 f"{applied}, which this device applied; publish a higher revision")
            return
        if applied == target.revision and record.config.values_sha256 != sha:
            self._config_refused(target.revision, f"config revision {target.revision} was applied with other "
                                 "values; changed values need a higher revision")
            return
        if applied == target.revision:
            self._config_outcome(target.revision, ConfigProgress.APPLIED, None)
            self._store.save(record)
            return
        live = self._ctx.config
        try:
            if live.path is None:
                raise PatchError("this gateway was started without a config file")
            patch, baseline = plan(read_document(live.path), target.values, record.config)
            result = live.patch(patch)
        except TrustError as exc:
            self._config_refused(target.revision, "desired state never changes trust anchors; " + str(exc))
            return
        except PatchError as exc:
            self._config_refused(target.revision, str(exc))
            return
        restart = result.applied == "restart"
        record.config_before = record.config if restart else None
        record.config = ConfigRecord(target.revision, sha, baseline)
        self._config_outcome(target.revision, ConfigProgress.RESTARTING if restart else ConfigProgress.APPLIED, None)
        self._store.save(record)
        logger.info("config revision %d applied (%s): %s", target.revision, result.applied,
                    ", ".join(result.changed) or "nothing changed")
        if result.applied == "live":
            self._ctx.apply_live(result)
            self._ctx.emit("config_changed", {"changed": result.changed, "applied": "live",
                                              "revision": target.revision})
        elif restart:
            self._publish()
            self._ctx.request_restart(f"desired config revision {target.revision}: "
                                      f"{', '.join(result.restart_keys)}")

    def _config_refused(self, revision: int, reason: str) -> None:
        logger.warning("desired config revision %d refused: %s", revision, reason)
        self._config_outcome(revision, ConfigProgress.REFUSED, reason)
        self._store.save(self.record)
        self._ctx.emit("config_refused", {"keys": [], "signed": False, "reason": reason, "revision": revision})

    # -- model ---------------------------------------------------------------------------------

    def _converge_model(self, desired: DesiredState) -> None:
        target = desired.model
        if target is None:
            self._model = None
            return
        control = self._ctx.model
        if control is None:
            self._model = Convergence(ModelProgress.REFUSED, reason="this device has no [registry]: it serves the "
                                      "model in its store and cannot install one by desired state")
            return
        generation = desired.generation
        state = control.model_state()
        conv = converge(state, target.digest, target.pinned, retry=generation > self.record.stepped_generation,
                        now=time.time())
        if conv.action is not Action.NONE:
            key = (generation, conv.action, target.pinned)
            if key in self._failed:
                conv = self._failed[key]
            elif key not in self._acted:  # each step once per generation; then wait for the manager
                self._acted.add(key)
                try:
                    if conv.action is Action.ROLLBACK:
                        logger.info("desired digest %s is the previous version: rolling back", target.digest[:19])
                        control.rollback()
                        self._wake.set()  # serving it again: follow it next
                    else:
                        control.deploy(target.pinned, retry=target.digest in state.bad)
                except RolloutError as exc:
                    progress = ModelProgress.REFUSED if conv.action is Action.DEPLOY else ModelProgress.FAILED
                    conv = self._failed[key] = Convergence(progress, reason=str(exc), version=conv.version)
            conv = Convergence(conv.progress, reason=conv.reason, version=conv.version)
        if generation > self.record.stepped_generation and not conv.waiting:
            self.record.stepped_generation = generation  # a refused digest is retried once per generation
            self._store.save(self.record)
        self._model = conv

    # -- reporting -----------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """The reported document (without its timestamp)."""
        record, desired = self.record, self.desired
        model = config = None
        states: list[bool | None] = []  # per part: True done, False failed, None in progress
        if desired is not None and desired.model is not None and self._model is not None:
            conv = self._model
            model = {**desired.model.to_json(), "state": conv.progress.value, "version": conv.version,
                     "reason": conv.reason}
            states.append(False if conv.progress in ENDED_BADLY else True if conv.progress is ModelProgress.SERVING
                          else None)
        if desired is not None and desired.config is not None:
            outcome = record.config_outcome or {}
            if outcome.get("revision") != desired.config.revision:
                outcome = {"revision": desired.config.revision, "state": ConfigProgress.PENDING.value, "reason": None}
            config = dict(outcome)
            states.append({ConfigProgress.APPLIED.value: True, ConfigProgress.REFUSED.value: False}.get(
                str(outcome.get("state"))))
        if desired is None:
            state = ShadowState.NONE
        elif False in states:
            state = ShadowState.FAILED
        elif None in states or (desired.model is not None and self._model is None):
            state = ShadowState.RECONCILING
        else:
            state = ShadowState.CONVERGED
        serving = None
        if self._ctx.model is not None:
            now = self._ctx.model.model_state()
            serving = {"version": now.serving_version, "digest": now.serving_digest}
        return reported_document(device=self._ctx.device_id, generation=record.generation, state=state,
                                 since=record.accepted_at, rollout=desired.rollout if desired else None, model=model,
                                 config=config, serving=serving, config_revision=record.config.revision,
                                 refused=record.refused)

    def _publish(self) -> None:
        doc = self.report()
        if doc == self._published and not self._force_publish:
            return
        if self._ctx.publish_reported({**doc, "ts": round(time.time(), 3)}):
            self._published, self._force_publish = doc, False
        self._announce(doc)

    def _announce(self, doc: dict[str, Any]) -> None:
        state, generation = doc["state"], doc["generation"]
        if state not in (ShadowState.CONVERGED.value, ShadowState.FAILED.value):
            return
        if self.record.announced == (generation, state):
            return
        self.record.announced = (generation, state)
        self._store.save(self.record)
        if state == ShadowState.CONVERGED.value:
            self._ctx.emit("desired_state_converged", {"generation": generation, "rollout": doc["rollout"],
                                                       "serving": doc["serving"]})
        else:
            reasons = [f"{k}: {doc[k]['reason']}" for k in ("model", "config") if doc[k] and doc[k].get("reason")]
            self._ctx.emit("desired_state_failed", {"generation": generation, "rollout": doc["rollout"],
                                                    "reason": "; ".join(reasons) or "failed"})
