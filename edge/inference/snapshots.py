"""Each camera's last classified frame, and the JPEG with its top labels drawn (cmd/snapshot, console)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edge.errors import SnapshotError
from edge.inference.pipeline import ClassifiedBatch
from edge.inference.results import top_k

logger = logging.getLogger(__name__)


MAX_SNAPSHOT_BYTES = 512 * 1024
SNAPSHOT_LABELS = 3


@dataclass(frozen=True)
class SeenFrame:
    """References into the last classified batch of one camera (no copies on the inference thread)."""

    image: np.ndarray
    number: int
    captured_wall: float
    rows: tuple[tuple[str | None, np.ndarray, tuple[int, int, int, int] | None], ...]  # (roi, scores, box)
    labels: Sequence[str]


class SnapshotTap:
    """Remembers each camera's last classified frame (references, no copies on the inference thread)."""

    def __init__(self) -> None:
        self._seen: dict[str, SeenFrame] = {}

    def record(self, batch: ClassifiedBatch) -> None:
        per_camera: dict[str, list[Any]] = {}
        frames: dict[str, Any] = {}
        for row, item in enumerate(batch.items):
            frames[item.frame.camera] = item.frame
            box = None
            if item.roi is not None:
                box = _roi_box(item.frame.image, item.image)
            per_camera.setdefault(item.frame.camera, []).append((item.roi, batch.scores[row], box))
        for camera, rows in per_camera.items():
            frame = frames[camera]
            self._seen[camera] = SeenFrame(frame.image, frame.number, frame.captured_wall, tuple(rows), batch.labels)

    def last(self, camera: str) -> SeenFrame | None:
        return self._seen.get(camera)


def _roi_box(full: np.ndarray, view: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of a numpy view inside its frame, from the memory offsets; None if not a view."""
    try:
        offset = view.__array_interface__["data"][0] - full.__array_interface__["data"][0]
        y, rest = divmod(offset, full.strides[0])
        x = rest // full.strides[1]
        return int(x), int(y), int(view.shape[1]), int(view.shape[0])
    except Exception:
        return None


def _top(scores: np.ndarray, labels: Sequence[str], k: int) -> list[dict[str, Any]]:
    indices, values = top_k(np.asarray(scores).reshape(1, -1), k)
    return [{"label": labels[i] if 0 <= i < len(labels) else str(i), "score": round(float(s), 4)}
            for i, s in zip(indices[0].tolist(), values[0].tolist())]


def render_snapshot(seen: SeenFrame, max_bytes: int = MAX_SNAPSHOT_BYTES) -> tuple[bytes, int, int, bool, list[dict[str, Any]]]:
    """JPEG bytes (<= max_bytes), width, height, scaled?, the labels drawn."""

    image = seen.image.copy()
    drawn = []
    y_text = 0
    for roi, scores, box in seen.rows:
        top = _top(scores, seen.labels, SNAPSHOT_LABELS)
        drawn.append({"roi": roi, "top": top})
        x0, y0 = 4, 0
        if box is not None:
            x, y, w, h = box
            cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), (0, 255, 255), 2)
            x0, y0 = x + 4, y
        for entry in top:
            y_text = (y0 if box is not None else y_text) + 18
            if box is not None:
                y0 = y_text
            text = f"{roi + ': ' if roi else ''}{entry['label']} {entry['score']:.2f}"
            cv2.putText(image, text, (x0, y_text), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(image, text, (x0, y_text), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    scaled = False
    quality = 85
    while True:
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise SnapshotError("could not encode the snapshot as JPEG")
        data = encoded.tobytes()
        if len(data) <= max_bytes or min(image.shape[:2]) < 32:
            return data, int(image.shape[1]), int(image.shape[0]), scaled, drawn
        if quality > 50:
            quality -= 15
        else:
            image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
            scaled = True
