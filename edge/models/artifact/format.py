"""The model artifact format: media types, the config document, deterministic packing, manifest checks.

See :mod:`edge.models.artifact` for the whole format."""
from __future__ import annotations

import gzip
import json
import logging
import os
import re
import stat
import tarfile
from pathlib import Path
from typing import Any, cast

from edge.errors import ArtifactError

logger = logging.getLogger(__name__)


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.edge.model.v1"


CONFIG_MEDIA_TYPE = "application/vnd.edge.model.config.v1+json"


LAYER_MEDIA_TYPE = "application/vnd.edge.model.layer.v1.tar+gzip"


SIGNATURE_ARTIFACT_TYPE = "application/vnd.edge.model.signature.v1"


SIGNATURE_MEDIA_TYPE = "application/vnd.edge.model.signature.v1+json"


EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"


DESCRIPTION_FILE = "assets.extra/model.json"


MAX_CONFIG_BYTES = 1 << 20


_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


def read_description(version_dir: Path) -> dict[str, Any]:
    """``assets.extra/model.json`` of a packaged version folder (written by ``edgectl model package``)."""
    path = Path(version_dir) / DESCRIPTION_FILE
    if not path.is_file():
        raise ArtifactError(f"{version_dir}: no {DESCRIPTION_FILE}; build the folder with `edgectl model package`")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON: {exc}") from None
    check_config(doc, str(path))
    return cast(dict[str, Any], doc)


def check_config(doc: Any, where: str) -> None:
    if not isinstance(doc, dict):
        raise ArtifactError(f"{where}: model config must be a JSON object")
    if not isinstance(doc.get("name"), str) or not doc["name"]:
        raise ArtifactError(f"{where}: 'name' must be a non-empty string")
    if not _MODEL_NAME_RE.match(doc["name"]) or doc["name"] in (".", ".."):
        raise ArtifactError(f"{where}: 'name' {doc['name'][:80]!r} must be 1-64 letters, digits, '_', '-' or '.' "
                            "(it names folders on the device)")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ArtifactError(f"{where}: 'version' must be a positive integer, got {version!r}")
    if not isinstance(doc.get("input"), dict):
        raise ArtifactError(f"{where}: 'input' must be an object {{name, dtype, shape}}")


def _members(version_dir: Path) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(version_dir):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            path = Path(root) / name
            rel = path.relative_to(version_dir).as_posix()
            mode = path.lstat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ArtifactError(f"{path}: only regular files and folders can be packed (links and special files cannot)")
            found.append((rel, path))
    return sorted(found)


def pack_version(version_dir: Path, out: Path) -> dict[str, Any]:
    """Write the deterministic layer tar.gz of a version folder to ``out``; returns the config dict."""
    version_dir = Path(version_dir)
    if not ((version_dir / "saved_model.pb").is_file() or (version_dir / "model.tflite").is_file()):
        raise ArtifactError(f"{version_dir}: not a model version folder (no saved_model.pb or model.tflite)")
    config = read_description(version_dir)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, path in _members(version_dir):
            info = tarfile.TarInfo(rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = path.stat().st_size
                info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                with path.open("rb") as f:
                    tar.addfile(info, f)
    os.replace(tmp, out)
    return config


def check_model_manifest(manifest: dict[str, Any], where: str) -> dict[str, Any]:
    """The single layer descriptor of an edge model manifest, or ArtifactError."""
    media_type = manifest.get("mediaType", OCI_MANIFEST)
    if manifest.get("schemaVersion") != 2 or media_type != OCI_MANIFEST:
        raise ArtifactError(f"{where}: not an OCI image manifest (mediaType {media_type!r})")
    if manifest.get("artifactType") != ARTIFACT_TYPE:
        raise ArtifactError(f"{where}: not an edge model artifact (artifactType {manifest.get('artifactType')!r}, "
                            f"expected {ARTIFACT_TYPE!r}); push it with `edgectl model push`")
    config = manifest.get("config") or {}
    if not isinstance(config, dict):
        raise ArtifactError(f"{where}: config must be a descriptor object, got {type(config).__name__}")
    if config.get("mediaType") != CONFIG_MEDIA_TYPE:
        raise ArtifactError(f"{where}: config mediaType {config.get('mediaType')!r}, expected {CONFIG_MEDIA_TYPE!r}")
    layers = manifest.get("layers") or []
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise ArtifactError(f"{where}: layers must be a list of descriptor objects")
    if len(layers) != 1 or layers[0].get("mediaType") != LAYER_MEDIA_TYPE:
        raise ArtifactError(f"{where}: must have exactly one {LAYER_MEDIA_TYPE} layer, has "
                            f"{[layer.get('mediaType') for layer in layers][:5]}")
    for descriptor in (config, layers[0]):
        digest, size = descriptor.get("digest"), descriptor.get("size")
        if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
            raise ArtifactError(f"{where}: descriptor digest {str(digest)[:80]!r} is not sha256:<64 hex digits>")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ArtifactError(f"{where}: descriptor size {size!r} is not a byte count")
    return cast(dict[str, Any], layers[0])
