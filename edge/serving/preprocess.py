"""Frame -> model pixels: resize, colour order, dtype and scaling, as the model declares them.

`FramePreprocessor` is also a `camera.FrameTransform`: the pipeline hands it to the capture threads,
which then resize and reorder each kept frame in parallel with inference. Its `tag` names the uint8
pixels it makes (size, channels, colour, resize method), so the pipeline can tell whether pixels
made by an earlier model's preprocessor still fit the current one (same tag) or must be redone.
Pixels stay uint8 until `batch_to_input` builds the model's input dtype, into a caller's buffer.
"""
from __future__ import annotations

import logging
from collections.abc import Hashable

import cv2
import numpy as np

from edge.models.metadata import PreprocessSpec
from edge.serving.base import ImageInput

logger = logging.getLogger(__name__)


class FramePreprocessor:
    """Turns BGR uint8 frames into one model's input; pixels stay uint8 until a batch is built.

    fast_resize: shrink any image larger than the target on both axes with a bilinear resize to twice
    the target size and a 2x2 box filter (INTER_AREA's fast integer path): about 5x cheaper than one
    INTER_AREA resize of a 720p frame to 224x224, and still anti-aliased (from a source under 2x the
    target, e.g. a 640x360 half-scale JPEG decode, the bilinear step enlarges and the box filter
    smooths it; still far cheaper than INTER_AREA's general path). Golden-image validation uses the
    exact path (fast_resize=False), so scores recorded when a model was packaged stay comparable.

    `min_source_size` (the model input's (width, height)) tells a camera capture how small it may
    decode frames for this transform (see camera.FrameTransform).
    """

    def __init__(self, image_input: ImageInput, spec: PreprocessSpec, fast_resize: bool = False) -> None:
        self.image_input = image_input
        self.spec = spec
        self.fast_resize = fast_resize
        self._size = (image_input.width, image_input.height)
        self._double = (2 * image_input.width, 2 * image_input.height)
        self._float = image_input.dtype.startswith("float")
        channels = image_input.channels
        mean = np.asarray(spec.mean if spec.mean is not None else (0.0, 0.0, 0.0), dtype=np.float32)[:channels]
        std = np.asarray(spec.std if spec.std is not None else (1.0, 1.0, 1.0), dtype=np.float32)[:channels]
        self._mean = mean
        self._std = std
        self._inv_std = (1.0 / std).astype(np.float32)
        self._scaled = spec.mean is not None or spec.std is not None
        color = "GRAY" if channels == 1 else spec.color
        self._tag: Hashable = ("edge.serving.preprocess", image_input.width, image_input.height, channels, color,
                               "fast" if fast_resize else "exact")

    @property
    def tag(self) -> Hashable:
        """Equal for preprocessors that make identical uint8 pixels (see camera.FrameTransform)."""
        return self._tag

    @property
    def min_source_size(self) -> tuple[int, int]:
        """(width, height) of the model input: frames at least this large lose nothing here."""
        return self._size

    @property
    def pixel_shape(self) -> tuple[int, int, int]:
        return (self.image_input.height, self.image_input.width, self.image_input.channels)

    def __call__(self, image_bgr: np.ndarray) -> np.ndarray:
        """camera.FrameTransform: the uint8 H x W x C model pixels of one frame or ROI crop."""
        return self.to_model_pixels(image_bgr)

    def _resize(self, image_bgr: np.ndarray) -> np.ndarray:
        height, width = image_bgr.shape[:2]
        if width == self._size[0] and height == self._size[1]:
            return image_bgr
        if self.fast_resize and width > self._size[0] and height > self._size[1]:
            if (width, height) != self._double:
                image_bgr = cv2.resize(image_bgr, self._double, interpolation=cv2.INTER_LINEAR)
            return cv2.resize(image_bgr, self._size, interpolation=cv2.INTER_AREA)
        interpolation = cv2.INTER_AREA if width > self._size[0] else cv2.INTER_LINEAR
        return cv2.resize(image_bgr, self._size, interpolation=interpolation)

    def to_model_pixels(self, image_bgr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Resize and reorder channels into a uint8 H x W x C array (written into `out` when given)."""
        image_bgr = self._resize(image_bgr)
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

    def batch_to_input(self, pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 N x H x W x C -> the model's input dtype, scaled per edge.json.

        `out` (float32, at least N long, same pixel shape) is filled and its first N rows returned,
        so a caller converting batch after batch allocates nothing; without it a new array is made."""
        if not self._float:
            return pixels if pixels.dtype.name == self.image_input.dtype else pixels.astype(self.image_input.dtype)
        if out is not None and out.dtype == np.float32 and out.shape[1:] == pixels.shape[1:] \
                and out.shape[0] >= pixels.shape[0]:
            batch = out[: pixels.shape[0]]
            if self._scaled:
                np.subtract(pixels, self._mean, out=batch, dtype=np.float32)
                np.multiply(batch, self._inv_std, out=batch)
            else:
                np.copyto(batch, pixels, casting="unsafe")
        else:
            batch = pixels.astype(np.float32)
            if self._scaled:
                batch -= self._mean
                batch /= self._std
        return batch if self.image_input.dtype == "float32" else batch.astype(self.image_input.dtype)
