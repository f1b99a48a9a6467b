"""The calibration sampler keeps the cameras' last classified frames for int8 calibration, in turn, bounded."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from camera import Frame
from edge.inference.batcher import WorkItem
from edge.inference.calibration import CalibrationSampler
from edge.inference.pipeline import ClassifiedBatch
from edge.inference.snapshots import SnapshotTap
from edge.serving.candidates import calibration_dir


def classified(tap: SnapshotTap, camera: str, shade: int, size: tuple[int, int] = (1280, 720)) -> None:
    image = np.full((size[1], size[0], 3), shade, np.uint8)
    frame = Frame(camera, 1, image, time.time(), time.monotonic())
    tap.record(ClassifiedBatch([WorkItem(frame, None, image)], np.zeros((1, 3), np.float32), "m", 1, ("a", "b", "c"),
                               1.0, time.monotonic()))


def test_frames_are_kept_in_turn_smaller_and_bounded(tmp_path: Path) -> None:
    version = tmp_path / "store" / "m" / "1"
    folder = calibration_dir(version)  # where runtime selection reads them
    sampler = CalibrationSampler(folder, every_s=10.0, keep=3)
    tap = SnapshotTap()
    assert sampler.tick(tap, ["front", "back"], now=0.0) is None  # nothing classified yet
    written = []
    for t in (10.0, 15.0, 20.0, 30.0, 40.0, 50.0):
        classified(tap, "front", 50)  # each camera's newest classified frame
        classified(tap, "back", 200)
        written.append(sampler.tick(tap, ["front", "back"], now=t))
        time.sleep(0.002)  # file names carry the capture time in ms
    assert written[1] is None  # not due yet
    paths = [p for p in written if p is not None]
    assert [p.name.split("-")[1] for p in paths] == ["back.jpg", "front.jpg", "back.jpg", "front.jpg", "back.jpg"]
    kept = sorted(folder.glob("*.jpg"))
    assert len(kept) == 3  # the newest `keep`
    image = cv2.imread(str(kept[-1]))
    assert image.shape == (360, 640, 3)  # the longest side is at most 640
    assert {int(cv2.imread(str(p)).mean()) // 10 for p in kept} <= {5, 20}


def test_an_unwritable_folder_costs_a_warning_not_an_exception(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    sampler = CalibrationSampler(blocker / "calibration", every_s=1.0)
    tap = SnapshotTap()
    classified(tap, "front", 80)
    assert sampler.tick(tap, ["front"], now=5.0) is None and sampler.saved == 0
