"""`edgectl keys gen`: the model-signing key pair (EC P-256, as OpenSSF model-signing uses).

``signing.key`` (PKCS#8 PEM, mode 0600) stays with whoever publishes models; ``signing.pub``
(SubjectPublicKeyInfo PEM) goes to devices (``registry.public_key``). The key id printed is the
model-signing key hint: sha256 of the PEM public key (hex). The same files work with the
``model_signing`` CLI (``model_signing sign key DIR --private_key signing.key``). The fleet root
(``edgectl trust init``) is an ed25519 key made here too.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.errors import KeyGenError
from edge.models.artifact.signing import key_hint

logger = logging.getLogger(__name__)

PRIVATE_NAME = "signing.key"
PUBLIC_NAME = "signing.pub"



def _write(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Create ``path`` with ``mode`` from the start (never briefly world-readable)."""
    if force:
        path.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyGenError(f"{path} already exists; pass --force to replace the key pair") from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)  # the umask may have narrowed it; this makes it exact
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def generate_keys(out: Path, *, force: bool = False, name: str = "signing", algorithm: str = "p256") -> str:
    """Write ``<name>.key`` (0600) and ``<name>.pub`` (0644) into ``out`` (``signing.key`` and
    ``signing.pub`` by default): an EC P-256 model-signing key, or an ed25519 one (the fleet root);
    returns the key id (model-signing's key hint; for ed25519, sha256 of the raw key)."""
    out = Path(out)
    private_name, public_name = f"{name}.key", f"{name}.pub"
    for file_name in (private_name, public_name):
        if (out / file_name).exists() and not force:
            raise KeyGenError(f"{out / file_name} already exists; pass --force to replace the key pair")
    out.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate() if algorithm == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    _write(out / private_name, private_pem, 0o600, force)
    _write(out / public_name, public_pem, 0o644, force)
    kid = key_hint(key.public_key())
    logger.info("generated %s key %s in %s", algorithm, kid, out)
    return kid


def cmd_keys_gen(args: argparse.Namespace) -> int:
    kid = generate_keys(args.out, force=args.force)
    print(f"key id {kid}")
    print(f"private key {args.out / PRIVATE_NAME} (keep it secret), public key {args.out / PUBLIC_NAME}",
          file=sys.stderr)
    return 0
