"""Every fake camera slot, fake classifier and recording sink of the test suite.

Camera slots (what `FrameBatcher` reads; all implement `take()` and `set_transform()`):
- `SlotCamera`: filled by the test with `put(number)`; the pipeline preprocesses on its thread.
- `TransformingSlot`: like a `CameraCapture`, runs the transform the pipeline installs in `put()`.
- `SolidCamera`: a solid-colour frame every `interval_s` (newest wins).
- `EndlessCamera`: always holds a new frame (a camera far above capacity).

Classifiers (all derive from `edge.serving.base.ClassifierBase`; real models are tested elsewhere):
- `FakeClassifier(fail_first=n)`: constant scores, the first n calls raise.
- `FixedClassifier(concurrency)`: constant scores with a chosen concurrency.
- `CountingClassifier(...)`: records every batch it is given (counting and memory-sharing checks).
- `TwoCallClassifier`: the counting classifier taking two calls at once.
- `FailsInPipeline(inner)`: passes validation, fails on the inference thread.
- `OverlapProbe(inner, concurrency)`: records how many classify() calls run at the same moment.

Sinks and recorders: `ListSink` (results), `CameraEventRecorder` (camera events),
`RolloutRecorder` (rollout events, states, batches); `start_ticker` sets a frame-ready event.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from camera import Frame, FrameTransform, Roi, crop_regions
from edge.inference.pipeline import ClassifiedBatch
from edge.models.metadata import PreprocessSpec, VersionMetadata
from edge.serving.base import Classifier, ClassifierBase, ClassifierInfo, ImageInput

CONSTANT_SCORES = np.array([[0.25, 0.75]], dtype=np.float32)


def _info(version: int, height: int = 8, width: int = 8, dtype: str = "uint8",
          spec: PreprocessSpec | None = None, labels: tuple[str, ...] = ("x", "y")) -> ClassifierInfo:
    return ClassifierInfo("m", version, ImageInput("image", dtype, height, width), "out",
                          VersionMetadata(spec or PreprocessSpec(), None, "none", labels), "test")


# ------------------------------------------------------------------------------------- camera slots

@dataclass
class SlotCamera:
    """A newest-frame slot filled by the test: the batcher's view of a camera capture."""

    name: str
    rois: tuple[Roi, ...] = ()
    frames: list[Frame] = field(default_factory=list)

    def put(self, number: int) -> None:
        image = np.full((20, 30, 3), number % 255, dtype=np.uint8)
        self.frames = [Frame(self.name, number, image, time.time(), time.monotonic())]

    def set_transform(self, transform: object) -> None:
        """No preprocessing in this test slot: the pipeline preprocesses on its own thread."""

    def take(self, timeout_s: float = 0.0) -> Frame | None:
        return self.frames.pop() if self.frames else None


@dataclass
class TransformingSlot:
    """A newest-frame slot that, like CameraCapture, runs the transform the pipeline installs."""

    name: str
    rois: tuple[Roi, ...] = ()
    transform: FrameTransform | None = None
    frames: list[Frame] = field(default_factory=list)
    installs: list[Hashable] = field(default_factory=list)

    def set_transform(self, transform: FrameTransform | None) -> None:
        self.transform = transform
        self.installs.append(None if transform is None else transform.tag)

    def put(self, number: int, made_by: FrameTransform | None = None) -> Frame:
        rng = np.random.default_rng(number)
        image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        transform = made_by or self.transform
        pixels = tag = None
        if transform is not None:
            pixels = tuple(transform(region) for _, region in crop_regions(image, self.rois))
            tag = transform.tag
        frame = Frame(self.name, number, image, time.time(), time.monotonic(), pixels, tag)
        self.frames = [frame]
        return frame

    def take(self, timeout_s: float = 0.0) -> Frame | None:
        return self.frames.pop() if self.frames else None


class SolidCamera:
    """A `FrameBatcher` slot: a solid-colour frame every `interval_s` (newest wins, like a camera slot)."""

    def __init__(self, name: str, bgr: tuple[int, int, int], interval_s: float = 0.01) -> None:
        self._name = name
        self._image = np.zeros((64, 64, 3), dtype=np.uint8)
        self._image[:, :] = bgr
        self._interval_s = interval_s
        self._next = time.monotonic()
        self._number = 0
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def rois(self) -> tuple[Roi, ...]:
        return ()

    def set_transform(self, transform: object) -> None:
        """No preprocessing in this test slot: the pipeline preprocesses on its own thread."""

    def take(self, timeout_s: float = 0.0) -> Frame | None:
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                return None
            self._next = now + self._interval_s
            self._number += 1
            return Frame(self._name, self._number, self._image, time.time(), now)


class EndlessCamera:
    """A slot that always holds a new frame (a camera far above capacity); frames numbered 1, 2, ..."""

    def __init__(self, name: str, colour: tuple[int, int, int]) -> None:
        self.name = name
        self.rois = ()
        self._image = np.zeros((64, 64, 3), np.uint8)
        self._image[...] = colour[::-1]  # BGR
        self._number = 0
        self._lock = threading.Lock()

    def set_transform(self, transform: object) -> None:
        """No preprocessing in this test slot: the pipeline preprocesses on its own thread."""

    def take(self, timeout_s: float = 0.0) -> Frame | None:
        with self._lock:
            self._number += 1
            return Frame(self.name, self._number, self._image, time.time(), time.monotonic())


