"""Checks behind runtime selection: reference inputs and outputs, output comparison, timing.

Timing drives every runtime the way the gateway's pipeline will serve it (:func:`edge.serving.base.serving_shape`):
a LiteRT or OpenVINO pool from one thread per interpreter or infer request, one image per call, in
parallel; TensorFlow from one thread with ``serving.max_batch_size`` images per call. Throughput is
images/s over a bounded number of calls, not one call's latency: one interpreter on all cores and a
pool of single-thread interpreters do not rank the same (EfficientNet-Lite0 here: OpenVINO won the
former, LiteRT the latter, which is how the gateway serves).

Used by :mod:`edge.serving.selection`; no TensorFlow import here.
"""
from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import GoldenError
from edge.models.golden import compare_scores, load_golden
from edge.models.metadata import Acceptance
from edge.serving.base import ClassifierInfo
from edge.serving.preprocess import FramePreprocessor

SYNTHETIC_IMAGES = 8
TIMING_IMAGES = 48  # per runtime and round (rounded up to whole calls of every thread)
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


def check_outputs(ref: Reference, scores: np.ndarray, tolerance: float,
                  rule: Acceptance | None = None) -> tuple[float | None, str | None, float | None]:
    """(max abs diff, why the outputs are refused or None, share of images with the reference's top-1):
    :func:`edge.models.golden.compare_scores` on every image, the first refusal wins. ``rule`` (a
    reduced-precision candidate's declared acceptance) replaces ``tolerance`` and adds its top-1
    margin and minimum top-1 agreement."""
    assert ref.scores is not None
    scores = np.asarray(scores)
    if scores.shape != ref.scores.shape:
        return None, f"outputs have shape {list(scores.shape)}, reference {list(ref.scores.shape)}", None
    worst: float | None = None
    agreed = 0
    problem: str | None = None
    for i, name in enumerate(ref.names):
        check = compare_scores(name, scores[i], ref.scores[i],
                               tolerance=rule.tolerance if rule is not None else tolerance,
                               reference_top1=ref.top1[i] if ref.top1 is not None else None,
                               top1_margin=rule.top1_margin if rule is not None else 0.0)
        if check.max_abs_diff is not None:
            worst = check.max_abs_diff if worst is None else max(worst, check.max_abs_diff)
        agreed += bool(check.top1_agrees)
        if check.problem is not None and problem is None:
            problem = check.problem
    agreement = agreed / len(ref.names) if ref.names else None
    if problem is None and rule is not None and agreement is not None and agreement < rule.min_top1_agreement:
        problem = f"top-1 agreement {agreement:.0%} < the declared {rule.min_top1_agreement:.0%}"
    return worst, problem, agreement


def describe_rule(tolerance: float, rule: Acceptance | None) -> str:
    if rule is None:
        return f"exact: same top-1, max |diff| <= {tolerance:g}"
    return (f"declared int8: max |diff| <= {rule.tolerance:g}, top-1 within the reference's top-5 where its "
            f"margin < {rule.top1_margin:g}, top-1 agreement >= {rule.min_top1_agreement:.0%}")


# ----------------------------------------------------------------------------- timing
@dataclass(frozen=True)
class Timed:
    """A runtime to time in the shape it serves in: ``concurrency`` threads at once (the pipeline's
    inference threads, one per interpreter/infer request), each classifying ``batch`` images per call."""

    classify: Classify
    concurrency: int
    batch: int
    threads: int | None = None  # the runtime's own threads per call (recorded, not used to time)
    warm_up: Callable[[np.ndarray], None] | None = None  # every interpreter once (pools)

    def describe(self, images: int, rounds: int) -> dict[str, int | None]:
        return {"concurrency": self.concurrency, "threads": self.threads, "batch": self.batch,
                "images": images, "rounds": rounds}


def _round(timed: Timed, batch: np.ndarray, calls: int) -> float:
    """Seconds for ``timed.concurrency`` threads to make ``calls`` classify() calls each, started together."""
    go = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        go.wait()
        try:
            for _ in range(calls):
                timed.classify(batch)
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    workers = [threading.Thread(target=work, name=f"selection-timing-{i}", daemon=True)
               for i in range(timed.concurrency)]
    for worker in workers:
        worker.start()
    started = time.perf_counter()
    go.set()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


def time_runtimes(runners: dict[str, Timed], inputs: np.ndarray, rounds: int = TIMING_ROUNDS,
                  images: int = TIMING_IMAGES) -> dict[str, tuple[float, dict[str, int | None]]]:
    """{name: (img/s in its serving shape, the shape timed)}: each runtime classifies at least ``images``
    images per round from ``concurrency`` threads at once, ``batch`` images per call (the golden or
    synthetic inputs, repeated), rounds interleaved in a rotating order; the median round counts."""
    batches: dict[str, tuple[np.ndarray, int]] = {}
    for name, timed in runners.items():
        reps = -(-timed.batch // len(inputs))
        batch = np.ascontiguousarray(np.concatenate([inputs] * reps)[:timed.batch])
        calls = max(1, -(-images // (timed.concurrency * timed.batch)))  # per thread
        batches[name] = batch, calls
        if timed.warm_up is not None:  # first calls allocate
            timed.warm_up(batch[:1])
        _round(timed, batch, 1)
    samples: dict[str, list[float]] = {k: [] for k in runners}
    order = list(runners)
    for turn in range(rounds):
        for name in order[turn % len(order):] + order[:turn % len(order)]:
            batch, calls = batches[name]
            timed = runners[name]
            samples[name].append(timed.concurrency * calls * timed.batch / _round(timed, batch, calls))
    return {name: (statistics.median(samples[name]),
                   runners[name].describe(runners[name].concurrency * batches[name][1] * runners[name].batch, rounds))
            for name in runners}
