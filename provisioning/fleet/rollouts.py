"""Rollouts as documents on the broker: ``<prefix>/fleet/rollouts/<id>`` (retained), and the pure rules
the controller (:mod:`provisioning.fleet.controller`) applies to them.

A rollout document says what to roll out, to whom, in which stages, when to give up, and where it
stands; everything else is recomputed from the devices' retained ``desired`` and ``reported``
documents, so a controller can be stopped at any point and started again::

    {"kind": "edge.rollout", "spec": 1, "id": "r-0612",
     "target": {"model": {"ref": "registry.example:5000/models/classifier:4", "digest": "sha256:…"},
                "config": {"results": {"min_score": 0.2}}},
     "devices": ["gate-01", …],
     "stages": [{"name": "canary", "devices": ["gate-07"]}, {"name": "25%", "percent": 25.0},
                {"name": "all", "percent": 100.0}],
     "max_failures": {"percent": 5.0}, "device_timeout_s": 3600.0, "bake_s": 0.0,
     "state": "running", "reason": null, "created_at": …, "created_by": "ops@laptop", "updated_at": …}

A device is *dispatched* when its desired document carries ``"rollout": <id>``; the controller
writes that document once per device (generation above anything the device saw), keeping the
device's previous desired target in ``previous`` so that an abort can set it back (a new
generation with ``"restores": <id>``). Stages are cumulative: a percentage counts devices in an
order fixed by the rollout id (the same after every restart), a device list names devices.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from edge.errors import DesiredStateError, UsageError
from edge.util.shadow import ModelTarget, parse_config, parse_model

logger = logging.getLogger(__name__)

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KIND = "edge.rollout"


class RolloutState(str, Enum):
    RUNNING = "running"
    PAUSED = "paused"
    ABORTING = "aborting"  # the previous desired state is being set back
    ABORTED = "aborted"
    COMPLETED = "completed"  # every device converged

    def __str__(self) -> str:
        return self.value


TERMINAL = (RolloutState.ABORTED, RolloutState.COMPLETED)


@dataclass(frozen=True)
class Stage:
    name: str
    percent: float | None = None
    count: int | None = None
    devices: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name}
        if self.percent is not None:
            doc["percent"] = self.percent
        if self.count is not None:
            doc["count"] = self.count
        if self.devices is not None:
            doc["devices"] = list(self.devices)
        return doc


def parse_stage(spec: str, known: list[str]) -> Stage:
    """`[name=]N%`, `[name=]N` (devices) or `[name=]dev1,dev2,glob*`."""
    name, sep, body = spec.partition("=")
    if not sep:
        name, body = "", spec
    body = body.strip()
    if not body:
        raise UsageError(f"--stage {spec!r}: empty (use N%, a device count, or a comma list of devices)")
    if body.endswith("%"):
        try:
            percent = float(body[:-1])
        except ValueError:
            raise UsageError(f"--stage {spec!r}: {body!r} is not a percentage") from None
        if not 0 < percent <= 100:
            raise UsageError(f"--stage {spec!r}: a percentage must be above 0 and at most 100")
        return Stage(name or f"{percent:g}%", percent=percent)
    if body.isdigit():
        if int(body) < 1:
            raise UsageError(f"--stage {spec!r}: a device count must be at least 1")
        return Stage(name or f"{body} device(s)", count=int(body))
    chosen: list[str] = []
    for part in (p.strip() for p in body.split(",")):
        matched = fnmatch.filter(known, part) if part else []
        if not matched:
            raise UsageError(f"--stage {spec!r}: {part!r} matches none of the rollout's devices")
        chosen += [d for d in matched if d not in chosen]
    return Stage(name or "devices", devices=tuple(sorted(chosen)))


@dataclass
class Rollout:
    id: str
    devices: tuple[str, ...]
    stages: tuple[Stage, ...]
    model: ModelTarget | None = None
    config: dict[str, Any] | None = None
    max_failures_percent: float | None = 0.0
    max_failures_count: int | None = None
    device_timeout_s: float = 3600.0
    bake_s: float = 0.0
    state: RolloutState = RolloutState.RUNNING
    reason: str | None = None
    created_at: float = 0.0
    created_by: str = ""
    updated_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        target: dict[str, Any] = {}
        if self.model is not None:
            target["model"] = self.model.to_json()
        if self.config is not None:
            target["config"] = self.config
        failures = ({"count": self.max_failures_count} if self.max_failures_count is not None
                    else {"percent": self.max_failures_percent})
        return {"kind": KIND, "spec": 1, "id": self.id, "target": target, "devices": list(self.devices),
                "stages": [s.to_json() for s in self.stages], "max_failures": failures,
                "device_timeout_s": self.device_timeout_s, "bake_s": self.bake_s, "state": self.state.value,
                "reason": self.reason, "created_at": self.created_at, "created_by": self.created_by,
                "updated_at": self.updated_at}

    @property
    def allowed_failures(self) -> int:
        if self.max_failures_count is not None:
            return self.max_failures_count
        return math.floor((self.max_failures_percent or 0.0) * len(self.devices) / 100.0 + 1e-9)

    def order(self) -> list[str]:
        """The devices in the order percentages count them: fixed by the rollout id, spread over the fleet."""
        return sorted(self.devices, key=lambda d: hashlib.sha256(f"{self.id}/{d}".encode()).hexdigest())

    def stage_sets(self) -> list[list[str]]:
        """Each stage's devices, cumulative (a stage includes every earlier one's)."""
        order, total, sets = self.order(), len(self.devices), []
        chosen: list[str] = []
        for stage in self.stages:
            if stage.devices is not None:
                add = [d for d in stage.devices if d in self.devices]
            else:
                n = stage.count if stage.count is not None else math.ceil((stage.percent or 0) * total / 100 - 1e-9)
                add = order[:max(1, min(total, n))]
            chosen += [d for d in add if d not in chosen]
            sets.append(list(chosen))
        return sets


def _fail(message: str) -> DesiredStateError:
    return DesiredStateError(f"rollout document: {message}")


def parse_rollout(payload: bytes | dict[str, Any]) -> Rollout:
    """A rollout document from the broker; DesiredStateError naming what is wrong."""
    try:
        doc = json.loads(payload) if isinstance(payload, bytes) else payload
    except ValueError as exc:
        raise _fail(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise _fail(f"not an {KIND} document")
    if not isinstance(doc.get("id"), str) or not ID_RE.match(doc["id"]):
        raise _fail("id must be 1-64 letters, digits, '_', '-', '.'")
    devices = doc.get("devices")
    if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
        raise _fail("devices must be a list of device ids")
    stages = []
    for raw in doc.get("stages") or []:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise _fail("every stage needs a name")
        listed = raw.get("devices")
        stages.append(Stage(raw["name"], raw.get("percent"), raw.get("count"),
                            tuple(listed) if isinstance(listed, list) else None))
    if not stages:
        raise _fail("no stages")
    target = doc.get("target") if isinstance(doc.get("target"), dict) else {}
    model = parse_model(target["model"], "target.model") if target.get("model") is not None else None
    config = target.get("config")
    if config is not None:
        parse_config({"revision": 0, "values": config}, "target.config")
    failures = doc.get("max_failures") if isinstance(doc.get("max_failures"), dict) else {}
    try:
        state = RolloutState(doc.get("state"))
    except ValueError:
        raise _fail(f"state {doc.get('state')!r} is not one of {[s.value for s in RolloutState]}") from None
    return Rollout(doc["id"], tuple(devices), tuple(stages), model, config,
                   failures.get("percent") if "count" not in failures else None, failures.get("count"),
                   float(doc.get("device_timeout_s") or 3600.0), float(doc.get("bake_s") or 0.0), state,
                   doc.get("reason"), float(doc.get("created_at") or 0.0), str(doc.get("created_by") or ""),
                   float(doc.get("updated_at") or 0.0))


def merge_values(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of two config value sets (no nulls in either): `change` wins."""
    out = dict(base)
    for key, value in change.items():
        out[key] = merge_values(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out
