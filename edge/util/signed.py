"""Signed documents: DSSE envelopes over canonical JSON, ed25519 keys.

A remote change that touches a device's trust anchors (see :mod:`edge.config.trust_keys`), an
explicit model rollback and a rotation of the fleet root key travel as a signed document, in the
shape of DSSE (the Dead Simple Signing Envelope of in-toto and Sigstore)::

    {"payloadType": "application/vnd.edge.trust.v1+json",
     "payload": "<base64 of the canonical JSON payload>",
     "signatures": [{"keyid": "<sha256 of the raw 32-byte public key, hex>", "sig": "<base64 ed25519>"}]}

Each signature is ed25519 over DSSE's pre-authentication encoding
``"DSSEv1" SP len(type) SP type SP len(payload) SP payload`` (lengths in ASCII decimal), so the
signed bytes are exactly the payload bytes; nothing is re-serialised before checking. The payload
(:func:`build_payload`) says what the document is and for whom::

    {"_type": "config-patch" | "rollback" | "root-rotation", "spec": 1,
     "target": "gate-01" | "gate-*" | "*", "counter": 42,
     "issued_at": "2026-12-01T12:00:00Z", "expires": "2026-12-02T12:00:00Z",
     "content": {...}}

This module is pure format and crypto; what a device accepts (its root key, the counters it has
seen, expiry) is :mod:`edge.util.trustroot`.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Sequence
from enum import Enum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.errors import SignedDocumentError

logger = logging.getLogger(__name__)

PAYLOAD_TYPE = "application/vnd.edge.trust.v1+json"
SPEC = 1
MAX_ENVELOPE_SIGNATURES = 8
MAX_PAYLOAD_BYTES = 48 * 1024  # a command payload is at most 64 KiB, base64 included


class DocType(str, Enum):
    """What a signed document authorises."""

    CONFIG_PATCH = "config-patch"  # a cmd/config merge patch that may touch trust anchors
    ROLLBACK = "rollback"  # installing one named older model version (version + digest)
    ROOT_ROTATION = "root-rotation"  # a new fleet root key, signed by the current one and by itself

    def __str__(self) -> str:
        return self.value


def key_id(public_key: Ed25519PublicKey) -> str:
    """sha256 (hex) of the raw 32-byte public key (the same id model signatures use)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def parse_public_key(pem: str | bytes, what: str = "public key") -> Ed25519PublicKey:
    """An ed25519 public key from PEM text; SignedDocumentError naming `what` otherwise."""
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SignedDocumentError(f"{what}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignedDocumentError(f"{what}: not an ed25519 key")
    return key


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes `edgectl trust sign` puts in a payload."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what each signature covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def utc_text(when: float) -> str:
    """RFC 3339 UTC time to the second, e.g. 2026-12-01T12:00:00Z."""
    return dt.datetime.fromtimestamp(int(when), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(text: Any, field: str) -> float:
    """Seconds since the epoch from an RFC 3339 time with a zone (Z or +hh:mm)."""
    if not isinstance(text, str) or len(text) > 40:
        raise SignedDocumentError(f"payload.{field}: must be an RFC 3339 time such as 2026-12-01T12:00:00Z")
    try:
        when = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise SignedDocumentError(f"payload.{field}: {text!r} is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise SignedDocumentError(f"payload.{field}: {text!r} has no time zone (add Z for UTC)")
    return when.timestamp()


def build_payload(doc_type: DocType, *, target: str, counter: int, issued_at: float, expires: float,
                  content: dict[str, Any]) -> dict[str, Any]:
    """The payload of one signed document (see the module docstring)."""
    return {"_type": doc_type.value, "spec": SPEC, "target": target, "counter": counter,
            "issued_at": utc_text(issued_at), "expires": utc_text(expires), "content": content}


def sign_envelope(payload: dict[str, Any], keys: Sequence[Ed25519PrivateKey]) -> dict[str, Any]:
    """A DSSE envelope of `payload` (canonical JSON) signed by each of `keys`."""
    body = canonical_json(payload)
    message = pae(PAYLOAD_TYPE, body)
    return {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(body).decode("ascii"),
            "signatures": [{"keyid": key_id(k.public_key()),
                            "sig": base64.b64encode(k.sign(message)).decode("ascii")} for k in keys]}


def _b64(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise SignedDocumentError(f"{field}: must be a base64 string")
    text = value.strip()
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SignedDocumentError(f"{field}: not valid base64") from None


def open_envelope(envelope: Any) -> tuple[bytes, list[tuple[str, bytes]]]:
    """(payload bytes, [(keyid, signature)]) of a well-formed envelope; nothing is verified yet."""
    if not isinstance(envelope, dict):
        raise SignedDocumentError("signed: must be a DSSE envelope object {payloadType, payload, signatures}")
    unknown = sorted(set(envelope) - {"payloadType", "payload", "signatures"})
    if unknown:
        raise SignedDocumentError(f"signed: unknown key(s) {unknown} in the envelope")
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise SignedDocumentError(f"signed.payloadType: must be {PAYLOAD_TYPE!r}, got "
                                  f"{str(envelope.get('payloadType'))[:80]!r}")
    payload = _b64(envelope.get("payload"), "signed.payload")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise SignedDocumentError(f"signed.payload: {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES}")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not 1 <= len(signatures) <= MAX_ENVELOPE_SIGNATURES:
        raise SignedDocumentError(f"signed.signatures: must be a list of 1 to {MAX_ENVELOPE_SIGNATURES} "
                                  "{keyid, sig} objects")
    out: list[tuple[str, bytes]] = []
    for i, entry in enumerate(signatures):
        if not isinstance(entry, dict) or not isinstance(entry.get("keyid"), str):
            raise SignedDocumentError(f"signed.signatures[{i}]: must be an object with keyid and sig")
        out.append((entry["keyid"], _b64(entry.get("sig"), f"signed.signatures[{i}].sig")))
    return payload, out


def verify_signature(payload: bytes, signatures: Sequence[tuple[str, bytes]], public_key: Ed25519PublicKey,
                     role: str) -> str:
    """The key id when one of `signatures` is a valid signature of `payload` by `public_key`.

    `role` names the key in the message ("the fleet root key (version 2)", "the new root key")."""
    wanted = key_id(public_key)
    message = pae(PAYLOAD_TYPE, payload)
    for kid, sig in signatures:
        if kid != wanted:
            continue
        try:
            public_key.verify(sig, message)
        except InvalidSignature:
            raise SignedDocumentError(f"the signature by {role} {wanted[:16]} is invalid "
                                      "(the document was altered after signing)") from None
        return wanted
    made_by = ", ".join(kid[:16] for kid, _ in signatures) or "nobody"
    raise SignedDocumentError(f"not signed by {role} {wanted[:16]} (signed by: {made_by}); sign it with "
                              "`edgectl trust sign ... --key <the current fleet root key>`")


def decode_payload(payload: bytes) -> dict[str, Any]:
    """The payload's JSON object (after its signature was checked)."""
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SignedDocumentError(f"payload: not valid JSON ({str(exc)[:100]})") from None
    if not isinstance(doc, dict):
        raise SignedDocumentError("payload: must be a JSON object")
    return doc
