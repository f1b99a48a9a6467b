"""Throttled states for Home Assistant: the top-1 per camera, and a snapshot per camera.

A camera classified at 5 fps produces 5 results a second; pointing Home Assistant's sensors at
``results/<camera>`` makes its recorder store every one of them. :class:`ThrottledTop` sits in
front of the result sink (results pass through unchanged) and publishes ``top/<camera>``
(retained, ``{"label", "score", "roi", "ts"}``) only when the label changed or the score moved by
:data:`SCORE_STEP` or more, and at most once per ``interval_s``; a change held back by the
interval is sent when the interval ends (:meth:`ThrottledTop.flush`, called every second).

:class:`SnapshotPublisher` renders each camera's newest classified frame with its labels drawn
(:func:`edge.inference.snapshots.render_snapshot`, at most 512 KiB) every ``interval_s`` for the
``image`` entity, only when the camera classified a new frame since the last one.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from edge.errors import EdgeError
from edge.inference.results import ResultSink
from edge.inference.snapshots import SnapshotTap, render_snapshot

logger = logging.getLogger(__name__)

SCORE_STEP = 0.01


def top1(payload: dict[str, Any]) -> dict[str, Any]:
    """`{"label", "score", "roi", "ts"}` of a result message (label "none" when every score was filtered)."""
    ranked = payload.get("top_k") or []
    best = ranked[0] if ranked and isinstance(ranked[0], dict) else {}
    return {"label": str(best.get("label", "none")), "score": round(float(best.get("score", 0.0)), 3),
            "roi": payload.get("roi"), "ts": payload.get("captured_at", payload.get("ts"))}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["label"] == b["label"] and abs(float(a["score"]) - float(b["score"])) < SCORE_STEP


class ThrottledTop:
    """A ResultSink that passes results on and publishes each camera's top-1 at most every `interval_s`."""

    def __init__(self, inner: ResultSink, publish: Callable[[str, dict[str, Any]], bool], interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._inner = inner
        self._publish = publish
        self._interval = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._latest: dict[str, dict[str, Any]] = {}
        self._whole_frame: set[str] = set()  # cameras with whole-frame results (their ROI results are not used)
        self._sent: dict[str, dict[str, Any]] = {}
        self._sent_at: dict[str, float] = {}
        self.published = 0
        self.seen = 0

    def publish_results(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[int]:
        seqs = self._inner.publish_results(items)
        with self._lock:
            for camera, payload in items:
                self.seen += 1
                doc = top1(payload)
                if doc["roi"] is None:
                    self._whole_frame.add(camera)
                elif camera in self._whole_frame:
                    continue
                self._latest[camera] = doc
        self.flush()
        return seqs

    def flush(self) -> None:
        """Publish every camera whose top-1 changed and whose interval has passed."""
        with self._flush_lock:
            now = self._clock()
            with self._lock:
                due = [(camera, doc) for camera, doc in self._latest.items()
                       if not (camera in self._sent and _same(self._sent[camera], doc))
                       and now - self._sent_at.get(camera, float("-inf")) >= self._interval]
            for camera, doc in due:
                if self._publish(camera, doc):
                    self.published += 1
                    with self._lock:
                        self._sent[camera], self._sent_at[camera] = doc, now


class SnapshotPublisher:
    """Every `interval_s`: each camera's newest classified frame as a JPEG with its labels drawn."""

    def __init__(self, tap: SnapshotTap, cameras: Sequence[str], publish: Callable[[str, bytes], bool],
                 interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._tap = tap
        self._cameras = tuple(cameras)
        self._publish = publish
        self._interval = interval_s
        self._clock = clock
        self._next = clock()
        self._frame: dict[str, int] = {}
        self.published = 0

    def tick(self) -> None:
        if self._interval <= 0 or self._clock() < self._next:
            return
        self._next = self._clock() + self._interval
        for camera in self._cameras:
            seen = self._tap.last(camera)
            if seen is None or self._frame.get(camera) == seen.number:
                continue
            try:
                jpeg = render_snapshot(seen)[0]
            except EdgeError as exc:
                logger.warning("snapshot of %s for home assistant failed: %s", camera, exc)
                continue
            if self._publish(camera, jpeg):
                self._frame[camera] = seen.number
                self.published += 1
