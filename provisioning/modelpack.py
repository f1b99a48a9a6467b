"""`edgectl model package`: a SavedModel -> a version folder (labels, edge.json, golden images with their
reference outputs, TF Serving warm-up records, ``assets.extra/model.json``). TensorFlow is imported
only here (through the SavedModel runner).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ClassifierError, SavedModelError, UsageError
from edge.model_server.warmup import write_warmup_records
from edge.models.artifact.format import DESCRIPTION_FILE
from edge.models.golden import list_images, read_image, write_reference
from edge.models.metadata import ASSETS_EXTRA, PreprocessSpec
from edge.serving.base import softmax
from edge.serving.embedded import image_input_of, scores_output_of
from edge.serving.preprocess import FramePreprocessor
from edge.serving.protos import messages
from edge.serving.savedmodel import SavedModelRunner
from edge.serving.selection_checks import synthetic_images
from edge.serving.tensors import from_ndarray
from edge.util.platforms import parse_platform
from provisioning.modelconvert import add_litert_model

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
ACCELERATOR_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")


def parse_preprocess(text: str | None) -> Any:
    """``color=RGB,mean=127,std=128`` (mean/std: one number or three joined by ':') -> PreprocessSpec."""
    if not text:
        return PreprocessSpec()
    fields: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in ("color", "mean", "std"):
            raise UsageError(f"--preprocess: expected color=RGB|BGR,mean=N[:N:N],std=N[:N:N], got {item!r}")
        if key == "color":
            if value not in ("RGB", "BGR"):
                raise UsageError(f"--preprocess: color must be RGB or BGR, got {value!r}")
            fields["color"] = value
            continue
        try:
            numbers = [float(v) for v in value.split(":")]
        except ValueError:
            raise UsageError(f"--preprocess: {key} must be a number or three numbers joined by ':', got {value!r}") from None
        if len(numbers) not in (1, 3) or (key == "std" and 0.0 in numbers):
            raise UsageError(f"--preprocess: {key} must be one or three numbers (std not 0), got {value!r}")
        fields[key] = tuple(numbers * 3 if len(numbers) == 1 else numbers)
    return PreprocessSpec(**fields)


def _edge_json(spec: Any, output: str, activation: str, created: str, source: str, golden: int) -> dict:
    pre: dict[str, Any] = {"color": spec.color, "resize": "stretch"}
    if spec.mean is not None:
        pre["mean"] = list(spec.mean)
    if spec.std is not None:
        pre["std"] = list(spec.std)
    return {"format": 1, "preprocess": pre, "output": {"name": output, "activation": activation},
            "created": created, "source": source, "golden": golden}


def package(savedmodel: Path, out: Path, *, name: str, version: int, labels: Path | None = None,
            golden: Path | None = None, preprocess: Any = None, output_name: str | None = None,
            activation: str = "none", force: bool = False, source: str | None = None,
            variant: dict[str, Any] | None = None, tflite: bool = False) -> dict:
    """Build a complete version folder at ``out``; returns its model config (model.json). `variant`
    ({"platform", "accelerator"}, :func:`parse_variant`) marks a variant of a multi-platform version;
    `tflite` adds ``model.tflite``, converted and checked on the golden images (provisioning.modelconvert)."""

    if not NAME_RE.match(name):
        raise UsageError(f"--name {name!r}: use letters, digits, '_', '.', '-' (it names the model folder)")
    if not (savedmodel / "saved_model.pb").is_file():
        raise UsageError(f"{savedmodel}: not a SavedModel directory (no saved_model.pb)")
    if out.exists() and not force:
        raise UsageError(f"{out} already exists; pass --force to replace it")
    label_lines: list[str] | None = None
    if labels is not None:
        try:
            label_lines = [line.strip() for line in labels.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--labels {labels}: cannot read it as UTF-8 text ({exc})") from None
        while label_lines and not label_lines[-1]:
            label_lines.pop()
    golden_images = [(p, read_image(p)) for p in list_images(golden)] if golden is not None else []
    spec = preprocess or PreprocessSpec()
    try:
        runner = SavedModelRunner(savedmodel)
        signature = runner.signature()
        image_input = image_input_of(signature)
        output = scores_output_of(signature, output_name)
    except (SavedModelError, ClassifierError) as exc:
        raise UsageError(f"{savedmodel}: {exc}") from None
    pre = FramePreprocessor(image_input, spec)

    def classify(image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = pre.batch_to_input(pre.to_model_pixels(image_bgr)[None])
        scores = np.asarray(runner.run({image_input.name: batch}, output_filter=[output])[output], dtype=np.float32)
        scores = scores.reshape(1, -1)
        return batch, (softmax(scores) if activation == "softmax" else scores)[0]

    blank = np.zeros((image_input.height, image_input.width, 3), dtype=np.uint8)
    classes = classify(blank)[1].size
    if label_lines is not None and len(label_lines) != classes:
        raise UsageError(f"--labels {labels}: {len(label_lines)} labels but output {output!r} has {classes} classes")
    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    source = source or str(savedmodel.resolve())
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        folder = staging / "v"
        shutil.copytree(savedmodel, folder, symlinks=False)
        extra = folder / ASSETS_EXTRA
        extra.mkdir(exist_ok=True)
        if label_lines is not None:
            (extra / "labels.txt").write_text("\n".join(label_lines) + "\n", encoding="utf-8")
        (extra / "edge.json").write_text(json.dumps(_edge_json(spec, output, activation, created, source,
                                                               len(golden_images)), indent=1) + "\n")
        batches = []
        results: dict[str, np.ndarray] = {}
        if golden_images:
            (extra / "golden").mkdir(exist_ok=True)
            for path, image in golden_images:
                shutil.copyfile(path, extra / "golden" / path.name)
                batch, scores = classify(image)
                batches.append(batch)
                results[path.name] = scores
            write_reference(folder, results, output=output)
        _write_warmup(extra, name, image_input.name, batches or [classify(blank)[0]])
        if tflite:
            samples = [(p.name, b, results[p.name]) for (p, _), b in zip(golden_images, batches)] or \
                [(f"synthetic image {i}", *classify(image))
                 for i, image in enumerate(synthetic_images(image_input.height, image_input.width))]
            add_litert_model(folder, samples, output=output, activation=activation)
        config = {"format": 1, "name": name, "version": version,
                  "input": {"name": image_input.name, "dtype": image_input.dtype,
                            "shape": [-1, image_input.height, image_input.width, image_input.channels]},
                  "outputs": {k: {"dtype": v.dtype, "shape": [-1 if d is None else d for d in (v.shape or ())]}
                              for k, v in signature.outputs.items()},
                  "labels": len(label_lines or []), "golden": len(golden_images), "created": created, "source": source}
        if variant is not None:
            config["variant"] = variant
        (folder / DESCRIPTION_FILE).write_text(json.dumps(config, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(folder, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("packaged %s version %d at %s", name, version, out)
    return config


def _write_warmup(extra: Path, model_name: str, input_name: str, batches: list) -> None:
    """TF Serving warm-up records (PredictionLog.predict_log.request), one per golden image."""
    pb = messages()
    logs = []
    for batch in batches:
        log = pb.PredictionLog()
        request = log.predict_log.request
        request.model_spec.name = model_name
        request.model_spec.signature_name = "serving_default"
        request.inputs[input_name].CopyFrom(from_ndarray(batch))
        logs.append(log)
    write_warmup_records(extra / "tf_serving_warmup_requests", logs)




def parse_variant(text: str | None) -> dict[str, Any] | None:
    """``linux/arm64``, ``linux/amd64:cuda``, ``any:litert`` -> {"platform", "accelerator"} (None: portable)."""
    if not text:
        return None
    platform, _, accelerator = text.partition(":")
    if accelerator and not ACCELERATOR_RE.match(accelerator):
        raise UsageError(f"--variant {text!r}: the accelerator is lowercase letters, digits, '_', '.', '-' (cuda, litert)")
    try:
        normalized = None if platform in ("", "any") else str(parse_platform(platform))
    except ValueError as exc:
        raise UsageError(f"--variant: {exc} (or `any` for every platform)") from None
    if normalized is None and not accelerator:
        raise UsageError(f"--variant {text!r}: name a platform (linux/arm64), an accelerator (any:litert), or both")
    return {"platform": normalized, "accelerator": accelerator or None}
