"""What a model version says about itself: ``assets.extra/edge.json`` and ``labels.txt``.

``edge.json`` (all keys optional)::

    {"format": 1,
     "preprocess": {"color": "RGB", "resize": "stretch", "mean": [127, 127, 127], "std": [128, 128, 128],
                    "size": [224, 224]},
     "output": {"name": "probabilities", "activation": "none"},
     "acceptance": {"int8": {"tolerance": 0.3, "top1_margin": 0.1, "min_top1_agreement": 0.75}}}

A float input is fed ``(pixel - mean) / std`` per channel (no mean/std: raw 0..255 values).
``activation`` is ``"softmax"`` when the output is logits and ``"none"`` when it already holds
probabilities. ``size`` ([width, height]) is only read for models that take encoded images
(DT_STRING), whose signature cannot say what size they want. Values set in the gateway config (``[model.preprocess]``) override the file.

``acceptance`` declares how reduced-precision runtime candidates are verified (runtime selection):
``"int8": {...}`` lets calibrated full-integer int8 candidates serve when they pass that rule
(:func:`edge.models.golden.compare_scores` with its ``tolerance`` and ``top1_margin``, and at least
``min_top1_agreement`` of the golden images with the reference's top-1); ``"int8": false``, or no
``int8`` entry, forbids int8 for this version (float candidates always use the exact rule).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge.errors import ModelMetadataError

logger = logging.getLogger(__name__)

ASSETS_EXTRA = "assets.extra"



@dataclass(frozen=True)
class PreprocessSpec:
    color: str = "RGB"  # channel order the model expects
    resize: str = "stretch"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    size: tuple[int, int] | None = None  # [width, height] for inputs that do not declare one (encoded images)


@dataclass(frozen=True)
class Acceptance:
    """The rule a reduced-precision candidate must pass on the golden images (edge.json ``acceptance``)."""

    tolerance: float  # largest |score - reference|
    top1_margin: float = 0.0  # reference top-1 leads by less: any of its top-5 is accepted as top-1
    min_top1_agreement: float = 1.0  # share of golden images whose top-1 must be the reference's


PRECISIONS = ("int8",)  # the reduced precisions a version can allow in edge.json ``acceptance``


@dataclass(frozen=True)
class VersionMetadata:
    preprocess: PreprocessSpec
    output_name: str | None
    activation: str  # "none" | "softmax"
    labels: tuple[str, ...]
    acceptance: tuple[tuple[str, Acceptance], ...] = ()  # (precision, rule) the version allows

    def rule_for(self, precision: str) -> Acceptance | None:
        """The declared rule for ``precision`` ("int8"); None: the version does not allow it."""
        return dict(self.acceptance).get(precision)

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else str(index)


def _triple(value: Any, key: str) -> tuple[float, float, float] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * 3
    if (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return (float(value[0]), float(value[1]), float(value[2]))
    raise ModelMetadataError(f"edge.json: {key} must be a number or a list of 3 numbers, got {value!r}")


def parse_edge_json(doc: Any) -> tuple[PreprocessSpec, str | None, str]:
    """Validate an edge.json document; returns (preprocess, output name, activation)."""
    if not isinstance(doc, dict):
        raise ModelMetadataError("edge.json: top level must be an object")
    unknown = set(doc) - {"format", "preprocess", "output", "source", "created", "golden", "acceptance"}
    if unknown:
        raise ModelMetadataError(f"edge.json: unknown key(s) {sorted(unknown)}")
    pre = doc.get("preprocess", {}) or {}
    out = doc.get("output", {}) or {}
    if not isinstance(pre, dict) or not isinstance(out, dict):
        raise ModelMetadataError("edge.json: 'preprocess' and 'output' must be objects")
    color = pre.get("color", "RGB")
    if color not in ("RGB", "BGR"):
        raise ModelMetadataError(f"edge.json: preprocess.color must be 'RGB' or 'BGR', got {color!r}")
    resize = pre.get("resize", "stretch")
    if resize != "stretch":
        raise ModelMetadataError(f"edge.json: preprocess.resize must be 'stretch', got {resize!r}")
    std = _triple(pre.get("std"), "preprocess.std")
    if std is not None and 0.0 in std:
        raise ModelMetadataError("edge.json: preprocess.std must not contain 0")
    size = pre.get("size")
    if size is not None and not (
        isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and 8 <= v <= 8192 for v in size)
    ):
        raise ModelMetadataError(f"edge.json: preprocess.size must be [width, height] (8..8192), got {size!r}")
    spec = PreprocessSpec(color=color, resize=resize, mean=_triple(pre.get("mean"), "preprocess.mean"), std=std,
                          size=(size[0], size[1]) if size else None)
    activation = out.get("activation", "none")
    if activation not in ("none", "softmax"):
        raise ModelMetadataError(f"edge.json: output.activation must be 'none' or 'softmax', got {activation!r}")
    name = out.get("name")
    if name is not None and not isinstance(name, str):
        raise ModelMetadataError("edge.json: output.name must be a string")
    return spec, name, activation


def _number(value: Any, key: str, low: float, high: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise ModelMetadataError(f"edge.json: {key} must be a number between {low:g} and {high:g}, got {value!r}")
    return float(value)


def parse_acceptance(doc: Any) -> tuple[tuple[str, Acceptance], ...]:
    """edge.json ``acceptance``: {precision: {tolerance, top1_margin, min_top1_agreement} | false}."""
    if doc is None:
        return ()
    if not isinstance(doc, dict):
        raise ModelMetadataError("edge.json: 'acceptance' must be an object like {\"int8\": {\"tolerance\": 0.3}}")
    unknown = set(doc) - set(PRECISIONS)
    if unknown:
        raise ModelMetadataError(f"edge.json: acceptance: unknown precision(s) {sorted(unknown)}; known: {list(PRECISIONS)}")
    rules: list[tuple[str, Acceptance]] = []
    for precision, rule in doc.items():
        key = f"acceptance.{precision}"
        if rule is False:
            continue  # forbidden
        if not isinstance(rule, dict) or "tolerance" not in rule:
            raise ModelMetadataError(f"edge.json: {key} must be false or an object with 'tolerance'")
        extra = set(rule) - {"tolerance", "top1_margin", "min_top1_agreement"}
        if extra:
            raise ModelMetadataError(f"edge.json: {key}: unknown key(s) {sorted(extra)}")
        rules.append((precision, Acceptance(
            tolerance=_number(rule["tolerance"], f"{key}.tolerance", 0.0, 1.0),
            top1_margin=_number(rule.get("top1_margin", 0.0), f"{key}.top1_margin", 0.0, 1.0),
            min_top1_agreement=_number(rule.get("min_top1_agreement", 1.0), f"{key}.min_top1_agreement", 0.0, 1.0))))
    return tuple(rules)


def read_version_metadata(version_dir: Path, override: PreprocessSpec | None = None) -> VersionMetadata:
    """Read edge.json and labels.txt from ``<version_dir>/assets.extra`` (both optional)."""
    extra = Path(version_dir) / ASSETS_EXTRA
    spec, output_name, activation = PreprocessSpec(), None, "none"
    acceptance: tuple[tuple[str, Acceptance], ...] = ()
    edge_json = extra / "edge.json"
    if edge_json.is_file():
        try:
            doc = json.loads(edge_json.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelMetadataError(f"{edge_json}: not valid JSON: {exc}") from None
        spec, output_name, activation = parse_edge_json(doc)
        acceptance = parse_acceptance(doc.get("acceptance"))
    if override is not None:
        spec = replace(
            spec,
            color=override.color,
            mean=override.mean if override.mean is not None else spec.mean,
            std=override.std if override.std is not None else spec.std,
        )
    labels: tuple[str, ...] = ()
    labels_file = extra / "labels.txt"
    if labels_file.is_file():
        try:
            labels = tuple(line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines())
        except UnicodeDecodeError:
            raise ModelMetadataError(f"{labels_file}: not UTF-8 text") from None
        while labels and not labels[-1]:
            labels = labels[:-1]
    return VersionMetadata(preprocess=spec, output_name=output_name, activation=activation, labels=labels,
                           acceptance=acceptance)
