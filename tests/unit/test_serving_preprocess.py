"""Frame preprocessing: resize, colour order, scaling, and uint8 batches passed through."""
from __future__ import annotations

import numpy as np

from edge.models.metadata import PreprocessSpec
from edge.serving.base import ImageInput
from edge.serving.preprocess import FramePreprocessor


def test_preprocess_resizes_reorders_and_scales() -> None:
    frame = np.zeros((120, 160, 3), dtype=np.uint8)
    frame[:, :] = (10, 20, 200)  # BGR
    spec = ImageInput("image", "float32", 32, 48, 3)
    pre = FramePreprocessor(spec, PreprocessSpec(color="RGB", mean=(100.0, 100.0, 100.0), std=(2.0, 2.0, 2.0)))
    pixels = pre.to_model_pixels(frame)
    assert pixels.shape == (32, 48, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[0, 0]) == (200, 20, 10)
    batch = pre.batch_to_input(pixels[None])
    assert batch.dtype == np.float32
    assert np.allclose(batch[0, 0, 0], [50.0, -40.0, -45.0])
    uint8_pre = FramePreprocessor(ImageInput("image", "uint8", 32, 48, 3), PreprocessSpec(color="BGR"))
    out = np.empty((1, 32, 48, 3), dtype=np.uint8)
    uint8_pre.to_model_pixels(frame, out=out[0])
    assert tuple(out[0, 5, 5]) == (10, 20, 200)
    assert uint8_pre.batch_to_input(out) is out
