"""A config change that needs a restart stays *pending* until the gateway has started with it.

`cmd/config` (and a desired-state config revision, which goes the same way) writes the new file and
keeps the previous one as ``<config>.bak``; the gateway then exits to be restarted with it. If that
start fails (the config does not load, a model version that is not in the store, a console port
that is taken, a runtime that is not installed...), nothing could ever reach the device again to
fix it: systemd would give up after its start limit. So the change is recorded in
``<config>.pending`` (the backup and the keys changed), and at start:

- each attempt is counted in the record first, so a process that dies outright while starting
  (killed, out of memory) is noticed too: after :data:`MAX_ATTEMPTS` unfinished attempts the
  previous file is put back before trying again;
- a start that fails with a pending change puts the previous file back (atomically), records why
  in ``<config>.reverted`` and starts again with it;
- a start that succeeds confirms the change (the record is removed).

The next successful start reports a revert as the event ``config_reverted`` (reason, keys) and
removes ``<config>.reverted``. A change made locally (editing the file) is never pending: only what
arrived over MQTT is put back.
"""
from __future__ import annotations

import json
import logging
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.util.fsutil import atomic_write_bytes

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # starts that never finished (the process died) before the previous file is put back


@dataclass(frozen=True)
class PendingChange:
    backup: Path
    changed: list[str]
    attempts: int
    since: float


def _pending_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + ".pending")


def _reverted_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + ".reverted")


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(doc, indent=1).encode("utf-8"), mode=0o600)


def _remove(path: Path) -> None:
    """Remove a record that exists. A config folder may be read-only (a container's `/etc/edge:ro`, an
    image's read-only root): no record can exist there, and unlink answers EROFS even for a missing
    file, so nothing is touched unless the record is there; a record that cannot go is logged."""
    if not path.exists():
        return
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.error("cannot remove %s: %s", path, exc)


def mark_pending(config_path: Path, backup: Path, changed: list[str]) -> None:
    """Record that `config_path` holds a remote change not yet started with (`backup`: the file before)."""
    _write_json(_pending_path(config_path), {"backup": str(backup), "changed": changed, "attempts": 0,
                                             "since": round(time.time(), 3)})


def pending(config_path: Path) -> PendingChange | None:
    """The pending change, or None (also for a record that cannot be read: it is then removed)."""
    path = _pending_path(config_path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return PendingChange(Path(doc["backup"]), [str(k) for k in doc["changed"]], int(doc["attempts"]),
                             float(doc["since"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.error("ignoring the unreadable pending-change record %s: %s", path, exc)
        _remove(path)
        return None


def begin_attempt(config_path: Path) -> PendingChange | None:
    """Count one more start with the pending change (before trying it); the updated record or None."""
    change = pending(config_path)
    if change is None:
        return None
    change = PendingChange(change.backup, change.changed, change.attempts + 1, change.since)
    try:
        _write_json(_pending_path(config_path), {"backup": str(change.backup), "changed": change.changed,
                                                 "attempts": change.attempts, "since": change.since})
    except OSError as exc:  # the folder turned read-only: the attempt still counts for this start
        logger.error("cannot count the start attempt in %s: %s", _pending_path(config_path), exc)
    return change


def confirm(config_path: Path) -> None:
    """The gateway started with the change: it is the config now."""
    _remove(_pending_path(config_path))


def revert(config_path: Path, change: PendingChange, reason: str) -> dict[str, Any]:
    """Put the file from before `change` back; returns the record of it (also in ``<config>.reverted``)."""
    record = {"reason": reason, "keys": change.changed, "changed_at": change.since, "reverted_at": round(time.time(), 3)}
    try:
        mode = stat.S_IMODE(config_path.stat().st_mode)
        atomic_write_bytes(config_path, change.backup.read_bytes(), mode=mode)
    except OSError as exc:  # the backup is gone: nothing to go back to, say so instead
        logger.error("cannot put the previous config back from %s: %s", change.backup, exc)
        record["reason"] = f"{reason}; NOT reverted: {change.backup}: {exc.strerror or exc}"
    _write_json(_reverted_path(config_path), record)
    confirm(config_path)
    logger.error("config change to %s reverted: %s", ", ".join(change.changed) or "(nothing)", reason)
    return record


def take_reverted(config_path: Path) -> dict[str, Any] | None:
    """The record of a revert not reported yet (removed once read)."""
    path = _reverted_path(config_path)
    try:
        record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        record = {"reason": f"(the revert record could not be read: {exc})", "keys": []}
    _remove(path)
    return record
