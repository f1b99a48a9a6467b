"""Frame -> model pixels: resize, colour order, dtype and scaling, as the model declares them."""
from __future__ import annotations

import logging

import cv2
import numpy as np

from edge.models.metadata import PreprocessSpec
from edge.serving.base import ImageInput

logger = logging.getLogger(__name__)


class FramePreprocessor:
    """Turns BGR uint8 frames into one model's input; pixels stay uint8 until a batch is built."""

    def __init__(self, image_input: ImageInput, spec: PreprocessSpec) -> None:
        self.image_input = image_input
        self.spec = spec
        self._size = (image_input.width, image_input.height)
        self._float = image_input.dtype.startswith("float")
        self._mean = np.asarray(spec.mean if spec.mean is not None else (0.0, 0.0, 0.0), dtype=np.float32)
        self._std = np.asarray(spec.std if spec.std is not None else (1.0, 1.0, 1.0), dtype=np.float32)
        self._scaled = spec.mean is not None or spec.std is not None

    def to_model_pixels(self, image_bgr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Resize and reorder channels into a uint8 H x W x C array (written into `out` when given)."""
        if image_bgr.shape[1] != self._size[0] or image_bgr.shape[0] != self._size[1]:
            interpolation = cv2.INTER_AREA if image_bgr.shape[1] > self._size[0] else cv2.INTER_LINEAR
            image_bgr = cv2.resize(image_bgr, self._size, interpolation=interpolation)
        if self.image_input.channels == 1:
            gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)[:, :, None]
            if out is None:
                return gray
            out[...] = gray
            return out
        if self.spec.color == "RGB":
            return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB, dst=out)
        if out is None:
            return np.ascontiguousarray(image_bgr)
        out[...] = image_bgr
        return out

    def batch_to_input(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 N x H x W x C -> the model's input dtype, scaled per edge.json."""
        if not self._float:
            return pixels if pixels.dtype.name == self.image_input.dtype else pixels.astype(self.image_input.dtype)
        batch = pixels.astype(np.float32)
        if self._scaled:
            batch -= self._mean[: self.image_input.channels]
            batch /= self._std[: self.image_input.channels]
        return batch if self.image_input.dtype == "float32" else batch.astype(self.image_input.dtype)
