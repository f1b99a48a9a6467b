"""The inference loop: batches of newest frames -> classifier -> results handed to the publisher."""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from edge.batcher import FrameBatcher, WorkItem
from edge.preprocess import FramePreprocessor
from edge.serving.base import Classifier, ImageInput

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifiedBatch:
    """What the publisher needs: the items, their scores and which model version produced them."""

    items: list[WorkItem]
    scores: np.ndarray
    model_name: str
    model_version: int
    labels: Sequence[str]
    inference_ms: float
    finished_mono: float


class InferencePipeline:
    """One thread: batch -> preprocess into a reused buffer -> classify -> hand off.

    `last_progress_mono` advances every loop turn (with or without frames); systemd's watchdog
    and health use it to tell a wedged pipeline from an idle one.
    """

    def __init__(
        self,
        batcher: FrameBatcher,
        classifier: Classifier,
        deliver: Callable[[ClassifiedBatch], None],
    ) -> None:
        self._batcher = batcher
        self._classifier = classifier
        self._preprocessor: FramePreprocessor | None = None
        self._preprocessor_for: object = None
        self._deliver = deliver
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buffer: np.ndarray | None = None
        self._lock = threading.Lock()
        self._inference_ms: deque[float] = deque(maxlen=500)
        self._batch_sizes: Counter[int] = Counter()
        self.frames_classified = 0
        self.batches = 0
        self.errors = 0
        self.frames_failed = 0
        self.inference_ms_total = 0.0  # cumulative; with `batches`, the rollout's probation computes mean latency
        self.last_error: str | None = None
        self.last_progress_mono = time.monotonic()
        self.last_classified_mono: float | None = None

    @property
    def classifier(self) -> Classifier:
        return self._classifier

    def set_classifier(self, classifier: Classifier) -> None:
        """Serve the next batch with `classifier` (the current batch finishes on the old one)."""
        self._classifier = classifier

    def _preprocessor_for_info(self, info: object) -> FramePreprocessor:
        if self._preprocessor is None or self._preprocessor_for is not info:
            self._preprocessor = FramePreprocessor(info.image_input, info.metadata.preprocess)  # type: ignore[attr-defined]
            self._preprocessor_for = info
        return self._preprocessor

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.error("inference thread did not stop within %.1fs", timeout_s)

    def _batch_buffer(self, spec: ImageInput, count: int) -> np.ndarray:
        shape = (self._batcher.max_batch_size, spec.height, spec.width, spec.channels)
        if self._buffer is None or self._buffer.shape != shape:
            self._buffer = np.empty(shape, dtype=np.uint8)
        return self._buffer[:count]

    def _run(self) -> None:
        while not self._stop.is_set():
            self.last_progress_mono = time.monotonic()
            items = self._batcher.next_batch(self._stop)
            if not items:
                continue
            try:
                self._classify(items)
            except Exception as exc:  # a backend failure must not kill the loop; count and go on
                self.errors += 1
                self.frames_failed += len(items)
                if self.last_error != str(exc):
                    logger.error("classification failed for a batch of %d: %s", len(items), exc)
                self.last_error = str(exc)

    def _classify(self, items: list[WorkItem]) -> None:
        classifier = self._classifier
        info = classifier.info  # a remote backend raises here while it cannot reach its server
        preprocessor = self._preprocessor_for_info(info)
        pixels = self._batch_buffer(info.image_input, len(items))
        for index, item in enumerate(items):
            preprocessor.to_model_pixels(item.image, out=pixels[index])
        started = time.perf_counter()
        scores = classifier.classify(preprocessor.batch_to_input(pixels))
        inference_ms = (time.perf_counter() - started) * 1000.0
        if scores.shape[0] != len(items) or not np.all(np.isfinite(scores)):
            raise ValueError(f"model returned unusable scores (shape {scores.shape}, non-finite values present)")
        now = time.monotonic()
        with self._lock:
            self._inference_ms.append(inference_ms)
            self._batch_sizes[len(items)] += 1
            self.frames_classified += len(items)
            self.batches += 1
            self.inference_ms_total += inference_ms
            self.last_classified_mono = now
        self._deliver(
            ClassifiedBatch(
                items=items,
                scores=scores,
                model_name=info.model_name,
                model_version=info.version,
                labels=info.metadata.labels,
                inference_ms=inference_ms,
                finished_mono=now,
            )
        )

    def stats(self) -> dict:
        with self._lock:
            recent = list(self._inference_ms)
            sizes = dict(sorted(self._batch_sizes.items()))
        samples = sorted(recent)

        def pct(p: float) -> float | None:
            return round(samples[min(len(samples) - 1, int(p * len(samples)))], 2) if samples else None
        total = sum(k * v for k, v in sizes.items())
        return {
            "frames_classified": self.frames_classified,
            "batches": self.batches,
            "errors": self.errors,
            "frames_failed": self.frames_failed,
            "last_error": self.last_error,
            "inference_ms": {"p50": pct(0.5), "p95": pct(0.95), "last": round(recent[-1], 2) if recent else None},
            "batch_size": {"mean": round(total / max(1, sum(sizes.values())), 2), "histogram": sizes},
        }
