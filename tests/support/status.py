"""The daemon's status file in tests: a health snapshot and `edgectl status` reading a file."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from camera import CameraStats
from edge.device.health import HealthInputs, HealthMonitor
from tests.support.processes import EDGECTL


def health_snapshot() -> dict[str, Any]:
    """A snapshot of device gate-01 (front online, yard offline) built by the daemon's own HealthMonitor."""
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


def edgectl_status(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`edgectl status --file PATH --width 200 [EXTRA]` to completion."""
    return subprocess.run([*EDGECTL, "status", "--file", str(path), "--width", "200", *extra], capture_output=True,
                          text=True, timeout=60)
