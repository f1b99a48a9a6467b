"""`edgectl fleet desired show|set DEVICE`: one device's desired and reported state.

``set`` writes a new generation (above anything the device saw) with a model target (the tag's
digest is resolved in the registry now) and/or config values; what it does not name is kept from
the device's current desired document. A device in an active rollout is refused unless ``--force``.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

from edge.errors import FleetError, UsageError
from edge.util.shadow import parse_desired
from provisioning.fleet.client import FleetClient, options_from
from provisioning.fleet.options import config_option, model_option
from provisioning.fleet.rollout import resolve_digest
from provisioning.fleet.rollouts import RolloutState
from provisioning.fleet.view import FleetView

logger = logging.getLogger(__name__)


def _view(args: argparse.Namespace, client: FleetClient) -> FleetView:
    return FleetView(client).start(timeout_s=max(args.timeout, 30.0))


def cmd_show(args: argparse.Namespace) -> int:
    with FleetClient(options_from(args)).connect(min(args.timeout, 30.0)) as client:
        view = _view(args, client)
    doc = {"device": args.device, "status": view.status.get(args.device),
           "desired": view.raw_desired.get(args.device), "reported": view.reported.get(args.device),
           "problems": {k: v for k, v in view.problems().items() if k.startswith(f"{args.device}/")}}
    if doc["status"] is None and doc["reported"] is None and doc["desired"] is None:
        raise FleetError(f"device {args.device!r}: nothing retained under {client.options.prefix}/{args.device}/")
    print(json.dumps(doc, indent=1))
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    if args.model is None and args.config is None:
        raise UsageError("give --model REF and/or --config JSON")
    update: dict[str, Any] = {}
    if args.config is not None:  # before the registry is asked
        update["config"] = config_option(args.config)
    if args.model is not None:
        args.ref = args.model
        update["model"] = model_option(args.model, resolve_digest(args)).to_json()
    with FleetClient(options_from(args)).connect(min(args.timeout, 30.0)) as client:
        view = _view(args, client)
        current = view.desired.get(args.device)
        if args.device not in view.devices() and current is None:
            raise FleetError(f"device {args.device!r}: unknown (nothing retained); check the name or --prefix")
        if current is not None and current.rollout is not None and not args.force:
            rollout = view.rollout(current.rollout)
            if rollout is not None and rollout.state in (RolloutState.RUNNING, RolloutState.PAUSED):
                raise UsageError(f"{args.device} is in rollout {rollout.id} ({rollout.state.value}); --force to "
                                 "override it for this device")
        doc: dict[str, Any] = {"generation": view.next_generation(args.device)}
        model = update.get("model") or (current.model.to_json() if current and current.model else None)
        if model is not None:
            doc["model"] = model
        if "config" in update:
            reported = view.reported.get(args.device) or {}
            revision = max(current.config.revision if current and current.config else 0,
                           int(reported.get("config_revision") or 0)) + 1
            doc["config"] = {"revision": revision, "values": update["config"]}
        elif current is not None and current.config is not None:
            doc["config"] = current.config.to_json()
        doc.update(issued_at=round(time.time(), 3), issued_by="edgectl fleet desired set")
        parse_desired(doc)
        info = client.publish(client.topic(args.device, "desired"), json.dumps(doc).encode(), retain=True)
        info.wait_for_publish(30)
    print(json.dumps(doc, indent=1))
    return 0
