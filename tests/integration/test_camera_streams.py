"""CameraCapture against live ffmpeg streams on loopback, dead URLs and silent servers."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

import camera.capture
from camera import CaptureSettings
from tests.support.fakes import CameraEventRecorder
from tests.support.frames import read_frame_marker
from tests.support.net import SilentServer, free_port
from tests.support.waits import wait_until

# Short watchdog and backoff so outages and recoveries happen within a test.
FAST_RECOVERY = dict(watchdog_s=1.5, backoff_initial_s=0.2, backoff_max_s=2.0, open_timeout_s=5.0, read_timeout_s=3.0)


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    """Requested after capture_factory, so it closes first and the abandoned open fails fast."""
    server = SilentServer()
    yield server
    server.close()


@pytest.mark.slow
def test_mjpeg_http_stream_goes_offline_and_recovers(ffmpeg_stream_factory, capture_factory) -> None:
    stream = ffmpeg_stream_factory("mjpeg_http")
    events = CameraEventRecorder()
    capture = capture_factory(CaptureSettings(name="http", uri=stream.uri, **FAST_RECOVERY), on_event=events)
    first = capture.take(timeout_s=20.0)
    assert first is not None and first.image.shape == (240, 320, 3)
    wait_until(lambda: capture.state == "online", 10, message="the capture online")
    assert events.of("camera_online")[0]["resolution"] == [320, 240]

    stream.stop()
    wait_until(lambda: capture.state == "offline", 15, message="the capture offline")
    wait_until(lambda: events.of("camera_offline"), 5, message="a camera_offline event")
    offline = events.of("camera_offline")[0]
    assert offline["camera"] == "http" and offline["reason"] and offline["reconnect_in_s"] > 0
    wait_until(lambda: (capture.stats().last_frame_age_s or 0) > 2.0, 15, message="the last frame older than 2 s")
    assert capture.stats().last_error is not None

    stream.restart()
    # Recovery needs at most one backoff (<= backoff_max_s) plus an open; poll generously.
    wait_until(lambda: capture.state == "online", 30, message="the capture online")
    assert len(events.of("camera_online")) == 2
    stats = capture.stats()
    assert stats.reconnects == 1 == len(events.of("camera_offline"))
    assert stats.last_frame_age_s is not None and stats.last_frame_age_s < FAST_RECOVERY["watchdog_s"]
    assert stats.last_error is None
    later = capture.take(timeout_s=10.0)
    assert later is not None and later.number > first.number


def test_mjpeg_http_stream_of_a_file_delivers_its_frames(
    video_file_factory, ffmpeg_stream_factory, capture_factory
) -> None:
    path = video_file_factory(count=20, size=(320, 240), fps=10.0)
    stream = ffmpeg_stream_factory("mjpeg_http", source=path, size=(320, 240), fps=10)
    capture = capture_factory(CaptureSettings(name="replay", uri=stream.uri, size=(160, 120), **FAST_RECOVERY))
    markers = set()
    for _ in range(5):
        frame = capture.take(timeout_s=20.0)
        assert frame is not None and frame.image.shape == (120, 160, 3)
        markers.add(read_frame_marker(frame.image))
    assert len(markers) >= 2 and markers <= set(range(20))


@pytest.mark.parametrize("kind", ["mpegts_udp", "mpegts_tcp"])
def test_mpegts_stream_delivers_frames(kind: str, ffmpeg_stream_factory, capture_factory) -> None:
    stream = ffmpeg_stream_factory(kind, size=(320, 240), fps=10)
    capture = capture_factory(CaptureSettings(name=kind, uri=stream.uri, **FAST_RECOVERY))
    frames = [capture.take(timeout_s=20.0) for _ in range(3)]
    assert all(frame is not None for frame in frames)
    assert [frame.number for frame in frames] == sorted({frame.number for frame in frames})
    assert all(frame.image.shape == (240, 320, 3) for frame in frames)
    assert float(np.std(frames[-1].image)) > 10  # testsrc's colour bars, not a blank decode
    assert capture.state == "online"


@pytest.mark.slow
def test_udp_stream_silence_trips_the_watchdog_and_recovers(ffmpeg_stream_factory, capture_factory) -> None:
    # UDP has no connection to close: only the read timeout / watchdog can notice the sender died.
    stream = ffmpeg_stream_factory("mpegts_udp", fps=10)
    events = CameraEventRecorder()
    capture = capture_factory(CaptureSettings(name="udp", uri=stream.uri, **FAST_RECOVERY), on_event=events)
    assert capture.take(timeout_s=20.0) is not None
    stream.stop()
    wait_until(lambda: capture.state == "offline", 15, message="the capture offline")
    wait_until(lambda: events.of("camera_offline"), 15, message="a camera_offline event")
    stream.restart()
    wait_until(lambda: len(events.of("camera_online")) == 2, 30, message="two camera_online events")
    assert capture.stats().reconnects == 1


def test_stop_is_prompt_while_retrying_a_refused_url(capture_factory) -> None:
    port = free_port()  # nobody listens here
    events = CameraEventRecorder()
    capture = capture_factory(
        CaptureSettings(name="dead", uri=f"http://127.0.0.1:{port}/stream.mjpg", **FAST_RECOVERY), on_event=events
    )
    wait_until(lambda: events.of("camera_offline"), 15, message="a camera_offline event")
    assert "open failed" in events.of("camera_offline")[0]["reason"]
    started = time.monotonic()
    capture.stop(timeout_s=5.0)
    assert time.monotonic() - started < 5.0  # it was waiting in backoff, which stop() interrupts
    assert capture.state == "stopped"


@pytest.mark.parametrize("scheme", ["http", "tcp"])
def test_stop_returns_within_its_timeout_while_open_hangs(scheme: str, capture_factory, silent_server) -> None:
    uri = f"http://127.0.0.1:{silent_server.port}/video" if scheme == "http" else f"tcp://127.0.0.1:{silent_server.port}"
    capture = capture_factory(CaptureSettings(name="hung", uri=uri, open_timeout_s=60.0, read_timeout_s=60.0))
    wait_until(lambda: silent_server.connections, 15, message="a connection to the silent server")  # FFMPEG is now blocked in open
    assert capture.state == "connecting"
    started = time.monotonic()
    capture.stop(timeout_s=1.0)
    assert time.monotonic() - started < 30.0  # far less than the 60 s open timeout it would otherwise wait
    assert capture.state == "stopped"
    assert capture.take(timeout_s=0.5) is None


class _BlockingSource:
    """Stands in for a V4L2 device whose read() ignores every timeout, which cannot exist here."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.closed = threading.Event()
        self.reads = 0

    fps = 15.0
    ended = False

    def read(self) -> np.ndarray | None:
        self.reads += 1
        if self.reads > 3:
            self.release.wait()
            return None
        return np.zeros((48, 64, 3), np.uint8)

    def close(self) -> None:
        self.closed.set()

    def describe(self) -> str:
        return "v4l2 /dev/video0 (stuck)"


def test_read_that_ignores_timeouts_shows_offline_and_stop_abandons_thread(
    monkeypatch: pytest.MonkeyPatch, capture_factory, caplog: pytest.LogCaptureFixture
) -> None:
    source = _BlockingSource()
    monkeypatch.setattr(camera.capture, "open_source", lambda spec, settings: source)
    capture = capture_factory(CaptureSettings(name="stuck", uri="/dev/video0", watchdog_s=0.5))
    wait_until(lambda: capture.stats().frames_read == 3, 10, message="3 frames read")
    wait_until(lambda: capture.state == "offline", 10, message="the capture offline")
    stats = capture.stats()
    assert stats.state == "offline" and stats.last_frame_age_s > 0.5
    started = time.monotonic()
    capture.stop(timeout_s=0.5)
    assert time.monotonic() - started < 5.0
    assert capture.state == "stopped"
    assert "abandoning it" in caplog.text
    assert not source.closed.is_set()  # never released from another thread while a read is in flight
    source.release.set()
    assert source.closed.wait(timeout=10)  # the abandoned thread releases it once the read returns
    assert capture.state == "stopped"
