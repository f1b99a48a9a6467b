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
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"format": 1, "output": output, "images": images}, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def mismatch(golden: GoldenImage, scores: np.ndarray, *, atol: float = 1e-3) -> str | None:
    """Why ``scores`` (one image's output vector) does not reproduce ``golden``; None when it does.

    The top-1 class must be the same and every score within ``atol`` of the reference.
    """
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if scores.shape != golden.scores.shape:
        return f"{golden.file}: {scores.size} scores, reference has {golden.scores.size}"
    top1 = int(np.argmax(scores))
    if top1 != golden.top1:
        return f"{golden.file}: top-1 class {top1}, reference says {golden.top1}"
    worst = float(np.max(np.abs(scores - golden.scores)))
    if worst > atol:
        return f"{golden.file}: scores differ from the reference by up to {worst:.6f} (tolerance {atol})"
    return None
