"""Pull one model version by digest: manifest, signature, config and layer, verified, unpacked into staging.

The registry is anything with :class:`RegistryReader`'s methods (the OCI client in
:mod:`edge.transport.oci` is one); this layer does not import the transport."""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PublicKey,
)

from edge.errors import ArtifactError, RegistryNotFound, SignatureError, UnsafeArtifact
from edge.models.artifact.format import (
    MAX_CONFIG_BYTES,
    SIGNATURE_ARTIFACT_TYPE,
    SIGNATURE_MEDIA_TYPE,
    check_config,
    check_model_manifest,
)
from edge.models.artifact.signing import key_id, signature_tag, verify_signature
from edge.models.artifact.tarsafe import safe_extract
from edge.util.ociref import Reference

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (bytes done, bytes total; total 0 = unknown)


class RegistryReader(Protocol):
    """What pulling needs from a registry client (:class:`edge.transport.oci.RegistryClient` has it)."""

    registry: str

    def resolve(self, ref: Reference) -> str: ...

    def get_manifest(self, repository: str, reference: str) -> tuple[dict[str, Any], str, bytes]: ...

    def fetch_blob(self, repository: str, digest: str, *, max_bytes: int = ...) -> bytes: ...

    def download_blob(self, repository: str, digest: str, dest: Path, progress: Progress | None = None,
                      *, expected_size: int | None = None) -> Path: ...


@dataclass(frozen=True)
class PulledModel:
    digest: str
    name: str
    version: int
    path: Path  # the extracted version folder, in staging (not yet in the model store)
    config: dict[str, Any]
    signed_by: str | None  # key id when the signature was verified


def fetch_signature(client: RegistryReader, repository: str, digest: str) -> dict[str, Any]:
    """The signature document stored under the digest's ``.sig`` tag (SignatureError when absent)."""
    tag = signature_tag(digest)
    try:
        manifest, _, _ = client.get_manifest(repository, tag)
    except RegistryNotFound:
        raise SignatureError(f"unsigned artifact: {client.registry}/{repository}@{digest} has no signature "
                             f"(tag {tag}); sign it with `edgectl model push --sign-key`") from None
    layers = manifest.get("layers") or []
    if manifest.get("artifactType") != SIGNATURE_ARTIFACT_TYPE or len(layers) != 1 \
            or layers[0].get("mediaType") != SIGNATURE_MEDIA_TYPE:
        raise SignatureError(f"{repository}:{tag} is not an edge model signature")
    try:
        doc = json.loads(client.fetch_blob(repository, layers[0]["digest"], max_bytes=64 << 10))
    except (ValueError, KeyError) as exc:
        raise SignatureError(f"{repository}:{tag}: unreadable signature document ({exc})") from None
    if not isinstance(doc, dict):
        raise SignatureError(f"{repository}:{tag}: the signature document is not a JSON object")
    return doc


def pull_model(client: RegistryReader, ref: Reference, staging_dir: Path, *,
               public_key: Ed25519PublicKey | None = None, max_bytes: int = 2 << 30,
               progress: Progress | None = None) -> PulledModel:
    """Download, verify and unpack one model version into ``staging_dir/<name>-<version>-*/``."""
    digest = ref.digest or client.resolve(ref)
    where = f"{ref.registry}/{ref.repository}@{digest}"
    manifest, digest, _ = client.get_manifest(ref.repository, digest)
    layer = check_model_manifest(manifest, where)
    signed_by = None
    if public_key is not None:
        verify_signature(public_key, digest, fetch_signature(client, ref.repository, digest))
        signed_by = key_id(public_key)
    try:
        config = json.loads(client.fetch_blob(ref.repository, manifest["config"]["digest"], max_bytes=MAX_CONFIG_BYTES))
    except ValueError as exc:
        raise ArtifactError(f"{where}: config blob is not JSON ({exc})") from None
    check_config(config, f"{where} config")
    if layer["size"] > max_bytes:
        raise UnsafeArtifact(f"{where}: layer is {layer['size']} bytes, over the {max_bytes}-byte limit")
    staging_dir = Path(staging_dir)
    staging_dir.mkdir(parents=True, exist_ok=True)
    archive = staging_dir / f".layer-{layer['digest'].split(':', 1)[1]}.tar.gz"  # stable name: resumable
    client.download_blob(ref.repository, layer["digest"], archive, progress, expected_size=layer["size"])
    dest = Path(tempfile.mkdtemp(prefix=f".{config['name']}-{config['version']}-", dir=staging_dir))
    try:
        safe_extract(archive, dest, max_bytes=max_bytes)
    finally:
        archive.unlink(missing_ok=True)
    if not ((dest / "saved_model.pb").is_file() or (dest / "model.tflite").is_file()):
        shutil.rmtree(dest, ignore_errors=True)
        raise ArtifactError(f"{where}: the layer holds no saved_model.pb or model.tflite (not a version folder)")
    logger.info("pulled %s (%s version %s) into %s%s", where, config["name"], config["version"], dest,
                f", signed by {signed_by}" if signed_by else "")
    return PulledModel(digest=digest, name=config["name"], version=config["version"], path=dest,
                       config=config, signed_by=signed_by)
