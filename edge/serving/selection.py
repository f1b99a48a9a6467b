"""Which runtime serves a model version in-process: measured, verified, cached.

When the embedded backend first loads a version it builds the runtime candidates of
:mod:`edge.serving.candidates` (LiteRT fp32 converted or shipped, OpenVINO fp32 shipped or converted,
calibrated int8 LiteRT where the version allows it), checks each one against the version's golden
images (``assets.extra/golden``, via :mod:`edge.models.golden`) -- or, without golden images, against
TensorFlow's own outputs on a deterministic set of synthetic images -- and times every runtime that
passed on the same inputs in the shape it will serve in: each LiteRT/OpenVINO candidate is built as
the gateway's pool (``serving.interpreters`` x ``serving.threads``, :func:`edge.serving.litert.pool_shape`)
and driven from one thread per interpreter, TensorFlow from one thread with ``serving.max_batch_size``
images per call; throughput over a bounded number of images, interleaved rounds, median. The fastest
one that passed serves, as it was built; TensorFlow is the fallback.

A float candidate passes when, on every image: the outputs are finite, the top-1 class is the
reference's (on synthetic images a class tied with the reference's top-1 within the tolerance also
counts) and ``max |score - reference| <= tolerance`` (scores after edge.json's activation, as
``classify`` returns them). A reduced-precision (int8) candidate passes the rule its version declares
in edge.json (``acceptance.int8``: tolerance, top-1 margin, minimum top-1 agreement) through the same
:func:`edge.models.golden.compare_scores`; the measured top-1 agreement is recorded for every candidate.

The converted models and the decision are cached beside the version, never inside it (a version folder
is content-addressed by its registry digest and may be served by TF Serving)::

    <store>/<model>/.edge-cache/<version>/{litert.tflite,litert-int8.tflite,openvino.xml,openvino.bin}
    <store>/<model>/.edge-cache/<version>/selection.json

keyed by a fingerprint of the version folder's files, the serving shape (interpreters, threads each,
max batch size), the precision setting, the runtimes' package versions, the CPU's features and the
key's format (a decision timed another way is not reused). A restart with a valid cache neither
converts nor times again, and when the cached choice is not TensorFlow, TensorFlow is not imported at
all. Nothing here imports TensorFlow at module level.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ClassifierError
from edge.models.metadata import Acceptance
from edge.models.store import ModelVersion
from edge.serving.base import DEFAULT_MAX_BATCH_SIZE, ClassifierInfo, serving_shape
from edge.serving.candidates import (
    CACHE_DIR,
    CONVERTED_FILE,
    SHIPPED_FILE,
    Served,
    cache_dir,
    calibration_inputs,
    candidates,
    convert_saved_model,
)
from edge.serving.litert import litert_available, pool_shape
from edge.serving.openvino import cpu_signature, openvino_version
from edge.serving.selection_checks import (
    Classify,
    Timed,
    build_reference,
    check_outputs,
    describe_rule,
    time_runtimes,
)
from edge.util.fsutil import atomic_write_bytes

logger = logging.getLogger(__name__)

RUNTIMES = ("auto", "tensorflow", "litert", "openvino")
PRECISIONS = ("auto", "fp32")  # serving.precision: auto lets a version's declared int8 rule admit int8
SELECTION_FILE = "selection.json"
FORMAT = 3  # 3: candidates timed in their serving shape (2 timed one interpreter on all cores)
DEFAULT_TOLERANCE = 1e-3
__all__ = ["CACHE_DIR", "CONVERTED_FILE", "SHIPPED_FILE", "cache_dir", "convert_saved_model"]


@dataclass
class CandidateResult:
    ok: bool
    img_per_s: float | None = None  # throughput in its serving shape (timed_shape), median of TIMING_ROUNDS
    timed_shape: dict[str, Any] | None = None  # concurrency (threads at once), threads each, batch, images, rounds
    max_abs_diff: float | None = None
    error: str | None = None
    source: str | None = None  # "savedmodel", "converted", "shipped", "calibrated"
    runtime: str | None = None  # "tensorflow" | "litert" | "openvino"
    precision: str | None = None  # "fp32" | "int8" | "shipped"
    top1_agreement: float | None = None  # share of reference images whose top-1 it reproduced
    rule: str | None = None  # the acceptance rule it was checked with


@dataclass
class Selection:
    runtime: str  # "tensorflow" | "litert" | "openvino"
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
    precision: str = "fp32"  # of the candidate that serves: "fp32" | "int8" | "shipped"
    calibration: str | None = None  # int8: what it was calibrated on

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


def cache_key(version_dir: Path, requested: str, threads: int, tolerance: float, precision: str = "auto",
              interpreters: int = 0, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE) -> dict[str, Any]:
    """What a cached decision depends on; any change means select again. ``threads``/``interpreters``
    are the settings (0 = auto), resolved here to the pool the candidates are timed and served as."""
    count, each = pool_shape(interpreters, threads)
    return {"format": FORMAT, "fingerprint": fingerprint(version_dir), "requested": requested,
            "shape": {"interpreters": count, "threads": each, "max_batch_size": max_batch_size},
            "tf_threads": threads, "precision": precision,
            "tolerance": tolerance, "ai_edge_litert": _package_version("ai-edge-litert"),
            "openvino": openvino_version(), "cpu": cpu_signature(),
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


# ----------------------------------------------------------------------------- decision
def _int8_gate(ref_kind: str, precision: str, rule: Acceptance | None) -> str | None:
    """Why int8 is not tried for this version (None: it is)."""
    if precision == "fp32":
        return "serving.precision = fp32"
    if rule is None:
        return "the version declares no int8 acceptance rule (edge.json acceptance.int8)"
    if ref_kind != "golden":
        return "int8 needs golden images to calibrate and verify on"
    return None


def select(
    version_dir: Path,
    info: ClassifierInfo,
    tf_classify: Classify | None,
    *,
    preprocess: Any,
    requested: str = "auto",
    threads: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
    precision: str = "auto",
    interpreters: int = 0,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> tuple[Selection, Served | None]:
    """Build, verify and time the candidates; returns the decision and the classifier that serves,
    already in its serving shape (None when TensorFlow serves). ``tf_classify`` is None for a version
    without SavedModel. Every candidate is built and timed as it would serve: ``pool_shape(interpreters,
    threads)`` for LiteRT/OpenVINO, one call of ``max_batch_size`` images at a time for TensorFlow."""
    version_dir = Path(version_dir)
    count, each = pool_shape(interpreters, threads)
    ref, note = build_reference(version_dir, info, preprocess)
    results: dict[str, CandidateResult] = {}
    runners: dict[str, Timed] = {}
    built: dict[str, tuple[Served, Path | None]] = {}
    if tf_classify is not None:
        tf_out = np.asarray(tf_classify(ref.inputs), dtype=np.float32)
        if ref.scores is None:  # synthetic images: TensorFlow is the reference
            finite = bool(np.all(np.isfinite(tf_out)))
            ref.scores = tf_out
            results["tensorflow"] = CandidateResult(ok=finite, max_abs_diff=0.0, source="savedmodel",
                                                    error=None if finite else "non-finite outputs (NaN/Inf)")
        else:
            diff, err, agree = check_outputs(ref, tf_out, tolerance)
            results["tensorflow"] = CandidateResult(ok=err is None, max_abs_diff=diff, error=err, source="savedmodel",
                                                    top1_agreement=agree)
        results["tensorflow"].runtime, results["tensorflow"].precision = "tensorflow", "fp32"
        runners["tensorflow"] = Timed(tf_classify, *serving_shape(None, 1, max_batch_size), threads=threads or None)
    if ref.kind == "golden":
        verified_on = f"golden: {len(ref.names)} images"
    elif ref.scores is not None:
        verified_on = f"synthetic: {len(ref.names)} images vs TensorFlow (the version has no golden images)"
    else:
        verified_on = "none: no golden images and no SavedModel to compare with"
    if note:
        verified_on += f"; {note}"
    int8_rule = info.metadata.rule_for("int8")
    int8_skipped = _int8_gate(ref.kind, precision, int8_rule)
    calibrated: list[str] = []

    def int8_inputs() -> np.ndarray:
        inputs, frames = calibration_inputs(version_dir, info, preprocess, ref.inputs)
        calibrated.append(f"{len(ref.names)} golden images, mirrored, and {frames} camera frames")
        return inputs

    found = [c for c in candidates(version_dir, info, has_savedmodel=tf_classify is not None, threads=each,
                                   interpreters=count, int8_inputs=int8_inputs if int8_skipped is None else None)
             if requested not in ("litert", "openvino") or c.runtime == requested]
    for cand in found:
        rule = int8_rule if cand.precision == "int8" else None
        result = CandidateResult(ok=False, source=cand.source, runtime=cand.runtime, precision=cand.precision,
                                 rule=describe_rule(tolerance, rule))
        results[cand.name] = result
        try:
            classifier, model_file = cand.build()
            out = classifier.classify(ref.inputs)
        except Exception as exc:  # conversion errors, corrupt files, wrong shapes, missing kernels...
            result.error = f"{type(exc).__name__}: {exc}"[:500]
            continue
        if ref.scores is None:
            finite = bool(np.all(np.isfinite(out)))
            err = None if finite else "non-finite outputs (NaN/Inf)"
        else:
            result.max_abs_diff, err, result.top1_agreement = check_outputs(ref, out, tolerance, rule)
        result.ok, result.error = err is None, err
        if err is None:
            built[cand.name] = (classifier, model_file)
            runners[cand.name] = Timed(classifier.classify,
                                       *serving_shape(classifier.preferred_batch_size, classifier.concurrency,
                                                      max_batch_size),
                                       threads=classifier.threads, warm_up=classifier.warm_up)
        else:
            classifier.close()
    if not litert_available():
        results["litert"] = CandidateResult(ok=False, error="ai_edge_litert is not installed", source="converted",
                                            runtime="litert", precision="fp32")

    for name, (img_s, shape) in time_runtimes(runners, ref.inputs).items():
        results[name].img_per_s = round(img_s, 2)
        results[name].timed_shape = shape

    passing = [k for k, r in results.items() if r.ok]
    pool = [k for k in passing if results[k].runtime == requested] if requested in ("litert", "openvino") else passing
    refused = "; ".join(f"{k} refused: {r.error}" for k, r in results.items() if not r.ok)
    if int8_skipped and litert_available() and tf_classify is not None:
        refused += ("; " if refused else "") + f"int8 not tried: {int8_skipped}"
    if pool:
        best = max(pool, key=lambda k: results[k].img_per_s or 0.0)
        others = ", ".join(f"{k} {results[k].img_per_s:.1f}" for k in pool if k != best)
        reason = (f"{best} is the fastest runtime that passed verification ({verified_on.split(';')[0]}): "
                  f"{results[best].img_per_s:.1f} img/s" + (f" vs {others}" if others else "")
                  + f" (timed as they serve: LiteRT/OpenVINO {count} interpreter(s) x {each} thread(s) in "
                    f"parallel, TensorFlow {max_batch_size} images per call)")
        if requested in ("litert", "openvino"):
            reason = f"serving.runtime = {requested}; {reason}"
    elif tf_classify is not None:
        best = "tensorflow"
        shown = {"litert": "LiteRT", "openvino": "OpenVINO"}.get(requested)
        reason = (f"serving.runtime = {requested} but no {shown} candidate passed verification; TensorFlow "
                  "serves" if shown else
                  "no faster runtime passed verification; TensorFlow serves")
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
        runtime=results[best].runtime or "tensorflow", candidate=best, reason=reason,
        requested=requested, verified_on=verified_on, candidates=results,
        signature={"input": {"name": info.image_input.name, "dtype": info.image_input.dtype,
                             "shape": [info.image_input.height, info.image_input.width, info.image_input.channels]},
                   "output": info.output_name},
        model_file=str(chosen[1]) if chosen and chosen[1] else None, selected_at=time.time(),
        precision=results[best].precision or "fp32",
        calibration=calibrated[0] if calibrated and results[best].precision == "int8" else None)
    if selection.model_file:
        selection.model_sha256 = file_sha256(Path(selection.model_file))
    return selection, chosen[0] if chosen else None

# ----------------------------------------------------------------------------- isolation
def select_in_subprocess(version_dir: Path, version: ModelVersion, requested: str, threads: int,
                         key: dict[str, Any], precision: str = "auto", interpreters: int = 0,
                         max_batch_size: int = DEFAULT_MAX_BATCH_SIZE) -> Selection | None:
    """Run the selection in a child process (which writes the cache) and read its decision.

    TensorFlow's ~550 MB stay in the child; None (select in-process) when the child fails or the
    cache cannot be written.
    """
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "edge.serving.selection_worker", str(version_dir), "--name", version.name,
           "--version", str(version.version), "--runtime", requested, "--threads", str(threads),
           "--precision", precision, "--interpreters", str(interpreters), "--max-batch-size", str(max_batch_size)]
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
