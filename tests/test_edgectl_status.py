"""edge/status_file.py (atomic writes, stale detection) and `edgectl status` reading it.

The last test runs the real gateway and needs the lead's wiring: the daemon writes its health
snapshot with `write_status(config.health.status_file, snapshot, interval_s)` every health interval.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from camera import CameraStats
from edge.device.health import HealthInputs, HealthMonitor
from edge.device.status_file import read_status, write_status
from edge.errors import StatusFileError, StatusFileStale
from tests.fixtures.gateway import CameraSpec, render_config, wait_until

EDGECTL = [sys.executable, "-m", "provisioning.cli"]


def snapshot() -> dict:
    """A snapshot built by the daemon's own HealthMonitor."""
    cameras = [CameraStats("front", "online", "rtsp://front", 30.0, 5.0, 25.0, 0, 0.02, 900, 150, 750, (1280, 720),
                           None),
               CameraStats("yard", "offline", "rtsp://yard", 0.0, 0.0, 0.0, 3, None, 0, 0, 0, None, "no frames")]
    model = {"name": "colour", "version": 2, "runtime": "tensorflow", "backend": {"state": "ok"}}
    inference = {"frames_classified": 1234, "errors": 0, "inference_ms": {"p50": 3.2}}
    mqtt = {"state": "connected", "connected": True, "broker": "127.0.0.1:1883",
            "spool": {"depth": 7, "dropped": 0}}
    return HealthMonitor("gate-01").snapshot(HealthInputs(
        cameras=cameras, model=model, inference=inference, results={"published": 1200}, mqtt=mqtt,
        mqtt_connected=True))


def status(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGECTL, "status", "--file", str(path), "--width", "200", *extra], capture_output=True,
                          text=True, timeout=60)


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
    wait_until(lambda: time.time() - json.loads((tmp_path / "s.json").read_text())["written_at"] > 0.7, 10.0)
    with pytest.raises(StatusFileStale, match="not running or is stuck") as info:
        read_status(tmp_path / "s.json")
    assert info.value.snapshot["device"] == "gate-01"
    assert read_status(tmp_path / "s.json", max_age_s=3600)["device"] == "gate-01"


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


def test_edgectl_status_when_the_daemon_is_not_running(tmp_path: Path) -> None:
    proc = status(tmp_path / "status.json")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"edgectl: {tmp_path / 'status.json'} does not exist: the gateway is not running "
        "(check `systemctl status edge-gateway`)"]
    path = tmp_path / "old.json"
    write_status(path, snapshot(), interval_s=0.2)
    wait_until(lambda: time.time() - json.loads(path.read_text())["written_at"] > 0.7, 10.0)
    proc = status(path)
    assert proc.returncode == 1 and "not running or is stuck" in proc.stderr
    assert "stale" in proc.stdout and "gate-01" in proc.stdout  # the last known state is still shown


@pytest.mark.slow
def test_gateway_writes_the_status_file(tmp_path: Path, gateway_factory, colour_model_store: Path, mosquitto,
                                        video_file_factory) -> None:
    from tests.test_gateway_e2e import GREEN, solid_frames

    video = video_file_factory(frames=solid_frames(GREEN), fps=10.0)
    status_path = tmp_path / "run" / "status.json"
    text = render_config("status-gw", [CameraSpec("cam", str(video), fps=5)], colour_model_store, "colour",
                         mosquitto.url, tmp_path / "spool.db", health_interval_s=1.0, status_file=status_path)
    gateway = gateway_factory("status", text)
    gateway.start()
    try:
        wait_until(lambda: status_path.exists() and read_status(status_path).get("inference", {})
                   .get("frames_classified", 0) > 0, 180.0, 0.2, f"status file; log: {gateway.log()[-2000:]}")
        proc = status(status_path)
        assert proc.returncode == 0, proc.stderr
        assert "status-gw" in proc.stdout and "cam" in proc.stdout and "colour version" in proc.stdout
    finally:
        assert gateway.terminate() == 0, gateway.log()
