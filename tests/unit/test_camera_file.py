"""CameraCapture and the file source against real video files written with OpenCV."""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from camera import CaptureSettings, Roi, crop_regions, open_source
from camera.sources import opencv_log_level, set_opencv_log_level
from tests.support.fakes import CameraEventRecorder
from tests.support.frames import read_frame_marker
from tests.support.waits import wait_until


def test_file_source_reads_in_order_then_ends(video_file_factory) -> None:
    path = video_file_factory(count=12)
    source = open_source(str(path), CaptureSettings(name="f", uri=str(path), loop=False, realtime=False))
    try:
        markers = []
        while (image := source.read()) is not None:
            assert image.shape == (240, 320, 3) and image.dtype == np.uint8
            markers.append(read_frame_marker(image))
        assert markers == list(range(12))
        assert source.ended
        assert source.read() is None
        assert source.fps == pytest.approx(10.0)
        assert "file" in source.describe()
    finally:
        source.close()


def test_file_source_loops_back_to_the_first_frame(video_file_factory) -> None:
    path = video_file_factory(count=5)
    source = open_source(str(path), CaptureSettings(name="f", uri=str(path), loop=True, realtime=False))
    try:
        markers = [read_frame_marker(source.read()) for _ in range(12)]
        assert markers == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
        assert not source.ended
    finally:
        source.close()


def test_capture_numbers_every_frame_read_and_resizes(video_file_factory, capture_factory) -> None:
    path = video_file_factory(count=30, fps=20.0)
    capture = capture_factory(CaptureSettings(name="door", uri=str(path), size=(160, 120)))
    frames = [capture.take(timeout_s=10.0) for _ in range(8)]
    assert all(frame is not None for frame in frames)
    numbers = [frame.number for frame in frames]
    assert numbers == sorted(set(numbers)) and numbers[0] >= 1
    for frame in frames:
        assert frame.camera == "door"
        assert frame.image.shape == (120, 160, 3) and frame.image.dtype == np.uint8
        # Numbers count every frame read, so the file position follows from the number.
        assert read_frame_marker(frame.image) == (frame.number - 1) % 30
        assert frame.captured_wall == pytest.approx(time.time(), abs=30)
        assert frame.captured_mono <= time.monotonic()
    assert capture.state == "online"
    stats = capture.stats()
    assert stats.resolution == (160, 120)
    assert stats.frames_processed == 8
    assert stats.last_error is None and stats.reconnects == 0


def test_capture_frames_crop_to_rois(video_file_factory, capture_factory) -> None:
    path = video_file_factory(count=10)
    rois = (Roi("top_left", 0, 0, 80, 60), Roi("past_corner", 140, 100, 50, 50))
    settings = CaptureSettings(name="yard", uri=str(path), size=(160, 120), rois=rois)
    capture = capture_factory(settings)
    frame = capture.take(timeout_s=10.0)
    assert frame is not None
    crops = crop_regions(frame.image, settings.rois)
    assert [(name, crop.shape) for name, crop in crops] == [("top_left", (60, 80, 3)), ("past_corner", (20, 20, 3))]
    assert np.array_equal(crops[0][1], frame.image[:60, :80])


def test_non_looping_file_goes_offline_at_end_and_keeps_only_newest(video_file_factory, capture_factory) -> None:
    path = video_file_factory(count=40)
    events = CameraEventRecorder()
    capture = capture_factory(
        CaptureSettings(name="clip", uri=str(path), loop=False, realtime=False, backoff_initial_s=0.05),
        on_event=events,
    )
    wait_until(lambda: events.of("camera_offline"), 30, message="a camera_offline event")
    assert capture.state == "offline"
    assert events.of("camera_online")[0] == {"camera": "clip", "resolution": [320, 240], "source_fps": 10.0}
    assert events.of("camera_offline") == [{"camera": "clip", "reason": "end of file", "reconnect_in_s": None}]
    # Nobody took anything while 40 frames were read: the slot holds just the last one.
    frame = capture.take()
    assert frame is not None and frame.number == 40 and read_frame_marker(frame.image) == 39
    assert capture.take() is None
    time.sleep(0.5)  # it must not reopen the file: nothing new arrives
    stats = capture.stats()
    assert (stats.frames_read, stats.frames_processed, stats.frames_skipped) == (40, 1, 39)
    assert stats.reconnects == 0
    assert stats.last_error == "end of file"
    assert stats.state == "offline"
    assert capture.take(timeout_s=0.2) is None

    capture.restart()  # plays the file again; numbering continues
    wait_until(lambda: capture.stats().frames_read == 80, 30, message="80 frames read")
    wait_until(lambda: len(events.of("camera_offline")) == 2, 10, message="two camera_offline events")
    assert capture.take().number == 80
    assert len(events.of("camera_online")) == 2


