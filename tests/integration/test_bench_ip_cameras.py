"""bench/ip_cameras.py: the simulated free-running IP cameras the latency bench rows use, read by a
real CameraCapture over HTTP on loopback."""
from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from bench.ip_cameras import IpCameraServer
from camera import CameraCapture, CaptureSettings
from tests.support.frames import make_marked_frame, read_frame_marker
from tests.support.waits import wait_until


@pytest.fixture
def ip_cameras(video_file_factory):
    frames = [make_marked_frame(i, (320, 240)) for i in range(10)]
    server = IpCameraServer(video_file_factory(frames=frames, fps=30.0), count=3, fps=30.0, packets=10)
    server.start()
    yield server
    server.stop()


def test_cameras_run_on_clocks_spread_over_one_frame_interval(ip_cameras: IpCameraServer) -> None:
    interval = ip_cameras.interval_s
    now = time.monotonic()
    firsts = [ip_cameras.first_tick(camera, now) for camera in range(3)]
    dues = [ip_cameras.due(camera, tick) for camera, tick in enumerate(firsts)]
    assert all(now < due <= now + interval + 1e-9 for due in dues)
    phases = [(ip_cameras.due(camera, 0) - ip_cameras.due(0, 0)) / interval for camera in range(3)]
    assert phases == pytest.approx([0, 1 / 3, 2 / 3])
    for camera in range(3):  # frame numbers count up by one per interval, without drift
        assert ip_cameras.due(camera, 1000) - ip_cameras.due(camera, 999) == pytest.approx(interval)


def test_a_capture_reads_a_camera_at_its_rate_in_video_order(ip_cameras: IpCameraServer) -> None:
    capture = CameraCapture(CaptureSettings(name="ip", uri=ip_cameras.uri(1)))
    capture.start()
    try:
        markers: list[int] = []

        def collect() -> bool:
            frame = capture.take(timeout_s=0.5)
            if frame is not None:
                markers.append(read_frame_marker(frame.image))
            return len(markers) >= 20

        wait_until(collect, 20.0, message="frames from the simulated camera")
        started, read_before = time.monotonic(), capture.stats().frames_read
        time.sleep(1.0)
        rate = (capture.stats().frames_read - read_before) / (time.monotonic() - started)
    finally:
        capture.stop()
    assert rate < 40  # paced at 30 fps (a slow box reads fewer, never more)
    steps = {(b - a) % 10 for a, b in zip(markers, markers[1:])}
    assert steps <= {1, 2, 3}  # the video's frames in order (one may be overwritten between takes)
    assert capture.stats().resolution == (320, 240)


def test_an_unknown_camera_is_a_404(ip_cameras: IpCameraServer) -> None:
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(f"http://127.0.0.1:{ip_cameras.port}/cam3", timeout=5)
