"""The local status file: the daemon's latest health snapshot, for `edgectl status` on the device.

    write_status(Path("/run/edge/status.json"), gateway.health_snapshot(), interval_s=15.0)
    doc = read_status(Path("/run/edge/status.json"))      # StatusFileError if missing or stale

The file is replaced atomically (temp file in the same folder, fsync, rename), so a reader never
sees half a document, and is world-readable (0644): it holds no secrets. Besides the snapshot it
records ``written_at`` (epoch seconds), ``interval_s`` (how often it is rewritten) and ``pid``.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from edge.errors import StatusFileError, StatusFileStale
from edge.util.fsutil import atomic_write_bytes

logger = logging.getLogger(__name__)

STALE_INTERVALS = 3  # older than this many write intervals = the daemon is not running (or stuck)



def write_status(path: Path | str, snapshot: dict[str, Any], interval_s: float | None = None) -> None:
    """Atomically replace `path` with `snapshot` (+ written_at, interval_s, pid) as JSON, mode 0644."""
    path = Path(path)
    doc = dict(snapshot)
    doc["written_at"] = round(time.time(), 3)
    doc["pid"] = os.getpid()
    if interval_s is not None:
        doc["interval_s"] = float(interval_s)
    data = json.dumps(doc, default=str, separators=(",", ":")).encode("utf-8")
    atomic_write_bytes(path, data, 0o644, mkdir=True)


def status_age_s(snapshot: dict[str, Any], now: float | None = None) -> float | None:
    written = snapshot.get("written_at", snapshot.get("ts"))
    if not isinstance(written, (int, float)):
        return None
    return (time.time() if now is None else now) - float(written)


def read_status(path: Path | str, max_age_s: float | None = None) -> dict[str, Any]:
    """The snapshot in `path`; StatusFileError when missing/unreadable, StatusFileStale when stale.

    Stale means older than `max_age_s`, by default 3 write intervals (the `interval_s` the
    writer recorded; no age check when neither is known).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StatusFileError(f"{path} does not exist: the gateway is not running "
                              "(check `systemctl status edge-gateway`)") from None
    except OSError as exc:
        raise StatusFileError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StatusFileError(f"{path}: not a status document ({exc})") from None
    if not isinstance(doc, dict):
        raise StatusFileError(f"{path}: not a status document (expected a JSON object)")
    interval = doc.get("interval_s")
    limit = max_age_s
    if limit is None and isinstance(interval, (int, float)) and interval > 0:
        limit = STALE_INTERVALS * float(interval)
    age = status_age_s(doc)
    if limit is not None and age is not None and age > limit:
        raise StatusFileStale(
            f"{path} is {age:.0f}s old (written every {interval}s): the gateway is not running or is stuck "
            "(check `systemctl status edge-gateway` and `journalctl -u edge-gateway`)", doc)
    return doc
