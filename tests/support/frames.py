"""Test images and video files: solid colours, index-marked frames, the HD photo, MJPG writing.

- `RED`, `GREEN`, `BLUE` (BGR) and `solid_frames(bgr)`: noisy solid frames the colour model
  classifies with certainty (see tests/support/models.py).
- `make_marked_frame(index)` / `read_frame_marker(image)`: frames carrying their index (mod 256)
  as an 8-bit black/white strip that survives resizing and JPEG loss.
- `photo_frame(size)`: the chelsea photo (as in the demo video) with seeded sensor noise; `HD`.
- `write_video(path, frames, fps)`: an MJPG .avi written with OpenCV and checked to read back.
- `preprocessor(width, height)`: a uint8 RGB `FramePreprocessor` for a model of that input size.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.models.metadata import PreprocessSpec
from edge.serving.base import ImageInput
from edge.serving.preprocess import FramePreprocessor
from tools.demo_photos import load_photo

RED, GREEN, BLUE = (0, 0, 230), (0, 230, 0), (230, 0, 0)  # BGR
HD = (1280, 720)
_MARKER_BITS = 8


def solid_frames(bgr: tuple[int, int, int], count: int = 20, size: tuple[int, int] = (160, 120)) -> list[np.ndarray]:
    """`count` frames of one colour with a little seeded noise (so JPEG has something to encode)."""
    frame = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    frame[:, :] = bgr
    rng = np.random.default_rng(sum(bgr))
    return [np.clip(frame.astype(np.int16) + rng.integers(-8, 8, frame.shape), 0, 255).astype(np.uint8)
            for _ in range(count)]


def make_marked_frame(index: int, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """A BGR test frame whose top quarter encodes `index % 256` as 8 black/white columns."""
    width, height = size
    image = np.full((height, width, 3), (60, 110, 170), dtype=np.uint8)
    strip_height = max(2, height // 4)
    column_width = width / _MARKER_BITS
    for bit in range(_MARKER_BITS):
        value = 255 if (index >> bit) & 1 else 0
        image[:strip_height, int(bit * column_width):int((bit + 1) * column_width)] = value
    side = max(4, height // 6)
    x = (index * 7) % max(1, width - side)
    cv2.rectangle(image, (x, height - side - 2), (x + side, height - 2), (0, 200, 0), -1)
    cv2.putText(image, str(index), (4, strip_height + max(12, height // 6)), cv2.FONT_HERSHEY_SIMPLEX,
                max(0.3, height / 480), (255, 255, 255), 1)
    return image


def read_frame_marker(image: np.ndarray) -> int:
    """Recover the index (mod 256) drawn by `make_marked_frame`, at any resize of the frame."""
    height, width = image.shape[:2]
    row = max(0, height // 8)
    value = 0
    for bit in range(_MARKER_BITS):
        column = int((bit + 0.5) * width / _MARKER_BITS)
        if float(image[row, column].mean()) > 127:
            value |= 1 << bit
    return value


def photo_frame(size: tuple[int, int] = HD) -> np.ndarray:
    """The chelsea photo stretched to `size` (BGR) with a little seeded sensor noise, like the demo video."""
    image = cv2.resize(cv2.cvtColor(load_photo("chelsea"), cv2.COLOR_RGB2BGR), size, interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(7).normal(0.0, 2.0, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def preprocessor(width: int, height: int, fast: bool = True) -> FramePreprocessor:
    return FramePreprocessor(ImageInput("input", "uint8", height, width), PreprocessSpec(), fast_resize=fast)


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> Path:
    """Write `frames` as MJPG in an .avi and check that every frame reads back."""
    if not frames:
        raise ValueError("write_video needs at least one frame")
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), float(fps), (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter could not open {path} for MJPG")
    try:
        for image in frames:
            writer.write(image)
    finally:
        writer.release()
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    shapes = []
    while (image := capture.read()[1]) is not None:
        shapes.append(image.shape[:2])
    capture.release()
    if shapes != [(height, width)] * len(frames):
        raise RuntimeError(f"{path}: wrote {len(frames)} frames of {width}x{height}, read back {len(shapes)}: {set(shapes)}")
    return path
