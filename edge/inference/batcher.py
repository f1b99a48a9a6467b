"""Gather the newest frames of all cameras into batches (max size, max wait), fairly.

Nothing queues here beyond one batch plus the remaining ROIs of one frame: above capacity, frames
wait in the cameras' one-frame slots, where a newer frame overwrites them (counted as skipped).
`max_batch_size` may be changed between batches (the pipeline sizes it to the serving runtime).

Several inference threads may share one batcher (a runtime with several interpreters): `next_batch`
is taken by one of them at a time, and a camera whose items are still being classified (handed out,
`done` not yet called) is not visited, so each camera's results come out in frame order and a
camera never occupies two threads while others wait. A camera's take() may decode its frame (the
capture defers decoding above capacity); that runs under the batcher's lock, which serialises
~1.4 ms per 720p frame: far from a limit at the frame rates a small box classifies.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from camera import Frame, FrameTransform, Roi, crop_regions

logger = logging.getLogger(__name__)


class FrameSourceSlot(Protocol):
    """What the batcher and the pipeline need from a camera capture: its name, ROIs, the newest
    frame, and a place for the current model's preprocessing."""

    @property
    def name(self) -> str: ...

    @property
    def rois(self) -> Sequence[Roi]: ...

    def take(self, timeout_s: float = 0.0) -> Frame | None: ...

    def set_transform(self, transform: FrameTransform | None) -> None:
        """The model's preprocessing, run in the capture thread on every kept frame (see camera.FrameTransform)."""


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
        self._take_lock = threading.Lock()  # one next_batch at a time
        self._busy_lock = threading.Lock()
        self._busy: Counter[str] = Counter()  # camera -> items handed out and not done yet

    @property
    def cameras(self) -> list[FrameSourceSlot]:
        return list(self._cameras)

    def _collect(self, items: list[WorkItem]) -> None:
        while self._carry and len(items) < self.max_batch_size:
            items.append(self._carry.popleft())
        count = len(self._cameras)
        with self._busy_lock:
            busy = {name for name, n in self._busy.items() if n > 0}
        busy.update(item.frame.camera for item in self._carry)
        busy.update(item.frame.camera for item in items)  # carried ROIs of a frame go first
        for offset in range(count):
            if len(items) >= self.max_batch_size:
                break
            camera = self._cameras[(self._next_camera + offset) % count]
            if camera.name in busy:
                continue
            frame = camera.take()
            if frame is None:
                continue
            regions = crop_regions(frame.image, camera.rois)
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
            items = self._next_batch(stop, idle_timeout_s)
        if items:
            with self._busy_lock:
                self._busy.update(item.frame.camera for item in items)
        return items

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
