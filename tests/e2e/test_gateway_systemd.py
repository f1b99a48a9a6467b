"""The real `edge-gateway` under a NOTIFY_SOCKET + WATCHDOG_USEC, as systemd runs it: READY=1 after the
model is loaded, cameras are started and MQTT is connected or spooling; STATUS= lines; WATCHDOG=1
while frames progress; STOPPING=1 on SIGTERM (the protocol itself: tests/unit/test_device_systemd.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.config import CameraSpec, render_config
from tests.support.frames import RED, solid_frames
from tests.support.notify import NotifyListener

pytestmark = pytest.mark.slow


def test_gateway_notifies_ready_status_and_watchdog(notify_listener: NotifyListener, tmp_path: Path,
                                                    gateway_factory, colour_model_store: Path, mosquitto,
                                                    video_file_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    video = video_file_factory(frames=solid_frames(RED), fps=10.0)
    text = render_config("notify-gw", [CameraSpec("red-cam", str(video), fps=5)], colour_model_store, "colour",
                         mosquitto.url, tmp_path / "spool.db")
    gateway = gateway_factory("notify", text)
    monkeypatch.setenv("NOTIFY_SOCKET", notify_listener.address)
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")  # pings expected about every second
    gateway.start()
    try:
        fields = notify_listener.wait_for(lambda f: "READY=1" in f, 180.0, "READY=1 from the gateway")
        assert gateway.alive(), gateway.log()
        ready_at = fields.index("READY=1")
        fields = notify_listener.wait_for(lambda f: f[ready_at:].count("WATCHDOG=1") >= 3, 60.0, "watchdog pings")
        statuses = [f for f in fields if f.startswith("STATUS=")]
        assert statuses, "no STATUS= lines"
        assert any("colour" in s or "v2" in s or "model" in s for s in statuses), statuses
        assert not any(s.startswith("STATUS=WEDGED") for s in statuses), statuses
    finally:
        code = gateway.terminate()
    assert code == 0, gateway.log()
    notify_listener.wait_for(lambda f: "STOPPING=1" in f, 10.0, "STOPPING=1 on SIGTERM")