def test_looping_file_keeps_counting_past_the_end(video_file_factory, capture_factory) -> None:
    path = video_file_factory(count=8, fps=50.0)
    events = CameraEventRecorder()
    capture = capture_factory(CaptureSettings(name="loop", uri=str(path), loop=True), on_event=events)
    wait_until(lambda: capture.stats().frames_read > 20, 30, message="more than 20 frames read")
    frame = capture.take(timeout_s=5)
    assert frame is not None and frame.number > 8
    assert read_frame_marker(frame.image) == (frame.number - 1) % 8
    assert events.of("camera_offline") == []
    assert capture.state == "online"


def test_slow_consumer_sees_newest_frames_and_skips_are_counted(video_file_factory, capture_factory) -> None:
    path = video_file_factory(count=40, fps=20.0)
    capture = capture_factory(CaptureSettings(name="slow", uri=str(path)))
    taken = []
    for _ in range(6):
        frame = capture.take(timeout_s=10.0)
        assert frame is not None
        taken.append(frame)
        time.sleep(0.3)  # a slow classifier
    capture.stop()
    numbers = [frame.number for frame in taken]
    assert all(later > earlier for earlier, later in zip(numbers, numbers[1:]))
    assert max(later - earlier for earlier, later in zip(numbers, numbers[1:])) > 1
    stats = capture.stats()
    leftover = capture.take()  # at most one frame is ever pending, never a backlog
    assert capture.take() is None
    assert stats.frames_skipped > 0
    assert stats.frames_read == stats.frames_processed + stats.frames_skipped + (1 if leftover else 0)
    assert stats.frames_processed == 6
    assert stats.state == "stopped"


@pytest.mark.slow
def test_target_fps_publishes_at_most_that_rate(video_file_factory, capture_factory) -> None:
    path = video_file_factory(count=30, fps=30.0)
    target_fps = 4.0
    capture = capture_factory(CaptureSettings(name="slowed", uri=str(path), target_fps=target_fps))
    first = capture.take(timeout_s=10.0)
    assert first is not None
    started = time.monotonic()
    numbers = [first.number]
    while time.monotonic() - started < 3.0:
        frame = capture.take(timeout_s=1.0)
        if frame is not None:
            numbers.append(frame.number)
    elapsed = time.monotonic() - started
    assert len(numbers) >= 3
    assert len(numbers) - 1 <= target_fps * elapsed + 2
    stats = capture.stats()
    assert stats.frames_read >= 2 * len(numbers)
    assert stats.frames_skipped >= stats.frames_read - len(numbers) - 1
    assert stats.camera_fps > stats.process_fps > 0
    assert stats.skipped_fps > 0


def test_shared_frame_ready_event_wakes_consumer_for_each_camera(video_file_factory, capture_factory) -> None:
    frame_ready = threading.Event()
    paths = [video_file_factory(count=10, fps=10.0), video_file_factory(count=10, fps=25.0)]
    captures = [
        capture_factory(CaptureSettings(name=f"cam{i}", uri=str(path)), frame_ready=frame_ready)
        for i, path in enumerate(paths)
    ]
    seen: set[str] = set()

    def both_seen() -> bool:
        if frame_ready.wait(timeout=1.0):
            frame_ready.clear()
            for capture in captures:
                frame = capture.take()
                if frame is not None:
                    seen.add(frame.camera)
        return seen == {"cam0", "cam1"}

    wait_until(both_seen, 20, interval_s=0.0, message="a frame from each camera through the shared event")
    assert seen == {"cam0", "cam1"}


