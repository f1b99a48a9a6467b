"""`edgectl fleet rollout start|status|pause|resume|abort|ls` and `edgectl fleet desired show|set`.

A rollout lives on the broker (``<prefix>/fleet/rollouts/<id>``); ``start`` writes it and drives it
(:mod:`provisioning.fleet.controller`) until it completes, is paused or aborted, or ``--wait``
seconds passed; ``resume`` drives it again from wherever it is (after a pause, a closed laptop, a
killed controller). ``--detach`` only writes the document. Exit status: 0 completed (or paused),
1 aborted or an error, 2 bad arguments, 75 still running when ``--wait`` ended (resume it later).
"""
from __future__ import annotations

import argparse
import getpass
import json
import logging
import socket
import time
from dataclasses import replace
from typing import Any

from rich.console import Console
from rich.table import Table

from edge.errors import ExitCode, FleetError, UsageError
from edge.util.shadow import Outcome
from provisioning.fleet.client import FleetClient, options_from
from provisioning.fleet.controller import Controller, classify, publish_rollout, summarise
from provisioning.fleet.options import config_option, model_option
from provisioning.fleet.rollout import resolve_digest
from provisioning.fleet.rollouts import ID_RE, TERMINAL, Rollout, RolloutState, Stage, parse_stage
from provisioning.fleet.state import select_devices
from provisioning.fleet.view import FleetView
from provisioning.names import DEFAULT_STAGES
from provisioning.parser.common import percent

logger = logging.getLogger(__name__)
ACTIVE = (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.ABORTING)


def operator_name() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (OSError, KeyError):
        return "edgectl"


def say(text: str) -> None:
    print(text, flush=True)


def _view(args: argparse.Namespace, client: FleetClient, devices: bool = True) -> FleetView:
    kinds = ("status", "desired", "reported", "model") if devices else ()
    return FleetView(client).start(timeout_s=max(args.timeout, 60.0), kinds=kinds)


def _rollout(view: FleetView, rollout_id: str) -> Rollout:
    rollout = view.rollout(rollout_id)
    if rollout is None:
        problem = view.problems().get(f"fleet/rollouts/{rollout_id}")
        raise FleetError(f"rollout {rollout_id!r}: {problem or 'not found'} (edgectl fleet rollout ls lists them)")
    return rollout


def drive(client: FleetClient, view: FleetView, rollout_id: str, wait_s: float | None,
          aborting: bool = False) -> int:
    controller = Controller(client, view, rollout_id, say, operator_name())
    state = controller.run(wait_s)
    say(f"rollout {rollout_id}: {state.value} ({controller.written} desired document(s) written by this run)")
    if state is RolloutState.ABORTED and not aborting:
        return int(ExitCode.FAILURE)
    if state in (RolloutState.RUNNING, RolloutState.ABORTING):
        say(f"still {state.value}; `edgectl fleet rollout resume {rollout_id}` continues it")
        return int(ExitCode.RESTART)
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    rollout_id = args.id or time.strftime("r-%Y%m%d-%H%M%S")
    if not ID_RE.match(rollout_id):
        raise UsageError(f"rollout id {rollout_id!r}: 1-64 letters, digits, '_', '-', '.'")
    if args.model is None and args.config is None:
        raise UsageError("give what to roll out: --model REF and/or --config JSON")
    config = config_option(args.config) if args.config is not None else None  # before the registry is asked
    model = None
    if args.model is not None:
        args.ref = args.model
        model = model_option(args.model, resolve_digest(args))
    with FleetClient(options_from(args)).connect(min(args.timeout, 30.0)) as client:
        view = _view(args, client)
        if rollout_id in view.rollouts:
            raise UsageError(f"rollout {rollout_id!r} exists; `edgectl fleet rollout resume {rollout_id}` continues it")
        known = view.devices()
        devices = select_devices(args.devices, known)
        if not devices:
            raise UsageError(f"--devices {args.devices!r} matches none of the {len(known)} known device(s)")
        busy = sorted(d for d in devices if (doc := view.desired.get(d)) is not None and doc.rollout is not None
                      and (other := view.rollout(doc.rollout)) is not None and other.state in ACTIVE)
        if busy:
            raise UsageError(f"{len(busy)} device(s) are in a rollout that is still active ({', '.join(busy[:5])}); "
                             "finish or abort it first")
        stages = [parse_stage(spec, devices) for spec in (args.stage or DEFAULT_STAGES)]
        rollout = Rollout(rollout_id, tuple(devices), tuple(stages), model, config,
                          created_at=time.time(), created_by=operator_name(), device_timeout_s=args.device_timeout,
                          bake_s=args.bake)
        if args.max_failures.endswith("%"):
            rollout.max_failures_percent = percent(args.max_failures)
        else:
            rollout.max_failures_percent, rollout.max_failures_count = None, _count(args.max_failures)
        if len(rollout.stage_sets()[-1]) < len(devices):
            rollout.stages = (*rollout.stages, Stage("all", percent=100.0))
        rollout.updated_at = time.time()
        publish_rollout(client, view, rollout)
        target = " and ".join(filter(None, [f"{model.ref} ({model.digest[:19]}…)" if model else None,
                                            f"config {json.dumps(config)}" if config is not None else None]))
        say(f"rollout {rollout_id}: {target} to {len(devices)} device(s) in {len(rollout.stages)} stage(s) "
            f"({', '.join(s.name for s in rollout.stages)}), at most {rollout.allowed_failures} failure(s)")
        if args.detach:
            return 0
        return drive(client, view, rollout_id, args.wait)


