"""The device's fleet root of trust: which key signs documents for it, and which counters it has seen.

The fleet root is an ed25519 key pair made offline (``edgectl trust init``); its public half is
installed on the device out of band (``edgectl init --trust-root``, ``[trust] root_key`` in the
config), never over MQTT or the registry. A signed document (:mod:`edge.util.signed`) is accepted
when, in this order:

1. its envelope is well formed and one signature verifies with the current root key (after a
   rotation: the rotated-to key; the provisioned one no longer counts);
2. its payload is for this use (``_type``), spec 1, addressed to this device (``target`` is the
   device id, a glob matching it, or ``*``);
3. it is fresh: ``issued_at`` is not in the future (5 minutes of clock skew allowed) and
   ``expires`` has not passed;
4. its ``counter`` is above the highest counter this device ever accepted (a replay, or an older
   document delivered late, is refused);
5. a root rotation is also signed by the new key and names ``root_version`` = current + 1.

:meth:`TrustRoot.verify` checks without changing anything; :meth:`TrustRoot.accept` records the
counter (and a rotation's new key) in the trust state file, written atomically, *before* the
caller acts on the document, so a crash can never let the same document be used twice. The
state file (default ``<model store's parent>/trust-state.json``, i.e. ``StateDirectory``)::

    {"format": 1, "provisioned": "<key id of [trust] root_key>", "counter": 42,
     "root": {"version": 2, "keyid": "...", "public_key": "-----BEGIN PUBLIC KEY-----..."},
     "accepted": [{"type": "config-patch", "counter": 42, "keyid": "...", "issued_at": "...",
                   "accepted_at": "...", "sha256": "<of the payload>"}]}

When the ``root_key`` file on the device no longer matches ``provisioned`` (a local
administrator installed another root out of band), the state starts over from that key.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.errors import DocumentExpired, DocumentReplayed, SignedDocumentError
from edge.util.fsutil import atomic_write_bytes
from edge.util.ociref import is_digest
from edge.util.signed import (
    SPEC,
    DocType,
    decode_payload,
    key_id,
    open_envelope,
    parse_public_key,
    parse_utc,
    public_key_pem,
    utc_text,
    verify_signature,
)

logger = logging.getLogger(__name__)

CLOCK_SKEW_S = 300.0
HISTORY = 50  # accepted documents remembered in the state file (an audit trail, not a security need)
SIGN_HINT = "sign one with `edgectl trust sign` (see docs/threat-model.md)"
_PAYLOAD_KEYS = {"_type", "spec", "target", "counter", "issued_at", "expires", "content"}
SIGNED_KEY = "signed"  # the command payload key that carries a signed document (a DSSE envelope)


class Sensitivity(str, Enum):
    """What a remote command may do, and so what it needs (edge.transport.commands registers each
    command with one; docs/threat-model.md lists them)."""

    READ_ONLY = "read-only"  # reports, changes nothing
    OPERATIONAL = "operational"  # changes how the device runs, within what it already trusts
    SENSITIVE = "sensitive"  # changes whom it trusts: only with a document signed by the fleet root

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SignedDocument:
    """A document whose signature, target and freshness were checked (not yet accepted)."""

    type: DocType
    target: str
    counter: int
    issued_at: float
    expires: float
    content: dict[str, Any]
    keyid: str
    sha256: str  # of the payload bytes: names the document in events and the state file
    new_root: Ed25519PublicKey | None = None  # ROOT_ROTATION: the key rotated to

    def describe(self) -> dict[str, Any]:
        return {"type": self.type.value, "counter": self.counter, "keyid": self.keyid[:16],
                "expires": utc_text(self.expires), "sha256": self.sha256[:16]}


def _check_content(doc_type: DocType, content: Any) -> dict[str, Any]:
    if not isinstance(content, dict):
        raise SignedDocumentError("payload.content: must be an object")
    want: dict[DocType, dict[str, tuple[type, ...]]] = {
        DocType.CONFIG_PATCH: {"patch": (dict,)},
        DocType.ROLLBACK: {"model": (str,), "version": (int,), "digest": (str,), "ref": (str,)},
        DocType.ROOT_ROTATION: {"root_version": (int,), "public_key": (str,)},
    }
    fields = want[doc_type]
    optional = {"ref"}
    unknown = sorted(set(content) - set(fields))
    missing = sorted(set(fields) - set(content) - optional)
    if unknown or missing:
        raise SignedDocumentError(f"payload.content of a {doc_type} document: "
                                  + (f"unknown key(s) {unknown} " if unknown else "")
                                  + (f"missing key(s) {missing}" if missing else "").rstrip())
    for key, value in content.items():
        if not isinstance(value, fields[key]) or isinstance(value, bool):
            raise SignedDocumentError(f"payload.content.{key}: wrong type {type(value).__name__}")
    if doc_type is DocType.ROLLBACK:
        if not is_digest(content["digest"]):
            raise SignedDocumentError("payload.content.digest: must be sha256:<64 hex digits>")
        if not 0 <= content["version"] < 2**63:
            raise SignedDocumentError("payload.content.version: must be a version number")
    return content


class TrustRoot:
    """One device's fleet root key, rotations and accepted counters; thread-safe."""

    def __init__(self, device_id: str, root_key: Path | None, state_path: Path,
                 clock: Callable[[], float] = time.time) -> None:
        self.device_id = device_id
        self.root_key_path = root_key
        self.state_path = Path(state_path)
        self._clock = clock
        self._lock = threading.Lock()
        self._root: Ed25519PublicKey | None = None
        self._version = 0
        self._counter = 0
        self._provisioned: str | None = None
        self._history: list[dict[str, Any]] = []
        self._load()

    # -- state -----------------------------------------------------------------------------------

    def _load(self) -> None:
        """The root key file and the state file; SignedDocumentError when the key file is unusable."""
        if self.root_key_path is None:
            return  # no fleet root: every signed document is refused
        try:
            provisioned = parse_public_key(Path(self.root_key_path).read_bytes(), f"trust.root_key {self.root_key_path}")
        except OSError as exc:
            raise SignedDocumentError(f"trust.root_key {self.root_key_path}: cannot read it: {exc.strerror}") from None
        self._root, self._version, self._provisioned = provisioned, 1, key_id(provisioned)
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            # the file is only ever replaced atomically; unreadable means a broken disk or a hand edit
            raise SignedDocumentError(f"trust state {self.state_path} is unreadable ({exc}); restore it "
                                      "or remove it to start over from [trust] root_key") from None
        if not isinstance(state, dict) or state.get("provisioned") != self._provisioned:
            logger.warning("trust.root_key %s is not the key the trust state %s was made for; starting over "
                           "from it (root version 1, counter 0)", self.root_key_path, self.state_path)
            return
        root = state.get("root") or {}
        if isinstance(root.get("public_key"), str) and int(root.get("version", 1)) > 1:
            self._root = parse_public_key(root["public_key"], f"trust state {self.state_path} root")
            self._version = int(root["version"])
        self._counter = int(state.get("counter") or 0)
        self._history = [h for h in state.get("accepted") or [] if isinstance(h, dict)][-HISTORY:]

    def _save(self) -> None:
        assert self._root is not None
        doc = {"format": 1, "provisioned": self._provisioned, "counter": self._counter,
               "root": {"version": self._version, "keyid": key_id(self._root),
                        "public_key": public_key_pem(self._root)},
               "accepted": self._history[-HISTORY:]}
        data = json.dumps(doc, indent=1, sort_keys=True).encode("utf-8") + b"\n"
        atomic_write_bytes(self.state_path, data, 0o644, mkdir=True)

    def status(self) -> dict[str, Any]:
        """What ping and health show: the root key id and version, the highest accepted counter."""
        with self._lock:
            if self._root is None:
                return {"root": None, "root_version": 0, "counter": 0}
            return {"root": key_id(self._root), "root_version": self._version, "counter": self._counter}

    @property
    def configured(self) -> bool:
        return self._root is not None

    # -- documents ---------------------------------------------------------------------------------

    def verify(self, envelope: Any, expected: DocType) -> SignedDocument:
        """Check `envelope` as a document of type `expected` for this device; changes nothing."""
        with self._lock:
            root, version, counter = self._root, self._version, self._counter
        if root is None:
            raise SignedDocumentError("this device has no fleet root key ([trust] root_key in its config, "
                                      "installed out of band with `edgectl init --trust-root`), so it accepts "
                                      "no signed document; make the change locally")
        payload, signatures = open_envelope(envelope)
        keyid = verify_signature(payload, signatures, root, f"the fleet root key (version {version})")
        doc = decode_payload(payload)
        unknown = sorted(set(doc) - _PAYLOAD_KEYS)
        if unknown:
            raise SignedDocumentError(f"payload: unknown key(s) {unknown}")
        if doc.get("spec") != SPEC:
            raise SignedDocumentError(f"payload.spec: this device reads spec {SPEC}, got {doc.get('spec')!r}")
        if doc.get("_type") != expected.value:
            raise SignedDocumentError(f"payload._type: this command takes a {expected} document, got "
                                      f"{str(doc.get('_type'))[:40]!r}")
        target = doc.get("target")
        if not isinstance(target, str) or not target:
            raise SignedDocumentError("payload.target: must be a device id, a glob or '*'")
        if not fnmatch.fnmatchcase(self.device_id, target):
            raise SignedDocumentError(f"payload.target: the document is for {target[:64]!r}, "
                                      f"this device is {self.device_id!r}")
        number = doc.get("counter")
        if not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 2**63:
            raise SignedDocumentError("payload.counter: must be a positive integer")
        issued, expires = parse_utc(doc.get("issued_at"), "issued_at"), parse_utc(doc.get("expires"), "expires")
        now = self._clock()
        if issued > now + CLOCK_SKEW_S:
            raise DocumentExpired(f"payload.issued_at {doc['issued_at']} is in the future (device time "
                                  f"{utc_text(now)}); check the signer's and the device's clocks")
        if expires <= now:
            raise DocumentExpired(f"the document expired at {doc['expires']} (device time {utc_text(now)}); "
                                  f"{SIGN_HINT}")
        if number <= counter:
            raise DocumentReplayed(f"replayed or outdated document: counter {number} is not above {counter}, the "
                                   f"highest this device accepted; {SIGN_HINT} (it picks the next counter)")
        content = _check_content(expected, doc.get("content"))
        new_root = None
        if expected is DocType.ROOT_ROTATION:
            if content["root_version"] != version + 1:
                raise SignedDocumentError(f"payload.content.root_version: must be {version + 1} (this device is "
                                          f"at root version {version}), got {content['root_version']}")
            new_root = parse_public_key(content["public_key"], "payload.content.public_key")
            verify_signature(payload, signatures, new_root, "the new root key")  # proof of possession
        return SignedDocument(expected, target, number, issued, expires, content, keyid,
                              hashlib.sha256(payload).hexdigest(), new_root)

    def accept(self, doc: SignedDocument) -> None:
        """Record `doc` as used (and rotate the root for a rotation), durably, before acting on it.

        Raises DocumentReplayed if another document with a counter at least as high was accepted
        since :meth:`verify`, and SignedDocumentError when the state file cannot be written (nothing
        is then recorded and the caller must not act)."""
        with self._lock:
            if doc.counter <= self._counter:
                raise DocumentReplayed(f"replayed or outdated document: counter {doc.counter} is not above "
                                       f"{self._counter}, the highest this device accepted")
            before = (self._root, self._version, self._counter, list(self._history))
            if doc.type is DocType.ROOT_ROTATION:
                assert doc.new_root is not None
                self._root, self._version = doc.new_root, int(doc.content["root_version"])
            self._counter = doc.counter
            self._history.append({"type": doc.type.value, "counter": doc.counter, "keyid": doc.keyid,
                                  "issued_at": utc_text(doc.issued_at), "accepted_at": utc_text(self._clock()),
                                  "sha256": doc.sha256})
            try:
                self._save()
            except OSError as exc:
                self._root, self._version, self._counter, self._history = before
                raise SignedDocumentError(f"cannot record the document in {self.state_path}: "
                                          f"{exc.strerror or exc}; nothing changed") from None
        logger.warning("accepted signed %s document, counter %d, key %s", doc.type, doc.counter, doc.keyid[:16])
