"""Password hashes for the local console: scrypt, stored as one line.

    scrypt$<N>$<r>$<p>$<salt, base64>$<hash, base64>

`hash_password` makes one (``edgectl console hash-password``); `parse_hash` checks a stored line
(the config schema uses it, so a mistyped hash is a config error, not a login that never works);
`verify_password` compares in constant time. One verification takes about 0.1 s of CPU at the
default cost (N = 2**14, r = 8, p = 1): callers run it off any event loop and rate-limit failures.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
from dataclasses import dataclass

logger = logging.getLogger(__name__)

SCHEME = "scrypt"
DEFAULT_N, DEFAULT_R, DEFAULT_P = 2**14, 8, 1
SALT_BYTES = 16
KEY_BYTES = 32
MAX_N = 2**20  # a hash asking for more would take seconds and a gigabyte per check
MAXMEM = 1100 * 1024 * 1024


@dataclass(frozen=True)
class PasswordHash:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    def line(self) -> str:
        b64 = base64.b64encode
        return f"{SCHEME}${self.n}${self.r}${self.p}${b64(self.salt).decode()}${b64(self.key).decode()}"


def _derive(password: str, n: int, r: int, p: int, salt: bytes, length: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=MAXMEM, dklen=length)


def hash_password(password: str, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> str:
    """A new stored line for `password` (random salt)."""
    if not password:
        raise ValueError("the password must not be empty")
    salt = os.urandom(SALT_BYTES)
    return PasswordHash(n, r, p, salt, _derive(password, n, r, p, salt, KEY_BYTES)).line()


def parse_hash(line: str) -> PasswordHash:
    """The parts of a stored line; ValueError naming what is wrong (never echoing the line)."""
    parts = line.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError("must be a line from `edgectl console hash-password` (scrypt$N$r$p$salt$hash)")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("scrypt parameters must be integers and salt/hash base64") from None
    if n < 2 or n > MAX_N or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError(f"scrypt cost out of range (N a power of two up to {MAX_N}, r 1-32, p 1-16)")
    if len(salt) < 8 or len(key) < 16:
        raise ValueError("salt or hash too short (at least 8 and 16 bytes)")
    return PasswordHash(n, r, p, salt, key)


def verify_password(password: str, stored: PasswordHash) -> bool:
    """True when `password` matches; constant-time comparison of the derived keys."""
    derived = _derive(password, stored.n, stored.r, stored.p, stored.salt, len(stored.key))
    return hmac.compare_digest(derived, stored.key)
