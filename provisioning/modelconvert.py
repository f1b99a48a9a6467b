"""`edgectl model package --tflite`: the version's LiteRT model, converted where TensorFlow is and checked
before it ships.

The SavedModel's ``serving_default`` is converted to a float32 LiteRT flatbuffer (builtin ops only, the
same conversion runtime selection does on a device with TensorFlow) and run on every golden image, or
on synthetic images when the version has none; each output must pass the acceptance rule
(:func:`edge.models.golden.compare_scores`) against TensorFlow's output for the same input. A
conversion that fails the rule is refused with the image and the difference, and nothing is written.
Devices without TensorFlow (the Debian package, the container image, ARM boards) then serve
``model.tflite`` without converting anything; devices with TensorFlow still verify it before use.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import LiteRTError, UsageError
from edge.models.golden import compare_scores
from edge.serving.base import softmax
from edge.serving.candidates import convert_saved_model
from edge.serving.litert import LiteRTModel, litert_available

logger = logging.getLogger(__name__)

TFLITE_FILE = "model.tflite"
DEFAULT_TOLERANCE = 1e-3  # [rollout] tolerance's default: what a device accepts from a float32 conversion


def add_litert_model(folder: Path, samples: Sequence[tuple[str, np.ndarray, np.ndarray]], *, output: str,
                     activation: str, tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """Convert the SavedModel in `folder`, check it on `samples` (name, model-ready batch of one,
    TensorFlow's scores for it), write ``folder/model.tflite``; returns the check's figures."""
    if not litert_available():
        raise UsageError("--tflite: LiteRT is not installed here to check the converted model "
                         "(pip install 'edge-gateway[litert]')")
    try:
        flatbuffer = convert_saved_model(folder)
    except Exception as exc:  # TensorFlow's converter raises many kinds (ConverterError, ValueError...)
        raise UsageError(f"--tflite: the SavedModel does not convert to LiteRT builtin ops: {exc}") from None
    try:
        model = LiteRTModel(flatbuffer, threads=1, output_name=output)
    except LiteRTError as exc:
        raise UsageError(f"--tflite: the converted model does not load: {exc}") from None
    worst, problems = 0.0, []
    try:
        for name, batch, reference in samples:
            scores = model.run(batch)
            scores = softmax(scores) if activation == "softmax" else scores
            check = compare_scores(name, scores[0], reference, tolerance=tolerance)
            worst = max(worst, check.max_abs_diff or 0.0)
            if check.problem is not None:
                problems.append(check.problem)
    finally:
        model.close()
    if problems:
        raise UsageError(f"--tflite: the LiteRT conversion does not reproduce TensorFlow on {len(problems)} of "
                         f"{len(samples)} image(s): {'; '.join(problems[:3])}")
    (folder / TFLITE_FILE).write_bytes(flatbuffer)
    logger.info("model.tflite: %d bytes, max abs diff %.3g on %d image(s)", len(flatbuffer), worst, len(samples))
    return {"file": TFLITE_FILE, "bytes": len(flatbuffer), "images": len(samples), "max_abs_diff": worst,
            "tolerance": tolerance}
