"""The `[console]` config section: the gateway's local web console (live view, status, /metrics).

Off by default. Bound to 127.0.0.1 unless `bind` says otherwise; any bind that is not loopback
must have TLS (`tls_cert` + `tls_key`) and authentication (`token` or `password_hash`), or the
config is refused. Kept out of :mod:`edge.config.schema` (which includes it as
``GatewayConfig.console``) so each module stays small; it imports nothing from it.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import stat
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.util.passwords import parse_hash

logger = logging.getLogger(__name__)

MIN_TOKEN_CHARS = 16
_TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII without spaces: it travels in a header


def is_loopback(bind: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"."""
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


def _readable_file(path: Path, key: str) -> None:
    try:
        ok = path.is_file() and os.access(path, os.R_OK)
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{key} {str(path)[:200]!r} is not a readable file")


class ConsoleConfig(BaseModel):
    """`[console]`: see docs/console.md."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    enabled: bool = False
    bind: str = "127.0.0.1"  # an IP address (0.0.0.0 / :: for every interface) or "localhost"
    port: int = Field(default=8080, ge=1, le=65535)
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key the console speaks HTTPS only
    tls_key: Path | None = None
    token: str | None = None  # `Authorization: Bearer <token>` (or as the password of HTTP Basic)
    password_hash: str | None = None  # HTTP Basic; the line `edgectl console hash-password` prints
    live_fps: float = Field(default=2.0, gt=0, le=10)  # live view: JPEG encodes per camera per second, at most
    max_connections: int = Field(default=64, ge=4, le=1024)  # beyond: 503 before anything is parsed
    request_timeout_s: float = Field(default=15.0, ge=1, le=300)  # idle/slow connections closed after this

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        if v != "localhost":
            try:
                ipaddress.ip_address(v)
            except ValueError:
                raise ValueError(f"must be an IP address (127.0.0.1, 0.0.0.0, ::, 192.0.2.5...) or "
                                 f"\"localhost\", got {v[:80]!r}") from None
        return v

    @field_validator("tls_cert", "tls_key")
    @classmethod
    def _path(cls, v: Path | None) -> Path | None:
        if v is not None and ("\x00" in str(v) or len(str(v)) > 4096):
            raise ValueError("must be a path without NUL characters, at most 4096 characters")
        return v

    @field_validator("token")
    @classmethod
    def _token(cls, v: str | None) -> str | None:  # never echo the value: it is a secret
        if v is not None and (len(v) < MIN_TOKEN_CHARS or len(v) > 512 or not _TOKEN_RE.match(v)):
            raise ValueError(f"must be {MIN_TOKEN_CHARS}-512 printable ASCII characters without spaces "
                             "(e.g. `openssl rand -hex 24`)")
        return v

    @field_validator("password_hash")
    @classmethod
    def _password_hash(cls, v: str | None) -> str | None:
        if v is not None:
            parse_hash(v)  # ValueError says what is wrong
        return v

    @model_validator(mode="after")
    def _exposure(self) -> ConsoleConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.token is not None and self.password_hash is not None:
            raise ValueError("give either token or password_hash, not both")
        if self.tls_cert is not None and self.tls_key is not None:
            _readable_file(self.tls_cert, "tls_cert")
            _readable_file(self.tls_key, "tls_key")
            mode = stat.S_IMODE(os.stat(self.tls_key).st_mode)
            if mode & 0o027:
                raise ValueError(f"tls_key {str(self.tls_key)!r} is readable or writable by others "
                                 f"(mode {mode:04o}); run `chmod 600 {self.tls_key}`")
        if self.enabled and not is_loopback(self.bind):
            missing = []
            if self.tls_cert is None:
                missing.append("tls_cert and tls_key (TLS)")
            if self.token is None and self.password_hash is None:
                missing.append("token or password_hash (authentication)")
            if missing:
                raise ValueError(f"bind {self.bind} is reachable from the network: set {' and '.join(missing)}, "
                                 "or bind to 127.0.0.1")
        return self
