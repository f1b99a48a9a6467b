"""`gst:` camera sources for real: Debian's python3-opencv (built with GStreamer) and GStreamer's plugins.

The project's venv has the pip OpenCV wheel, which has no GStreamer; a box that wants `gst:` sources
installs in the other mode (`make venv-system-opencv`: Debian's or JetPack's cv2 through
--system-site-packages, no pip OpenCV). These tests run the `camera` package in that setting:
Debian's /usr/bin/python3 with its cv2 4.6 and numpy 1.x, against a test source, an RTSP camera
(GStreamer's RTSP server) and an MJPEG-over-HTTP camera (ffmpeg), each read through CameraCapture.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.paths import REPO
from tools.loopback import SYSTEM_PYTHON, h264_video

pytestmark = pytest.mark.slow  # a fresh interpreter importing Debian's OpenCV, and live streams

SCRIPT = """
import json, sys, time
sys.path.insert(0, {repo!r})
import cv2
import camera
import camera.sources
from camera import CameraCapture, CaptureSettings
pipeline, seconds = sys.argv[1], float(sys.argv[2])
capture = CameraCapture(CaptureSettings(name="gst", uri="gst:" + pipeline, target_fps=0))
capture.start()
frames, deadline = [], time.monotonic() + seconds
while time.monotonic() < deadline:
    frame = capture.take(0.2)
    if frame is not None:
        frames.append(frame)
stats = capture.stats()
capture.stop()
print(json.dumps({{"cv2": cv2.__file__, "gstreamer": camera.gstreamer_available(), "frames": len(frames),
                  "shapes": sorted({{list(f.image.shape).__repr__() for f in frames}}),
                  "distinct": len({{f.image.tobytes() for f in frames}}), "state": stats.state,
                  "error": stats.last_error, "opencv_log_level": camera.sources.opencv_log_level()}}))
"""


def read_gst(pipeline: str, seconds: float) -> dict:
    out = subprocess.run([SYSTEM_PYTHON, "-c", SCRIPT.format(repo=str(REPO)), pipeline, str(seconds)],
                         capture_output=True, text=True, timeout=60 + seconds)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["cv2"].startswith("/usr/lib/python3/dist-packages/") and doc["gstreamer"] is True, doc
    assert doc["frames"] > 0, f"no frames: camera {doc['state']}, {doc['error']}"
    return doc


def test_test_source() -> None:
    doc = read_gst("videotestsrc num-buffers=200 pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! "
                   "videoconvert ! video/x-raw,format=BGR ! appsink", 2.0)
    assert doc["frames"] >= 20 and doc["shapes"] == ["[240, 320, 3]"] and doc["distinct"] >= 10, doc
    assert doc["opencv_log_level"] == 2, doc  # errors only, set through Debian's cv2 4.6 (cv2.setLogLevel)


def test_rtsp_h264_pipeline(rtsp_server_factory, tmp_path) -> None:
    server = rtsp_server_factory(video=h264_video(tmp_path / "cam.mp4", (640, 360), 30, 15, 10))
    doc = read_gst(f"rtspsrc location={server.uri()} protocols=tcp latency=0 ! rtph264depay ! h264parse ! "
                   "avdec_h264 ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1 sync=false",
                   3.0)
    assert doc["frames"] >= 15 and doc["shapes"] == ["[360, 640, 3]"] and doc["distinct"] >= 10, doc


def test_rtsp_keyframes_only_pipeline(rtsp_server_factory, tmp_path) -> None:
    """GStreamer's way to decode keyframes only (avdec_h264 has no skip-frame=nokey): drop delta units."""
    server = rtsp_server_factory(video=h264_video(tmp_path / "cam.mp4", (640, 360), 30, 15, 30))
    doc = read_gst(f"rtspsrc location={server.uri()} protocols=tcp latency=0 ! rtph264depay ! h264parse ! "
                   "identity drop-buffer-flags=delta-unit ! avdec_h264 ! videoconvert ! video/x-raw,format=BGR ! "
                   "appsink drop=1 max-buffers=1 sync=false", 4.0)
    assert 2 <= doc["frames"] <= 6, doc  # one keyframe a second


def test_http_mjpeg_pipeline(ffmpeg_stream_factory) -> None:
    stream = ffmpeg_stream_factory("mjpeg_http", size=(320, 240), fps=10)
    doc = read_gst(f"souphttpsrc location={stream.uri} is-live=true ! multipartdemux ! jpegdec ! videoconvert ! "
                   "video/x-raw,format=BGR ! appsink drop=1 max-buffers=1 sync=false", 3.0)
    assert doc["frames"] >= 10 and doc["shapes"] == ["[240, 320, 3]"] and doc["distinct"] >= 5, doc
