"""The local model store: a TF Serving-style tree ``<base>/<model>/<version>/``.

Version folders are numeric (``00000123`` is version 123), exactly as TensorFlow Serving reads
them, so the same folder can be served by the embedded backend, by ``edge-model-server`` and by
a real TF Serving container. Folders whose names are not all digits (for example ``.staging-*``
or ``7.partial``) are invisible to every reader: installs stage there and rename atomically.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ModelStoreError

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    path: Path


def is_version_dir(path: Path) -> bool:
    """True for a complete-looking numeric version folder (holds a SavedModel or a .tflite)."""
    return (
        path.name.isdigit()
        and path.is_dir()
        and ((path / "saved_model.pb").is_file() or (path / "model.tflite").is_file())
    )


def list_versions(model_base: Path) -> list[ModelVersion]:
    """All servable versions under one model's base path, oldest first."""
    if not model_base.is_dir():
        return []
    found = [
        ModelVersion(model_base.name, int(child.name), child)
        for child in model_base.iterdir()
        if is_version_dir(child)
    ]
    return sorted(found, key=lambda v: v.version)


def explain_empty_base(model_base: Path) -> str:
    """Why a model base path holds no servable version, and how to fix it."""
    if not model_base.exists():
        return f"{model_base} does not exist"
    if not model_base.is_dir():
        return f"{model_base} is not a directory"
    if (model_base / "saved_model.pb").is_file():
        return (
            f"{model_base} holds a SavedModel directly; TF Serving layout needs a numeric version "
            f"folder: move its contents into {model_base}/1/ (e.g. `mkdir {model_base}/1 && "
            f"mv {model_base}/saved_model.pb {model_base}/variables {model_base}/1/`)"
        )
    numeric = [c.name for c in model_base.iterdir() if c.name.isdigit()]
    if numeric:
        return (
            f"{model_base} has version folder(s) {sorted(numeric)} but none holds saved_model.pb "
            "or model.tflite"
        )
    return f"{model_base} has no numeric version folders (expected {model_base}/1/saved_model.pb)"


class ModelStore:
    """Read access to ``<base>/<model>/<version>/``."""

    def __init__(self, base: Path) -> None:
        self.base = Path(base)

    def model_base(self, model: str) -> Path:
        return self.base / model

    def versions(self, model: str) -> list[ModelVersion]:
        return list_versions(self.model_base(model))

    def resolve(self, model: str, version: int | str = "latest") -> ModelVersion:
        """The version to serve: a number, or "latest" (highest number)."""
        available = self.versions(model)
        if not available:
            raise ModelStoreError(f"model {model!r}: no servable version: {explain_empty_base(self.model_base(model))}")
        if version == "latest":
            return available[-1]
        for candidate in available:
            if candidate.version == int(version):
                return candidate
        raise ModelStoreError(
            f"model {model!r}: version {version} not found in {self.model_base(model)} "
            f"(available: {[v.version for v in available]})"
        )
