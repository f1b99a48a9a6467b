"""Golden images: known inputs and the outputs a version must reproduce before it serves.

Layout inside a version folder::

    assets.extra/golden/cat.jpg               # the images, JPEG or PNG, as given to `edgectl model package`
    assets.extra/golden/reference.json

``reference.json``::

    {"format": 1, "output": "<output name>",
     "images": [{"file": "cat.jpg", "top1": 281, "scores": [0.000012, ...]}]}

``scores`` is the full output vector for that image (after edge.json's activation, i.e. what the
gateway's classifier returns), rounded to 6 digits, computed with the same preprocessing the
gateway applies (`edge.preprocess.FramePreprocessor`). Packaging writes it; a device loads a
new version, classifies the golden images and compares (:func:`mismatch`) before switching to it.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.errors import GoldenError
from edge.util.fsutil import atomic_write_bytes

logger = logging.getLogger(__name__)

GOLDEN_DIR = "assets.extra/golden"
REFERENCE_FILE = "reference.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SCORE_DIGITS = 6



@dataclass(frozen=True)
class GoldenImage:
    file: str  # name inside assets.extra/golden/
    image_bgr: np.ndarray  # H x W x 3 uint8, as cv2.imread returns it
    top1: int
    scores: np.ndarray  # float32 vector, the reference output


def golden_dir(version_dir: Path) -> Path:
    return Path(version_dir) / GOLDEN_DIR


def read_image(path: Path) -> np.ndarray:
    """A JPEG/PNG file as a BGR uint8 image, or GoldenError naming the file."""
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if image is None:
        raise GoldenError(f"{path}: not a readable JPEG/PNG image")
    return image


def list_images(source: Path) -> list[Path]:
    """The JPEG/PNG files directly inside ``source`` (sorted), or GoldenError when there are none."""
    source = Path(source)
    if not source.is_dir():
        raise GoldenError(f"golden images: {source} is not a directory")
    images = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise GoldenError(f"golden images: {source} holds no .jpg/.jpeg/.png files")
    return images


def load_golden(version_dir: Path) -> list[GoldenImage]:
    """The version's golden images with their reference outputs; [] when it has none."""
    folder = golden_dir(version_dir)
    ref_path = folder / REFERENCE_FILE
    if not ref_path.is_file():
        return []
    try:
        doc = json.loads(ref_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GoldenError(f"{ref_path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != 1 or not isinstance(doc.get("images"), list):
        raise GoldenError(f"{ref_path}: expected {{\"format\": 1, \"output\": ..., \"images\": [...]}}")
    result: list[GoldenImage] = []
    for index, entry in enumerate(doc["images"]):
        where = f"{ref_path}: images[{index}]"
        if not isinstance(entry, dict):
            raise GoldenError(f"{where}: must be an object")
        name = entry.get("file")
        if not isinstance(name, str) or not name or os.path.basename(name) != name or name.startswith("."):
            raise GoldenError(f"{where}: 'file' must be a plain file name inside {GOLDEN_DIR}, got {name!r}")
        scores = entry.get("scores")
        if not isinstance(scores, list) or not scores or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores):
            raise GoldenError(f"{where}: 'scores' must be a non-empty list of numbers")
        top1 = entry.get("top1")
        if not isinstance(top1, int) or isinstance(top1, bool) or not 0 <= top1 < len(scores):
            raise GoldenError(f"{where}: 'top1' must be a class index below {len(scores)}, got {top1!r}")
        result.append(GoldenImage(name, read_image(folder / name), top1, np.asarray(scores, dtype=np.float32)))
    return result


def reference_output(version_dir: Path) -> str | None:
    """The output name reference.json was computed from (None without golden images)."""
    ref_path = golden_dir(version_dir) / REFERENCE_FILE
    if not ref_path.is_file():
        return None
    try:
        output = json.loads(ref_path.read_text(encoding="utf-8")).get("output")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise GoldenError(f"{ref_path}: not valid JSON: {exc}") from None
    return output if isinstance(output, str) else None


def write_reference(version_dir: Path, results: Mapping[str, np.ndarray], *, output: str) -> Path:
    """Write reference.json for ``results`` (golden file name -> score vector); atomic."""
    folder = golden_dir(version_dir)
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for name in sorted(results):
        if not (folder / name).is_file():
            raise GoldenError(f"{folder / name}: golden image missing (copy it before writing its reference)")
        scores = np.asarray(results[name], dtype=np.float64).reshape(-1)
        images.append({"file": name, "top1": int(np.argmax(scores)),
                       "scores": [round(float(v), SCORE_DIGITS) for v in scores]})
    path = folder / REFERENCE_FILE
    atomic_write_bytes(path, json.dumps({"format": 1, "output": output, "images": images}, indent=1).encode() + b"\n",
                       mode=0o644)
    return path


@dataclass(frozen=True)
class ScoreCheck:
    """The verdict of :func:`compare_scores` on one image."""

    problem: str | None  # None: accepted
    max_abs_diff: float | None  # None when the outputs could not be compared at all
    top1_agrees: bool | None = None  # the output's top-1 is the reference's (None: not compared)


def compare_scores(name: str, scores: np.ndarray, reference: np.ndarray, *, tolerance: float,
                   reference_top1: int | None = None, top1_margin: float = 0.0, top_k: int = 5) -> ScoreCheck:
    """THE acceptance rule for one image, used by rollout validation, runtime selection and packaging.

    Compared in float64: the outputs must have the reference's shape, be finite (no NaN/Inf), have
    the reference's top-1 class, and stay within ``tolerance`` of every reference score. A different
    top-1 is accepted only where the reference itself cannot tell the two classes apart (their
    reference scores within ``tolerance`` of each other): then the score check alone decides.
    ``reference_top1`` defaults to the reference's argmax.

    A reduced-precision candidate (int8) is checked with the looser rule its model version declares
    (edge.json ``acceptance``, :class:`edge.models.metadata.Acceptance`): its own ``tolerance`` and a
    ``top1_margin``: a different top-1 is then accepted only where the reference's top-1 leads its
    runner-up by less than that margin, and only if it is one of the reference's ``top_k`` classes
    (the default 0 keeps the exact rule). Whether the top-1 agreed is reported either way, so callers can count agreement.
    """
    got = np.asarray(scores, dtype=np.float64).reshape(-1)
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    if got.shape != ref.shape:
        return ScoreCheck(f"{name}: {got.size} scores, reference has {ref.size}", None)
    if not np.all(np.isfinite(got)):
        return ScoreCheck(f"{name}: output has NaN/Inf values", None)
    worst = float(np.max(np.abs(got - ref)))
    top1 = int(np.argmax(got))
    want = int(np.argmax(ref)) if reference_top1 is None else int(reference_top1)
    agrees = top1 == want
    if not agrees:
        if top1_margin > 0:  # a close call in the reference: any of its top_k classes will do
            ranked = np.argsort(-ref, kind="stable")
            runner_up = ref[ranked[1] if ranked[0] == want else ranked[0]] if ref.size > 1 else -np.inf
            accepted = float(ref[want] - runner_up) < top1_margin and top1 in ranked[:top_k].tolist()
        else:  # the reference itself cannot tell the two classes apart
            accepted = bool(ref[top1] >= ref[want] - tolerance)
        if not accepted:
            return ScoreCheck(f"{name}: top-1 class {top1} != reference {want}", worst, False)
    if worst > tolerance:
        return ScoreCheck(f"{name}: max abs diff {worst:.3g} > tolerance {tolerance:g}", worst, agrees)
    return ScoreCheck(None, worst, agrees)


def mismatch(golden: GoldenImage, scores: np.ndarray, *, atol: float = 1e-3) -> str | None:
    """Why ``scores`` (one image's output vector) does not reproduce ``golden``; None when it does."""
    return compare_scores(golden.file, scores, golden.scores, tolerance=atol, reference_top1=golden.top1).problem
