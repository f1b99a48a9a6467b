"""Key files: the model-signing key (EC P-256/384/521, as OpenSSF model-signing uses), the deprecated
ed25519 model key, and the ed25519 keys of the fleet root (:mod:`edge.util.signed`).

Private keys are PEM files only their owner can read (mode 0600 or stricter); public keys are PEM
SubjectPublicKeyInfo. A model key is named by its *hint*: sha256 (hex) of its PEM public key, the
``verificationMaterial.publicKey.hint`` of a model-signing bundle."""
from __future__ import annotations

import hashlib
import logging
import stat
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from edge.errors import KeyFileError

logger = logging.getLogger(__name__)

ModelPrivateKey = EllipticCurvePrivateKey | Ed25519PrivateKey
ModelPublicKey = EllipticCurvePublicKey | Ed25519PublicKey
EC_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what model-signing signs with
MODEL_KEY_FIX = "generate one with `edgectl keys gen` (EC P-256)"


def key_id(public_key: Ed25519PublicKey) -> str:
    """sha256 (hex) of the raw 32-byte ed25519 public key (fleet root and deprecated model signatures)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_pem(public_key: ModelPublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_hint(public_key: ModelPublicKey) -> str:
    """sha256 (hex) of the PEM public key: model-signing's key hint (ed25519 keys: their key id)."""
    if isinstance(public_key, Ed25519PublicKey):
        return key_id(public_key)
    return hashlib.sha256(public_pem(public_key)).hexdigest()


def _read_private(path: Path, what: str) -> Any:
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{what} {path}: cannot read it: {exc.strerror}") from None
    if mode & 0o077:
        raise KeyFileError(f"{what} {path} is readable by group/others (mode {stat.S_IMODE(mode):04o}); "
                           f"run `chmod 600 {path}`")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{what} {path}: not an unencrypted PEM private key ({exc})") from None


def _read_public(path: Path) -> Any:
    try:
        return serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise KeyFileError(f"public key {path}: cannot read it: {exc.strerror}") from None
    except ValueError as exc:
        raise KeyFileError(f"public key {path}: not a PEM public key ({exc})") from None


def _check_model_key(key: Any, path: Path, what: str) -> None:
    if isinstance(key, (EllipticCurvePrivateKey, EllipticCurvePublicKey)):
        if key.curve.name not in EC_CURVES:
            raise KeyFileError(f"{what} {path}: EC curve {key.curve.name} is not one model-signing uses "
                               f"(P-256, P-384, P-521); {MODEL_KEY_FIX}")
    elif not isinstance(key, (Ed25519PrivateKey, Ed25519PublicKey)):
        raise KeyFileError(f"{what} {path}: a {type(key).__name__.lstrip('_')}, not an EC (P-256) key; {MODEL_KEY_FIX}")


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """An ed25519 private key (the fleet root key) from a PEM file only its owner can read."""
    path = Path(path)
    key = _read_private(path, "signing key")
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"signing key {path}: not an ed25519 key (use `edgectl trust init`)")
    return key


def load_public_key(path: Path | str) -> Ed25519PublicKey:
    """An ed25519 public key (the fleet root) from a PEM file."""
    path = Path(path)
    key = _read_public(path)
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"public key {path}: not an ed25519 key")
    return key


def load_model_private_key(path: Path | str) -> ModelPrivateKey:
    """A model-signing private key: EC P-256/384/521, or ed25519 (the deprecated format)."""
    path = Path(path)
    key = _read_private(path, "model signing key")
    _check_model_key(key, path, "model signing key")
    return key  # type: ignore[no-any-return]


def load_model_public_key(path: Path | str) -> ModelPublicKey:
    """The public key devices verify model versions with: EC P-256/384/521, or ed25519 (deprecated)."""
    path = Path(path)
    key = _read_public(path)
    _check_model_key(key, path, "public key")
    return key  # type: ignore[no-any-return]
