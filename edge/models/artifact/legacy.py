"""The deprecated signature format (edge 0.2): ed25519 over the manifest digest, under the ``.sig`` tag.

Kept for one release so fleets can move to OpenSSF model-signing bundles (:mod:`.modelsig`) without
a gap: a device whose ``registry.public_key`` is an ed25519 key verifies this format (and logs a
deprecation warning); ``edgectl model push --sign-key`` with an ed25519 key still writes it.

The document, stored as the single layer (``application/vnd.edge.model.signature.v1+json``) of an
OCI manifest with ``artifactType: application/vnd.edge.model.signature.v1`` under the tag
``sha256-<hex>.sig``::

    {"digest": "sha256:...", "algorithm": "ed25519",
     "key_id": "<sha256 of the raw 32-byte public key, hex>", "signature": "<base64>"}

cosign uses the same tag name for its own signatures; anything under it that is not this format is
ignored here (the version then counts as unsigned for this format)."""
from __future__ import annotations

import base64
import json
import logging
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.errors import RegistryNotFound, SignatureError
from edge.models.artifact.signing import key_id
from edge.util.ociref import is_digest

logger = logging.getLogger(__name__)

SIGNATURE_ARTIFACT_TYPE = "application/vnd.edge.model.signature.v1"
SIGNATURE_MEDIA_TYPE = "application/vnd.edge.model.signature.v1+json"
MAX_SIGNATURE_BYTES = 64 << 10
DEPRECATION = ("ed25519 model signatures (`.sig` tags) are deprecated and will not be verified after edge 0.3; "
               "sign with an EC P-256 key (`edgectl keys gen`, OpenSSF model-signing) and set registry.public_key "
               "to its .pub (docs/model-lifecycle.md, Migration)")


class _Reader(Protocol):
    registry: str

    def get_manifest(self, repository: str, reference: str) -> tuple[dict[str, Any], str, bytes]: ...

    def fetch_blob(self, repository: str, digest: str, *, max_bytes: int = ...) -> bytes: ...


def signature_tag(digest: str) -> str:
    """``sha256:<hex>`` -> ``sha256-<hex>.sig``."""
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}-{hexdigest}.sig"


def sign_digest(private_key: Ed25519PrivateKey, digest: str) -> dict[str, Any]:
    signature = private_key.sign(digest.encode("ascii"))
    return {"digest": digest, "algorithm": "ed25519", "key_id": key_id(private_key.public_key()),
            "signature": base64.b64encode(signature).decode("ascii")}


def verify_signature(public_key: Ed25519PublicKey, digest: str, doc: dict[str, Any]) -> None:
    """Raise SignatureError unless ``doc`` is a valid signature of ``digest`` by ``public_key``."""
    if not isinstance(doc, dict) or doc.get("algorithm") != "ed25519":
        raise SignatureError(f"signature of {digest}: not an ed25519 signature document")
    if doc.get("digest") != digest:
        raise SignatureError(f"signature of {digest}: it signs {doc.get('digest')!r}, another artifact")
    expected = key_id(public_key)
    if doc.get("key_id") != expected:
        raise SignatureError(f"signature of {digest}: made with key {doc.get('key_id')!r}, "
                             f"not the configured key {expected}")
    try:
        public_key.verify(base64.b64decode(doc.get("signature", ""), validate=True), digest.encode("ascii"))
    except (InvalidSignature, ValueError, TypeError):
        raise SignatureError(f"signature of {digest}: invalid (content or signature was tampered with)") from None


def signature_manifest(doc_digest: str, doc_size: int, empty_digest: str, subject: dict[str, Any]) -> dict[str, Any]:
    """The OCI manifest stored under the ``.sig`` tag (blobs pushed by the caller)."""
    return {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": SIGNATURE_ARTIFACT_TYPE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest, "size": 2},
            "layers": [{"mediaType": SIGNATURE_MEDIA_TYPE, "digest": doc_digest, "size": doc_size}],
            "subject": subject}


def fetch_signature(client: _Reader, repository: str, digest: str) -> dict[str, Any]:
    """The signature document under the digest's ``.sig`` tag (SignatureError when there is none)."""
    tag = signature_tag(digest)
    fix = ("sign it with `edgectl model push --sign-key`, or move this device to model-signing "
           "(docs/model-lifecycle.md, Migration)")
    try:
        manifest, _, _ = client.get_manifest(repository, tag)
    except RegistryNotFound:
        raise SignatureError(f"unsigned artifact: {client.registry}/{repository}@{digest} has no ed25519 "
                             f"signature (tag {tag}); {fix}") from None
    layers = manifest.get("layers") or []
    if manifest.get("artifactType") != SIGNATURE_ARTIFACT_TYPE or not isinstance(layers, list) \
            or len(layers) != 1 or not isinstance(layers[0], dict) or layers[0].get("mediaType") != SIGNATURE_MEDIA_TYPE:
        raise SignatureError(f"unsigned artifact: {repository}:{tag} holds another kind of signature "
                             f"(cosign?), not an edge ed25519 signature; {fix}")
    digest_of_doc = layers[0].get("digest")
    if not isinstance(digest_of_doc, str) or not is_digest(digest_of_doc):
        raise SignatureError(f"{repository}:{tag}: the signature layer has no valid digest")
    try:
        doc = json.loads(client.fetch_blob(repository, digest_of_doc, max_bytes=MAX_SIGNATURE_BYTES))
    except ValueError as exc:
        raise SignatureError(f"{repository}:{tag}: unreadable signature document ({exc})") from None
    if not isinstance(doc, dict):
        raise SignatureError(f"{repository}:{tag}: the signature document is not a JSON object")
    return doc
