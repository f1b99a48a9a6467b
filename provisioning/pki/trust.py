"""`edgectl trust`: the fleet root key and the signed documents it makes.

    edgectl trust init --out fleet-root/                      # offline: fleet-root.key (0600), fleet-root.pub
    edgectl init ... --trust-root fleet-root/fleet-root.pub   # on each device, out of band
    edgectl trust sign config --key fleet-root/fleet-root.key --device gate-01 \\
        --patch '{"registry": {"ref": "reg2.example:5000/models/classifier:stable"}}' --out move.json
    edgectl fleet cmd gate-01 config --signed move.json
    edgectl trust sign rollback --key ... --device 'gate-*' --model classifier --version 3 --digest sha256:...
    edgectl fleet cmd gate-07 rollback --signed rollback.json
    edgectl trust sign rotate --key old/fleet-root.key --new-key new/fleet-root.key --root-version 2 --device '*'
    edgectl fleet cmd gate-07 trust --signed rotate.json
    edgectl trust show move.json --pub fleet-root/fleet-root.pub  # what a document says, and whether it verifies

Documents are DSSE envelopes (:mod:`edge.util.signed`). Each carries a counter that must rise: by
default ``max(last counter + 1, current unix time)``, the last one kept beside the key
(``<key>.counter``), so counters keep rising even from another machine with a fresh copy of
the key. They expire (``--expires-in``, default 24h) and name their target (a device id, a glob or
``'*'``).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.errors import SignedDocumentError, UsageError
from edge.models.artifact.signing import load_private_key, load_public_key
from edge.util.fsutil import atomic_write_bytes
from edge.util.ociref import is_digest
from edge.util.signed import (
    DocType,
    build_payload,
    decode_payload,
    key_id,
    open_envelope,
    public_key_pem,
    sign_envelope,
    verify_signature,
)
from provisioning.pki.keys import generate_keys

logger = logging.getLogger(__name__)

ROOT_NAME = "fleet-root"
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
LONG_LIFETIME_S = 30 * 86400
MAX_COUNTER = 2**63 - 1  # a counter or version a device accepts is below 2**63 (edge.util.trustroot)


def parse_duration(text: str, flag: str = "--expires-in") -> float:
    """'90s', '30m', '24h', '7d' -> seconds."""
    m = _DURATION_RE.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"{flag} {text!r}: use a number with s, m, h or d, e.g. 24h")
    return float(m.group(1)) * _UNITS[m.group(2)]


def counter_file(key_path: Path) -> Path:
    return Path(key_path).with_suffix(".counter")


def next_counter(key_files: Sequence[Path], requested: int | None) -> int:
    """The counter for the next document signed with `key_files` (see the module docstring)."""
    last = 0
    for path in map(counter_file, key_files):
        try:
            last = max(last, int(path.read_text().strip()))
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: unreadable counter ({exc}); fix or remove it") from None
    if requested is not None:
        if not 0 < requested <= MAX_COUNTER:
            raise UsageError(f"--counter {requested}: devices accept only counters from 1 to {MAX_COUNTER} "
                             "(leave it out to get the next one)")
        if requested <= last:
            logger.warning("--counter %d is not above %d, the last one signed with this key: devices that "
                           "accepted that one will refuse it", requested, last)
        return requested
    return max(last + 1, int(time.time()))


def record_counter(key_path: Path, counter: int) -> None:
    path = counter_file(key_path)
    try:
        last = int(path.read_text().strip())
    except (OSError, ValueError):
        last = 0
    atomic_write_bytes(path, f"{max(last, counter)}\n".encode(), 0o600)


def make_document(doc_type: DocType, key_files: Sequence[Path], *, target: str, content: dict[str, Any],
                  expires_in_s: float, counter: int | None = None, now: float | None = None) -> dict[str, Any]:
    """Sign one document with the keys in `key_files` (the first is the fleet root; a rotation adds the
    new root) and record its counter beside each of them."""
    if not target or any(c.isspace() for c in target):
        raise UsageError("--device: a device id, a glob such as 'gate-*', or '*' for every device")
    if expires_in_s > LONG_LIFETIME_S:
        logger.warning("the document stays valid for %.0f days; a shorter --expires-in limits how long a "
                       "leaked copy is useful", expires_in_s / 86400)
    keys = [load_private_key(path) for path in key_files]
    now = time.time() if now is None else now
    number = next_counter(key_files, counter)
    payload = build_payload(doc_type, target=target, counter=number, issued_at=now, expires=now + expires_in_s,
                            content=content)
    envelope = sign_envelope(payload, keys)
    for path in key_files:
        record_counter(path, number)
    return envelope


def _json_arg(text: str, what: str) -> dict[str, Any]:
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{what} {text}: cannot read: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{what}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{what}: must be a JSON object")
    return doc


def cmd_init(args: argparse.Namespace) -> int:
    kid = generate_keys(args.out, force=args.force, name=ROOT_NAME, algorithm="ed25519")
    print(f"fleet root key id {kid}")
    print(f"private key {args.out / (ROOT_NAME + '.key')}: keep it offline (it signs changes to every device's "
          f"trust anchors); public key {args.out / (ROOT_NAME + '.pub')}: install it on each device with "
          "`edgectl init --trust-root`", file=sys.stderr)
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    key_files = [args.key]
    if args.doc == "config":
        content: dict[str, Any] = {"patch": _json_arg(args.patch, "--patch")}
        doc_type = DocType.CONFIG_PATCH
    elif args.doc == "rollback":
        if not 0 < args.version <= MAX_COUNTER:
            raise UsageError(f"--version {args.version}: a model version is a positive integer (its version "
                             "folder's number, see `edgectl model ls`)")
        if not is_digest(args.digest):
            raise UsageError(f"--digest {args.digest!r}: must be sha256:<64 hex digits> (see `edgectl model ls`)")
        content = {"model": args.model, "version": args.version, "digest": args.digest}
        if args.ref:
            content["ref"] = args.ref
        doc_type = DocType.ROLLBACK
    else:
        if not 2 <= args.root_version <= MAX_COUNTER:
            raise UsageError(f"--root-version {args.root_version}: the devices' current root version + 1, so at "
                             "least 2 (a device starts at root version 1; `ping` shows its trust.root_version)")
        new_key = load_private_key(args.new_key)
        if key_id(new_key.public_key()) == key_id(load_private_key(args.key).public_key()):
            raise UsageError("--new-key is the same key as --key")
        content = {"root_version": args.root_version, "public_key": public_key_pem(new_key.public_key())}
        doc_type, key_files = DocType.ROOT_ROTATION, [args.key, args.new_key]
    envelope = make_document(doc_type, key_files, target=args.device, content=content,
                             expires_in_s=parse_duration(args.expires_in), counter=args.counter)
    text = json.dumps(envelope, indent=1) + "\n"
    if args.out:
        atomic_write_bytes(args.out, text.encode(), 0o644)
        print(f"wrote {args.out}: {doc_type} for {args.device!r}; send it with "
              f"`edgectl fleet cmd DEVICE {_COMMAND[doc_type]} --signed {args.out}`", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


_COMMAND = {DocType.CONFIG_PATCH: "config", DocType.ROLLBACK: "rollback", DocType.ROOT_ROTATION: "trust"}


def cmd_show(args: argparse.Namespace) -> int:
    try:
        envelope = json.loads(Path(args.document).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{args.document}: not a readable JSON document ({exc})") from None
    if isinstance(envelope, dict) and set(envelope) == {"signed"}:
        envelope = envelope["signed"]  # a whole command payload
    payload, signatures = open_envelope(envelope)
    doc = decode_payload(payload)
    out: dict[str, Any] = {"payload": doc, "signed_by": [kid for kid, _ in signatures]}
    if args.pub:
        try:
            verify_signature(payload, signatures, load_public_key(args.pub), f"the key in {args.pub}")
        except SignedDocumentError as exc:
            print(json.dumps(out, indent=1))
            raise SignedDocumentError(f"does not verify: {exc}") from None
        out["verified_with"] = str(args.pub)
    print(json.dumps(out, indent=1))
    return 0
