"""`edgectl fleet deploy REF --devices SEL`: a staged model rollout over MQTT, checked against the registry.

1. The tag's digest is resolved in the registry (HEAD), so "done" means *serving that digest*.
2. The selected devices are read from the retained `status` and `model` topics; devices that are
   not online are skipped (and make the rollout incomplete: exit 1); devices already serving the
   digest count as done and are not touched.
3. Waves, in device-id order: the canary set first (``--canary N%``, at least one device), then
   ``--wave-size`` devices at a time. Each device gets ``deploy {"ref": REF}`` (MQTT 5
   request/response); the rollout then follows its retained `model` topic until it serves the
   digest with state ``serving`` (validation and probation passed) — success — or lists the
   digest as bad (install/validation failed, or rolled back) or does not finish within
   ``--timeout`` — failure.
4. After each wave: if failures exceed ``--max-failures N%`` of the selected devices, the rollout
   HALTS and sends ``rollback`` to every device it switched, then exits 1.

The devices follow REF from then on (the `deploy` command's meaning), so deploy a version tag or a
channel on purpose.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from edge.errors import FleetError, UsageError
from edge.transport.oci import RegistryClient
from edge.util.ociref import Reference
from provisioning.fleet.client import FleetClient, options_from
from provisioning.fleet.state import fleet_state, select_devices
from provisioning.profiles import REGISTRY_SETTINGS, resolve

logger = logging.getLogger(__name__)

OK, FAILED, UNCHANGED, SKIPPED, ROLLED_BACK, PENDING = "ok", "failed", "unchanged", "skipped", "rolled-back", "pending"


@dataclass
class DeviceRollout:
    device: str
    outcome: str = PENDING
    detail: str = ""
    from_version: int | None = None
    version: int | None = None
    bad_before: bool = False  # the digest was already listed bad: wait for the device to clear it first
    cleared: bool = False
    sent_at: float | None = None


class ModelWatch:
    """The latest retained `model` document of every device (kept current by a subscription)."""

    def __init__(self, client: FleetClient, initial: dict[str, dict[str, Any]]) -> None:
        self._docs: dict[str, dict[str, Any]] = dict(initial)  # from the marker-delimited retained read
        self._changed = threading.Condition()
        self._client = client
        client.subscribe(client.topic("+", "model"), self._on_model)

    def _on_model(self, topic: str, payload: bytes, retained: bool) -> None:
        device = self._client.device_of(topic)
        try:
            doc = json.loads(payload) if payload else {}
        except ValueError:
            return
        if device and isinstance(doc, dict):
            with self._changed:
                self._docs[device] = doc
                self._changed.notify_all()

    def get(self, device: str) -> dict[str, Any]:
        with self._changed:
            return dict(self._docs.get(device, {}))

    def wait(self, timeout_s: float) -> None:
        with self._changed:
            self._changed.wait(timeout_s)


def judge(state: DeviceRollout, doc: dict[str, Any], digest: str) -> str | None:
    """OK / FAILED once the device's model document says so; None while undecided."""
    serving = doc.get("serving") or {}
    bad = doc.get("bad") or []
    if state.bad_before and not state.cleared:
        if digest in bad:
            return None
        state.cleared = True
    if serving.get("digest") == digest and doc.get("state") == "serving":
        state.version = serving.get("version")
        return OK
    if digest in bad:
        state.detail = doc.get("last_error") or "the device refused the version"
        return FAILED
    return None


