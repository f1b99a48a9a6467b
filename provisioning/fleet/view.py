"""A live view of the fleet's retained state: every device's status, desired, reported and model
documents and the rollout documents, from one subscription (the retained burst, then every change).

The rollout controller and ``edgectl fleet rollout status`` read this; nothing is kept anywhere but
on the broker. Unreadable documents are kept as ``None`` and named by :meth:`FleetView.problems`.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from edge.errors import DesiredStateError
from edge.util.shadow import DesiredState, parse_desired
from provisioning.fleet.client import FleetClient
from provisioning.fleet.rollouts import Rollout, parse_rollout

logger = logging.getLogger(__name__)

KINDS = ("status", "desired", "reported", "model")


class FleetView:
    """Latest retained documents per device (and of every rollout), kept current by a subscription."""

    def __init__(self, client: FleetClient) -> None:
        self.client = client
        self.prefix = client.options.prefix
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)
        self.status: dict[str, str] = {}
        self.desired: dict[str, DesiredState | None] = {}
        self.raw_desired: dict[str, dict[str, Any]] = {}
        self.reported: dict[str, dict[str, Any]] = {}
        self.model: dict[str, dict[str, Any]] = {}
        self.rollouts: dict[str, Rollout | None] = {}
        self._problems: dict[str, str] = {}
        self.messages = 0
        self._listeners: list[Callable[[str, str], None]] = []

    def start(self, timeout_s: float = 120.0, kinds: tuple[str, ...] = KINDS, rollouts: bool = True) -> FleetView:
        filters = [f"{self.prefix}/+/{kind}" for kind in kinds]
        if rollouts:
            filters.append(f"{self.prefix}/fleet/rollouts/+")
        self.client.follow(filters, self._on_message, timeout_s)
        return self

    def on_change(self, listener: Callable[[str, str], None]) -> None:
        """`listener(device, kind)` after each change (paho's thread: be quick)."""
        self._listeners.append(listener)

    def devices(self) -> list[str]:
        """Every device that has retained status, reported or model state."""
        with self._lock:
            return sorted((set(self.status) | set(self.reported) | set(self.model)) - {"fleet"})

    def problems(self) -> dict[str, str]:
        with self._lock:
            return dict(self._problems)

    def wait(self, timeout_s: float) -> None:
        with self.changed:
            self.changed.wait(timeout_s)

    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        parts = topic[len(self.prefix) + 1:].split("/")
        if len(parts) == 3 and parts[:2] == ["fleet", "rollouts"]:
            self._store_rollout(parts[2], payload)
            return
        if len(parts) != 2 or parts[1] not in KINDS or parts[0] == "fleet":
            return
        device, kind = parts
        with self.changed:
            self.messages += 1
            self._problems.pop(f"{device}/{kind}", None)
            if kind == "status":
                if payload:
                    self.status[device] = payload.decode("utf-8", "replace")
                else:
                    self.status.pop(device, None)
            elif not payload:
                getattr(self, kind).pop(device, None)
                if kind == "desired":
                    self.raw_desired.pop(device, None)
            else:
                self._store_json(device, kind, payload)
            self.changed.notify_all()
        for listener in self._listeners:
            listener(device, kind)

    def _store_json(self, device: str, kind: str, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            self._problems[f"{device}/{kind}"] = f"unreadable: {exc}"
            return
        if kind == "desired":
            self.raw_desired[device] = doc
            try:
                self.desired[device] = parse_desired(doc)
            except DesiredStateError as exc:
                self.desired[device] = None
                self._problems[f"{device}/desired"] = str(exc)
        else:
            getattr(self, kind)[device] = doc

    def _store_rollout(self, rollout_id: str, payload: bytes) -> None:
        with self.changed:
            if not payload:
                self.rollouts.pop(rollout_id, None)
            else:
                try:
                    self.rollouts[rollout_id] = parse_rollout(payload)
                except DesiredStateError as exc:
                    self.rollouts[rollout_id] = None
                    self._problems[f"fleet/rollouts/{rollout_id}"] = str(exc)
            self.changed.notify_all()

    def snapshot(self) -> tuple[dict[str, str], dict[str, DesiredState | None], dict[str, dict[str, Any]],
                                dict[str, dict[str, Any]]]:
        """Copies of (status, desired, reported, model), consistent with each other."""
        with self._lock:
            return dict(self.status), dict(self.desired), dict(self.reported), dict(self.model)

    def rollout(self, rollout_id: str) -> Rollout | None:
        with self._lock:
            return self.rollouts.get(rollout_id)

    def next_generation(self, device: str) -> int:
        """A generation above every one this device has seen (desired, reported, refused)."""
        with self._lock:
            seen = [0]
            raw = self.raw_desired.get(device) or {}
            if isinstance(raw.get("generation"), int):
                seen.append(raw["generation"])
            reported = self.reported.get(device) or {}
            if isinstance(reported.get("generation"), int):
                seen.append(reported["generation"])
            refused = reported.get("refused")
            if isinstance(refused, dict) and isinstance(refused.get("generation"), int):
                seen.append(refused["generation"])
            return max(seen) + 1
