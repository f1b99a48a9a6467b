"""The console's memory: an hour of figures for the plots, and the recent events. No database.

:class:`History` keeps one sample every `interval_s` (default 2 s, 1800 samples = 1 hour) of each
camera's classified fps, the inference time (p50 of the recent batches) and the capture->publish
p99, taken from the parts' stats. :class:`RecentEvents` keeps the last events the gateway emitted.
"""
from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from itertools import islice
from typing import Any

from camera import CameraStats

logger = logging.getLogger(__name__)

HISTORY_SPAN_S = 3600.0
HISTORY_INTERVAL_S = 2.0
EVENTS_KEPT = 50


class History:
    """A ring of samples over the last `span_s` seconds."""

    def __init__(self, cameras: Sequence[str], interval_s: float = HISTORY_INTERVAL_S,
                 span_s: float = HISTORY_SPAN_S) -> None:
        self.interval_s = interval_s
        self.span_s = span_s
        size = max(2, int(span_s / interval_s))
        self._lock = threading.Lock()
        self._t: deque[float] = deque(maxlen=size)
        self._fps: dict[str, deque[float | None]] = {name: deque(maxlen=size) for name in cameras}
        self._inference_ms: deque[float | None] = deque(maxlen=size)
        self._p99_ms: deque[float | None] = deque(maxlen=size)

    def add(self, cameras: Sequence[CameraStats], pipeline: dict[str, Any] | None,
            results: dict[str, Any] | None, now: float | None = None) -> None:
        fps = {c.name: round(c.process_fps, 2) for c in cameras}
        inference = ((pipeline or {}).get("inference_ms") or {}).get("p50")
        p99 = ((results or {}).get("capture_to_publish_ms") or {}).get("p99")
        with self._lock:
            self._t.append(round(time.time() if now is None else now, 1))
            for name, ring in self._fps.items():
                ring.append(fps.get(name))
            self._inference_ms.append(inference)
            self._p99_ms.append(p99)

    def __len__(self) -> int:
        return len(self._t)

    def series(self, since: float | None = None) -> dict[str, Any]:
        """Columns for the plots: ``t`` (unix seconds) and one list per series, None where unknown;
        only the samples after `since` when given (the page asks for what it does not have yet)."""
        with self._lock:
            start = 0 if since is None else bisect.bisect_right(self._t, since)
            return {"interval_s": self.interval_s, "span_s": self.span_s, "t": list(islice(self._t, start, None)),
                    "fps": {name: list(islice(ring, start, None)) for name, ring in self._fps.items()},
                    "inference_ms": list(islice(self._inference_ms, start, None)),
                    "capture_to_publish_p99_ms": list(islice(self._p99_ms, start, None))}


class RecentEvents:
    """The last `keep` events (kind, payload, time), newest last; fed by the gateway's emit()."""

    def __init__(self, keep: int = EVENTS_KEPT) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, kind: str, payload: dict[str, Any]) -> None:
        with self._lock:
            self._events.append({"ts": round(time.time(), 3), "kind": kind, "payload": dict(payload)})

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)