def test_raising_event_callback_is_logged_and_capture_continues(
    video_file_factory, capture_factory, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_callback(name: str, payload: dict) -> None:
        raise RuntimeError("subscriber bug")

    path = video_file_factory(count=10)
    with caplog.at_level(logging.ERROR, logger="camera.capture"):
        capture = capture_factory(CaptureSettings(name="cb", uri=str(path)), on_event=broken_callback)
        assert capture.take(timeout_s=10.0) is not None
        assert capture.take(timeout_s=10.0) is not None
    assert capture.state == "online"
    assert any("camera_online" in record.getMessage() and "raised" in record.getMessage() for record in caplog.records)


def test_restart_reconnects_and_numbers_continue(video_file_factory, capture_factory) -> None:
    path = video_file_factory(count=20, fps=20.0)
    events = CameraEventRecorder()
    capture = capture_factory(CaptureSettings(name="again", uri=str(path)), on_event=events)
    before = capture.take(timeout_s=10.0)
    assert before is not None
    capture.restart()
    wait_until(lambda: len(events.of("camera_online")) == 2, 20, message="two camera_online events")
    assert events.of("camera_offline") == [{"camera": "again", "reason": "restart requested", "reconnect_in_s": 0.0}]
    after = capture.take(timeout_s=10.0)
    assert after is not None and after.number > before.number
    assert capture.stats().reconnects == 1
    assert capture.state == "online"


def test_missing_v4l2_device_goes_offline_once_and_keeps_retrying(capture_factory) -> None:
    # No V4L2 device exists here, so this is the real "camera unplugged" path, not a mock.
    events = CameraEventRecorder()
    capture = capture_factory(
        CaptureSettings(name="usb", uri="/dev/video97", backoff_initial_s=0.05, backoff_max_s=0.2),
        on_event=events,
    )
    wait_until(lambda: capture.stats().last_error is not None, 20, message="a last_error in the capture stats")
    stats = capture.stats()
    assert "open failed" in stats.last_error and "/dev/video97" in stats.last_error
    assert capture.state in ("offline", "connecting")
    time.sleep(1.0)  # several retries at <= 0.2 s apart
    assert events.of("camera_online") == []
    [offline] = events.of("camera_offline")  # one event per outage, not one per failed retry
    assert offline["camera"] == "usb" and offline["reconnect_in_s"] == pytest.approx(0.05)
    assert capture.stats().reconnects == 1
    assert capture.stats().last_frame_age_s is None and capture.stats().resolution is None


def test_lifecycle_edges(video_file_factory, capture_factory) -> None:
    path = video_file_factory(count=5)
    capture = capture_factory(CaptureSettings(name="edge", uri=str(path)), start=False)
    assert capture.state == "stopped"
    assert capture.take(timeout_s=0.1) is None
    capture.start()
    with pytest.raises(RuntimeError, match="already started"):
        capture.start()
    assert capture.take(timeout_s=10.0) is not None
    capture.stop()
    capture.stop()  # idempotent
    assert capture.state == "stopped"


def test_capture_rejects_bad_uri_before_starting_a_thread(tmp_path) -> None:
    from camera import CameraCapture

    missing = tmp_path / "missing.avi"
    with pytest.raises(ValueError, match="no such video file"):
        CameraCapture(CaptureSettings(name="x", uri=str(missing)))


def test_opencvs_own_log_level_follows_logging_when_a_source_opens(video_file_factory) -> None:
    """OpenCV prints to stderr outside logging: errors only, warnings too at debug (set where a camera
    opens, not by the logging setup, which edge-model-server uses without OpenCV)."""
    path = video_file_factory(count=2)
    camera_logger = logging.getLogger("camera")
    before_level, before_opencv = camera_logger.level, opencv_log_level()
    try:
        for level, expected in ((logging.DEBUG, 3), (logging.INFO, 2)):  # OpenCV's WARNING, ERROR
            camera_logger.setLevel(level)
            open_source(str(path), CaptureSettings(name="f", uri=str(path), loop=False, realtime=False)).close()
            assert opencv_log_level() == expected
    finally:
        camera_logger.setLevel(before_level)
        set_opencv_log_level(before_opencv)
