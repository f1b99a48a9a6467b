"""OCI references (``host[:port]/repository[:tag][@sha256:<hex>]``) and content digests.

Pure parsing, shared by the config schema (which validates `registry.ref`), the model artifact
format and the registry client. The registry host is always explicit: there is no Docker Hub
default on a device.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass

logger = logging.getLogger(__name__)


_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"


_REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")


_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


_HOST_RE = re.compile(r"^(?:localhost|\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]*[.][A-Za-z0-9.-]+|[A-Za-z0-9-]+(?=:))(?::[0-9]{1,5})?$")


def is_digest(value: str) -> bool:
    return bool(_DIGEST_RE.match(value))


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Reference:
    """``registry/repository[:tag][@digest]``; a digest wins over a tag when both are given."""

    registry: str  # "host:port"
    repository: str  # "models/classifier"
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, ref: str) -> Reference:
        text = ref.strip()
        if "://" in text:
            raise ValueError(f"reference {ref!r}: leave out the scheme (use host:port/repository:tag)")
        digest = None
        if "@" in text:
            text, digest = text.split("@", 1)
            if not is_digest(digest):
                raise ValueError(f"reference {ref!r}: digest must be sha256:<64 lowercase hex digits>, got {digest!r}")
        registry, sep, rest = text.partition("/")
        if not sep or not rest:
            raise ValueError(f"reference {ref!r}: expected host:port/repository[:tag] (e.g. 127.0.0.1:5000/models/classifier:stable)")
        if not _HOST_RE.match(registry):
            raise ValueError(f"reference {ref!r}: {registry!r} is not a registry host[:port]; "
                             "name the registry explicitly, e.g. registry.example.com/models/classifier:3")
        tag = None
        last = rest.rsplit("/", 1)[-1]
        if ":" in last:
            rest, tag = rest.rsplit(":", 1)
            if not _TAG_RE.match(tag):
                raise ValueError(f"reference {ref!r}: tag {tag!r} is invalid (letters, digits, '_', '.', '-'; at most 128)")
        if not _REPOSITORY_RE.match(rest):
            raise ValueError(f"reference {ref!r}: repository {rest!r} is invalid (lowercase letters, digits, "
                             "separators '.', '_', '-', components joined by '/')")
        return cls(registry=registry, repository=rest, tag=tag, digest=digest)

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when known, else the tag (default "latest")."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag=tag)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
