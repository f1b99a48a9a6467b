"""Pull one model version by digest: pick the variant, verify the signature, download, unpack into staging.

The registry is anything with :class:`RegistryReader`'s methods (the OCI client in
:mod:`edge.transport.oci` is one); this layer does not import the transport.

Order: manifest (or index -> the variant for this device) -> layout check -> signature (before
any layer is downloaded) -> size bound -> download and unpack (:mod:`.assemble`) -> the files
against the signed list -> the version's own description (``assets.extra/model.json``, signed)
names the model and version.
"""
from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edge.errors import ArtifactError
from edge.models.artifact.assemble import assemble, describe_variant
from edge.models.artifact.format import MAX_CONFIG_BYTES, check_config, read_description
from edge.models.artifact.layout import Layout, check_model_manifest, is_index
from edge.models.artifact.signing import ModelPublicKey
from edge.models.artifact.variants import pick_variant
from edge.models.artifact.verification import check_folder, verify_manifest
from edge.util.ociref import Reference
from edge.util.platforms import Platform, host_platform

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (bytes done, bytes total; total 0 = unknown)


class RegistryReader(Protocol):
    """What pulling needs from a registry client (:class:`edge.transport.oci.RegistryClient` has it)."""

    registry: str

    def resolve(self, ref: Reference) -> str: ...

    def get_manifest(self, repository: str, reference: str) -> tuple[dict[str, Any], str, bytes]: ...

    def fetch_blob(self, repository: str, digest: str, *, max_bytes: int = ...) -> bytes: ...

    def referrers(self, repository: str, digest: str, artifact_type: str | None = None) -> list[dict[str, Any]]: ...

    def download_blob(self, repository: str, digest: str, dest: Path, progress: Progress | None = None,
                      *, expected_size: int | None = None) -> Path: ...


@dataclass(frozen=True)
class Target:
    """What the device is: its platform and the accelerators it can serve, most preferred first."""

    platform: Platform
    accelerators: tuple[str, ...] = ()

    @classmethod
    def here(cls) -> Target:
        return cls(host_platform())


@dataclass(frozen=True)
class PulledModel:
    digest: str  # what the reference resolved to (a multi-platform version: the index)
    name: str
    version: int
    path: Path  # the version folder, in staging (not yet in the model store)
    config: dict[str, Any]  # its assets.extra/model.json
    signed_by: str | None  # the verifying key's hint when the signature was checked
    signature: str | None = None  # "model-signing", "ed25519" (deprecated) or None
    variant: dict[str, Any] | None = None  # {"manifest", "platform", "accelerator"} when picked from an index


def _legacy_config(client: RegistryReader, repository: str, layout: Layout, where: str) -> dict[str, Any]:
    """The config blob of an edge 0.2 artifact (its description travels there)."""
    try:
        config = json.loads(client.fetch_blob(repository, layout.config["digest"], max_bytes=MAX_CONFIG_BYTES))
    except ValueError as exc:
        raise ArtifactError(f"{where}: config blob is not JSON ({exc})") from None
    check_config(config, f"{where} config")
    return dict(config)


def _check_description(folder: Path, config: dict[str, Any] | None, variant: dict[str, Any] | None,
                       where: str) -> dict[str, Any]:
    if not ((folder / "saved_model.pb").is_file() or (folder / "model.tflite").is_file()):
        raise ArtifactError(f"{where}: the artifact holds no saved_model.pb or model.tflite (not a version folder)")
    try:
        description = read_description(folder)
    except ArtifactError as exc:
        raise ArtifactError(f"{where}: {exc}".replace(str(folder), "the version folder")) from None
    if config is not None and (config["name"], config["version"]) != (description["name"], description["version"]):
        raise ArtifactError(f"{where}: the config names {config['name']} version {config['version']}, the version's "
                            f"own model.json {description['name']} version {description['version']}")
    declared = description.get("variant")
    if variant is not None and isinstance(declared, dict) and declared.get("platform") \
            and declared.get("platform") != variant.get("platform"):
        raise ArtifactError(f"{where}: the index lists this manifest for {variant.get('platform')}, its own "
                            f"model.json says {declared.get('platform')}")
    return description


def pull_model(client: RegistryReader, ref: Reference, staging_dir: Path, *,
               public_key: ModelPublicKey | None = None, max_bytes: int = 2 << 30,
               progress: Progress | None = None, target: Target | None = None) -> PulledModel:
    """Download, verify and unpack one model version into a new dot-folder of ``staging_dir``."""
    digest = ref.digest or client.resolve(ref)
    where = f"{ref.registry}/{ref.repository}@{digest}"
    doc, digest, _ = client.get_manifest(ref.repository, digest)
    manifest_digest, variant = digest, None
    if is_index(doc):
        target = target or Target.here()
        choice = pick_variant(doc, target.platform, target.accelerators, where)
        variant = choice.describe()
        where += describe_variant(variant)
        doc, manifest_digest, _ = client.get_manifest(ref.repository, choice.descriptor["digest"])
        if is_index(doc):
            raise ArtifactError(f"{where}: an index inside an index; list model manifests only")
    layout = check_model_manifest(doc, where)
    verified = verify_manifest(client, ref.repository, manifest_digest, layout, public_key, where)
    config = _legacy_config(client, ref.repository, layout, where) if layout.legacy else None
    staging_dir = Path(staging_dir)
    dest = assemble(client, ref.repository, layout, staging_dir, max_bytes=max_bytes, where=where, progress=progress)
    try:
        check_folder(verified, dest, layout, where)
        description = _check_description(dest, config, variant, where)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    logger.info("pulled %s (%s version %s) into %s%s", where, description["name"], description["version"], dest,
                f", {verified.method} signature by {verified.signed_by}" if verified.signed_by else "")
    return PulledModel(digest=digest, name=description["name"], version=description["version"], path=dest,
                       config=description, signed_by=verified.signed_by, signature=verified.method, variant=variant)
