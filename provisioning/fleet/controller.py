"""The rollout controller: moves a rollout document forward from what the broker retains.

Every turn (:meth:`Controller.tick`) it reads the rollout document and every device's retained
``status``, ``desired`` and ``reported`` from a :class:`~provisioning.fleet.view.FleetView` and

- **running**: counts failures (a device that refused the document or the target, rolled back, or
  stayed online without converging for ``device_timeout_s``); above ``max_failures`` it sets the
  rollout to ``aborting``. Otherwise it writes the desired document of every device of the current
  stage that has none for this rollout yet (once per device: a document it wrote is remembered until
  the broker echoes it), and moves to the next stage once the current one has *settled* (each
  device converged, failed, or offline: an offline device converges when it returns) and
  ``bake_s`` has passed. When every device converged or failed the rollout is ``completed``.
- **aborting**: writes to every device whose desired document carries this rollout a new
  generation with the ``previous`` target (``"restores": <id>``), then sets ``aborted``.
- **paused**, **completed**, **aborted**: nothing; the controller returns.

Nothing is held in the process that the broker does not have, so the controller can be killed at
any point and started again (``edgectl fleet rollout resume``): it recomputes where it is and
continues, and no device gets a second document for the same rollout.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from edge.errors import FleetError
from edge.util.ociref import Reference
from edge.util.shadow import DesiredState, ModelTarget, Outcome, judge_reported
from provisioning.fleet.client import FleetClient
from provisioning.fleet.rollouts import TERMINAL, Rollout, RolloutState, merge_values
from provisioning.fleet.view import FleetView

logger = logging.getLogger(__name__)

Say = Callable[[str], None]


@dataclass(frozen=True)
class DeviceProgress:
    device: str
    dispatched: bool  # its desired document carries this rollout (or the controller just wrote it)
    restored: bool  # its desired document restores what this rollout changed
    outcome: Outcome | None  # for that document's generation
    reason: str
    online: bool


def serving_target(reported: dict[str, Any] | None, model: dict[str, Any] | None) -> ModelTarget | None:
    """What a device serves now, as a desired model target (what an abort sets back when it had none)."""
    serving = (reported or {}).get("serving") or (model or {}).get("serving") or {}
    digest, ref = serving.get("digest"), (model or {}).get("ref") or (model or {}).get("configured_ref")
    if not isinstance(digest, str) or not isinstance(ref, str):
        return None
    try:
        return ModelTarget(str(replace(Reference.parse(ref), digest=None)), digest)
    except ValueError:
        return None


def classify(rollout: Rollout, status: dict[str, str], desired: dict[str, DesiredState | None],
             reported: dict[str, dict[str, Any]], sent: dict[str, int], now: float) -> dict[str, DeviceProgress]:
    out = {}
    for device in rollout.devices:
        doc = desired.get(device)
        written = sent.get(device)
        dispatched = doc is not None and doc.rollout == rollout.id
        restored = doc is not None and doc.restores == rollout.id
        generation = doc.generation if (dispatched or restored) and doc is not None else written
        online = status.get(device) == "online"
        outcome, reason = None, ""
        if generation is not None:
            outcome, reason = judge_reported(generation, reported.get(device))
            since = (reported.get(device) or {}).get("since")
            if (outcome is Outcome.PENDING and online and dispatched and isinstance(since, (int, float))
                    and (reported.get(device) or {}).get("generation") == generation
                    and now - since > rollout.device_timeout_s):
                outcome, reason = Outcome.FAILED, f"not converged after {rollout.device_timeout_s:g}s ({reason})"
        out[device] = DeviceProgress(device, dispatched or (written is not None and not restored), restored,
                                     outcome, reason, online)
    return out


class Controller:
    def __init__(self, client: FleetClient, view: FleetView, rollout_id: str, say: Say, issued_by: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.view = view
        self.id = rollout_id
        self.say = say
        self.issued_by = issued_by
        self.clock = clock
        self.sent: dict[str, int] = {}  # device -> generation written for this rollout (until echoed)
        self.restore_sent: dict[str, int] = {}
        self.settled_at: dict[int, float] = {}
        self.stage = -1
        self.written = 0
        self._last_summary = ""
        self._summary_at = 0.0

    # -- the loop --------------------------------------------------------------------------------

    def run(self, wait_s: float | None = None, interval_s: float = 0.5) -> RolloutState:
        """Turn until the rollout is paused, completed or aborted (or `wait_s` passed): its state then."""
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            state = self.tick()
            if state is not None:
                return state
            if deadline is not None and time.monotonic() >= deadline:
                rollout = self._rollout()
                return rollout.state
            self.view.wait(interval_s)

    def tick(self) -> RolloutState | None:
        rollout = self._rollout()
        if rollout.state is RolloutState.PAUSED or rollout.state in TERMINAL:
            return rollout.state
        status, desired, reported, _ = self.view.snapshot()
        self._forget_echoed(desired)
        progress = classify(rollout, status, desired, reported, self.sent, self.clock())
        if rollout.state is RolloutState.ABORTING:
            return self._abort_step(rollout, progress)
        failed = {d: p.reason for d, p in progress.items() if p.dispatched and p.outcome is Outcome.FAILED}
        self._summary(rollout, progress)
        if len(failed) > rollout.allowed_failures:
            first = "; ".join(f"{d}: {r}" for d, r in sorted(failed.items())[:3])
            reason = (f"{len(failed)} device(s) failed, more than the {rollout.allowed_failures} allowed "
                      f"(max_failures): {first}")
            self.say(f"ABORT: {reason}")
            self._set_state(rollout, RolloutState.ABORTING, reason)
            return None
        for index, devices in enumerate(rollout.stage_sets()):
            todo = [d for d in devices if not progress[d].dispatched]
            if todo:
                if index > 0 and self.clock() - self.settled_at.get(index - 1, self.clock()) < rollout.bake_s:
                    return None  # baking the previous stage
                self._announce_stage(rollout, index, devices)
                self._dispatch(rollout, todo)
                return None
            if not all(self._settled(progress[d]) for d in devices):
                self._announce_stage(rollout, index, devices)
                return None
            self.settled_at.setdefault(index, self.clock())
        if all(p.outcome in (Outcome.CONVERGED, Outcome.FAILED) for p in progress.values()):
            counts = Counter(p.outcome.value for p in progress.values() if p.outcome is not None)
            self._set_state(rollout, RolloutState.COMPLETED, ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
            self.say(f"rollout {self.id} completed: {self._rollout().reason}")
            return RolloutState.COMPLETED
        return None

    @staticmethod
    def _settled(p: DeviceProgress) -> bool:
        return p.dispatched and (p.outcome in (Outcome.CONVERGED, Outcome.FAILED) or not p.online)

    # -- writing -----------------------------------------------------------------------------------

    def _rollout(self) -> Rollout:
        rollout = self.view.rollout(self.id)
        if rollout is None:
            raise FleetError(f"rollout {self.id!r}: no readable document at {self.view.prefix}/fleet/rollouts/"
                             f"{self.id} ({self.view.problems().get(f'fleet/rollouts/{self.id}', 'not found')})")
        return rollout

    def _set_state(self, rollout: Rollout, state: RolloutState, reason: str | None) -> None:
        now = self._rollout()
        if now.state is not rollout.state:  # someone else (pause, abort) changed it meanwhile: theirs wins
            return
        updated = replace(now, state=state, reason=reason, updated_at=self.clock())
        publish_rollout(self.client, self.view, updated)

    def _announce_stage(self, rollout: Rollout, index: int, devices: list[str]) -> None:
        if index != self.stage:
            self.stage = index
            stage = rollout.stages[index]
            self.say(f"stage {index + 1}/{len(rollout.stages)} ({stage.name}): {len(devices)} device(s)")

    def _dispatch(self, rollout: Rollout, devices: list[str]) -> None:
        infos = []
        for device in devices:
            doc = self.desired_doc(rollout, device)
            infos.append(self.client.publish(self.client.topic(device, "desired"), _json(doc), retain=True))
            self.sent[device] = doc["generation"]
            self.written += 1
        for info in infos:
            info.wait_for_publish(30)

    def desired_doc(self, rollout: Rollout, device: str) -> dict[str, Any]:
        """The device's desired document for this rollout: the target, and what was desired before."""
        with self.view.changed:
            prev = self.view.desired.get(device)
            reported = self.view.reported.get(device) or {}
            model = self.view.model.get(device)
        prev_model = prev.model if prev is not None and prev.model is not None else serving_target(reported, model)
        prev_config = prev.config if prev is not None else None
        doc: dict[str, Any] = {"generation": self.view.next_generation(device), "rollout": rollout.id}
        target_model = rollout.model or (prev.model if prev is not None else None)
        if target_model is not None:
            doc["model"] = target_model.to_json()
        if rollout.config is not None:
            revision = max(prev_config.revision if prev_config else 0, int(reported.get("config_revision") or 0)) + 1
            doc["config"] = {"revision": revision,
                             "values": merge_values(prev_config.values if prev_config else {}, rollout.config)}
        elif prev_config is not None:
            doc["config"] = prev_config.to_json()
        doc["previous"] = {"model": prev_model.to_json() if prev_model else None,
                           "config": prev_config.to_json() if prev_config else None}
        doc.update(issued_at=round(self.clock(), 3), issued_by=self.issued_by)
        return doc

    def restore_doc(self, rollout: Rollout, device: str) -> dict[str, Any]:
        """A new generation setting back the target the device had before this rollout."""
        with self.view.changed:
            current = self.view.desired.get(device)
            raw = self.view.raw_desired.get(device) or {}
            reported = self.view.reported.get(device) or {}
        previous = raw.get("previous") if isinstance(raw.get("previous"), dict) else {}
        doc: dict[str, Any] = {"generation": self.view.next_generation(device), "restores": rollout.id}
        if previous.get("model") is not None:
            doc["model"] = previous["model"]
        if rollout.config is not None:  # the rollout changed config: a newer revision with the old values
            revision = max(current.config.revision if current and current.config else 0,
                           int(reported.get("config_revision") or 0)) + 1
            doc["config"] = {"revision": revision, "values": (previous.get("config") or {}).get("values", {})}
        elif previous.get("config") is not None:
            doc["config"] = previous["config"]
        doc.update(issued_at=round(self.clock(), 3), issued_by=self.issued_by)
        return doc

    def _abort_step(self, rollout: Rollout, progress: dict[str, DeviceProgress]) -> RolloutState | None:
        todo = [d for d, p in progress.items() if p.dispatched and d not in self.restore_sent]
        if todo:
            self.say(f"aborting {self.id}: setting the previous desired state back on {len(todo)} device(s)")
            infos = []
            for device in todo:
                doc = self.restore_doc(rollout, device)
                infos.append(self.client.publish(self.client.topic(device, "desired"), _json(doc), retain=True))
                self.restore_sent[device] = doc["generation"]
                self.sent.pop(device, None)
                self.written += 1
            for info in infos:
                info.wait_for_publish(30)
            return None
        if any(p.dispatched for d, p in progress.items() if d not in self.restore_sent):
            return None
        self._set_state(rollout, RolloutState.ABORTED, rollout.reason or "aborted")
        self.say(f"rollout {self.id} aborted: {len(self.restore_sent)} device(s) set back")
        return RolloutState.ABORTED

    def _forget_echoed(self, desired: dict[str, DesiredState | None]) -> None:
        for device, generation in list(self.sent.items()):
            doc = desired.get(device)
            if doc is not None and doc.generation >= generation:
                del self.sent[device]

    def _summary(self, rollout: Rollout, progress: dict[str, DeviceProgress]) -> None:
        counts = summarise(progress)
        text = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        if text != self._last_summary and time.monotonic() - self._summary_at >= 2.0:
            self._last_summary, self._summary_at = text, time.monotonic()
            self.say(f"  {text}")


def summarise(progress: dict[str, DeviceProgress]) -> dict[str, int]:
    counts = {"converged": 0, "failed": 0, "in progress": 0, "offline": 0, "waiting": 0}
    for p in progress.values():
        if not p.dispatched:
            counts["waiting"] += 1
        elif p.outcome is Outcome.CONVERGED:
            counts["converged"] += 1
        elif p.outcome is Outcome.FAILED:
            counts["failed"] += 1
        elif not p.online:
            counts["offline"] += 1
        else:
            counts["in progress"] += 1
    return counts


def publish_rollout(client: FleetClient, view: FleetView | None, rollout: Rollout) -> None:
    """Write the rollout document (retained) and wait for the broker to take it."""
    info = client.publish(f"{client.options.prefix}/fleet/rollouts/{rollout.id}", _json(rollout.to_json()),
                          retain=True)
    info.wait_for_publish(30)
    if not info.is_published():
        raise FleetError(f"the broker did not take the rollout document {rollout.id} (ACL? connection?)")
    if view is not None:
        with view.changed:
            view.rollouts[rollout.id] = rollout
            view.changed.notify_all()


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
