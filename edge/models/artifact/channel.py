"""Channel statements: the publisher's signed, expiring word that a channel tag points at a digest.

TUF's timestamp role for one tag. ``edgectl model promote REPO VERSION --channel stable --lifetime
7d --sign-key K`` moves the tag and attaches, as an OCI referrer of the manifest (or index) the tag
now points at, a Sigstore bundle (the model-signing key and envelope, :mod:`.modelsig`) over::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "models/classifier:stable", "digest": {"sha256": "<hex of the tagged manifest>"}}],
     "predicateType": "https://edge.dev/model-channel/v1",
     "predicate": {"repository": "models/classifier", "channel": "stable", "version": 3,
                   "issued_at": "2026-12-01T12:00:00Z", "expires": "2026-12-08T12:00:00Z"}}

The referrer manifest has ``artifactType: application/vnd.edge.model.channel.v1`` and one layer,
the bundle. Running the same promote again before ``expires`` re-signs the channel (a newer
statement on the same digest). A device following the channel reads the newest statement that
verifies and names this repository, channel and digest; what it concludes (fresh, expired,
missing, older than one already seen) is :func:`edge.rollout.policy.judge_channel`.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from edge.errors import SignatureError, SignedDocumentError
from edge.models.artifact.modelsig import BUNDLE_MEDIA_TYPE, STATEMENT_TYPE, NotAModelSignature, open_dsse, sign_dsse
from edge.util.signed import parse_utc, utc_text

logger = logging.getLogger(__name__)

CHANNEL_ARTIFACT_TYPE = "application/vnd.edge.model.channel.v1"
CHANNEL_PREDICATE = "https://edge.dev/model-channel/v1"
CHANNEL_ANNOTATION = "dev.edge.model.channel"
EXPIRES_ANNOTATION = "dev.edge.model.channel.expires"


@dataclass(frozen=True)
class ChannelStatement:
    repository: str
    channel: str
    digest: str
    version: int | None
    issued_at: float
    expires: float
    key_hint: str

    def as_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "digest": self.digest, "version": self.version,
                "issued_at": utc_text(self.issued_at), "expires": utc_text(self.expires)}


def channel_payload(repository: str, channel: str, digest: str, version: int | None, issued_at: float,
                    expires: float) -> bytes:
    predicate: dict[str, Any] = {"repository": repository, "channel": channel, "issued_at": utc_text(issued_at),
                                 "expires": utc_text(expires)}
    if version is not None:
        predicate["version"] = version
    doc = {"_type": STATEMENT_TYPE,
           "subject": [{"name": f"{repository}:{channel}", "digest": {"sha256": digest.split(":", 1)[1]}}],
           "predicateType": CHANNEL_PREDICATE, "predicate": predicate}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def sign_channel(private_key: ec.EllipticCurvePrivateKey, repository: str, channel: str, digest: str,
                 version: int | None, lifetime_s: float, now: float | None = None) -> tuple[bytes, float]:
    """A bundle stating that `channel` points at `digest` until now + `lifetime_s`; (bundle, expires)."""
    issued = float(int(now if now is not None else time.time()))
    expires = issued + lifetime_s
    return sign_dsse(channel_payload(repository, channel, digest, version, issued, expires), private_key), expires


def referrer_manifest(bundle_digest: str, bundle_size: int, empty_digest: str, subject: dict[str, Any],
                      channel: str, expires: float, created: float) -> dict[str, Any]:
    """The referrer manifest that carries a channel statement (blobs pushed by the caller)."""
    return {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": CHANNEL_ARTIFACT_TYPE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest, "size": 2},
            "layers": [{"mediaType": BUNDLE_MEDIA_TYPE, "digest": bundle_digest, "size": bundle_size,
                        "annotations": {"org.opencontainers.image.title": f"{channel}.sigstore.json"}}],
            "subject": subject,
            "annotations": {"org.opencontainers.image.created": utc_text(created), CHANNEL_ANNOTATION: channel,
                            EXPIRES_ANNOTATION: utc_text(expires)}}


def read_statement(raw: bytes, public_key: ec.EllipticCurvePublicKey) -> ChannelStatement:
    """A verified channel statement; SignatureError (NotAModelSignature for other bundles) if not one."""
    envelope = open_dsse(raw, public_key)
    try:
        doc = json.loads(envelope.payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SignatureError("channel statement: not JSON") from None
    if not isinstance(doc, dict) or doc.get("predicateType") != CHANNEL_PREDICATE or doc.get("_type") != STATEMENT_TYPE:
        raise NotAModelSignature("not a channel statement")
    predicate, subjects = doc.get("predicate"), doc.get("subject")
    if not isinstance(predicate, dict) or not isinstance(subjects, list) or len(subjects) != 1 \
            or not isinstance(subjects[0], dict) or not isinstance(subjects[0].get("digest"), dict):
        raise SignatureError("channel statement: needs one subject and a predicate")
    try:
        issued, expires = parse_utc(predicate.get("issued_at"), "issued_at"), parse_utc(predicate.get("expires"), "expires")
    except SignedDocumentError as exc:
        raise SignatureError(f"channel statement: {exc}") from None
    version = predicate.get("version")
    return ChannelStatement(
        repository=str(predicate.get("repository")), channel=str(predicate.get("channel")),
        digest=f"sha256:{subjects[0]['digest'].get('sha256')}",
        version=version if isinstance(version, int) and not isinstance(version, bool) else None,
        issued_at=issued, expires=expires, key_hint=envelope.key_hint)


def newest_statement(bundles: Iterator[tuple[str, bytes]], public_key: ec.EllipticCurvePublicKey, repository: str,
                     channel: str, digest: str) -> tuple[ChannelStatement | None, list[str]]:
    """The newest statement among `bundles` ((referrer digest, bundle)) that verifies and names this
    repository, channel and digest, and why the others were skipped."""
    best: ChannelStatement | None = None
    skipped: list[str] = []
    for referrer, raw in bundles:
        try:
            found = read_statement(raw, public_key)
        except SignatureError as exc:
            skipped.append(f"{referrer[:19]}: {exc}")
            continue
        if (found.repository, found.channel, found.digest) != (repository, channel, digest):
            skipped.append(f"{referrer[:19]}: states {found.repository}:{found.channel} -> {found.digest[:19]}")
            continue
        if best is None or found.issued_at > best.issued_at:
            best = found
    return best, skipped
