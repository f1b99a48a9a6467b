"""Gather the newest frames of all cameras into batches (max size, max wait), fairly.

Nothing queues here beyond one batch plus the remaining ROIs of one frame: above capacity, frames
wait in the cameras' one-frame slots, where a newer frame overwrites them (counted as skipped).
`max_batch_size` may be changed between batches (the pipeline sizes it to the serving runtime).

Several inference threads may share one batcher (a runtime with several interpreters): `next_batch`
is taken by one of them at a time, and a camera whose items are still being classified (taken,
`done` not yet called) is not visited, so each camera's results come out in frame order and a
camera never occupies two threads while others wait. A camera's take() may decode the frame (the
capture defers decoding above capacity), so it runs without the batcher's lock, with the camera
marked busy meanwhile: another thread can collect its batch from the other cameras.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from camera import Frame, Roi, crop_regions

logger = logging.getLogger(__name__)


class FrameSourceSlot(Protocol):
    """What the batcher needs from a camera capture: its name, ROIs and the newest frame."""

    @property
    def name(self) -> str: ...

    @property
    def rois(self) -> Sequence[Roi]: ...

    def take(self, timeout_s: float = 0.0) -> Frame | None: ...


@dataclass(frozen=True)
class WorkItem:
    """One image to classify: a whole frame or one region of it."""

    frame: Frame
    roi: str | None
    image: np.ndarray  # BGR view into frame.image (no copy)
    pixels: np.ndarray | None = None  # the capture transform's output for this region, if any
    pixels_tag: Hashable | None = None  # ... and the tag of the transform that made it


class FrameBatcher:
    """Pulls from camera slots; never queues more than one batch of frames plus one frame's ROIs.

    Cameras are visited in a rotating order so that, above capacity, every camera gets the same
    share and the frames that lose out are the ones the slots overwrite (counted as skipped).
    """

    def __init__(
        self,
        cameras: Sequence[FrameSourceSlot],
        frame_ready: threading.Event,
        max_batch_size: int,
        max_wait_s: float,
    ) -> None:
        self._cameras = list(cameras)
        self._frame_ready = frame_ready
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._carry: deque[WorkItem] = deque()
        self._next_camera = 0
        self._take_lock = threading.Lock()  # one next_batch at a time (released around each take)
        self._busy_lock = threading.Lock()
        self._busy: Counter[str] = Counter()  # camera -> takes in progress + items taken and not done yet

    @property
    def cameras(self) -> list[FrameSourceSlot]:
        return list(self._cameras)

    def _is_busy(self, name: str) -> bool:
        with self._busy_lock:
            return self._busy[name] > 0

    def _mark_busy(self, name: str, count: int) -> None:
        with self._busy_lock:
            self._busy[name] += count
            if self._busy[name] <= 0:
                del self._busy[name]

    def _take(self, camera: FrameSourceSlot) -> Frame | None:
        """camera.take() with the take lock released; the camera counts as busy from here on (one
        per item made of the frame, see `_collect`), or again free when it had no frame."""
        self._mark_busy(camera.name, 1)
        self._take_lock.release()
        frame = None
        try:
            frame = camera.take()
        finally:
            self._take_lock.acquire()
            if frame is None:
                self._mark_busy(camera.name, -1)
        return frame

    def _collect(self, items: list[WorkItem]) -> None:
        while self._carry and len(items) < self.max_batch_size:
            items.append(self._carry.popleft())
        count = len(self._cameras)
        for offset in range(count):
            if len(items) >= self.max_batch_size:
                break
            camera = self._cameras[(self._next_camera + offset) % count]
            if self._is_busy(camera.name):
                continue
            frame = self._take(camera)
            if frame is None:
                continue
            try:
                regions = crop_regions(frame.image, camera.rois)
            except ValueError:
                self._mark_busy(camera.name, -1)
                raise
            self._mark_busy(camera.name, len(regions) - 1)  # busy until `done` for every item
            pixels = frame.pixels if frame.pixels is not None and len(frame.pixels) == len(regions) else None
            for index, (roi_name, region) in enumerate(regions):
                item = WorkItem(frame=frame, roi=roi_name, image=region,
                                pixels=None if pixels is None else pixels[index],
                                pixels_tag=None if pixels is None else frame.pixels_tag)
                if len(items) < self.max_batch_size:
                    items.append(item)
                else:
                    self._carry.append(item)
        if count:
            self._next_camera = (self._next_camera + 1) % count

    def next_batch(self, stop: threading.Event, idle_timeout_s: float = 0.25) -> list[WorkItem]:
        """Up to max_batch_size items; returns [] after idle_timeout_s with nothing to do.
        The caller hands the items back with `done` once their results are delivered."""
        with self._take_lock:
            return self._next_batch(stop, idle_timeout_s)

    def done(self, items: Sequence[WorkItem]) -> None:
        """Items from `next_batch` are finished: their cameras may be visited again."""
        if not items:
            return
        with self._busy_lock:
            self._busy.subtract(item.frame.camera for item in items)
            for name in [name for name, n in self._busy.items() if n <= 0]:
                del self._busy[name]
        self._frame_ready.set()  # a thread waiting in next_batch may now take those cameras' frames

    def _next_batch(self, stop: threading.Event, idle_timeout_s: float) -> list[WorkItem]:
        items: list[WorkItem] = []
        deadline: float | None = None
        idle_deadline = time.monotonic() + idle_timeout_s
        while not stop.is_set():
            self._collect(items)
            if len(items) >= self.max_batch_size:
                break
            now = time.monotonic()
            if items:
                if deadline is None:
                    deadline = now + self.max_wait_s
                remaining = deadline - now
                if remaining <= 0:
                    break
            else:
                remaining = idle_deadline - now
                if remaining <= 0:
                    break
            self._frame_ready.wait(remaining)
            self._frame_ready.clear()
        return items
