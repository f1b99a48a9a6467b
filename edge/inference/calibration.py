"""Camera frames kept for int8 calibration: what this device's cameras really see.

Runtime selection calibrates an int8 candidate (edge.serving.candidates) on the version's golden
images plus the JPEGs in ``<store>/<model>/.edge-cache/calibration/``. This sampler fills that
folder from the gateway's own cameras: every ``every_s`` seconds it writes the last classified
frame of the next camera in turn (from the snapshot tap: no work on the inference threads), and keeps
the newest ``keep`` files. It runs on the gateway's housekeeping thread; a full or read-only disk
costs a warning, never a frame.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import cv2

from edge.inference.snapshots import SnapshotTap
from edge.util.fsutil import atomic_write_bytes

logger = logging.getLogger(__name__)

CALIBRATION_SIZE = 640  # longest side of a kept frame: more than any classifier input, small on disk


class CalibrationSampler:
    def __init__(self, folder: Path, every_s: float = 60.0, keep: int = 200) -> None:
        self.folder = Path(folder)
        self.every_s = every_s
        self.keep = keep
        self._next_due = 0.0
        self._turn = 0
        self.saved = 0
        self._warned = False

    def tick(self, snapshots: SnapshotTap, cameras: Sequence[str], now: float | None = None) -> Path | None:
        """Write one frame when due (the path written, else None)."""
        now = time.monotonic() if now is None else now
        if now < self._next_due or not cameras:
            return None
        self._next_due = now + self.every_s
        camera = cameras[self._turn % len(cameras)]
        self._turn += 1
        seen = snapshots.last(camera)
        if seen is None:
            return None
        image = seen.image
        scale = CALIBRATION_SIZE / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                               interpolation=cv2.INTER_AREA)
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            return None
        path = self.folder / f"{int(seen.captured_wall * 1000):015d}-{camera}.jpg"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, encoded.tobytes(), mode=0o644)
            for old in sorted(self.folder.glob("*.jpg"))[:-self.keep]:
                old.unlink(missing_ok=True)
        except OSError as exc:
            if not self._warned:
                logger.warning("cannot keep calibration frames in %s: %s", self.folder, exc)
                self._warned = True
            return None
        self.saved += 1
        return path
