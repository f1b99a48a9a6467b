"""Scene-change gating: classify a camera's frame only when the scene changed, or when it is due.

A static scene (a parking lot at night, an empty corridor) gives the same answer frame after frame;
gating classifies it rarely and a change at once. Each frame the fps limiter kept is compared with
the last frame that was classified, on a 1/8-scale grey thumbnail (TurboJPEG decodes one from an
MJPEG packet for a fraction of a full decode; for H.264 the decoded frame's luma is sampled):
the thumbnail is cut into cells of about 10x10 thumbnail pixels (80x80 source pixels), and the frame
counts as changed when the mean absolute difference of any one cell exceeds ``threshold`` grey
levels. The maximum over cells (not the mean over the frame) catches a small object entering a
large scene, while sensor noise averages out in the 1/8 thumbnail. A frame that did not change is
still classified once ``max_interval_s`` passed since the last classified frame.

Every kept frame carries why it is classified (``Frame.reason``): ``first`` (the first frame of a
connection), ``change`` (the scene changed), ``max_interval`` (nothing changed for
``max_interval_s``) or, for cameras without gating, ``sampled``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

logger = logging.getLogger(__name__)

CELL = 10  # thumbnail pixels per cell side
REASONS = ("sampled", "first", "change", "max_interval")


@dataclass(frozen=True)
class GateSettings:
    """threshold: grey levels (0-255) of mean |difference| in one cell that count as a change;
    max_interval_s: classify at least this often even when nothing changed."""

    threshold: float = 8.0
    max_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 255:
            raise ValueError(f"gate threshold must be in (0, 255] grey levels, got {self.threshold}")
        if self.max_interval_s <= 0:
            raise ValueError(f"gate max_interval_s must be > 0, got {self.max_interval_s}")


def thumbnail_of(image: np.ndarray) -> np.ndarray:
    """A grey thumbnail at 1/8 of a decoded BGR (or grey) image's size."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    height, width = grey.shape[:2]
    return cv2.resize(grey, (max(1, width // 8), max(1, height // 8)), interpolation=cv2.INTER_AREA)


def max_cell_difference(a: np.ndarray, b: np.ndarray) -> float:
    """The largest mean |a - b| over CELLxCELL cells (inf when the thumbnails differ in size)."""
    if a.shape != b.shape:
        return float("inf")
    diff = cv2.absdiff(cv2.GaussianBlur(a, (3, 3), 0), cv2.GaussianBlur(b, (3, 3), 0))
    height, width = diff.shape[:2]
    cells = cv2.resize(diff, (max(1, -(-width // CELL)), max(1, -(-height // CELL))), interpolation=cv2.INTER_AREA)
    return float(cells.max())


class SceneGate:
    """The gate of one camera (used by its capture thread only)."""

    def __init__(self, settings: GateSettings) -> None:
        self.settings = settings
        self._reference: np.ndarray | None = None
        self._classified_at: float | None = None
        self.last_difference: float | None = None

    def reset(self) -> None:
        """A new connection: its first frame is classified."""
        self._reference = None
        self._classified_at = None

    def decide(self, thumbnail: np.ndarray, now: float) -> str | None:
        """Why the frame is classified ("first", "change", "max_interval"), or None: gated out."""
        if self._reference is None or self._classified_at is None:
            reason: str | None = "first"
        else:
            self.last_difference = max_cell_difference(thumbnail, self._reference)
            if self.last_difference > self.settings.threshold:
                reason = "change"
            elif now - self._classified_at >= self.settings.max_interval_s:
                reason = "max_interval"
            else:
                reason = None
        if reason is not None:
            self._reference = thumbnail
            self._classified_at = now
        return reason
