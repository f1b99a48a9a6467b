"""Is a model manifest signed by the fleet's model key? Decided before anything big is downloaded.

- EC key (P-256/384/521): an OpenSSF model-signing bundle attached to the manifest as an OCI
  referrer (``artifactType: application/vnd.dev.sigstore.bundle.v0.3+json``, found through the
  referrers API or its ``sha256-<hex>`` tag). Bundles of other kinds (cosign message signatures,
  keyless) are skipped; the first that verifies wins. Its signed file list must match the layers:
  every plain-file layer's title and digest exactly, every signed file inside some layer. After
  unpacking, :func:`check_folder` checks the files themselves (nothing extra, nothing missing).
- ed25519 key (deprecated, :mod:`.legacy`): the ``.sig`` tag's signature over the manifest digest.
- no key: nothing is checked (a device without ``registry.public_key``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.errors import SignatureError
from edge.models.artifact.attached import AttachmentReader, attached_blobs
from edge.models.artifact.layout import Layout
from edge.models.artifact.legacy import fetch_signature, verify_signature
from edge.models.artifact.modelsig import (
    BUNDLE_MEDIA_TYPE,
    MAX_BUNDLE_BYTES,
    NotAModelSignature,
    compare_files,
    folder_digests,
    verify_bundle,
)
from edge.models.artifact.signing import ModelPublicKey, key_hint, key_id

logger = logging.getLogger(__name__)

MODEL_SIGNING = "model-signing"
LEGACY_ED25519 = "ed25519"


@dataclass(frozen=True)
class Verified:
    method: str | None  # "model-signing", "ed25519" (deprecated) or None (no key configured)
    signed_by: str | None  # the key's hint / id
    files: dict[str, str] | None = None  # model-signing: {path: sha256 hex} signed


def verify_manifest(client: AttachmentReader, repository: str, digest: str, layout: Layout,
                    public_key: ModelPublicKey | None, where: str) -> Verified:
    """Check the signature of the manifest `digest` (see the module docstring); SignatureError if bad."""
    if public_key is None:
        return Verified(None, None)
    if isinstance(public_key, Ed25519PublicKey):
        verify_signature(public_key, digest, fetch_signature(client, repository, digest))
        return Verified(LEGACY_ED25519, key_id(public_key))
    assert isinstance(public_key, EllipticCurvePublicKey)
    refused: list[str] = []
    skipped = 0
    for referrer, raw in attached_blobs(client, repository, digest, BUNDLE_MEDIA_TYPE, BUNDLE_MEDIA_TYPE,
                                        max_bytes=MAX_BUNDLE_BYTES):
        try:
            files = verify_bundle(raw, public_key)
        except NotAModelSignature as exc:
            skipped += 1
            logger.info("%s: referrer %s skipped: %s", where, referrer, exc)
            continue
        except SignatureError as exc:
            refused.append(str(exc))
            continue
        check_layers(files, layout, where)
        return Verified(MODEL_SIGNING, key_hint(public_key), files)
    if refused:
        raise SignatureError(f"{where}: {refused[0]}")
    others = f" ({skipped} other Sigstore bundle(s) skipped)" if skipped else ""
    raise SignatureError(f"unsigned artifact: {where} has no model-signing signature attached{others}; sign it with "
                         "`edgectl model push --sign-key` (or `model_signing sign key` and attach the bundle, "
                         "docs/model-lifecycle.md)")


def check_layers(signed: dict[str, str], layout: Layout, where: str) -> None:
    """The signed files against the layers, before downloading them (tampered or foreign layers)."""
    raw = layout.raw_files()
    compare_files({name: digest for name, digest in signed.items() if name in raw or not layout.covers(name)}, raw,
                  where)


def check_folder(verified: Verified, folder: Path, layout: Layout, where: str) -> None:
    """After unpacking: the files in `folder` are exactly what was signed. Files from plain-file layers
    were checked against their signed digest when downloaded; unpacked ones are hashed here."""
    if verified.files is None:
        return
    compare_files(verified.files, folder_digests(folder, known=layout.raw_files()), where)
