"""Download a model manifest's layers and build the version folder from them, safely.

Each blob is downloaded once to ``<staging>/.blob-<hex>`` (resumable: ``.part`` + HTTP Range,
verified against its digest), then placed in a new dot-folder of staging: a plain-file layer is
moved to its title, a folder archive is unpacked with :func:`safe_extract` (no absolute paths,
``..``, links, devices, duplicates, bombs) and must hold nothing outside ``<title>/``, the edge 0.2
archive becomes the whole folder. The sum of all files is bounded by ``max_bytes``.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edge.errors import DigestMismatch, RegistryError, UnsafeArtifact
from edge.models.artifact.layout import Layer, Layout
from edge.models.artifact.tarsafe import safe_extract

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (bytes done, bytes total; total 0 = unknown)
BLOB_PREFIX = ".blob-"


class BlobDownloader(Protocol):
    def download_blob(self, repository: str, digest: str, dest: Path, progress: Progress | None = None,
                      *, expected_size: int | None = None) -> Path: ...


def blob_path(staging: Path, digest: str) -> Path:
    return staging / f"{BLOB_PREFIX}{digest.split(':', 1)[1]}"


def download_layers(client: BlobDownloader, repository: str, layout: Layout, staging: Path,
                    progress: Progress | None = None) -> None:
    """Every distinct blob of `layout` into staging (a blob already there, complete, is kept)."""
    total, base = layout.size, 0
    for layer in {layer.digest: layer for layer in layout.layers}.values():
        path = blob_path(staging, layer.digest)
        if not (path.is_file() and path.stat().st_size == layer.size):  # a finished blob was verified already

            def step(done: int, _total: int, offset: int = base) -> None:
                if progress is not None:
                    progress(offset + done, total)

            client.download_blob(repository, layer.digest, path, step, expected_size=layer.size)
        base += layer.size


def _place_file(staging: Path, layer: Layer, dest: Path, last_use: bool) -> None:
    target = dest.joinpath(*layer.title.split("/"))
    if target.exists():
        raise UnsafeArtifact(f"layer {layer.title!r} collides with another layer's file")
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    source = blob_path(staging, layer.digest)
    if last_use:
        os.replace(source, target)
    else:  # the same content under two names: copy all but the last
        shutil.copyfile(source, target)
    target.chmod(0o644)


def _place_folder(staging: Path, layer: Layer, dest: Path, budget: int) -> None:
    unpacked = Path(tempfile.mkdtemp(prefix=".unpack-", dir=staging))
    try:
        safe_extract(blob_path(staging, layer.digest), unpacked / "x", max_bytes=budget)
        root = unpacked / "x"
        prefix = layer.title + "/"
        for path in root.rglob("*"):
            rel = path.relative_to(root).as_posix()
            if not (rel + "/").startswith(prefix) and not prefix.startswith(rel + "/"):
                raise UnsafeArtifact(f"folder layer {layer.title!r} holds {rel[:80]!r}, outside {prefix!r}")
        source = root.joinpath(*layer.title.split("/"))
        if not source.is_dir():
            raise UnsafeArtifact(f"folder layer {layer.title!r} does not hold the folder {layer.title!r}")
        target = dest.joinpath(*layer.title.split("/"))
        if target.exists():
            raise UnsafeArtifact(f"folder layer {layer.title!r} collides with another layer")
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.replace(source, target)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def assemble(client: BlobDownloader, repository: str, layout: Layout, staging: Path, *, max_bytes: int, where: str,
             progress: Progress | None = None) -> Path:
    """Download and build the version folder: a new dot-folder in `staging` (removed again on failure)."""
    staging.mkdir(parents=True, exist_ok=True)
    if layout.size > max_bytes:
        raise UnsafeArtifact(f"{where}: layers are {layout.size} bytes, over the {max_bytes}-byte limit")
    sweep(staging, layout)
    try:
        download_layers(client, repository, layout, staging, progress)
    except DigestMismatch:
        discard_blobs(staging, layout)  # corrupt at the source: start over next time
        raise
    except RegistryError:
        raise  # finished blobs and the .part stay: the next attempt resumes
    except BaseException:
        discard_blobs(staging, layout)
        raise
    dest = Path(tempfile.mkdtemp(prefix=".pull-", dir=staging))
    try:
        if layout.legacy:
            dest.rmdir()
            safe_extract(blob_path(staging, layout.layers[0].digest), dest, max_bytes=max_bytes)
            return dest
        last = {layer.digest: layer.title for layer in layout.layers}
        for layer in layout.layers:
            if layer.archive:
                _place_folder(staging, layer, dest, max_bytes - _size(dest))
            else:
                _place_file(staging, layer, dest, last_use=last[layer.digest] == layer.title)
        if _size(dest) > max_bytes:
            raise UnsafeArtifact(f"the version folder is larger than the {max_bytes}-byte limit")
        return dest
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    finally:
        discard_blobs(staging, layout)


def sweep(staging: Path, layout: Layout) -> None:
    """Remove the downloads of other artifacts (an install that was given up or superseded)."""
    wanted = {blob_path(staging, layer.digest).name for layer in layout.layers}
    for path in staging.iterdir():
        if path.name.startswith((BLOB_PREFIX, ".layer-")) and path.is_file() \
                and path.name.removesuffix(".part") not in wanted:
            path.unlink(missing_ok=True)


def discard_blobs(staging: Path, layout: Layout) -> None:
    for layer in layout.layers:
        for path in (blob_path(staging, layer.digest), blob_path(staging, layer.digest).with_suffix(".part")):
            path.unlink(missing_ok=True)


def describe_variant(variant: dict[str, Any] | None) -> str:
    if not variant:
        return ""
    return f" (variant {variant.get('platform') or 'portable'}{', ' + variant['accelerator'] if variant.get('accelerator') else ''})"
