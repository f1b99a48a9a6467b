"""The model artifact format: media types, the model description (config), version folders, the 0.2 packing.

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
from edge.util.platforms import parse_platform

logger = logging.getLogger(__name__)


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ARTIFACT_TYPE = "application/vnd.edge.model.v1"
CONFIG_MEDIA_TYPE = "application/vnd.edge.model.config.v1+json"
FILE_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"  # oras's type for a file: the raw bytes, despite the name
FOLDER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"  # oras's type for a folder (members <title>/...)
LAYER_MEDIA_TYPE = "application/vnd.edge.model.layer.v1.tar+gzip"  # edge 0.2: the whole folder in one layer
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"  # of b"{}"
TITLE = "org.opencontainers.image.title"
UNPACK = "io.deis.oras.content.unpack"
ACCELERATOR = "dev.edge.model.accelerator"
DESCRIPTION_FILE = "assets.extra/model.json"
MAX_CONFIG_BYTES = 1 << 20


_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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
    variant = doc.get("variant")
    if variant is not None:
        if not isinstance(variant, dict) or not isinstance(variant.get("platform"), (str, type(None))) \
                or not isinstance(variant.get("accelerator"), (str, type(None))):
            raise ArtifactError(f"{where}: 'variant' must be {{\"platform\": \"os/arch\" or null, \"accelerator\": "
                                "name or null}")
        try:
            if variant.get("platform"):
                parse_platform(variant["platform"])
        except ValueError as exc:
            raise ArtifactError(f"{where}: 'variant': {exc}") from None


def version_members(version_dir: Path) -> list[tuple[str, Path]]:
    """(relative path, path) of every file and folder of a version folder, sorted; links and special
    files are refused."""
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


def check_version_folder(version_dir: Path) -> dict[str, Any]:
    """The description of a packaged version folder, or ArtifactError when it is not one."""
    version_dir = Path(version_dir)
    if not ((version_dir / "saved_model.pb").is_file() or (version_dir / "model.tflite").is_file()):
        raise ArtifactError(f"{version_dir}: not a model version folder (no saved_model.pb or model.tflite)")
    return read_description(version_dir)


def pack_version(version_dir: Path, out: Path) -> dict[str, Any]:
    """Write the edge 0.2 layer (the whole folder as one deterministic tar.gz) to ``out``; returns the
    config dict. Devices still read this layout; ``edgectl`` pushes one layer per file now."""
    version_dir = Path(version_dir)
    config = check_version_folder(version_dir)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, path in version_members(version_dir):
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
