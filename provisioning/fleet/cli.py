"""`edgectl fleet …`: the fleet from one terminal, over MQTT 5 only (plus the registry for `deploy`).

- ``fleet ls``: one row per device from the retained `status`, `health` and `model` topics.
- ``fleet status DEVICE``: one device in detail (the same view as `edgectl status` on the box).
- ``fleet watch [--device SEL] [--seconds N]``: a live table of results.
- ``fleet cmd DEVICE NAME [JSON | --signed FILE]``: any command, the reply printed as JSON;
  ``--signed`` sends a document from ``edgectl trust sign`` as ``{"signed": ...}``.
- ``fleet rollout start|status|pause|resume|abort|ls``: rollouts kept on the broker as documents,
  driven by a restartable controller (provisioning/fleet/rollout_cli.py, controller.py).
- ``fleet desired show|set DEVICE``: one device's desired and reported state.
- ``fleet export --database DSN``: results and events into PostgreSQL, exactly once per (device,
  seq), scaled out over MQTT 5 shared subscriptions (provisioning/fleet/export.py).
- ``fleet deploy REF --devices SEL``: a staged rollout driven by commands from this terminal
  (provisioning/fleet/rollout.py); it ends with the terminal, `fleet rollout` does not.

Exit status: 0 done, 1 the operation failed (broker unreachable, no reply, error reply, unknown
device), 2 bad arguments.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from edge.errors import UsageError
from provisioning.device.status import cameras_table, overview
from provisioning.fleet.client import FleetClient, options_from
from provisioning.fleet.state import fleet_state, ls_table, select_devices
from provisioning.ui import styled

logger = logging.getLogger(__name__)

# -- commands ------------------------------------------------------------------------------------

def cmd_ls(args: argparse.Namespace) -> int:
    with FleetClient(options_from(args)).connect(args.timeout) as client:
        views = fleet_state(client, timeout_s=args.timeout)
    if args.json:
        print(json.dumps([v.row() for v in views.values()], indent=1))
    else:
        Console(width=args.width).print(ls_table(views))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with FleetClient(options_from(args)).connect(args.timeout) as client:
        views = fleet_state(client, device=args.device, timeout_s=args.timeout)
    view = views.get(args.device)
    if view is None:
        print(f"edgectl: device {args.device!r}: nothing retained under {args.prefix}/{args.device}/ "
              "(unknown device, or wrong --prefix)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"device": view.device, "status": view.status, "health": view.health,
                          "model": view.model}, indent=1))
        return 0
    console = Console(width=args.width)
    console.print(f"[bold]{view.device}[/bold]: {styled('online' if view.online else 'offline')}"
                  f" (status {view.status or '-'})")
    if view.health:
        stale = not view.online
        console.print(overview(view.health, stale))
        console.print(cameras_table(view.health))
    if view.model:
        m = view.model
        table = Table(title="model rollout", show_header=False, title_justify="left")
        table.add_column("key", style="bold")
        table.add_column("value")
        for key in ("name", "state", "ref", "configured_ref", "last_error"):
            table.add_row(key, str(m.get(key, "-")))
        for key in ("serving", "previous"):
            s = m.get(key) or {}
            table.add_row(key, f"v{s.get('version')} {s.get('digest') or ''}".strip())
        table.add_row("bad digests", str(len(m.get("bad") or [])))
        console.print(table)
    return 0


def signed_payload(path: Path) -> bytes:
    """A command payload ``{"signed": <document>}`` from a file `edgectl trust sign` wrote."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--signed {path}: not a readable JSON document ({exc})") from None
    if not isinstance(doc, dict):
        raise UsageError(f"--signed {path}: must hold a signed document (a JSON object)")
    return json.dumps(doc if set(doc) == {"signed"} else {"signed": doc}).encode()


def cmd_cmd(args: argparse.Namespace) -> int:
    if args.signed is not None:
        if args.payload:
            raise UsageError("give either a JSON payload or --signed FILE (the document carries the change)")
        args.payload = signed_payload(args.signed).decode()
    payload = (args.payload or "{}").encode()
    try:
        doc = json.loads(payload)
    except ValueError as exc:
        raise UsageError(f"JSON payload is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UsageError("JSON payload must be an object, e.g. '{\"camera\": \"front\"}'")
    with FleetClient(options_from(args)).connect(args.timeout) as client:
        reply = client.request(args.device, args.name, payload, timeout_s=args.timeout)
    print(json.dumps(reply, indent=1))
    return 0 if reply.get("ok") else 1


def cmd_watch(args: argparse.Namespace) -> int:
    rows: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    console = Console(width=args.width)
    selector = args.device or "all"
    prefix = f"$share/{args.share}/" if args.share else ""

    def on_result(topic: str, payload: bytes, retained: bool) -> None:
        try:
            doc = json.loads(payload)
        except ValueError:
            return
        device = doc.get("device") or topic.split("/")[-3]
        if selector != "all" and not select_devices(selector, [device]):
            return
        key = (device, str(doc.get("camera")), doc.get("roi"))
        row = rows.setdefault(key, {"count": 0, "first": time.monotonic()})
        row.update(count=row["count"] + 1, doc=doc, at=time.monotonic())

    def table() -> Table:
        t = Table(title=f"results ({sum(r['count'] for r in rows.values())} received)", title_justify="left")
        for column in ("device", "camera", "top label", "score", "model", "results/s", "last"):
            t.add_column(column, justify="right" if column in ("score", "results/s") else "left")
        now = time.monotonic()
        for (device, camera, roi), r in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
            top = (r["doc"].get("top_k") or [{}])[0]
            model = r["doc"].get("model") or {}
            rate = r["count"] / max(1e-3, now - r["first"]) if r["count"] > 1 else 0.0
            t.add_row(device, camera + (f"/{roi}" if roi else ""), str(top.get("label", "-")),
                      f"{top.get('score', 0):.2f}", f"{model.get('name', '-')} v{model.get('version', '-')}",
                      f"{rate:.1f}", f"{now - r['at']:.1f}s ago")
        return t

    with FleetClient(options_from(args)).connect(args.timeout) as client:
        client.subscribe(prefix + f"{args.prefix}/+/results/#", on_result)
        deadline = time.monotonic() + args.seconds if args.seconds else None
        try:
            if args.json:  # no live table: only the JSON at the end
                while deadline is None or time.monotonic() < deadline:
                    time.sleep(0.2)
            else:
                with Live(table(), console=console, refresh_per_second=2, transient=False) as live:
                    while deadline is None or time.monotonic() < deadline:
                        time.sleep(0.5)
                        live.update(table())
        except KeyboardInterrupt:
            pass
    if args.json:
        print(json.dumps([{"device": d, "camera": c, "roi": r, "count": v["count"], "last": v["doc"]}
                          for (d, c, r), v in sorted(rows.items(), key=lambda kv: str(kv[0]))]))
    return 0
