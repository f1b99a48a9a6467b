"""Who may read the console: nobody checked (loopback without credentials), a token, or a password.

- **token**: ``Authorization: Bearer <token>``, or HTTP Basic with the token as the password (so a
  browser's own login prompt works; the user name is ignored). Compared in constant time.
- **password** (`password_hash`, scrypt): HTTP Basic, user name ignored. A check costs ~0.1 s of
  CPU, so it runs on the console's worker threads, one at a time; a header that passed is
  remembered (by its SHA-256) for :data:`REMEMBER_S`, so the page's polling costs nothing. After a
  wrong password further checks wait 1 s, doubling per failure up to 30 s (answered 429 with
  Retry-After meanwhile): guessing is slow and cannot keep a core busy.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from edge.util.passwords import PasswordHash, parse_hash, verify_password

logger = logging.getLogger(__name__)

REMEMBER_S = 600.0
REMEMBERED_MAX = 64
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0
REALM = "edge console"
VERIFY_WAIT_S = 2.0


@dataclass(frozen=True)
class Verdict:
    """ok, or the HTTP status to answer (401, 429) with a one-line reason and headers."""

    ok: bool
    status: int = 200
    reason: str = ""
    retry_after_s: int = 0

    @property
    def challenge(self) -> str:
        return f'Basic realm="{REALM}", charset="UTF-8"'


ALLOWED = Verdict(True)


class Authenticator:
    """Checks one request's Authorization header against the configured token or password hash."""

    def __init__(self, token: str | None = None, password_hash: str | None = None) -> None:
        self._token = hashlib.sha256(token.encode()).digest() if token is not None else None
        self._hash: PasswordHash | None = parse_hash(password_hash) if password_hash is not None else None
        self._remembered: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()
        self._verifying = threading.Lock()  # one scrypt at a time
        self._failures = 0
        self._blocked_until = 0.0
        self.refused = 0  # requests answered 401/429

    @property
    def required(self) -> bool:
        return self._token is not None or self._hash is not None

    @property
    def kind(self) -> str:
        return "token" if self._token is not None else "password" if self._hash is not None else "none"

    def check(self, authorization: str | None) -> Verdict:
        """The verdict for one request (may take ~0.1 s for an unknown password: not on an event loop)."""
        if not self.required:
            return ALLOWED
        verdict = self._check(authorization or "")
        if not verdict.ok:
            with self._lock:
                self.refused += 1
        return verdict

    def _check(self, header: str) -> Verdict:
        scheme, _, value = header.strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and self._token is not None:
            return ALLOWED if self._token_matches(value) else Verdict(False, 401, "wrong token")
        if scheme != "basic":
            what = "a Bearer token or HTTP Basic (token as password)" if self._token else "HTTP Basic (the password)"
            return Verdict(False, 401, f"authentication required: {what}")
        try:
            password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return Verdict(False, 401, "malformed Basic credentials")
        if self._token is not None:
            return ALLOWED if self._token_matches(password) else Verdict(False, 401, "wrong token")
        return self._check_password(header, password)

    def _token_matches(self, candidate: str) -> bool:
        assert self._token is not None
        return hmac.compare_digest(hashlib.sha256(candidate.encode()).digest(), self._token)

    def _remembered_ok(self, key: bytes) -> bool:
        with self._lock:
            seen = self._remembered.get(key)
            return seen is not None and time.monotonic() - seen < REMEMBER_S

    def _check_password(self, header: str, password: str) -> Verdict:
        assert self._hash is not None
        key = hashlib.sha256(header.encode()).digest()
        if self._remembered_ok(key):
            return ALLOWED
        # one check at a time; the page's parallel first requests wait for the first one's answer
        if not self._verifying.acquire(timeout=VERIFY_WAIT_S):
            return Verdict(False, 429, "password checks are busy; try again", 1)
        try:
            if self._remembered_ok(key):
                return ALLOWED
            wait = self._blocked_until - time.monotonic()
            if wait > 0:
                return Verdict(False, 429, "too many wrong passwords; try again later", int(wait) + 1)
            ok = verify_password(password, self._hash)
        finally:
            self._verifying.release()
        with self._lock:
            if ok:
                self._failures = 0
                self._remembered[key] = time.monotonic()
                self._remembered.move_to_end(key)
                while len(self._remembered) > REMEMBERED_MAX:
                    self._remembered.popitem(last=False)
                return ALLOWED
            self._failures += 1
            delay = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** (self._failures - 1))
            self._blocked_until = time.monotonic() + delay
        logger.warning("console: wrong password (%d in a row); next check in %.0f s", self._failures, delay)
        return Verdict(False, 401, "wrong password")
