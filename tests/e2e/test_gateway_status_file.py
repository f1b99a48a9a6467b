"""The real gateway writes its health snapshot to the status file every health interval, and
`edgectl status` shows it (the file format: tests/unit/test_device_status_file.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from edge.device.status_file import read_status
from tests.support.config import CameraSpec, render_config
from tests.support.frames import GREEN, solid_frames
from tests.support.status import edgectl_status as status
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow


def test_gateway_writes_the_status_file(tmp_path: Path, gateway_factory, colour_model_store: Path, mosquitto,
                                        video_file_factory) -> None:
    video = video_file_factory(frames=solid_frames(GREEN), fps=10.0)
    status_path = tmp_path / "run" / "status.json"
    text = render_config("status-gw", [CameraSpec("cam", str(video), fps=5)], colour_model_store, "colour",
                         mosquitto.url, tmp_path / "spool.db", health_interval_s=1.0, status_file=status_path)
    gateway = gateway_factory("status", text)
    gateway.start()
    try:
        wait_until(lambda: status_path.exists() and read_status(status_path).get("inference", {})
                   .get("frames_classified", 0) > 0, 180.0, interval_s=0.2,
                   message=f"the status file (log when the wait began: {gateway.log()[-2000:]})")
        proc = status(status_path)
        assert proc.returncode == 0, proc.stderr
        assert "status-gw" in proc.stdout and "cam" in proc.stdout and "colour version" in proc.stdout
    finally:
        assert gateway.terminate() == 0, gateway.log()
