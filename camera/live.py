"""A camera slot whose capture can be replaced while the gateway runs (new settings, same slot)."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from camera.capture import CameraCapture
from camera.settings import CaptureSettings

logger = logging.getLogger(__name__)


class LiveCamera:
    """A `CameraCapture` whose settings can be replaced while the gateway runs.

    The batcher keeps a reference to this object; `reconfigure` stops the old capture (releasing
    the device, which V4L2 needs) and starts a new one behind the same slot. `stats().reconnects`
    counts across captures (a reconfiguration counts as one reconnect).
    """

    def __init__(self, settings: CaptureSettings, on_event: Callable[[str, dict[str, Any]], None] | None,
                 frame_ready: threading.Event | None) -> None:
        self._on_event = on_event
        self._frame_ready = frame_ready
        self._capture = CameraCapture(settings, on_event=on_event, frame_ready=frame_ready)
        self._lock = threading.Lock()
        self._transform: Any = settings.transform  # the pipeline's camera.FrameTransform, kept across reconfigure
        self._earlier_reconnects = 0
        self._started = False

    @property
    def name(self) -> str:
        return self._capture.name

    @property
    def rois(self) -> Any:
        return self._capture.rois

    @property
    def settings(self) -> CaptureSettings:
        return self._capture.settings

    @property
    def state(self) -> str:
        return self._capture.state

    def take(self, timeout_s: float = 0.0) -> Any:
        return self._capture.take(timeout_s)

    def stats(self) -> Any:
        stats = self._capture.stats()
        return replace(stats, reconnects=stats.reconnects + self._earlier_reconnects)

    def start(self) -> None:
        with self._lock:
            self._started = True
            self._capture.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            self._started = False
            self._capture.stop(timeout_s)

    def restart(self) -> None:
        self._capture.restart()

    def set_transform(self, transform: Any) -> None:
        """Forwarded to the capture (the pipeline's preprocessing in the capture thread); kept for the
        capture a reconfiguration creates."""
        with self._lock:
            self._transform = transform
            self._capture.set_transform(transform)

    def reconfigure(self, settings: CaptureSettings) -> None:
        new = CameraCapture(settings, on_event=self._on_event, frame_ready=self._frame_ready)  # validates first
        with self._lock:
            new.set_transform(self._transform)
            old = self._capture
            old.stop(3.0)
            self._earlier_reconnects += old.stats().reconnects + 1
            self._capture = new
            if self._started:
                new.start()
        logger.info("camera %s: restarted with new settings", settings.name)
