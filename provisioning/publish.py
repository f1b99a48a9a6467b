"""Publishing model versions: push a version folder (one titled layer per file), sign it (an OpenSSF
model-signing bundle attached as an OCI referrer), build a multi-platform index from variant folders,
move channel tags with signed, expiring channel statements. The format: :mod:`edge.models.artifact`.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.errors import UsageError
from edge.models.artifact.channel import referrer_manifest, sign_channel
from edge.models.artifact.format import (
    ACCELERATOR,
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    DESCRIPTION_FILE,
    EMPTY_DIGEST,
    EMPTY_MEDIA_TYPE,
    FILE_MEDIA_TYPE,
    OCI_INDEX,
    OCI_MANIFEST,
    TITLE,
    check_version_folder,
    version_members,
)
from edge.models.artifact.layout import check_model_manifest, is_index
from edge.models.artifact.legacy import sign_digest, signature_manifest, signature_tag
from edge.models.artifact.modelsig import BUNDLE_MEDIA_TYPE, MODEL_PREDICATE, sign_folder
from edge.models.artifact.signing import ModelPrivateKey
from edge.transport.oci import RegistryClient
from edge.util.ociref import Reference, sha256_digest
from edge.util.platforms import parse_platform

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class Pushed:
    digest: str  # what the tag points at (the index for several variants)
    signatures: list[str] = field(default_factory=list)  # referrer digests / .sig tags written
    manifests: list[str] = field(default_factory=list)  # the model manifests (one per variant)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _push_folder(client: RegistryClient, repository: str, folder: Path, progress: Progress | None) -> tuple[dict, dict]:
    """Blobs of one version folder; (manifest, config)."""
    config = check_version_folder(folder)
    files = [(rel, path) for rel, path in version_members(folder) if path.is_file()]
    total, done, layers = sum(p.stat().st_size for _, p in files), 0, []
    for rel, path in files:
        size = path.stat().st_size
        digest = client.push_blob(repository, path, None if progress is None else
                                  (lambda d, _t, base=done: progress(base + d, total)))
        layers.append({"mediaType": FILE_MEDIA_TYPE, "digest": digest, "size": size, "annotations": {TITLE: rel}})
        done += size
    description = next(layer for layer in layers if layer["annotations"][TITLE] == DESCRIPTION_FILE)
    annotations = {
        "org.opencontainers.image.created": config.get("created", ""),
        "org.opencontainers.image.source": config.get("source", ""),
        "org.opencontainers.image.version": str(config["version"]),
        "dev.edge.model.name": config["name"],
        "dev.edge.model.version": str(config["version"]),
        "dev.edge.model.input": json.dumps(config["input"], separators=(",", ":"), sort_keys=True),
    }
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
                "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": description["digest"], "size": description["size"]},
                "layers": layers, "annotations": annotations}
    check_model_manifest(manifest, f"{folder}")
    return manifest, config


def attach(client: RegistryClient, repository: str, subject: dict[str, Any], artifact_type: str, blob: bytes,
           blob_media_type: str, annotations: dict[str, str], title: str) -> str:
    """Attach `blob` to the manifest `subject` (a descriptor) as an OCI 1.1 referrer; its digest."""
    client.push_blob(repository, b"{}")
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
                "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": EMPTY_DIGEST, "size": 2},
                "layers": [{"mediaType": blob_media_type, "digest": client.push_blob(repository, blob), "size": len(blob),
                            "annotations": {TITLE: title}}],
                "subject": subject, "annotations": {"org.opencontainers.image.created": _now(), **annotations}}
    return client.push_referrer(repository, manifest)


def sign_manifest(client: RegistryClient, repository: str, folder: Path, subject: dict[str, Any],
                  key: ModelPrivateKey) -> str:
    """Sign a pushed version: model-signing bundle as a referrer (EC key), or the deprecated `.sig` tag."""
    if isinstance(key, Ed25519PrivateKey):
        doc = json.dumps(sign_digest(key, subject["digest"]), separators=(",", ":"), sort_keys=True).encode()
        client.push_blob(repository, b"{}")
        manifest = signature_manifest(client.push_blob(repository, doc), len(doc), EMPTY_DIGEST, subject)
        client.push_manifest(repository, signature_tag(subject["digest"]), manifest)
        return signature_tag(subject["digest"])
    assert isinstance(key, EllipticCurvePrivateKey)
    bundle, _ = sign_folder(folder, key)
    return attach(client, repository, subject, BUNDLE_MEDIA_TYPE, bundle, BUNDLE_MEDIA_TYPE,
                  {"dev.sigstore.bundle.content": "dsse-envelope", "dev.sigstore.bundle.predicateType": MODEL_PREDICATE},
                  f"{subject['digest'].replace(':', '-')}.sigstore.json")


def _index_entry(descriptor: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    variant = config.get("variant") or {}
    entry = {**descriptor, "artifactType": ARTIFACT_TYPE}
    if variant.get("platform"):
        entry["platform"] = parse_platform(variant["platform"]).as_dict()
    if variant.get("accelerator"):
        entry["annotations"] = {ACCELERATOR: variant["accelerator"]}
    return entry


def push_version(client: RegistryClient, ref: Reference, folder: Path, *, private_key: ModelPrivateKey | None = None,
                 progress: Progress | None = None) -> tuple[str, str | None]:
    """Push one packaged version folder under ``ref.tag`` (signed when a key is given); (digest, signature)."""
    pushed = publish(client, ref, [folder], keys=[private_key] if private_key is not None else [], progress=progress)
    return pushed.digest, (pushed.signatures or [None])[0]


def publish(client: RegistryClient, ref: Reference, folders: Sequence[Path], *, keys: Sequence[ModelPrivateKey] = (),
            progress: Progress | None = None) -> Pushed:
    """Push packaged version folder(s) under ``ref.tag``, signed with each of `keys`. Several folders (or
    one packaged with ``--variant``) become an image index of their variants."""
    folders = [Path(f) for f in folders]
    result = Pushed("")
    pushed: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for folder in folders:
        manifest, config = _push_folder(client, ref.repository, folder, progress)
        raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        single = len(folders) == 1 and not config.get("variant")
        digest = client.push_manifest_bytes(ref.repository, (ref.tag or str(config["version"])) if single
                                            else sha256_digest(raw), raw, OCI_MANIFEST)
        descriptor = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(raw)}
        result.manifests.append(digest)
        result.signatures += [sign_manifest(client, ref.repository, folder, descriptor, key) for key in keys]
        pushed.append((descriptor, config))
    if len(pushed) == 1 and not pushed[0][1].get("variant"):
        result.digest = result.manifests[0]
        return result
    _check_variants([config for _, config in pushed])
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": ARTIFACT_TYPE,
             "manifests": [_index_entry(d, c) for d, c in pushed],
             "annotations": {"org.opencontainers.image.created": _now(),
                             "org.opencontainers.image.version": str(pushed[0][1]["version"]),
                             "dev.edge.model.name": pushed[0][1]["name"],
                             "dev.edge.model.version": str(pushed[0][1]["version"])}}
    result.digest = client.push_manifest(ref.repository, ref.tag or str(pushed[0][1]["version"]), index)
    return result


def _check_variants(configs: list[dict[str, Any]]) -> None:
    names = {(c["name"], c["version"]) for c in configs}
    if len(names) != 1:
        raise UsageError(f"the folders are different models or versions: {sorted(names)}; variants share both")
    seen: set[tuple[Any, Any]] = set()
    for config in configs:
        variant = config.get("variant") or {}
        key = (variant.get("platform"), variant.get("accelerator"))
        if key in seen:
            raise UsageError(f"two folders are the same variant {key[0] or 'portable'}"
                             f"{' ' + key[1] if key[1] else ''}; package them with different --variant values")
        seen.add(key)


def promote(client: RegistryClient, ref: Reference, version: int, channel: str, *,
            lifetime_s: float | None = None, key: ModelPrivateKey | None = None) -> tuple[str, str | None]:
    """Point `channel` at version `version`; with `lifetime_s`, attach a channel statement signed by
    `key` that expires then. Returns (digest, statement referrer digest)."""
    doc, digest, raw = client.get_manifest(ref.repository, str(version))
    if is_index(doc):
        entries = doc.get("manifests") or []
        if not entries or any(e.get("artifactType") not in (ARTIFACT_TYPE, None) for e in entries):
            raise UsageError(f"{ref}:{version} is an index of something other than model variants")
    else:
        check_model_manifest(doc, f"{ref}:{version}")
    media_type = doc.get("mediaType") or (OCI_INDEX if is_index(doc) else OCI_MANIFEST)
    client.push_manifest_bytes(ref.repository, channel, raw, media_type)
    if lifetime_s is None:
        return digest, None
    if not isinstance(key, EllipticCurvePrivateKey):
        raise UsageError("--lifetime needs --sign-key with the EC (P-256) model-signing key")
    bundle, expires = sign_channel(key, ref.repository, channel, digest, version, lifetime_s)
    subject = {"mediaType": media_type, "digest": digest, "size": len(raw)}
    client.push_blob(ref.repository, b"{}")
    manifest = referrer_manifest(client.push_blob(ref.repository, bundle), len(bundle), EMPTY_DIGEST, subject,
                                 channel, expires, time.time())
    return digest, client.push_referrer(ref.repository, manifest)