def start_ticker(frame_ready: threading.Event, interval_s: float, stop: threading.Event) -> threading.Thread:
    """Set `frame_ready` every `interval_s` (what capture threads do when a frame lands in a slot)."""
    def run() -> None:
        while not stop.wait(interval_s):
            frame_ready.set()

    thread = threading.Thread(target=run, name="frame-ticker", daemon=True)
    thread.start()
    return thread


# ------------------------------------------------------------------------------------- classifiers

class FakeClassifier(ClassifierBase):
    """Stands in for a model so the loop can be tested without TensorFlow; real models are tested elsewhere."""

    def __init__(self, fail_first: int = 0) -> None:
        self.info = _info(3)
        self.calls = 0
        self.fail_first = fail_first

    def classify(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise RuntimeError("backend unavailable")
        return np.tile(CONSTANT_SCORES, (len(batch), 1))


class FixedClassifier(ClassifierBase):
    """A model stand-in with a chosen concurrency (the thread count is what is tested with it)."""

    def __init__(self, concurrency: int) -> None:
        self.info = _info(concurrency)
        self._concurrency = concurrency
        self.calls = 0

    @property
    def concurrency(self) -> int:
        return self._concurrency

    def classify(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.tile(CONSTANT_SCORES, (len(batch), 1))


class CountingClassifier(ClassifierBase):
    """A stand-in model for counting only: records every batch it is given (copies, for checking)."""

    def __init__(self, height: int = 16, width: int = 16, dtype: str = "uint8", color: str = "RGB",
                 preferred_batch_size: int | None = None, delay_s: float = 0.0, version: int = 1) -> None:
        spec = PreprocessSpec(color=color, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0)) \
            if dtype == "float32" else PreprocessSpec(color=color)
        self.info = _info(version, height, width, dtype, spec, ("a", "b"))
        self._preferred_batch_size = preferred_batch_size
        self.delay_s = delay_s
        self.batches: list[np.ndarray] = []
        self.received: list[np.ndarray] = []  # the arrays themselves (memory-sharing checks)
        self.images = 0

    @property
    def preferred_batch_size(self) -> int | None:
        return self._preferred_batch_size

    def classify(self, batch: np.ndarray) -> np.ndarray:
        self.received = [batch]
        self.batches.append(batch.copy())
        self.images += len(batch)
        if self.delay_s:
            time.sleep(self.delay_s * len(batch))
        return np.tile(CONSTANT_SCORES, (len(batch), 1))


class TwoCallClassifier(CountingClassifier):
    """The counting stand-in, taking two calls at once (as a pool of two interpreters does)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()

    @property
    def concurrency(self) -> int:
        return 2

    def classify(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            return super().classify(batch)


class FailsInPipeline(ClassifierBase):
    """Wraps a classifier that passes validation but fails on the inference thread (a regression
    that only shows under real traffic)."""

    def __init__(self, inner: Classifier) -> None:
        self.inner = inner
        self.info = inner.info

    def classify(self, batch: np.ndarray) -> np.ndarray:
        if threading.current_thread().name == "inference":
            raise RuntimeError("simulated runtime failure")
        return self.inner.classify(batch)

    def close(self) -> None:
        self.inner.close()


class OverlapProbe(ClassifierBase):
    """Wraps a classifier and records how many classify() calls ran at the same moment."""

    def __init__(self, inner: Classifier, concurrency: int, delay_s: float = 0.002) -> None:
        self.inner = inner
        self.info = inner.info
        self._concurrency = concurrency
        self.delay_s = delay_s
        self._lock = threading.Lock()
        self.running = 0
        self.max_running = 0
        self.threads: set[str] = set()

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def preferred_batch_size(self) -> int | None:
        return self.inner.preferred_batch_size

    def classify(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.threads.add(threading.current_thread().name)
        try:
            time.sleep(self.delay_s)  # keep calls long enough to overlap on a loaded 2-core box
            return self.inner.classify(batch)
        finally:
            with self._lock:
                self.running -= 1

    def close(self) -> None:
        self.inner.close()


# ------------------------------------------------------------------------------------- sinks, recorders

class ListSink:
    """A results sink (what the MQTT reporter is to `ResultPublisher`) keeping every item."""

    def __init__(self, fail: bool = False) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail

    def publish_results(self, items: list[tuple[str, dict[str, Any]]]) -> list[int]:
        if self.fail:
            raise OSError("database or disk is full")
        self.items.extend(items)
        return list(range(len(items)))


class CameraEventRecorder:
    """An `on_event` callback for CameraCapture that keeps every (name, payload), thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, payload: dict[str, Any]) -> None:
        with self._lock:
            self._events.append((name, dict(payload)))

    @property
    def events(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return list(self._events)

    def of(self, name: str) -> list[dict[str, Any]]:
        return [payload for event_name, payload in self.events if event_name == name]


class RolloutRecorder:
    """What a RolloutManager reports: events (`emit`), states (`publish_state`) and batches."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.states: list[dict[str, Any]] = []
        self.batches: list[ClassifiedBatch] = []

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def last(self, name: str) -> dict[str, Any]:
        return [p for n, p in self.events if n == name][-1]
