"""Reading what is attached to a manifest as OCI 1.1 referrers (signatures, channel statements).

The registry is anything with :class:`AttachmentReader`'s methods (the OCI client is one). Each
referrer manifest is fetched by digest (so it is checked against it) and must name the manifest as
its ``subject``; its blob is read up to a size limit. At most ``MAX_REFERRERS`` are read, newest
first (by ``org.opencontainers.image.created``, then by their order in the referrers list): a
registry cannot make a device read an endless list.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any, Protocol

from edge.errors import RegistryNotFound

logger = logging.getLogger(__name__)

MAX_REFERRERS = 16
CREATED = "org.opencontainers.image.created"
_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


class AttachmentReader(Protocol):
    registry: str

    def get_manifest(self, repository: str, reference: str) -> tuple[dict[str, Any], str, bytes]: ...

    def fetch_blob(self, repository: str, digest: str, *, max_bytes: int = ...) -> bytes: ...

    def referrers(self, repository: str, digest: str, artifact_type: str | None = None) -> list[dict[str, Any]]: ...


def _newest_first(descriptors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def created(item: tuple[int, dict[str, Any]]) -> tuple[str, int]:
        annotations = item[1].get("annotations")
        stamp = annotations.get(CREATED) if isinstance(annotations, dict) else None
        return (stamp if isinstance(stamp, str) else "", item[0])

    return [d for _, d in sorted(enumerate(descriptors), key=created, reverse=True)]


def attached_blobs(client: AttachmentReader, repository: str, digest: str, artifact_type: str, media_type: str,
                   *, max_bytes: int) -> Iterator[tuple[str, bytes]]:
    """(referrer digest, blob) of each referrer of `digest` with `artifact_type`, newest first: the layer
    of `media_type`, or the only layer (``oras attach`` without a type writes a generic one)."""
    found = [d for d in client.referrers(repository, digest, artifact_type) if _DIGEST_RE.match(str(d.get("digest")))]
    for descriptor in _newest_first(found)[:MAX_REFERRERS]:
        referrer = descriptor["digest"]
        try:
            manifest, _, _ = client.get_manifest(repository, referrer)
        except RegistryNotFound:
            logger.info("%s: referrer %s of %s is listed but gone", repository, referrer, digest)
            continue
        subject = manifest.get("subject")
        if not isinstance(subject, dict) or subject.get("digest") != digest:
            logger.warning("%s: referrer %s does not name %s as its subject; ignoring it", repository, referrer, digest)
            continue
        layers = [layer for layer in manifest.get("layers") or [] if isinstance(layer, dict)]
        typed = [layer for layer in layers if layer.get("mediaType") == media_type]
        chosen = typed[0] if typed else layers[0] if len(layers) == 1 else None
        if chosen is None or not _DIGEST_RE.match(str(chosen.get("digest"))):
            continue
        if isinstance(chosen.get("size"), int) and chosen["size"] > max_bytes:
            logger.warning("%s: referrer %s holds %s bytes, over %d; ignoring it", repository, referrer,
                           chosen["size"], max_bytes)
            continue
        yield referrer, client.fetch_blob(repository, chosen["digest"], max_bytes=max_bytes)
