"""The live view's JPEGs: encoded only when asked for, at most `max_fps` per camera, shared by viewers.

A request takes the camera's last classified frame from the :class:`SnapshotTap` (references kept
by the inference thread, no copy there) and encodes it on the console's worker thread: plain, or
with the top labels and ROI boxes drawn (:func:`render_snapshot`, the same drawing as
``cmd/snapshot``). The result is kept per camera: every viewer asking within ``1 / max_fps`` s, or
before a newer frame was classified, gets the same bytes. So nobody watching costs nothing, and
any number of viewers cost at most `max_fps` encodes per camera per second.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import cv2

from edge.errors import SnapshotError
from edge.inference.snapshots import SeenFrame, SnapshotTap, render_snapshot

logger = logging.getLogger(__name__)

PLAIN_QUALITY = 85


@dataclass(frozen=True)
class LiveFrame:
    """One encoded frame of one camera."""

    camera: str
    frame: int
    captured_wall: float
    annotated: bool
    jpeg: bytes
    width: int
    height: int
    labels: list[dict[str, Any]]  # annotated: what is drawn ({"roi", "top": [{"label", "score"}]}); plain: []

    @property
    def etag(self) -> str:
        return f'"{self.camera}-{self.frame}-{"a" if self.annotated else "p"}"'


def encode_plain(seen: SeenFrame) -> tuple[bytes, int, int]:
    ok, encoded = cv2.imencode(".jpg", seen.image, [cv2.IMWRITE_JPEG_QUALITY, PLAIN_QUALITY])
    if not ok:
        raise SnapshotError("could not encode the frame as JPEG")
    return encoded.tobytes(), int(seen.image.shape[1]), int(seen.image.shape[0])


class LiveFrames:
    """Per camera, the last encoded frame (plain and annotated), re-encoded at most `max_fps` times a second."""

    def __init__(self, snapshots: SnapshotTap, max_fps: float) -> None:
        self._snapshots = snapshots
        self._min_interval_s = 1.0 / max_fps
        self._cache: dict[tuple[str, bool], tuple[LiveFrame, float]] = {}
        self._locks: dict[tuple[str, bool], threading.Lock] = {}
        self._guard = threading.Lock()
        self.encodes = 0
        self.encode_seconds = 0.0  # CPU time of the encodes (this thread's)

    def _lock(self, key: tuple[str, bool]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def latest(self, camera: str, annotated: bool) -> LiveFrame | None:
        """The newest frame as JPEG (None before the camera's first classified frame)."""
        key = (camera, annotated)
        with self._lock(key):  # viewers of one camera wait for one encode instead of each doing it
            seen = self._snapshots.last(camera)
            if seen is None:
                return None
            cached = self._cache.get(key)
            now = time.monotonic()
            if cached is not None and (cached[0].frame == seen.number or now - cached[1] < self._min_interval_s):
                return cached[0]
            started = time.thread_time()
            if annotated:
                jpeg, width, height, _scaled, labels = render_snapshot(seen)
            else:
                (jpeg, width, height), labels = encode_plain(seen), []
            frame = LiveFrame(camera, seen.number, seen.captured_wall, annotated, jpeg, width, height, labels)
            self._cache[key] = (frame, now)
            with self._guard:
                self.encodes += 1
                self.encode_seconds += time.thread_time() - started
            return frame
