"""Checks behind runtime selection: reference inputs and outputs, output comparison, timing.

Used by :mod:`edge.serving.runtime_selection`; no TensorFlow import here.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.serving.base import ClassifierInfo

SYNTHETIC_IMAGES = 8
TIMING_BATCH = 8
TIMING_ROUNDS = 5

Classify = Callable[[np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------- inputs
def synthetic_images(height: int, width: int, count: int = SYNTHETIC_IMAGES) -> list[np.ndarray]:
    """Deterministic BGR uint8 images: solid colours, gradients and smoothed noise."""
    rng = np.random.default_rng(20240917)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    images = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            img = np.empty((height, width, 3), np.uint8)
            img[:] = rng.integers(0, 256, 3, dtype=np.uint8)
        elif kind == 1:
            a, b = rng.uniform(0.2, 1.0, 2)
            img = np.stack([255 * xx / max(1, width - 1) * a, 255 * yy / max(1, height - 1) * b,
                            255 * (1 - xx / max(1, width - 1))], axis=-1).astype(np.uint8)
        elif kind == 2:
            coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            img = np.repeat(np.repeat(coarse, -(-height // 8), 0), -(-width // 8), 1)[:height, :width]
        else:
            img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        images.append(np.ascontiguousarray(img))
    return images


@dataclass
class Reference:
    """Model-ready inputs, one per image, and what each must produce."""

    kind: str  # "golden" | "synthetic"
    names: list[str]
    inputs: np.ndarray  # [N, H, W, C] in the model's input dtype
    scores: np.ndarray | None  # [N, classes]; None = TensorFlow's outputs (filled in by select)
    top1: list[int] | None = None


def build_reference(version_dir: Path, info: ClassifierInfo, preprocess: Any) -> tuple[Reference, str | None]:
    """Golden images when the version has them, else synthetic ones; plus a note when golden failed."""
    from edge.errors import GoldenError
    from edge.models.golden import load_golden
    from edge.serving.preprocess import FramePreprocessor

    pre = FramePreprocessor(info.image_input, preprocess)
    note = None
    try:
        golden = load_golden(Path(version_dir))
    except GoldenError as exc:
        golden, note = [], f"golden images unusable ({exc})"
    if golden:
        pixels = np.stack([pre.to_model_pixels(g.image_bgr) for g in golden])
        return Reference("golden", [g.file for g in golden], pre.batch_to_input(pixels),
                         np.stack([g.scores for g in golden]), [g.top1 for g in golden]), note
    images = synthetic_images(info.image_input.height, info.image_input.width)
    pixels = np.stack([pre.to_model_pixels(img) for img in images])
    return Reference("synthetic", [f"synthetic-{i}" for i in range(len(images))],
                     pre.batch_to_input(pixels), None), note


def check_outputs(ref: Reference, scores: np.ndarray, tolerance: float) -> tuple[float | None, str | None]:
    """(max abs diff, why the outputs are refused or None)."""
    scores = np.asarray(scores, dtype=np.float32)
    assert ref.scores is not None
    if scores.shape != ref.scores.shape:
        return None, f"outputs have shape {list(scores.shape)}, reference {list(ref.scores.shape)}"
    if not np.all(np.isfinite(scores)):
        bad = [ref.names[i] for i in np.flatnonzero(~np.isfinite(scores).all(axis=1))]
        return None, f"non-finite outputs (NaN/Inf) on {len(bad)} image(s): {', '.join(bad[:3])}"
    worst = float(np.max(np.abs(scores - ref.scores)))
    ref_top1 = ref.top1 if ref.top1 is not None else [int(v) for v in ref.scores.argmax(axis=1)]
    for i, name in enumerate(ref.names):
        got = int(scores[i].argmax())
        if got == ref_top1[i]:
            continue
        tied = ref.kind == "synthetic" and ref.scores[i, got] >= ref.scores[i, ref_top1[i]] - tolerance
        if not tied:
            return worst, f"{name}: top-1 class {got}, reference {ref_top1[i]}"
    if worst > tolerance:
        return worst, f"scores differ from the reference by up to {worst:.3g} (tolerance {tolerance:g})"
    return worst, None


# ----------------------------------------------------------------------------- timing
def time_runtimes(runners: dict[str, Classify], inputs: np.ndarray,
                  rounds: int = TIMING_ROUNDS, batch: int = TIMING_BATCH) -> dict[str, tuple[float, float]]:
    """{name: (img/s at `batch`, img/s at batch 1)}: same inputs, interleaved rounds, medians."""
    reps = -(-batch // len(inputs))
    big = np.ascontiguousarray(np.concatenate([inputs] * reps)[:batch])
    one = np.ascontiguousarray(inputs[:1])
    for run in runners.values():  # warm-up: first calls allocate
        run(big)
        run(one)
    samples: dict[str, list[float]] = {k: [] for k in runners}
    samples1: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            started = time.perf_counter()
            run(big)
            samples[name].append(time.perf_counter() - started)
            started = time.perf_counter()
            run(one)
            samples1[name].append(time.perf_counter() - started)
    return {k: (batch / statistics.median(samples[k]), 1.0 / statistics.median(samples1[k])) for k in runners}
