"""edge/device/status_file.py: atomic, world-readable writes and stale detection (`edgectl status`
reading it: tests/integration/test_provisioning_status.py)."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from edge.device.status_file import read_status, write_status
from edge.errors import StatusFileError, StatusFileStale
from tests.support.status import health_snapshot as snapshot
from tests.support.waits import wait_until


def test_write_status_is_atomic_and_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "run" / "status.json"
    write_status(path, snapshot(), interval_s=15.0)
    assert path.stat().st_mode & 0o777 == 0o644
    doc = read_status(path)
    assert doc["device"] == "gate-01" and doc["interval_s"] == 15.0 and doc["pid"] == os.getpid()
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]  # no temp files left behind

    stop = threading.Event()
    errors: list[Exception] = []

    def writer() -> None:
        n = 0
        while not stop.is_set():
            write_status(path, {**snapshot(), "n": n, "padding": "x" * (n % 5000)}, interval_s=15.0)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(300):  # a reader never sees a half-written document
            try:
                read_status(path)
            except StatusFileError as exc:
                errors.append(exc)
    finally:
        stop.set()
        thread.join()
    assert errors == []


def test_read_status_errors(tmp_path: Path) -> None:
    with pytest.raises(StatusFileError, match="does not exist: the gateway is not running"):
        read_status(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(StatusFileError, match="not a status document"):
        read_status(tmp_path / "bad.json")
    write_status(tmp_path / "s.json", snapshot(), interval_s=0.2)
    wait_until(lambda: time.time() - json.loads((tmp_path / "s.json").read_text())["written_at"] > 0.7, 10.0,
               message="the status file to age past 0.7 s")
    with pytest.raises(StatusFileStale, match="not running or is stuck") as info:
        read_status(tmp_path / "s.json")
    assert info.value.snapshot["device"] == "gate-01"
    assert read_status(tmp_path / "s.json", max_age_s=3600)["device"] == "gate-01"
