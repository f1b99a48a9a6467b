"""Camera capture: frame sources from a URI, one capture thread per camera with a newest-frame slot,
reconnect with backoff, a no-frame watchdog, fps limiting and ROI crops. Knows nothing of models or MQTT.

    settings = CaptureSettings(name="door", uri="rtsp://user:pw@10.0.0.5/stream", target_fps=5)
    capture = CameraCapture(settings, on_event=print_event, frame_ready=shared_event)
    capture.start()
    frame = capture.take(timeout_s=1.0)      # newest frame not yet taken, or None
    crops = crop_regions(frame.image, settings.rois)
    capture.stop()
"""
from __future__ import annotations

try:
    import cv2  # noqa: F401  (checked here so a missing OpenCV says how to get it)
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("OpenCV is not installed: pip install 'edge-gateway[opencv]', or use the system's "
                      "python3-opencv from a venv made with --system-site-packages") from exc

import logging

from camera.capture import CameraCapture
from camera.frames import Frame, FrameTransform, crop_regions
from camera.gate import GateSettings
from camera.settings import CaptureSettings, Roi
from camera.sources import FrameSource, open_source
from camera.stats import CameraStats
from camera.uri import SourceOpenError, SourceSpec, gstreamer_available, mask_uri_password, parse_source_uri

logger = logging.getLogger(__name__)

__all__ = [
    "CameraCapture",
    "CameraStats",
    "CaptureSettings",
    "Frame",
    "FrameSource",
    "FrameTransform",
    "GateSettings",
    "Roi",
    "SourceOpenError",
    "SourceSpec",
    "crop_regions",
    "gstreamer_available",
    "mask_uri_password",
    "open_source",
    "parse_source_uri",
]
