"""Load a candidate version and check it on its golden images before it serves a single frame.

The golden set ships inside the version (``assets.extra/golden/``: images + ``reference.json``
with the expected top-1 and scores, written by ``edgectl model package``). The candidate runs
on every image with the gateway's own preprocessing (:class:`edge.preprocess.FramePreprocessor`)
and is accepted only if, on every image:

- its scores are finite (no NaN / Inf),
- ``max |score - reference| <= tolerance``,
- its top-1 equals the reference top-1,

and its median latency is at most ``latency_factor`` x the serving version's on the same images
(measured interleaved, one image at a time). Each refusal names the image and the numbers.

Backends: ``embedded`` loads a new in-process :class:`EmbeddedClassifier`. ``tfserving`` waits
until the server reports the version AVAILABLE (GetModelStatus; the server loads it from the
shared store) and pins a new :class:`TFServingClassifier` to it. TF Serving / edge-model-server
must then run with a policy that keeps at least two versions, e.g.
``model_version_policy { latest { num_versions: 2 } }``, so the old version stays loaded for the
frames still in flight and for rollback.
"""
from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.models.golden import compare_scores, load_golden
from edge.serving.base import Classifier
from edge.serving.preprocess import FramePreprocessor

logger = logging.getLogger(__name__)


@dataclass
class ValidationReport:
    ok: bool
    reasons: list[str] = field(default_factory=list)
    images: int = 0
    max_abs_diff: float | None = None
    median_ms: float | None = None
    current_median_ms: float | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons[:5]) + (f" (and {len(self.reasons) - 5} more)" if len(self.reasons) > 5 else "")

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "reasons": self.reasons, "images": self.images,
                "max_abs_diff": self.max_abs_diff, "median_ms": self.median_ms,
                "current_median_ms": self.current_median_ms}


def _prepare(classifier: Classifier, image_bgr: np.ndarray) -> np.ndarray:
    info = classifier.info
    pre = FramePreprocessor(info.image_input, info.metadata.preprocess)
    pixels = pre.to_model_pixels(image_bgr)[None, ...]
    return pre.batch_to_input(np.ascontiguousarray(pixels))


def _timed(classifier: Classifier, batch: np.ndarray) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    scores = classifier.classify(batch)
    return np.asarray(scores, dtype=np.float64), (time.perf_counter() - started) * 1000.0


def validate(
    candidate: Classifier,
    version_dir: Path,
    current: Classifier | None,
    tolerance: float,
    latency_factor: float,
    require_golden: bool = True,
    repeats: int = 3,
) -> ValidationReport:
    """Check `candidate` on the golden images of `version_dir`; compare latency with `current`."""
    report = ValidationReport(ok=False)
    try:
        golden = list(load_golden(Path(version_dir)))
    except FileNotFoundError:
        golden = []
    except Exception as exc:
        report.reasons.append(f"golden data unreadable: {exc}")
        return report
    if not golden:
        if require_golden:
            report.reasons.append("no golden images in assets.extra/golden/ (rollout.require_golden = true)")
            return report
        logger.warning("version in %s has no golden images; accepting without output checks", version_dir)
    report.images = len(golden)
    cand_ms: list[float] = []
    cur_ms: list[float] = []
    worst = 0.0
    for image in golden:
        try:
            batch = _prepare(candidate, image.image_bgr)
            scores, ms = _timed(candidate, batch)
        except Exception as exc:
            report.reasons.append(f"golden image {image.file}: inference failed: {exc}")
            continue
        check = compare_scores(f"golden image {image.file}", scores, image.scores, tolerance=tolerance,
                               reference_top1=image.top1)
        if check.max_abs_diff is not None:
            worst = max(worst, check.max_abs_diff)
        if check.problem is not None:
            report.reasons.append(check.problem)
            if check.max_abs_diff is None:
                continue
        cand_ms.append(ms)
        # Latency, interleaved with the serving version so both see the same machine load.
        for _ in range(max(0, repeats - 1)):
            cand_ms.append(_timed(candidate, batch)[1])
            if current is not None:
                cur_ms.append(_current_ms(current, image.image_bgr))
        if current is not None:
            cur_ms.append(_current_ms(current, image.image_bgr))
    report.max_abs_diff = round(worst, 6) if golden else None
    if cand_ms:
        report.median_ms = round(statistics.median(cand_ms), 3)
    cur_ms = [m for m in cur_ms if m >= 0]
    if cur_ms:
        report.current_median_ms = round(statistics.median(cur_ms), 3)
    if not report.reasons and report.median_ms is not None and report.current_median_ms:
        limit = latency_factor * report.current_median_ms
        if report.median_ms > limit:
            report.reasons.append(
                f"too slow: median latency {report.median_ms:.2f} ms > {latency_factor:g} x current "
                f"{report.current_median_ms:.2f} ms on the golden images")
    report.ok = not report.reasons
    return report


def _current_ms(current: Classifier, image_bgr: np.ndarray) -> float:
    try:
        return _timed(current, _prepare(current, image_bgr))[1]
    except Exception as exc:  # the serving version failing is not the candidate's fault
        logger.warning("could not time the serving version on a golden image: %s", exc)
        return -1.0
