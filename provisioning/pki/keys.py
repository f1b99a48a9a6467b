"""`edgectl keys gen`: an ed25519 signing key pair for model artifacts.

``signing.key`` (PKCS#8 PEM, mode 0600) stays with whoever publishes models; ``signing.pub``
(SubjectPublicKeyInfo PEM) goes to devices. The key id printed is sha256 of the raw public key
(hex), the ``key_id`` of signature documents (see edge/models/artifact.py).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.errors import KeyGenError
from edge.models.artifact.signing import key_id

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


def generate_keys(out: Path, *, force: bool = False, name: str = "signing") -> str:
    """Write ``<name>.key`` (0600) and ``<name>.pub`` (0644) into ``out`` (``signing.key`` and
    ``signing.pub`` by default); returns the key id."""
    out = Path(out)
    private_name, public_name = f"{name}.key", f"{name}.pub"
    for file_name in (private_name, public_name):
        if (out / file_name).exists() and not force:
            raise KeyGenError(f"{out / file_name} already exists; pass --force to replace the key pair")
    out.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    _write(out / private_name, private_pem, 0o600, force)
    _write(out / public_name, public_pem, 0o644, force)
    kid = key_id(key.public_key())
    logger.info("generated ed25519 key %s in %s", kid, out)
    return kid


def cmd_keys_gen(args: argparse.Namespace) -> int:
    try:
        kid = generate_keys(args.out, force=args.force)
    except KeyGenError as exc:
        print(f"edgectl: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"edgectl: cannot write keys to {args.out}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"key id {kid}")
    print(f"private key {args.out / PRIVATE_NAME} (keep it secret), public key {args.out / PUBLIC_NAME}",
          file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="signing keys for model artifacts")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="SUBCOMMAND")
    gen = keys_sub.add_parser("gen", help="generate an ed25519 key pair (signing.key 0600, signing.pub)")
    gen.add_argument("--out", type=Path, required=True, help="folder for signing.key and signing.pub")
    gen.add_argument("--force", action="store_true", help="replace an existing key pair")
    gen.set_defaults(handler=cmd_keys_gen)

    def show_help(args: argparse.Namespace) -> int:
        keys.print_help(sys.stderr)
        return 2

    keys.set_defaults(handler=show_help)
