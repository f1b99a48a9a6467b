"""URI parsing, settings validation, ROI crops and stats serialisation (no threads, no streams)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import camera.sources
import camera.uri
from camera import (
    CameraStats,
    CaptureSettings,
    Roi,
    SourceOpenError,
    crop_regions,
    mask_uri_password,
    open_source,
    parse_source_uri,
)


@pytest.fixture
def video_path(video_file_factory) -> Path:
    return video_file_factory(count=3)


@pytest.mark.parametrize(
    ("uri", "kind", "target"),
    [
        ("0", "v4l2", 0),
        ("12", "v4l2", 12),
        ("/dev/video2", "v4l2", "/dev/video2"),
        ("/dev/v4l/by-id/usb-Logitech_C920-video-index0", "v4l2", "/dev/v4l/by-id/usb-Logitech_C920-video-index0"),
        ("rtsp://admin:secret@10.0.0.5:554/Streaming/Channels/101", "ffmpeg", None),
        ("rtsps://cam.local/live", "ffmpeg", None),
        ("http://127.0.0.1:8080/stream.mjpg", "ffmpeg", None),
        ("https://cam.example.com/video", "ffmpeg", None),
        ("udp://127.0.0.1:5000", "ffmpeg", None),
        ("udp://@:5000", "ffmpeg", None),
        ("tcp://127.0.0.1:9000", "ffmpeg", None),
        ("RTSP://cam.local/live", "ffmpeg", None),
    ],
)
def test_parse_accepts_devices_and_network_urls(uri: str, kind: str, target: object) -> None:
    spec = parse_source_uri(uri)
    assert spec.kind == kind
    assert spec.target == (uri if target is None else target)
    assert spec.uri == uri


def test_parse_accepts_existing_file_as_path_and_file_url(video_path: Path) -> None:
    by_path = parse_source_uri(str(video_path))
    by_url = parse_source_uri(video_path.as_uri())
    assert (by_path.kind, by_path.target) == ("file", str(video_path))
    assert (by_url.kind, by_url.target) == ("file", str(video_path))


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("rtmp://cam.local/live", "unsupported scheme 'rtmp://'"),
        ("/nonexistent/clip.avi", "no such video file /nonexistent/clip.avi"),
        ("front-door", "no such video file front-door"),
        ("file:///nonexistent/clip.avi", "no such video file /nonexistent/clip.avi"),
        ("file://otherhost/clip.avi", "must be local"),
        ("http://", "missing host"),
        ("rtsp://:554/live", "missing host"),
        ("tcp://127.0.0.1", "needs a port"),
        ("udp://127.0.0.1", "needs a port"),
        ("rtsp://cam.local:99999/live", "invalid port"),
        ("/dev/sda", "not a V4L2 device"),
        ("gst:", "empty pipeline"),
        ("gst:videotestsrc ! videoconvert", "must end in 'appsink'"),
        ("é\u202e😀" * 29, "cannot be used as a file path (File name too long)"),  # found by hypothesis
        ("file:///" + "x" * 300, "cannot be used as a file path (File name too long)"),
        ("/etc/passwd/clip.avi", "no such video file"),  # a path through a regular file
        ("clip\x00.avi", "cannot contain a NUL character"),
        ("~no-such-user-here/clip.avi", "no-such-user-here"),
    ],
)
def test_parse_rejects_bad_uris_with_clear_message(uri: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_source_uri(uri)
    assert message in str(info.value)


@pytest.mark.parametrize("uri", ["", "rtmp://cam.local/live", "front-door", "/dev/sda"])
def test_parse_error_lists_accepted_forms(uri: str) -> None:
    with pytest.raises(ValueError, match="accepted forms: '/dev/videoN'.*rtsp://.*gst:"):
        parse_source_uri(uri)


def test_parse_error_never_shows_the_password() -> None:
    with pytest.raises(ValueError) as info:
        parse_source_uri("rtmp://admin:hunter2@cam.local/live")
    assert "hunter2" not in str(info.value)
    assert "admin:***@cam.local" in str(info.value)
    assert "hunter2" not in repr(parse_source_uri("rtsp://admin:hunter2@cam.local/live"))


CSI_PIPELINE = (
    "gst:nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! "
    "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1"
)


def test_gstreamer_uri_without_gstreamer_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # GStreamer and a CSI camera cannot exist here; the build check is forced to "absent" so this
    # test means the same on machines whose OpenCV does have GStreamer.
    monkeypatch.setattr(camera.uri, "gstreamer_available", lambda: False)
    monkeypatch.setattr(camera.sources, "gstreamer_available", lambda: False)
    with pytest.raises(ValueError, match=r"need OpenCV built with GStreamer.*'GStreamer: NO'.*JetPack"):
        parse_source_uri(CSI_PIPELINE)
    spec = camera.uri.SourceSpec("gstreamer", CSI_PIPELINE[4:], CSI_PIPELINE)
    with pytest.raises(SourceOpenError, match="without GStreamer"):
        open_source(spec, CaptureSettings(name="csi", uri=CSI_PIPELINE))


def test_gstreamer_uri_with_gstreamer_parses_to_the_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulates a Jetson's OpenCV build (GStreamer: YES); only parsing can run here.
    monkeypatch.setattr(camera.uri, "gstreamer_available", lambda: True)
    spec = parse_source_uri(CSI_PIPELINE)
    assert spec.kind == "gstreamer"
    assert spec.target.startswith("nvarguscamerasrc sensor-id=0 !")
    assert spec.target.endswith("appsink drop=1")


def test_gstreamer_availability_matches_this_opencv_build() -> None:
    import cv2

    build_lines = [line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GStreamer:")]
    assert len(build_lines) == 1
    camera.uri.gstreamer_available.cache_clear()
    assert camera.uri.gstreamer_available() == ("YES" in build_lines[0])


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        ("rtsp://admin:secret@10.0.0.5:554/live", "rtsp://admin:***@10.0.0.5:554/live"),
        ("rtsp://admin:p@ss@10.0.0.5/live", "rtsp://admin:***@10.0.0.5/live"),
        ("http://cam.local/video.cgi?user=admin&password=secret&res=hd", "http://cam.local/video.cgi?user=admin&password=***&res=hd"),
        ("rtsp://admin@10.0.0.5/live", "rtsp://admin@10.0.0.5/live"),
        ("rtsp://10.0.0.5/live@2", "rtsp://10.0.0.5/live@2"),
        ("/dev/video0", "/dev/video0"),
    ],
)
def test_mask_uri_password(uri: str, masked: str) -> None:
    assert mask_uri_password(uri) == masked


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": ""}, "name must be a non-empty"),
        ({"target_fps": -1.0}, "target_fps must be >= 0"),
        ({"size": (0, 240)}, "size must be"),
        ({"size": (320,)}, "size must be"),
        ({"watchdog_s": 0}, "watchdog_s must be > 0"),
        ({"backoff_initial_s": 5.0, "backoff_max_s": 1.0}, "backoff_max_s (1.0) must be >= backoff_initial_s"),
        ({"rois": (Roi("a", 0, 0, 10, 10), Roi("a", 5, 5, 10, 10))}, "roi name 'a' is used twice"),
        ({"size": (100, 100), "rois": (Roi("far", 200, 0, 10, 10),)}, "roi 'far'"),
        ({"rois": [Roi("a", 0, 0, 10, 10)]}, "rois must be a tuple"),
    ],
)
def test_capture_settings_reject_bad_values(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        CaptureSettings(**{"name": "cam", "uri": "0", **overrides})
    assert message in str(info.value)


def test_roi_rejects_empty_size() -> None:
    with pytest.raises(ValueError, match="w and h must be > 0"):
        Roi("door", 0, 0, 0, 10)


def test_crop_regions_without_rois_returns_whole_image() -> None:
    image = np.zeros((120, 160, 3), np.uint8)
    [(name, crop)] = crop_regions(image, ())
    assert name is None and crop is image


def test_crop_regions_cuts_and_clamps() -> None:
    image = np.arange(120 * 160 * 3, dtype=np.uint32).reshape(120, 160, 3).astype(np.uint8)
    rois = (Roi("inside", 10, 20, 30, 40), Roi("corner", 150, 100, 50, 50), Roi("negative", -5, -5, 15, 10))
    crops = dict(crop_regions(image, rois))
    assert crops["inside"].shape == (40, 30, 3)
    assert np.array_equal(crops["inside"], image[20:60, 10:40])
    assert crops["corner"].shape == (20, 10, 3)
    assert np.array_equal(crops["corner"], image[100:120, 150:160])
    assert crops["negative"].shape == (5, 10, 3)


def test_crop_regions_rejects_roi_outside_frame() -> None:
    image = np.zeros((120, 160, 3), np.uint8)
    with pytest.raises(ValueError, match=r"roi 'away' .* entirely outside the 160x120 frame"):
        crop_regions(image, (Roi("ok", 0, 0, 10, 10), Roi("away", 160, 0, 10, 10)))


def test_camera_stats_as_dict_is_json() -> None:
    stats = CameraStats(
        name="door", state="online", uri="rtsp://a:***@h/x", camera_fps=9.87654, process_fps=1.0,
        skipped_fps=8.87654, reconnects=2, last_frame_age_s=0.0123456, frames_read=10, frames_processed=1,
        frames_skipped=9, resolution=(320, 240), last_error=None, decoded_resolution=(160, 120), decode_scale=2,
        frames_decoded=3, decoded_on_take=1,
    )
    decoded = json.loads(json.dumps(stats.as_dict()))
    assert decoded["resolution"] == [320, 240]
    assert decoded["decoded_resolution"] == [160, 120] and decoded["decode_scale"] == 2
    assert decoded["camera_fps"] == 9.88
    assert decoded["last_frame_age_s"] == 0.012
    assert decoded["frames_decoded"] == 3 and decoded["decoded_on_take"] == 1
    assert set(decoded) == {
        "name", "state", "uri", "camera_fps", "process_fps", "skipped_fps", "reconnects", "last_frame_age_s",
        "frames_read", "frames_processed", "frames_skipped", "resolution", "last_error", "decoded_resolution",
        "decode_scale", "frames_decoded", "decoded_on_take", "frames_gated", "decoder", "keyframes_only",
    }
