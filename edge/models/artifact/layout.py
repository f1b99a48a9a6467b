"""What a model manifest may look like, checked before anything is downloaded.

Accepted (see :mod:`edge.models.artifact` for the whole format):

- **files** (what ``edgectl model push`` and ``oras push`` write): every layer carries
  ``org.opencontainers.image.title``, a relative path in the version folder. A layer of
  ``application/vnd.oci.image.layer.v1.tar+gzip`` (or annotated ``io.deis.oras.content.unpack:
  "true"``) is a folder packed by oras, whose members all lie under ``<title>/``; any other layer is
  the file's raw bytes (oras's default type for a file is ``application/vnd.oci.image.layer.v1.tar``).
- **single archive** (edge 0.2): exactly one ``application/vnd.edge.model.layer.v1.tar+gzip`` layer,
  the whole folder.

The manifest has ``artifactType: application/vnd.edge.model.v1``, or no ``artifactType`` and a
config of ``application/vnd.edge.model.config.v1+json`` (``oras push --config`` without
``--artifact-type`` writes that).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from edge.errors import ArtifactError
from edge.models.artifact.format import (
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    DESCRIPTION_FILE,
    FOLDER_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    OCI_INDEX,
    OCI_MANIFEST,
    TITLE,
    UNPACK,
)
from edge.models.artifact.modelsig import safe_relpath

logger = logging.getLogger(__name__)

MAX_LAYERS = 10_000  # a SavedModel folder holds tens of files
_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


@dataclass(frozen=True)
class Layer:
    title: str  # "" for the edge 0.2 archive (it holds the whole folder)
    digest: str
    size: int
    archive: bool  # a tar.gz to unpack (members under `title`/), not the file's raw bytes


@dataclass(frozen=True)
class Layout:
    config: dict[str, Any]  # the config descriptor
    layers: tuple[Layer, ...]

    @property
    def legacy(self) -> bool:
        """The edge 0.2 layout: one archive holding the whole folder."""
        return len(self.layers) == 1 and self.layers[0].title == ""

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)

    def raw_files(self) -> dict[str, str]:
        """{title: sha256 hex} of the layers that are plain files."""
        return {layer.title: layer.digest.split(":", 1)[1] for layer in self.layers if not layer.archive}

    def covers(self, path: str) -> bool:
        """True when `path` comes from one of the layers (a file, or inside a folder archive)."""
        return any(path.startswith(layer.title + "/") or not layer.title if layer.archive else path == layer.title
                   for layer in self.layers)


def check_descriptor(descriptor: Any, where: str) -> dict[str, Any]:
    if not isinstance(descriptor, dict):
        raise ArtifactError(f"{where}: a descriptor must be an object, got {type(descriptor).__name__}")
    digest, size = descriptor.get("digest"), descriptor.get("size")
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise ArtifactError(f"{where}: descriptor digest {str(digest)[:80]!r} is not sha256:<64 hex digits>")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ArtifactError(f"{where}: descriptor size {size!r} is not a byte count")
    return descriptor


def is_index(doc: dict[str, Any]) -> bool:
    return doc.get("mediaType") == OCI_INDEX or (
        "manifests" in doc and "layers" not in doc and doc.get("mediaType") is None)


def check_model_manifest(manifest: dict[str, Any], where: str) -> Layout:
    """The layout of an edge model manifest, or ArtifactError naming what is wrong."""
    media_type = manifest.get("mediaType", OCI_MANIFEST)
    if manifest.get("schemaVersion") != 2 or media_type != OCI_MANIFEST:
        raise ArtifactError(f"{where}: not an OCI image manifest (mediaType {str(media_type)[:80]!r})")
    config = manifest.get("config")
    if not isinstance(config, dict):
        raise ArtifactError(f"{where}: config must be a descriptor object, got {type(config).__name__}")
    artifact_type = manifest.get("artifactType")
    if artifact_type != ARTIFACT_TYPE and not (artifact_type is None and config.get("mediaType") == CONFIG_MEDIA_TYPE):
        raise ArtifactError(f"{where}: not an edge model artifact (artifactType {str(artifact_type)[:80]!r}, "
                            f"config {str(config.get('mediaType'))[:80]!r}; expected artifactType {ARTIFACT_TYPE!r}); "
                            "push it with `edgectl model push` or `oras push --artifact-type`")
    check_descriptor(config, f"{where} config")
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers or len(layers) > MAX_LAYERS \
            or not all(isinstance(layer, dict) for layer in layers):
        raise ArtifactError(f"{where}: layers must be a list of 1 to {MAX_LAYERS} descriptor objects")
    for layer in layers:
        check_descriptor(layer, f"{where} layer")
    if any(layer.get("mediaType") == LAYER_MEDIA_TYPE for layer in layers):
        if len(layers) != 1:
            raise ArtifactError(f"{where}: a {LAYER_MEDIA_TYPE} layer holds the whole folder and must be the only "
                                f"layer, found {len(layers)} layers")
        if config.get("mediaType") != CONFIG_MEDIA_TYPE:
            raise ArtifactError(f"{where}: config mediaType {str(config.get('mediaType'))[:80]!r}, "
                                f"expected {CONFIG_MEDIA_TYPE!r}")
        return Layout(config, (Layer("", layers[0]["digest"], layers[0]["size"], archive=True),))
    return Layout(config, _titled(layers, config, where))


def _titled(layers: list[dict[str, Any]], config: dict[str, Any], where: str) -> tuple[Layer, ...]:
    found: list[Layer] = []
    for descriptor in layers:
        annotations = descriptor.get("annotations")
        annotations = annotations if isinstance(annotations, dict) else {}
        title = annotations.get(TITLE)
        if title is None:
            raise ArtifactError(f"{where}: layer {descriptor['digest'][:19]} has no {TITLE} annotation "
                                "(every layer names the file it holds)")
        title = safe_relpath(title, f"{where}: layer title")
        archive = descriptor.get("mediaType") == FOLDER_MEDIA_TYPE or annotations.get(UNPACK) == "true"
        found.append(Layer(title, descriptor["digest"], descriptor["size"], archive))
    titles = sorted(layer.title for layer in found)
    for a, b in zip(titles, titles[1:]):
        if a == b:
            raise ArtifactError(f"{where}: two layers are titled {a!r}")
        if b.startswith(a + "/"):
            raise ArtifactError(f"{where}: layer {b!r} is inside layer {a!r} (a layer is one file, or one whole folder)")
    description = [layer for layer in found if layer.title == DESCRIPTION_FILE and not layer.archive]
    if config.get("mediaType") == CONFIG_MEDIA_TYPE and description and description[0].digest != config["digest"]:
        raise ArtifactError(f"{where}: the config blob differs from the {DESCRIPTION_FILE} layer; "
                            f"push {DESCRIPTION_FILE} itself as the config (`--config {DESCRIPTION_FILE}:{CONFIG_MEDIA_TYPE}`)")
    return tuple(found)
