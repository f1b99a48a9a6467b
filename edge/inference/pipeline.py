"""The inference loop: batches of newest frames -> classifier -> results handed to the publisher.

Work is split so the inference thread does little besides running the model:
- the model's preprocessing (resize + colour order, uint8) runs in the capture threads: the pipeline
  gives each camera that accepts one (`set_transform`) a `FramePreprocessor` for the current model's
  input, and swaps it when a new model takes a different input. Frames carry the pixels and the tag
  of the transform that made them; the pipeline uses them as they are when the tag matches the
  current model and redoes the work (from `Frame.image`) only when it does not;
- a batch is assembled in one reused uint8 buffer (no copy at all for a batch of one), converted to
  the model's float input in one reused float buffer;
- the batch size follows the classifier's `preferred_batch_size` hint (LiteRT runs image by image,
  so batching only adds latency there), capped by serving.max_batch_size;
- results are serialised on the ResultPublisher's thread;
- a classifier that can run several calls at once (`concurrency`: LiteRT with several
  interpreters) gets that many inference threads, sharing the batcher (see FrameBatcher: one camera
  is never classified on two threads at once, so per-camera results stay in frame order).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.inference.batcher import FrameBatcher, WorkItem
from edge.serving.base import Classifier, ImageInput, serving_shape
from edge.serving.preprocess import FramePreprocessor
from edge.util.stats import percentile

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


class _Worker:
    """One inference thread's own state: its reused buffers and when its loop last turned."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.thread: threading.Thread | None = None
        self.progress_mono = time.monotonic()
        self.buffer: np.ndarray | None = None
        self.float_buffer: np.ndarray | None = None


