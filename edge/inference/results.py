"""Scores -> result messages: top-k with labels, on-change filtering, and hand-off to the spool.

Runs on its own thread behind a bounded queue so JSON, SQLite and MQTT work never stalls inference.
A full queue blocks the inference thread (back-pressure), which makes the camera slots drop the
oldest frames (counted as skipped) instead of anything queuing without bound.
The thread hands the sink everything that queued while it was busy in one call (one spool
transaction, one fsync), so small batches (LiteRT classifies one frame at a time) do not cost one
transaction each.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from edge.inference.pipeline import ClassifiedBatch
from edge.util.stats import percentile

logger = logging.getLogger(__name__)


class ResultSink(Protocol):
    def publish_results(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[int]: ...


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k best classes per row, best first."""
    k = min(k, scores.shape[1])
    idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part = np.take_along_axis(scores, idx, axis=1)
    order = np.argsort(-part, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(part, order, axis=1)


class ResultPublisher:
    """Turns classified batches into `results/<camera>` messages in the spool."""

    def __init__(
        self,
        sink: ResultSink,
        device_id: str,
        k: int = 5,
        on_change_only: bool = False,
        min_score: float = 0.0,
        queue_batches: int = 32,
        max_coalesce: int = 64,
    ) -> None:
        self._sink = sink
        self._device_id = device_id
        self._k = k
        self._on_change_only = on_change_only
        self._min_score = min_score
        self._queue: queue.Queue[ClassifiedBatch | None] = queue.Queue(maxsize=queue_batches)
        self._max_coalesce = max(1, max_coalesce)
        self._last_top1: dict[tuple[str, str | None], int] = {}
        self._thread: threading.Thread | None = None
        self._latency_ms: list[float] = []
        self.published = 0
        self.suppressed = 0
        self.errors = 0
        self.frames_lost = 0
        self.sink_calls = 0
        self.last_error: str | None = None
        self.last_error_mono: float | None = None  # when a batch last failed to spool

    def reconfigure(self, k: int, on_change_only: bool, min_score: float) -> None:
        """Change the filters of a running publisher; the next batch uses them (plain attribute writes)."""
        self._k = k
        self._on_change_only = on_change_only
        self._min_score = min_score

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="results", daemon=True)
        self._thread.start()

    def submit(self, batch: ClassifiedBatch) -> None:
        self._queue.put(batch)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Publish what is queued, then stop."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            logger.error("result queue still full at shutdown")
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batches = [first]
            while len(batches) < self._max_coalesce:  # whatever queued meanwhile: no waiting
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batches.append(more)
            try:
                self._publish(batches)
            except Exception as exc:  # the spool is full or broken: count, log, keep going
                lost = sum(len(b.items) for b in batches)
                self.errors += len(batches)  # batches that could not be spooled
                self.frames_lost += lost
                self.last_error = str(exc)
                self.last_error_mono = time.monotonic()
                logger.error("could not spool %d results: %s", lost, exc)

    def _messages(self, batch: ClassifiedBatch, now_wall: float, now_mono: float) -> list[tuple[str, dict[str, Any]]]:
        indices, scores = top_k(batch.scores, self._k)
        messages: list[tuple[str, dict[str, Any]]] = []
        labels = batch.labels
        model = {"name": batch.model_name, "version": batch.model_version}
        inference_ms = round(batch.inference_ms, 2)
        for row, item in enumerate(batch.items):
            key = (item.frame.camera, item.roi)
            best = int(indices[row, 0])
            if self._on_change_only and self._last_top1.get(key) == best:
                self.suppressed += 1
                continue
            self._last_top1[key] = best
            predictions = [
                {"label": labels[i] if 0 <= i < len(labels) else str(i), "index": i, "score": round(s, 5)}
                for i, s in zip(indices[row].tolist(), scores[row].tolist())
                if s >= self._min_score
            ]
            total_ms = (now_mono - item.frame.captured_mono) * 1000.0
            # capture -> inference start: decode, transform, the wait in the slot, batch assembly
            to_inference_ms = (batch.finished_mono - item.frame.captured_mono) * 1000.0 - batch.inference_ms
            self._latency_ms.append(total_ms)
            payload = {
                "ts": round(now_wall, 3),
                "device": self._device_id,
                "camera": item.frame.camera,
                "frame": item.frame.number,
                "reason": item.frame.reason,  # why it was classified: sampled, first, change, max_interval
                "captured_at": round(item.frame.captured_wall, 3),
                "model": dict(model),
                "top_k": predictions,
                "latency_ms": {"to_inference": round(to_inference_ms, 2), "inference": inference_ms,
                               "total": round(total_ms, 2)},
                "batch_size": len(batch.items),
            }
            if item.roi is not None:
                payload["roi"] = item.roi
            messages.append((item.frame.camera, payload))
        return messages

    def _publish(self, batches: list[ClassifiedBatch]) -> None:
        now_wall, now_mono = time.time(), time.monotonic()
        messages: list[tuple[str, dict[str, Any]]] = []
        for batch in batches:
            messages += self._messages(batch, now_wall, now_mono)
        if messages:
            self._sink.publish_results(messages)
            self.sink_calls += 1
            self.published += len(messages)
        if len(self._latency_ms) > 2000:
            del self._latency_ms[:1000]

    def stats(self) -> dict[str, Any]:
        recent = self._latency_ms[-500:]
        return {
            "published": self.published,
            "suppressed_unchanged": self.suppressed,
            "errors": self.errors,
            # for health: a spool failure in the last minute (the lifetime counter never goes down)
            "errors_recent": self.last_error_mono is not None and time.monotonic() - self.last_error_mono < 60.0,
            "frames_lost": self.frames_lost,
            "last_error": self.last_error,
            "queue_depth": self._queue.qsize(),
            "capture_to_publish_ms": {"p50": percentile(recent, 0.5, 1), "p99": percentile(recent, 0.99, 1)},
        }
