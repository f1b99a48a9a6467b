"""Which runtime serves a model version in-process: measured, verified, cached.

When the embedded backend first loads a version it builds LiteRT candidates (the SavedModel converted
with ``tf.lite.TFLiteConverter``, and a ``model.tflite`` shipped inside the version folder, if any),
checks each one against the version's golden images (``assets.extra/golden``, via
:mod:`edge.models.golden`) -- or, without golden images, against TensorFlow's own outputs on a
deterministic set of synthetic images -- and times every runtime that passed on the same inputs,
interleaved, median of a few rounds. The fastest one that passed serves; TensorFlow is the fallback.

A candidate passes when, on every image: the outputs are finite, the top-1 class is the reference's
(on synthetic images a class tied with the reference's top-1 within the tolerance also counts) and
``max |score - reference| <= tolerance`` (scores after edge.json's activation, as ``classify`` returns
them).

The converted model and the decision are cached beside the version, never inside it (a version folder
is content-addressed by its registry digest and may be served by TF Serving)::

    <store>/<model>/.edge-cache/<version>/litert.tflite
    <store>/<model>/.edge-cache/<version>/selection.json

keyed by a fingerprint of the version folder's files, the thread count and the runtimes' package
versions. A restart with a valid cache neither converts nor times again, and when the cached choice
is LiteRT, TensorFlow is not imported at all. Nothing here imports TensorFlow at module level.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ClassifierError
from edge.models.store import ModelVersion
from edge.serving.base import ClassifierInfo
from edge.serving.litert import LiteRTClassifier, default_threads, litert_available
from edge.serving.selection_checks import Classify, build_reference, check_outputs, time_runtimes
from edge.util.fsutil import atomic_write_bytes

logger = logging.getLogger(__name__)

RUNTIMES = ("auto", "tensorflow", "litert")
CACHE_DIR = ".edge-cache"
SELECTION_FILE = "selection.json"
CONVERTED_FILE = "litert.tflite"
SHIPPED_FILE = "model.tflite"
FORMAT = 1
DEFAULT_TOLERANCE = 1e-3


@dataclass
class CandidateResult:
    ok: bool
    img_per_s: float | None = None  # batches of TIMING_BATCH images, median of TIMING_ROUNDS
    img_per_s_batch1: float | None = None
    max_abs_diff: float | None = None
    error: str | None = None
    source: str | None = None  # "savedmodel", "converted", "shipped"


@dataclass
class Selection:
    runtime: str  # "tensorflow" | "litert"
    candidate: str  # key of ``candidates`` that serves
    reason: str
    requested: str
    verified_on: str  # "golden: N images" | "synthetic: N images vs TensorFlow" | ...
    candidates: dict[str, CandidateResult] = field(default_factory=dict)
    cached: bool = False  # read from the cache of an earlier load
    isolated: bool = False  # measured by a child process (this process did not import TensorFlow for it)
    fingerprint: str | None = None
    signature: dict[str, Any] = field(default_factory=dict)  # input name/dtype/shape, output name
    model_file: str | None = None  # the .tflite that serves (LiteRT)
    model_sha256: str | None = None  # of model_file, checked before a cached model serves
    selected_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["candidates"] = {k: asdict(v) for k, v in self.candidates.items()}
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Selection:
        doc = dict(doc)
        doc["candidates"] = {k: CandidateResult(**v) for k, v in doc.get("candidates", {}).items()}
        return cls(**doc)


# ----------------------------------------------------------------------------- cache
def cache_dir(version_dir: Path) -> Path:
    """``<store>/<model>/.edge-cache/<version>``: beside the version folder, never inside it."""
    version_dir = Path(version_dir)
    return version_dir.parent / CACHE_DIR / version_dir.name


def fingerprint(version_dir: Path) -> str:
    """sha256 over every file of the version folder (relative path and content)."""
    digest = hashlib.sha256()
    root = Path(version_dir)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return None


def cache_key(version_dir: Path, requested: str, threads: int, tolerance: float) -> dict[str, Any]:
    """What a cached decision depends on; any change means select again."""
    return {"format": FORMAT, "fingerprint": fingerprint(version_dir), "requested": requested,
            "threads": default_threads(threads),
            "tolerance": tolerance, "ai_edge_litert": _package_version("ai-edge-litert"),
            "tensorflow": _package_version("tensorflow", "tensorflow-cpu")}


def load_cached(version_dir: Path, key: dict[str, Any]) -> Selection | None:
    """The cached selection for exactly this key, or None (missing, stale or unreadable)."""
    path = cache_dir(version_dir) / SELECTION_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("%s: unreadable runtime selection cache (%s); selecting again", path, exc)
        return None
    if doc.get("key") != key:
        logger.info("%s: cache is for another version content/threads/runtime; selecting again", path)
        return None
    try:
        selection = Selection.from_dict(doc["selection"])
    except (KeyError, TypeError) as exc:
        logger.warning("%s: malformed runtime selection cache (%s); selecting again", path, exc)
        return None
    if selection.model_file:
        model = Path(selection.model_file)
        if not model.is_file() or (selection.model_sha256 and file_sha256(model) != selection.model_sha256):
            logger.warning("%s: cached model %s is missing or changed; selecting again", path, model)
            return None
    selection.cached = True
    return selection


def save_cache(version_dir: Path, key: dict[str, Any], selection: Selection) -> None:
    """Write selection.json (atomically); a read-only store only costs a re-selection next time."""
    folder = cache_dir(version_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        selection.fingerprint = key["fingerprint"]
        doc = {"key": key, "selection": selection.as_dict()}
        atomic_write_bytes(folder / SELECTION_FILE, (json.dumps(doc, indent=1) + "\n").encode(), mode=0o644)
    except OSError as exc:
        logger.warning("cannot cache the runtime selection in %s: %s", folder, exc)


# ----------------------------------------------------------------------------- conversion
def convert_saved_model(version_dir: Path) -> bytes:
    """The SavedModel's serving_default as a float32 LiteRT flatbuffer (builtin ops only, input dtype kept).

    No quantization (outputs must match TensorFlow's); builtin ops only, because the Flex delegate
    needs TensorFlow at run time, which is what LiteRT is here to avoid. Tests replace this function.
    """
    import tensorflow as tf  # heavy (~550 MB, 2.5 s): only when TensorFlow runs a model

    converter = tf.lite.TFLiteConverter.from_saved_model(str(version_dir), signature_keys=["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = []
    flatbuffer: bytes = converter.convert()
    return flatbuffer


# ----------------------------------------------------------------------------- decision
def _litert_candidates(version_dir: Path, convert: bool) -> list[tuple[str, str, Callable[[], bytes | Path]]]:
    """(name, source, loader) of every LiteRT candidate of the version."""
    found: list[tuple[str, str, Callable[[], bytes | Path]]] = []
    if convert:
        found.append(("litert", "converted", lambda: _convert_and_store(version_dir)))
    shipped = Path(version_dir) / SHIPPED_FILE
    if shipped.is_file():
        found.append(("litert_shipped", "shipped", lambda: shipped))
    return found


def _convert_and_store(version_dir: Path) -> bytes | Path:
    started = time.perf_counter()
    data = convert_saved_model(version_dir)
    logger.info("%s: converted to LiteRT in %.1fs (%.1f MB)", version_dir, time.perf_counter() - started,
                len(data) / 1e6)
    target = cache_dir(version_dir) / CONVERTED_FILE
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data, mode=0o644)
        return target
    except OSError as exc:
        logger.warning("cannot cache the converted model in %s: %s (kept in memory)", target.parent, exc)
        return data


def select(
    version_dir: Path,
    info: ClassifierInfo,
    tf_classify: Classify | None,
    *,
    preprocess: Any,
    requested: str = "auto",
    threads: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
) -> tuple[Selection, LiteRTClassifier | None]:
    """Build, verify and time the candidates; returns the decision and the LiteRT classifier that
    serves (None when TensorFlow serves). ``tf_classify`` is None for a version without SavedModel."""
    version_dir = Path(version_dir)
    ref, note = build_reference(version_dir, info, preprocess)
    results: dict[str, CandidateResult] = {}
    runners: dict[str, Classify] = {}
    built: dict[str, tuple[LiteRTClassifier, str | None]] = {}
    if tf_classify is not None:
        tf_out = np.asarray(tf_classify(ref.inputs), dtype=np.float32)
        if ref.scores is None:  # synthetic images: TensorFlow is the reference
            finite = bool(np.all(np.isfinite(tf_out)))
            ref.scores = tf_out
            results["tensorflow"] = CandidateResult(ok=finite, max_abs_diff=0.0, source="savedmodel",
                                                    error=None if finite else "non-finite outputs (NaN/Inf)")
        else:
            diff, err = check_outputs(ref, tf_out, tolerance)
            results["tensorflow"] = CandidateResult(ok=err is None, max_abs_diff=diff, error=err, source="savedmodel")
        runners["tensorflow"] = tf_classify
    if ref.kind == "golden":
        verified_on = f"golden: {len(ref.names)} images"
    elif ref.scores is not None:
        verified_on = f"synthetic: {len(ref.names)} images vs TensorFlow (the version has no golden images)"
    else:
        verified_on = "none: no golden images and no SavedModel to compare with"
    if note:
        verified_on += f"; {note}"

    if litert_available():
        for name, source, load in _litert_candidates(version_dir, convert=tf_classify is not None):
            try:
                model = load()
                classifier = LiteRTClassifier(model, info, threads=threads)
                out = classifier.classify(ref.inputs)
            except Exception as exc:  # conversion errors, corrupt flatbuffers, wrong shapes...
                results[name] = CandidateResult(ok=False, error=f"{type(exc).__name__}: {exc}"[:500], source=source)
                continue
            if ref.scores is None:
                finite = bool(np.all(np.isfinite(out)))
                diff, err = None, None if finite else "non-finite outputs (NaN/Inf)"
            else:
                diff, err = check_outputs(ref, out, tolerance)
            results[name] = CandidateResult(ok=err is None, max_abs_diff=diff, error=err, source=source)
            if err is None:
                built[name] = (classifier, str(model) if isinstance(model, Path) else None)
                runners[name] = classifier.classify
            else:
                classifier.close()
    else:
        results["litert"] = CandidateResult(ok=False, error="ai_edge_litert is not installed", source="converted")

    for name, (img_s, img_s1) in time_runtimes(runners, ref.inputs).items():
        results[name].img_per_s = round(img_s, 2)
        results[name].img_per_s_batch1 = round(img_s1, 2)

    passing = [k for k, r in results.items() if r.ok]
    pool = [k for k in passing if k != "tensorflow"] if requested == "litert" else passing
    refused = "; ".join(f"{k} refused: {r.error}" for k, r in results.items() if not r.ok)
    if pool:
        best = max(pool, key=lambda k: results[k].img_per_s or 0.0)
        others = ", ".join(f"{k} {results[k].img_per_s:.1f}" for k in pool if k != best)
        reason = (f"{best} is the fastest runtime that passed verification ({verified_on.split(';')[0]}): "
                  f"{results[best].img_per_s:.1f} img/s" + (f" vs {others}" if others else ""))
        if requested == "litert":
            reason = f"serving.runtime = litert; {reason}"
    elif tf_classify is not None:
        best = "tensorflow"
        reason = ("serving.runtime = litert but no LiteRT candidate passed verification; TensorFlow serves"
                  if requested == "litert" else "no faster runtime passed verification; TensorFlow serves")
        if not results["tensorflow"].ok:
            reason += " (TensorFlow itself does not reproduce the reference: validation decides)"
    else:
        raise ClassifierError(f"{version_dir}: no runtime can serve this version: {refused}")
    if refused:
        reason += f"; {refused}"
    for name, (classifier, _) in built.items():
        if name != best:
            classifier.close()
    chosen = built.get(best)
    selection = Selection(
        runtime="tensorflow" if best == "tensorflow" else "litert", candidate=best, reason=reason,
        requested=requested, verified_on=verified_on, candidates=results,
        signature={"input": {"name": info.image_input.name, "dtype": info.image_input.dtype,
                             "shape": [info.image_input.height, info.image_input.width, info.image_input.channels]},
                   "output": info.output_name},
        model_file=chosen[1] if chosen else None, selected_at=time.time())
    if selection.model_file:
        selection.model_sha256 = file_sha256(Path(selection.model_file))
    return selection, chosen[0] if chosen else None



# ----------------------------------------------------------------------------- isolation
def select_in_subprocess(version_dir: Path, version: ModelVersion, requested: str, threads: int,
                         key: dict[str, Any]) -> Selection | None:
    """Run the selection in a child process (which writes the cache) and read its decision.

    TensorFlow's ~550 MB stay in the child; None (select in-process) when the child fails or the
    cache cannot be written.
    """
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "edge.serving.selection_worker", str(version_dir), "--name", version.name,
           "--version", str(version.version), "--runtime", requested, "--threads", str(threads)]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("runtime selection subprocess failed (%s); selecting in-process", exc)
        return None
    if proc.returncode != 0:
        logger.warning("runtime selection subprocess exited with %s; selecting in-process: %s", proc.returncode,
                       proc.stderr.strip()[-2000:])
        return None
    selection = load_cached(version_dir, key)
    if selection is None:
        logger.warning("runtime selection subprocess left no usable cache in %s; selecting in-process",
                       cache_dir(version_dir))
        return None
    selection.cached, selection.isolated = False, True
    logger.info("runtime selected in a subprocess in %.1fs", time.perf_counter() - started)
    return selection