def _count(text: str) -> int:
    if not text.isdigit():
        raise UsageError(f"--max-failures {text!r}: a percentage (5%) or a device count (3)")
    return int(text)


def _change_state(args: argparse.Namespace, allowed: tuple[RolloutState, ...], new: RolloutState,
                  reason: str | None, then_drive: bool) -> int:
    with FleetClient(options_from(args)).connect(min(args.timeout, 30.0)) as client:
        view = _view(args, client, devices=then_drive and not args.detach)
        rollout = _rollout(view, args.id)
        if rollout.state is not new:
            if rollout.state not in allowed:
                raise UsageError(f"rollout {args.id} is {rollout.state.value}; cannot go to {new.value} "
                                 f"(from {', '.join(s.value for s in allowed)} only)")
            publish_rollout(client, view, replace(rollout, state=new, reason=reason, updated_at=time.time()))
            say(f"rollout {args.id}: {rollout.state.value} -> {new.value}")
        if not then_drive or args.detach:
            return 0
        return drive(client, view, args.id, args.wait, aborting=new is RolloutState.ABORTING)


def cmd_pause(args: argparse.Namespace) -> int:
    return _change_state(args, (RolloutState.RUNNING,), RolloutState.PAUSED, f"paused by {operator_name()}", False)


def cmd_resume(args: argparse.Namespace) -> int:
    with FleetClient(options_from(args)).connect(min(args.timeout, 30.0)) as client:
        rollout = _rollout(_view(args, client, devices=False), args.id)
    if rollout.state in TERMINAL:
        say(f"rollout {args.id} is {rollout.state.value} ({rollout.reason}); nothing to resume")
        return 0 if rollout.state is RolloutState.COMPLETED else int(ExitCode.FAILURE)
    target = RolloutState.ABORTING if rollout.state is RolloutState.ABORTING else RolloutState.RUNNING
    return _change_state(args, (RolloutState.PAUSED, RolloutState.RUNNING, RolloutState.ABORTING), target,
                         rollout.reason if target is RolloutState.ABORTING else None, True)


def cmd_abort(args: argparse.Namespace) -> int:
    reason = args.reason or f"aborted by {operator_name()}"
    return _change_state(args, (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.COMPLETED,
                                RolloutState.ABORTING), RolloutState.ABORTING, reason, True)


def status_doc(view: FleetView, rollout: Rollout) -> dict[str, Any]:
    status, desired, reported, _ = view.snapshot()
    progress = classify(rollout, status, desired, reported, {}, time.time())
    stages = []
    for stage, devices in zip(rollout.stages, rollout.stage_sets()):
        stages.append({"name": stage.name, "devices": len(devices), **summarise({d: progress[d] for d in devices})})
    failed = {d: p.reason for d, p in sorted(progress.items()) if p.dispatched and p.outcome is Outcome.FAILED}
    restored = [d for d, p in progress.items() if p.restored]
    restored_converged = [d for d in restored if progress[d].outcome is Outcome.CONVERGED]
    return {"id": rollout.id, "state": rollout.state.value, "reason": rollout.reason, "target": rollout.to_json()["target"],
            "devices": len(rollout.devices), "totals": summarise(progress), "stages": stages, "failed": failed,
            "restored": len(restored), "restored_converged": len(restored_converged),
            "created_at": rollout.created_at, "created_by": rollout.created_by}


def cmd_status(args: argparse.Namespace) -> int:
    with FleetClient(options_from(args)).connect(min(args.timeout, 30.0)) as client:
        view = _view(args, client)
        doc = status_doc(view, _rollout(view, args.id))
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    console = Console(width=args.width)
    console.print(f"[bold]rollout {doc['id']}[/bold]: {doc['state']}" + (f" ({doc['reason']})" if doc["reason"] else ""))
    table = Table(title_justify="left")
    for column in ("stage", "devices", "converged", "failed", "in progress", "offline", "waiting"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage in doc["stages"]:
        table.add_row(stage["name"], *(str(stage[k]) for k in ("devices", "converged", "failed", "in progress",
                                                               "offline", "waiting")))
    console.print(table)
    for device, reason in list(doc["failed"].items())[:20]:
        console.print(f"  [red]{device}[/red]: {reason}")
    if doc["restored"]:
        console.print(f"set back: {doc['restored']} device(s), {doc['restored_converged']} converged")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    with FleetClient(options_from(args)).connect(min(args.timeout, 30.0)) as client:
        view = _view(args, client, devices=False)
    rows = [(i, r) for i, r in sorted(view.rollouts.items())]
    if args.json:
        print(json.dumps([{"id": i, "state": r.state.value if r else None, "devices": len(r.devices) if r else None,
                           "created_by": r.created_by if r else None} for i, r in rows], indent=1))
        return 0
    if not rows:
        print(f"no rollouts under {client.options.prefix}/fleet/rollouts/")
    for rollout_id, rollout in rows:
        if rollout is None:
            print(f"{rollout_id:<24} unreadable: {view.problems().get(f'fleet/rollouts/{rollout_id}')}")
        else:
            print(f"{rollout_id:<24} {rollout.state.value:<10} {len(rollout.devices):>6} device(s)  "
                  f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(rollout.created_at))}  {rollout.created_by}")
    return 0
