"""OpenSSF model-signing bundles (key mode), signed and verified with `cryptography` alone.

The `model_signing` package (PyPI ``model-signing``; ~70 MB with sigstore) writes, for
``model_signing sign key MODEL_DIR --private_key K``, a Sigstore bundle v0.3::

    {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
     "verificationMaterial": {"publicKey": {"hint": "<sha256 hex of the PEM public key>"}, "tlogEntries": []},
     "dsseEnvelope": {"payloadType": "application/vnd.in-toto+json", "payload": "<base64 statement>",
                      "signatures": [{"sig": "<base64 DER ECDSA over the DSSE PAE>", "keyid": ""}]}}

whose in-toto statement lists every file of the folder with its sha256::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "<folder name>", "digest": {"sha256": "<sha256 of the concatenated file digests>"}}],
     "predicateType": "https://model_signing/signature/v1.0",
     "predicate": {"serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": false,
                                     "ignore_paths": [".git", ...]},
                   "resources": [{"name": "variables/variables.index", "algorithm": "sha256", "digest": "<hex>"}, ...]}}

ECDSA uses SHA-256/384/512 for P-256/384/521. This module makes and checks exactly that (the tests
prove it against the real `model_signing` API and CLI), so devices need no sigstore stack.

Stricter than `model_signing verify`: the signed ``ignore_paths`` are not honoured; the caller
compares the signed file list with the artifact's files exactly (nothing extra, nothing missing).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from edge.errors import ArtifactError, SignatureError
from edge.models.artifact.signing import key_hint
from edge.util.signed import pae

logger = logging.getLogger(__name__)

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_MEDIA_TYPES = (BUNDLE_MEDIA_TYPE, "application/vnd.dev.sigstore.bundle+json;version=0.3")
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
MODEL_PREDICATE = "https://model_signing/signature/v1.0"
IGNORED_BY_DEFAULT = (".git", ".github", ".gitignore", ".gitattributes")  # what model_signing writes
MAX_BUNDLE_BYTES = 4 << 20
MAX_RESOURCES = 10_000


class NotAModelSignature(SignatureError):
    """A Sigstore bundle that signs something else (a cosign message signature, another predicate):
    skipped when looking for a model signature, never an error by itself."""


@dataclass(frozen=True)
class Envelope:
    """A verified DSSE envelope: its payload, and the hint of the key that signed it."""

    payload: bytes
    key_hint: str


def _hash_for(public_key: ec.EllipticCurvePublicKey) -> ec.ECDSA:
    """ECDSA with the hash model-signing pairs with the curve: SHA-256/384/512 for P-256/384/521."""
    size = public_key.curve.key_size
    return ec.ECDSA(hashes.SHA256() if size <= 256 else hashes.SHA384() if size <= 384 else hashes.SHA512())


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def sign_dsse(payload: bytes, private_key: ec.EllipticCurvePrivateKey, payload_type: str = INTOTO_PAYLOAD_TYPE) -> bytes:
    """A Sigstore bundle v0.3 holding a DSSE envelope of ``payload`` signed with ``private_key``."""
    public_key = private_key.public_key()
    signature = private_key.sign(pae(payload_type, payload), _hash_for(public_key))
    bundle = {"mediaType": BUNDLE_MEDIA_TYPE,
              "verificationMaterial": {"publicKey": {"hint": key_hint(public_key)}, "tlogEntries": []},
              "dsseEnvelope": {"payload": base64.b64encode(payload).decode("ascii"), "payloadType": payload_type,
                               "signatures": [{"sig": base64.b64encode(signature).decode("ascii"), "keyid": ""}]}}
    return json.dumps(bundle, separators=(",", ":")).encode()


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureError(f"bundle: {what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"bundle: {what} is not valid base64") from None


def open_dsse(raw: bytes, public_key: ec.EllipticCurvePublicKey, payload_type: str = INTOTO_PAYLOAD_TYPE) -> Envelope:
    """Check a Sigstore bundle's DSSE signature with ``public_key``; the signed payload.

    NotAModelSignature for bundles of another kind (message signatures, certificates/keyless),
    SignatureError for a bundle made with another key or not matching its signature."""
    try:
        bundle = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotAModelSignature(f"bundle: not JSON ({exc})") from None
    if not isinstance(bundle, dict) or bundle.get("mediaType") not in BUNDLE_MEDIA_TYPES:
        media_type = bundle.get("mediaType") if isinstance(bundle, dict) else None
        raise NotAModelSignature(f"bundle: mediaType {str(media_type)[:80]!r} is not a Sigstore bundle v0.3")
    envelope = bundle.get("dsseEnvelope")
    if not isinstance(envelope, dict):
        raise NotAModelSignature("bundle: no DSSE envelope (a message signature, e.g. from cosign)")
    material = _obj(bundle.get("verificationMaterial"))
    if not isinstance(material.get("publicKey"), dict):
        raise NotAModelSignature("bundle: signed with a certificate (keyless Sigstore), not a key; "
                                 "sign with `model_signing sign key` or `edgectl model push --sign-key`")
    expected = key_hint(public_key)
    hint = material["publicKey"].get("hint")
    if hint and hint != expected:
        raise SignatureError(f"bundle: signed with another key (hint {str(hint)[:64]}), not the configured key {expected}")
    if envelope.get("payloadType") != payload_type:
        raise NotAModelSignature(f"bundle: payloadType {str(envelope.get('payloadType'))[:80]!r}, "
                                 f"expected {payload_type!r}")
    payload = _b64(envelope.get("payload"), "dsseEnvelope.payload")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures or len(signatures) > 8:
        raise SignatureError("bundle: dsseEnvelope.signatures must list 1 to 8 signatures")
    signed = pae(payload_type, payload)
    for entry in signatures:
        signature = _b64(entry.get("sig") if isinstance(entry, dict) else None, "dsseEnvelope.signatures[].sig")
        try:
            public_key.verify(signature, signed, _hash_for(public_key))
            return Envelope(payload, expected)
        except InvalidSignature:
            continue
    raise SignatureError("bundle: the signature does not verify with the configured key "
                         "(the signed content or the signature was tampered with, or another key signed it)")


# --- model folders ---------------------------------------------------------------------------------

def safe_relpath(name: Any, what: str) -> str:
    """A relative, '/'-separated path without '..', '.', empty parts, backslashes or NUL; else ArtifactError."""
    if not isinstance(name, str) or not name or len(name) > 1024:
        raise ArtifactError(f"{what}: {str(name)[:80]!r} is not a file path (1-1024 characters)")
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in name or "\x00" in name:
        raise ArtifactError(f"{what}: {name[:80]!r} must be a relative path inside the version folder "
                            "(no '/' at the start, no '..', '.', '//', backslash or NUL)")
    if len(parts) > 32:
        raise ArtifactError(f"{what}: {name[:60]!r}... is {len(parts)} folders deep (limit 32)")
    return name


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_digests(root: Path, known: dict[str, str] | None = None) -> dict[str, str]:
    """{relative path: sha256 hex} of every file under ``root`` (files in `known` are not hashed again,
    their digest was checked when they were written); links and special files are refused."""
    known = known or {}
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames) + sorted(filenames):
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            rel = path.relative_to(root).as_posix()
            if stat.S_ISREG(mode):
                found[rel] = known[rel] if rel in known else _file_sha256(path)
            elif not stat.S_ISDIR(mode):
                raise ArtifactError(f"{root}: {rel} is a link or special file; a model folder holds regular files only")
    return found


def statement(files: dict[str, str], name: str) -> bytes:
    """The in-toto statement model_signing writes for ``files`` ({path: sha256 hex}), as compact JSON."""
    ordered = sorted(files.items(), key=lambda item: PurePosixPath(item[0]))
    root = hashlib.sha256(b"".join(bytes.fromhex(digest) for _, digest in ordered)).hexdigest()
    doc = {"_type": STATEMENT_TYPE, "subject": [{"name": name, "digest": {"sha256": root}}],
           "predicateType": MODEL_PREDICATE,
           "predicate": {"serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False,
                                           "ignore_paths": list(IGNORED_BY_DEFAULT)},
                         "resources": [{"name": n, "algorithm": "sha256", "digest": d} for n, d in ordered]}}
    return json.dumps(doc, separators=(",", ":")).encode()


def sign_folder(root: Path, private_key: ec.EllipticCurvePrivateKey) -> tuple[bytes, dict[str, str]]:
    """A model-signing bundle over every file of ``root``, and the {path: sha256 hex} it signs."""
    files = folder_digests(root)
    if not files:
        raise ArtifactError(f"{root}: nothing to sign (no files)")
    return sign_dsse(statement(files, Path(root).name), private_key), files


def verify_bundle(raw: bytes, public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The {path: sha256 hex} a model-signing bundle signs, after checking it with ``public_key``."""
    envelope = open_dsse(raw, public_key)
    try:
        doc = json.loads(envelope.payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SignatureError("bundle: the signed statement is not JSON") from None
    if not isinstance(doc, dict) or doc.get("_type") != STATEMENT_TYPE:
        raise NotAModelSignature("bundle: the payload is not an in-toto v1 statement")
    if doc.get("predicateType") != MODEL_PREDICATE:
        raise NotAModelSignature(f"bundle: predicateType {str(doc.get('predicateType'))[:80]!r} is not a model signature")
    predicate = _obj(doc.get("predicate"))
    serialization = _obj(predicate.get("serialization"))
    if serialization.get("method") != "files" or serialization.get("hash_type") != "sha256" \
            or serialization.get("allow_symlinks", False) is not False:
        raise SignatureError(f"bundle: serialization {json.dumps(serialization)[:160]} is not supported; sign per "
                             "file with sha256 (model_signing's default) and without --allow_symlinks")
    resources = predicate.get("resources")
    if not isinstance(resources, list) or not resources or len(resources) > MAX_RESOURCES:
        raise SignatureError(f"bundle: the statement must list 1 to {MAX_RESOURCES} files")
    files: dict[str, str] = {}
    for entry in resources:
        if not isinstance(entry, dict) or entry.get("algorithm") != "sha256" \
                or not isinstance(entry.get("digest"), str) or len(entry["digest"]) != 64:
            raise SignatureError(f"bundle: resource {str(entry)[:120]} is not {{name, algorithm: sha256, digest}}")
        try:
            bytes.fromhex(entry["digest"])
        except ValueError:
            raise SignatureError(f"bundle: resource digest {entry['digest'][:64]!r} is not hex") from None
        name = safe_relpath(entry.get("name"), "bundle resource")
        if name in files:
            raise SignatureError(f"bundle: {name!r} is listed twice")
        files[name] = entry["digest"].lower()
    root = hashlib.sha256(b"".join(bytes.fromhex(d) for d in (r["digest"] for r in resources))).hexdigest()
    subjects = doc.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict) \
            or _obj(subjects[0].get("digest")).get("sha256") != root:
        raise SignatureError("bundle: the statement's subject digest does not match its file list")
    return files


def compare_files(signed: dict[str, str], actual: dict[str, str], where: str) -> None:
    """SignatureError unless ``actual`` ({path: sha256 hex}) is exactly what was signed."""
    extra = sorted(set(actual) - set(signed))
    missing = sorted(set(signed) - set(actual))
    changed = sorted(name for name in set(actual) & set(signed) if actual[name] != signed[name])
    if extra or missing or changed:
        parts = [f"{label} {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
                 for label, names in (("changed:", changed), ("not signed:", extra), ("missing:", missing)) if names]
        raise SignatureError(f"{where}: files differ from what was signed (tampered?): {'; '.join(parts)}")
