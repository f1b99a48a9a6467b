"""Finds the versions of a model on disk (TF Serving's FileSystemStoragePathSource).

Version folders are numeric (``00000123`` is 123) and must hold ``saved_model.pb`` or
``model.tflite``; hidden, partial and non-numeric folders are invisible. A scan also reports a
fingerprint per version folder (newest mtime of the folder and its model file), so a version that
failed to load is retried only when its folder changes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from edge.model_server.policy import VersionPolicy, aspired_versions
from edge.models.store import explain_empty_base, list_versions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanResult:
    """What one scan of a model's base path found."""

    name: str
    base_path: Path
    versions: dict[int, Path] = field(default_factory=dict)  # every servable version on disk
    aspired: dict[int, Path] = field(default_factory=dict)  # the ones the policy wants
    fingerprints: dict[int, float] = field(default_factory=dict)
    problem: str | None = None  # why there is no version at all, and how to fix it


def fingerprint(version_dir: Path) -> float:
    """Newest mtime among the version folder and its model files (0 if it vanished)."""
    newest = 0.0
    for path in (version_dir, version_dir / "saved_model.pb", version_dir / "model.tflite", version_dir / "variables"):
        try:
            newest = max(newest, path.stat().st_mtime)
        except OSError:
            continue
    return newest


class FileSystemSource:
    """Scans model base paths; logs a missing-version problem once per model until it changes."""

    def __init__(self) -> None:
        self._logged: dict[str, str | None] = {}

    def scan(self, name: str, base_path: Path, policy: VersionPolicy) -> ScanResult:
        base_path = Path(base_path)
        versions = {v.version: v.path for v in list_versions(base_path)}
        problem = None
        if not versions:
            problem = explain_empty_base(base_path)
            if self._logged.get(name) != problem:
                # TF Serving's wording, then ours (which says how to fix it).
                logger.warning(
                    "No versions of servable %s found under base path %s. Did you forget to name your "
                    "leaf directory as a number (eg. '/1/')? %s",
                    name,
                    base_path,
                    problem,
                )
        self._logged[name] = problem
        wanted = aspired_versions(policy, list(versions))
        return ScanResult(
            name=name,
            base_path=base_path,
            versions=versions,
            aspired={v: versions[v] for v in wanted},
            fingerprints={v: fingerprint(p) for v, p in versions.items()},
            problem=problem,
        )

    def forget(self, name: str) -> None:
        self._logged.pop(name, None)
