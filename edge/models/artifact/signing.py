"""ed25519 signatures over a manifest digest, and the key files they use."""
from __future__ import annotations

import base64
import hashlib
import logging
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from edge.errors import KeyFileError, SignatureError

logger = logging.getLogger(__name__)


def key_id(public_key: Ed25519PublicKey) -> str:
    """sha256 (hex) of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


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


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """An ed25519 private key from a PEM file that only its owner can read (mode 0600 or stricter)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"signing key {path}: cannot read it: {exc.strerror}") from None
    if mode & 0o077:
        raise KeyFileError(f"signing key {path} is readable by group/others (mode {stat.S_IMODE(mode):04o}); "
                           f"run `chmod 600 {path}`")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"signing key {path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"signing key {path}: not an ed25519 key (use `edgectl keys gen`)")
    return key


def load_public_key(path: Path | str) -> Ed25519PublicKey:
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise KeyFileError(f"public key {path}: cannot read it: {exc.strerror}") from None
    except ValueError as exc:
        raise KeyFileError(f"public key {path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"public key {path}: not an ed25519 key")
    return key