class InferencePipeline:
    """Inference threads: batch -> preprocess into a reused buffer -> classify -> hand off.

    One thread per classify() call the classifier can run at once (`concurrency`, default 1).
    `last_progress_mono` is the oldest of the threads' last loop turns (with or without frames);
    systemd's watchdog and health use it to tell a wedged pipeline from an idle one.
    """

    def __init__(
        self,
        batcher: FrameBatcher,
        classifier: Classifier,
        deliver: Callable[[ClassifiedBatch], None],
    ) -> None:
        self._batcher = batcher
        self._classifier = classifier
        self._max_batch_size = batcher.max_batch_size  # the configured cap
        self._preprocessor: tuple[object, FramePreprocessor] | None = None  # (info, its preprocessor): one swap
        self._synced_classifier: object = None
        self._installed_tag: Hashable | None = None
        self._deliver = deliver
        self._stop = threading.Event()
        self._workers: list[_Worker] = []
        self._active_workers = 1
        self._started = False
        self._sync_lock = threading.Lock()
        self.pixels_reused = 0  # items whose capture-thread pixels matched the model: used as they were
        self.pixels_redone = 0  # items preprocessed on this thread (no pixels, or made for another input)
        self._lock = threading.Lock()
        self._inference_ms: deque[float] = deque(maxlen=500)
        self._batch_sizes: Counter[int] = Counter()
        self.frames_classified = 0
        self.batches = 0
        self.errors = 0
        self.frames_failed = 0
        self.inference_ms_total = 0.0  # cumulative; with `batches`, the rollout's probation computes mean latency
        self.last_error: str | None = None
        self._created_mono = time.monotonic()
        self.last_classified_mono: float | None = None

    @property
    def last_progress_mono(self) -> float:
        """The oldest last loop turn of the running inference threads (creation time before start)."""
        workers = self._workers[: self._active_workers] or self._workers
        return min((w.progress_mono for w in workers), default=self._created_mono)

    @property
    def workers(self) -> int:
        """Inference threads taking batches now."""
        return self._active_workers

    @property
    def classifier(self) -> Classifier:
        return self._classifier

    def set_classifier(self, classifier: Classifier) -> None:
        """Serve the next batch with `classifier` (the current batch finishes on the old one)."""
        self._classifier = classifier

    @property
    def batch_size(self) -> int:
        """The batch size in use: serving.max_batch_size, capped by the classifier's preference."""
        return self._batcher.max_batch_size

    def _preprocessor_for_info(self, info: Any) -> FramePreprocessor:
        cached = self._preprocessor  # read once: another inference thread may replace it
        if cached is not None and cached[0] is info:
            return cached[1]
        preprocessor = FramePreprocessor(info.image_input, info.metadata.preprocess, fast_resize=True)
        self._preprocessor = (info, preprocessor)
        return preprocessor

    def _sync_model(self) -> None:
        """After a classifier change: size batches and threads for it, give the cameras its transform."""
        if self._classifier is self._synced_classifier:
            return
        with self._sync_lock:
            self._sync_model_locked()

    def _sync_model_locked(self) -> None:
        classifier = self._classifier
        if classifier is self._synced_classifier:
            return
        preferred = classifier.preferred_batch_size
        workers, size = serving_shape(preferred, classifier.concurrency, self._max_batch_size)
        preprocessor = self._preprocessor_for_info(classifier.info)  # may raise: retried next turn
        if size != self._batcher.max_batch_size:
            logger.info("batch size %d (serving.max_batch_size %d, the %s runtime prefers %s)", size,
                        self._max_batch_size, classifier.info.runtime, preferred)
        self._batcher.max_batch_size = size
        if workers != self._active_workers:
            logger.info("%d inference thread(s) (the classifier runs %d call(s) at once)", workers, workers)
        self._active_workers = workers
        if self._started:
            self._spawn(workers)
        self._synced_classifier = classifier
        if preprocessor.tag != self._installed_tag:
            for camera in self._batcher.cameras:
                camera.set_transform(preprocessor)
            self._installed_tag = preprocessor.tag

    def start(self) -> None:
        self._started = True
        self._spawn(self._active_workers)

    def _spawn(self, count: int) -> None:
        """Have `count` threads running (threads beyond the active count idle; none ever exits early)."""
        while len(self._workers) < count:
            worker = _Worker(len(self._workers))
            worker.thread = threading.Thread(target=self._run, args=(worker,), daemon=True,
                                             name="inference" if worker.index == 0 else f"inference-{worker.index}")
            self._workers.append(worker)
            worker.thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for worker in list(self._workers):
            assert worker.thread is not None
            worker.thread.join(max(0.0, deadline - time.monotonic()))
            if worker.thread.is_alive():
                logger.error("inference thread %s did not stop within %.1fs", worker.thread.name, timeout_s)

    def _batch_buffer(self, worker: _Worker, spec: ImageInput, count: int) -> np.ndarray:
        shape = (max(count, self._batcher.max_batch_size), spec.height, spec.width, spec.channels)
        if worker.buffer is None or worker.buffer.shape[1:] != shape[1:] or worker.buffer.shape[0] < count:
            worker.buffer = np.empty(shape, dtype=np.uint8)
        return worker.buffer[:count]

    def _float_buffer_for(self, worker: _Worker, pixels: np.ndarray) -> np.ndarray:
        buffer = worker.float_buffer
        if buffer is None or buffer.shape[1:] != pixels.shape[1:] or buffer.shape[0] < pixels.shape[0]:
            size = max(pixels.shape[0], self._batcher.max_batch_size)
            buffer = worker.float_buffer = np.empty((size, *pixels.shape[1:]), dtype=np.float32)
        return buffer

    def _model_pixels(self, worker: _Worker, items: list[WorkItem], preprocessor: FramePreprocessor) -> np.ndarray:
        """uint8 N x H x W x C for the model: capture-thread pixels when their tag matches, else redone."""
        tag, shape = preprocessor.tag, preprocessor.pixel_shape
        ready = [item.pixels if item.pixels is not None and item.pixels_tag == tag and item.pixels.shape == shape
                 else None for item in items]
        reused = sum(1 for r in ready if r is not None)
        with self._lock:
            self.pixels_reused += reused
            self.pixels_redone += len(items) - reused
        if len(items) == 1 and ready[0] is not None:
            return ready[0][None]  # a view: no copy for a batch of one
        pixels = self._batch_buffer(worker, preprocessor.image_input, len(items))
        for index, item in enumerate(items):
            if ready[index] is not None:
                pixels[index] = ready[index]
            else:
                preprocessor.to_model_pixels(item.image, out=pixels[index])
        return pixels

    def _run(self, worker: _Worker) -> None:
        while not self._stop.is_set():
            worker.progress_mono = time.monotonic()
            try:
                self._sync_model()
            except Exception as exc:  # e.g. a remote backend that cannot reach its server yet
                logger.debug("model not ready for batching/transform setup: %s", exc)
            if worker.index >= self._active_workers:  # the classifier runs fewer calls at once now
                self._stop.wait(0.05)
                continue
            items = self._batcher.next_batch(self._stop)
            if not items:
                continue
            try:
                self._classify(worker, items)
            except Exception as exc:  # a backend failure must not kill the loop; count and go on
                with self._lock:
                    self.errors += 1
                    self.frames_failed += len(items)
                    repeated = self.last_error == str(exc)
                    self.last_error = str(exc)
                if not repeated:
                    logger.error("classification failed for a batch of %d: %s", len(items), exc)
            finally:
                self._batcher.done(items)

    def _classify(self, worker: _Worker, items: list[WorkItem]) -> None:
        classifier = self._classifier
        info = classifier.info  # a remote backend raises here while it cannot reach its server
        preprocessor = self._preprocessor_for_info(info)
        pixels = self._model_pixels(worker, items, preprocessor)
        wants_float = info.image_input.dtype.startswith("float")
        model_input = preprocessor.batch_to_input(
            pixels, out=self._float_buffer_for(worker, pixels) if wants_float else None)
        started = time.perf_counter()
        scores = classifier.classify(model_input)
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

    def stats(self) -> dict[str, Any]:
        with self._lock:
            recent = list(self._inference_ms)
            sizes = dict(sorted(self._batch_sizes.items()))
        total = sum(k * v for k, v in sizes.items())
        return {
            "frames_classified": self.frames_classified,
            "batches": self.batches,
            "errors": self.errors,
            "frames_failed": self.frames_failed,
            "last_error": self.last_error,
            "inference_ms": {"p50": percentile(recent, 0.5), "p95": percentile(recent, 0.95), "last": round(recent[-1], 2) if recent else None},
            "batch_size": {"mean": round(total / max(1, sum(sizes.values())), 2), "histogram": sizes,
                           "max": self._batcher.max_batch_size},
            "preprocess": {"in_capture_threads": self.pixels_reused, "on_inference_thread": self.pixels_redone},
            "threads": self._active_workers,
        }
