"""`edgectl status`: this device at a glance, from the gateway's status file (/run/edge/status.json).

Exit 0 when the gateway is running (fresh status file), 1 when it is not (file missing, or older
than 3 health intervals: the last known snapshot is still shown, marked stale).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from edge.device.status_file import read_status, status_age_s
from edge.errors import StatusFileError, StatusFileStale
from provisioning.ui import styled

logger = logging.getLogger(__name__)

def _fps(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else "-"


def overview(doc: dict[str, Any], stale: bool) -> Table:
    model = doc.get("model") or {}
    mqtt = doc.get("mqtt") or {}
    spool = doc.get("spool") or {}
    inference = doc.get("inference") or {}
    table = Table(title=f"edge gateway {doc.get('device', '?')}", show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    state = "stale" if stale else doc.get("state")
    table.add_row("state", styled(state) + ("" if not stale else f" (last reported: {doc.get('state')})"))
    for problem in doc.get("problems") or []:
        table.add_row("problem", f"[yellow]{problem}[/yellow]")
    written = doc.get("written_at", doc.get("ts"))
    if isinstance(written, (int, float)):
        when = dt.datetime.fromtimestamp(written).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row("updated", f"{when} ({status_age_s(doc):.0f}s ago)")
    if isinstance(doc.get("uptime_s"), (int, float)):
        table.add_row("uptime", str(dt.timedelta(seconds=int(doc["uptime_s"]))))
    version = model.get("version")
    rollout = (model.get("rollout") or {}).get("state")
    table.add_row("model", f"{model.get('name', '-')} version {version if version is not None else '-'}"
                  f" ({model.get('runtime', '-')})" + (f", rollout {rollout}" if rollout else ""))
    ms = (inference.get("inference_ms") or {}).get("p50")
    table.add_row("inference", f"{inference.get('frames_classified', '-')} frames, {inference.get('errors', 0)} errors"
                  + (f", p50 {ms} ms" if ms is not None else ""))
    broker = mqtt.get("state") or ("connected" if mqtt.get("connected") else "disconnected")
    table.add_row("broker", f"{styled(broker)} {mqtt.get('broker') or ''}".rstrip())
    table.add_row("spool", f"{spool.get('depth', '-')} waiting, {spool.get('dropped', 0)} dropped")
    return table


def cameras_table(doc: dict[str, Any]) -> Table:
    table = Table(title="cameras", title_justify="left")
    for column in ("camera", "state", "camera fps", "process fps", "skipped fps", "resolution", "reconnects"):
        table.add_column(column, justify="right" if "fps" in column or column == "reconnects" else "left")
    for cam in doc.get("cameras") or []:
        res = cam.get("resolution")
        table.add_row(str(cam.get("name", "?")), styled(cam.get("state")), _fps(cam.get("camera_fps")),
                      _fps(cam.get("process_fps")), _fps(cam.get("skipped_fps")),
                      f"{res[0]}x{res[1]}" if isinstance(res, (list, tuple)) and len(res) == 2 else "-",
                      str(cam.get("reconnects", "-")))
    return table


def cmd_status(args: argparse.Namespace) -> int:
    console = Console(width=args.width) if args.width else Console()
    stale = False
    try:
        doc = read_status(args.file, max_age_s=args.max_age)
    except StatusFileStale as exc:
        if not args.quiet:
            print(f"edgectl: {exc}", file=sys.stderr)
        doc, stale = exc.snapshot, True
    except StatusFileError as exc:
        if not args.quiet:
            print(f"edgectl: {exc}", file=sys.stderr)
        return 1
    if args.quiet:  # a health check: the gateway runs and rewrites its status file
        return 1 if stale else 0
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        console.print(overview(doc, stale))
        console.print(cameras_table(doc))
    return 1 if stale else 0