class Rollout:
    def __init__(self, client: FleetClient, ref: str, digest: str, devices: list[str], console: Console,
                 canary_pct: float, max_failures_pct: float, wave_size: int, timeout_s: float,
                 models: dict[str, dict[str, Any]]) -> None:
        self.client = client
        self.ref = ref
        self.digest = digest
        self.console = console
        self.timeout_s = timeout_s
        self.states = {d: DeviceRollout(d) for d in devices}
        self.allowed_failures = math.floor(max_failures_pct * len(devices) / 100.0 + 1e-9)
        self.canary = min(len(devices), max(1, math.ceil(canary_pct * len(devices) / 100.0))) if canary_pct > 0 else 0
        self.wave_size = max(1, wave_size)
        self.watch = ModelWatch(client, models)

    def waves(self, todo: list[str]) -> list[list[str]]:
        waves = [todo[:self.canary]] if self.canary else []
        rest = todo[self.canary:]
        waves += [rest[i:i + self.wave_size] for i in range(0, len(rest), self.wave_size)]
        return [w for w in waves if w]

    def failures(self) -> int:
        return sum(s.outcome == FAILED for s in self.states.values())

    def run(self, online: dict[str, bool]) -> bool:
        todo = []
        for device, st in self.states.items():
            doc = self.watch.get(device)
            st.from_version = (doc.get("serving") or {}).get("version")
            if (doc.get("serving") or {}).get("digest") == self.digest:
                st.outcome, st.version, st.detail = UNCHANGED, st.from_version, "already serving it"
            elif not online.get(device):
                st.outcome, st.detail = SKIPPED, "not online"
            else:
                st.bad_before = self.digest in (doc.get("bad") or [])
                todo.append(device)
        for device in (d for d, s in self.states.items() if s.outcome in (UNCHANGED, SKIPPED)):
            self.console.print(f"  {device}: {self.states[device].outcome} ({self.states[device].detail})")
        waves = self.waves(todo)
        for number, wave in enumerate(waves, 1):
            label = "canary" if number == 1 and self.canary else f"wave {number}/{len(waves)}"
            self.console.print(f"[bold]{label}[/bold]: {', '.join(wave)}")
            self.run_wave(wave)
            if self.failures() > self.allowed_failures:
                self.console.print(f"[red]HALT[/red]: {self.failures()} failure(s), more than the "
                                   f"{self.allowed_failures} allowed; rolling back what this rollout changed")
                self.roll_back()
                return False
        return all(s.outcome in (OK, UNCHANGED) for s in self.states.values())

    def run_wave(self, wave: list[str]) -> None:
        pending: dict[str, bytes] = {}
        for device in wave:
            st = self.states[device]
            pending[device] = self.client.send(device, "deploy", json.dumps({"ref": self.ref}).encode())
            st.sent_at = time.monotonic()
        undecided = set(wave)
        while undecided:
            for device in sorted(undecided):
                st = self.states[device]
                correlation = pending.get(device)
                if correlation is not None:
                    reply = self.client.reply(correlation, 0.0)
                    if reply is not None:
                        del pending[device]
                        if not reply.get("ok"):
                            st.detail = f"deploy refused: {reply.get('error')}"
                            self._decide(st, FAILED)
                            undecided.discard(device)
                            continue
                        self.console.print(f"  {device}: deploy accepted, installing")
                verdict = judge(st, self.watch.get(device), self.digest)
                if verdict is None and time.monotonic() - (st.sent_at or 0) > self.timeout_s:
                    st.detail = (f"no reply to deploy within {self.timeout_s:g}s" if device in pending else
                                 f"not serving the new version within {self.timeout_s:g}s "
                                 f"(model state {self.watch.get(device).get('state')})")
                    verdict = FAILED
                if verdict is not None:
                    self._decide(st, verdict)
                    undecided.discard(device)
            if undecided:
                self.watch.wait(0.25)

    def _decide(self, st: DeviceRollout, outcome: str) -> None:
        st.outcome = outcome
        if outcome == OK:
            self.console.print(f"  {st.device}: [green]serving v{st.version}[/green] ({self.digest[:19]}…)")
        else:
            self.console.print(f"  {st.device}: [red]failed[/red]: {st.detail}")

    def roll_back(self) -> None:
        changed = [s for s in self.states.values() if s.outcome == OK]
        sent = {s.device: self.client.send(s.device, "rollback", b"{}") for s in changed}
        for st in changed:
            reply = self.client.reply(sent[st.device], max(self.timeout_s, 130.0))
            if reply is not None and reply.get("ok"):
                st.outcome, st.version = ROLLED_BACK, (reply.get("result") or {}).get("version")
                st.detail = f"back on v{st.version}"
                self.console.print(f"  {st.device}: [yellow]rolled back[/yellow] to v{st.version}")
            else:
                st.detail = f"rollback failed: {(reply or {}).get('error', 'no reply')}"
                self.console.print(f"  {st.device}: [red]{st.detail}[/red]")

    def summary(self) -> Table:
        table = Table(title=f"rollout of {self.ref}", title_justify="left")
        for column in ("device", "outcome", "from", "to", "detail"):
            table.add_column(column)
        style = {OK: "green", UNCHANGED: "green", FAILED: "red", ROLLED_BACK: "yellow", SKIPPED: "yellow"}
        for st in self.states.values():
            s = style.get(st.outcome, "")
            table.add_row(st.device, f"[{s}]{st.outcome}[/{s}]" if s else st.outcome,
                          "-" if st.from_version is None else f"v{st.from_version}",
                          "-" if st.version is None else f"v{st.version}", st.detail)
        return table


def resolve_digest(args: argparse.Namespace) -> str:
    """The digest `args.ref` points to now (a HEAD in the registry, or the digest the ref pins)."""
    resolve(args, REGISTRY_SETTINGS)
    try:
        ref = Reference.parse(args.ref)
    except ValueError as exc:
        raise UsageError(f"REF: {exc}") from None
    if ref.digest is not None:
        return ref.digest
    client = RegistryClient(ref.registry, username=args.registry_username, password=args.registry_password,
                            insecure=args.registry_insecure, ca_file=args.registry_ca_file, timeout_s=30.0)
    try:
        return client.resolve(ref)
    except Exception as exc:
        raise FleetError(f"cannot resolve {args.ref} in the registry: {exc}") from None


def cmd_deploy(args: argparse.Namespace) -> int:
    for name in ("canary", "max_failures"):
        if not 0 <= getattr(args, name) <= 100:
            raise UsageError(f"--{name.replace('_', '-')} must be a percentage between 0 and 100")
    if args.wave_size < 1:
        raise UsageError("--wave-size must be at least 1")
    digest = resolve_digest(args)
    console = Console(width=args.width)
    with FleetClient(options_from(args)).connect(min(args.timeout, 30.0)) as client:
        views = fleet_state(client, timeout_s=min(args.timeout, 60.0))
        devices = select_devices(args.devices, list(views))
        if not devices:
            raise UsageError(f"--devices {args.devices!r} matches none of the {len(views)} known device(s)")
        console.print(f"rollout of {args.ref} ({digest}) to {len(devices)} device(s)")
        rollout = Rollout(client, args.ref, digest, devices, console, args.canary, args.max_failures,
                          args.wave_size, args.timeout, {d: views[d].model for d in devices})
        completed = rollout.run({d: views[d].online for d in devices})
        console.print(rollout.summary())
    counts: dict[str, int] = {}
    for st in rollout.states.values():
        counts[st.outcome] = counts.get(st.outcome, 0) + 1
    verdict = "completed" if completed else "NOT completed"
    console.print(f"rollout {verdict}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return 0 if completed else 1
