"""`edgectl status` reading the status file the daemon writes (the file itself:
tests/unit/test_device_status_file.py; the gateway writing it: tests/e2e/test_gateway_status_file.py)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edge.device.status_file import write_status
from tests.support.status import edgectl_status as status
from tests.support.status import health_snapshot as snapshot
from tests.support.waits import wait_until


@pytest.mark.slow
def test_edgectl_status_shows_the_device(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    write_status(path, snapshot(), interval_s=15.0)
    proc = status(path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "edge gateway gate-01" in out and "degraded" in out and "camera yard offline" in out
    assert "colour version 2 (tensorflow)" in out and "1234 frames" in out
    assert "connected 127.0.0.1:1883" in out and "7 waiting, 0 dropped" in out
    front = next(line for line in out.splitlines() if "front" in line and "online" in line)
    assert "30.0" in front and "5.0" in front and "1280x720" in front
    raw = status(path, "--json")
    assert raw.returncode == 0 and json.loads(raw.stdout)["cameras"][0]["name"] == "front"


@pytest.mark.slow
def test_edgectl_status_when_the_daemon_is_not_running(tmp_path: Path) -> None:
    proc = status(tmp_path / "status.json")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"edgectl: {tmp_path / 'status.json'} does not exist: the gateway is not running "
        "(check `systemctl status edge-gateway`)"]
    path = tmp_path / "old.json"
    write_status(path, snapshot(), interval_s=0.2)
    wait_until(lambda: time.time() - json.loads(path.read_text())["written_at"] > 0.7, 10.0,
               message="the status file to age past 0.7 s")
    proc = status(path)
    assert proc.returncode == 1 and "not running or is stuck" in proc.stderr
    assert "stale" in proc.stdout and "gate-01" in proc.stdout  # the last known state is still shown


