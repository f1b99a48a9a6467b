"""Signed documents and the device's trust root: signatures, targets, expiry, replays, rotation, persistence."""
from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.errors import DocumentExpired, DocumentReplayed, SignedDocumentError
from edge.util.signed import DocType, build_payload, key_id, pae, public_key_pem, sign_envelope
from edge.util.trustroot import TrustRoot

NOW = 1_800_000_000.0
PATCH = {"patch": {"registry": {"ref": "reg2.example:5000/models/m:stable"}}}


def write_pub(path: Path, key: Ed25519PrivateKey) -> Path:
    path.write_text(public_key_pem(key.public_key()))
    return path


def document(key: Ed25519PrivateKey | list[Ed25519PrivateKey], counter: int, *, doc_type: DocType = DocType.CONFIG_PATCH,
             target: str = "gate-01", content: dict | None = None, issued: float = NOW - 10,
             expires: float = NOW + 3600) -> dict:
    payload = build_payload(doc_type, target=target, counter=counter, issued_at=issued, expires=expires,
                            content=PATCH if content is None else content)
    return sign_envelope(payload, key if isinstance(key, list) else [key])


@pytest.fixture
def root(tmp_path: Path) -> tuple[Ed25519PrivateKey, TrustRoot]:
    key = Ed25519PrivateKey.generate()
    trust = TrustRoot("gate-01", write_pub(tmp_path / "root.pub", key), tmp_path / "state" / "trust.json",
                      clock=lambda: NOW)
    return key, trust


def test_envelope_is_dsse_over_canonical_json() -> None:
    key = Ed25519PrivateKey.generate()
    env = document(key, 7)
    assert set(env) == {"payloadType", "payload", "signatures"}
    assert env["payloadType"] == "application/vnd.edge.trust.v1+json"
    body = base64.b64decode(env["payload"])
    assert body == json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    payload = json.loads(body)
    assert payload == {"_type": "config-patch", "spec": 1, "target": "gate-01", "counter": 7,
                       "issued_at": "2027-01-15T07:59:50Z", "expires": "2027-01-15T09:00:00Z", "content": PATCH}
    sig = env["signatures"][0]
    assert sig["keyid"] == key_id(key.public_key())
    key.public_key().verify(base64.b64decode(sig["sig"]), pae(env["payloadType"], body))  # raises if not DSSE v1


def test_accepts_once_then_refuses_replays_and_older_counters(root) -> None:
    key, trust = root
    doc = trust.verify(document(key, 5), DocType.CONFIG_PATCH)
    assert (doc.counter, doc.content, doc.keyid) == (5, PATCH, key_id(key.public_key()))
    trust.accept(doc)
    assert trust.status()["counter"] == 5
    for counter in (5, 4, 1):
        with pytest.raises(DocumentReplayed, match=f"counter {counter} is not above 5"):
            trust.verify(document(key, counter), DocType.CONFIG_PATCH)
    with pytest.raises(DocumentReplayed):
        trust.accept(doc)  # verified before, but another (the same) was accepted since
    trust.accept(trust.verify(document(key, 6), DocType.CONFIG_PATCH))


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"expires": NOW - 1}, DocumentExpired, "expired at"),
    ({"issued": NOW + 3600}, DocumentExpired, "in the future"),
    ({"target": "gate-02"}, SignedDocumentError, "for 'gate-02', this device is 'gate-01'"),
    ({"target": "door-*"}, SignedDocumentError, "this device is 'gate-01'"),
    ({"doc_type": DocType.ROLLBACK, "content": {"model": "m", "version": 1, "digest": "sha256:" + "a" * 64}},
     SignedDocumentError, "takes a config-patch document"),
    ({"content": {"patch": {}, "extra": 1}}, SignedDocumentError, "unknown key"),
    ({"content": {"patch": "x"}}, SignedDocumentError, "content.patch: wrong type"),
])
def test_refuses_expired_misaddressed_and_misused_documents(root, change, error, message) -> None:
    key, trust = root
    with pytest.raises(error, match=message):
        trust.verify(document(key, 9, **change), DocType.CONFIG_PATCH)
    assert trust.status()["counter"] == 0


@pytest.mark.parametrize("target", ["gate-01", "gate-*", "*", "gate-0[0-9]"])
def test_targets_by_id_glob_or_everyone(root, target) -> None:
    key, trust = root
    assert trust.verify(document(key, 1, target=target), DocType.CONFIG_PATCH).target == target


def test_refuses_other_keys_tampering_and_malformed_envelopes(root) -> None:
    key, trust = root
    other = Ed25519PrivateKey.generate()
    with pytest.raises(SignedDocumentError, match="not signed by the fleet root key"):
        trust.verify(document(other, 1), DocType.CONFIG_PATCH)
    env = document(key, 1)
    body = json.loads(base64.b64decode(env["payload"]))
    body["content"]["patch"]["registry"]["ref"] = "evil.example/m:stable"
    tampered = dict(env, payload=base64.b64encode(json.dumps(body).encode()).decode())
    with pytest.raises(SignedDocumentError, match="is invalid .the document was altered"):
        trust.verify(tampered, DocType.CONFIG_PATCH)
    forged = dict(env, signatures=[{"keyid": env["signatures"][0]["keyid"], "sig": base64.b64encode(b"x" * 64).decode()}])
    with pytest.raises(SignedDocumentError, match="invalid"):
        trust.verify(forged, DocType.CONFIG_PATCH)
    for bad, message in [([], "must be a DSSE envelope"), ({**env, "x": 1}, "unknown key"),
                         ({**env, "payloadType": "text/plain"}, "payloadType"), ({**env, "signatures": []}, "1 to 8"),
                         ({**env, "payload": "%%%"}, "not valid base64")]:
        with pytest.raises(SignedDocumentError, match=message):
            trust.verify(bad, DocType.CONFIG_PATCH)


def test_without_a_root_key_nothing_signed_is_accepted(tmp_path: Path) -> None:
    trust = TrustRoot("gate-01", None, tmp_path / "trust.json")
    assert not trust.configured and trust.status() == {"root": None, "root_version": 0, "counter": 0}
    with pytest.raises(SignedDocumentError, match="no fleet root key"):
        trust.verify(document(Ed25519PrivateKey.generate(), 1), DocType.CONFIG_PATCH)


def test_counter_and_history_survive_a_restart_and_are_written_atomically(root, tmp_path: Path) -> None:
    key, trust = root
    trust.accept(trust.verify(document(key, 41), DocType.CONFIG_PATCH))
    state = json.loads((tmp_path / "state" / "trust.json").read_text())
    assert state["counter"] == 41 and state["root"]["version"] == 1
    assert state["accepted"][-1]["type"] == "config-patch" and state["accepted"][-1]["counter"] == 41
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["trust.json"]  # no temp file left
    again = TrustRoot("gate-01", tmp_path / "root.pub", tmp_path / "state" / "trust.json", clock=lambda: NOW)
    with pytest.raises(DocumentReplayed):
        again.verify(document(key, 41), DocType.CONFIG_PATCH)
    again.verify(document(key, 42), DocType.CONFIG_PATCH)


def test_rotation_needs_both_keys_and_the_next_version_and_retires_the_old_key(root, tmp_path: Path) -> None:
    old, trust = root
    new = Ed25519PrivateKey.generate()
    content = {"root_version": 2, "public_key": public_key_pem(new.public_key())}
    with pytest.raises(SignedDocumentError, match="not signed by the new root key"):
        trust.verify(document(old, 3, doc_type=DocType.ROOT_ROTATION, content=content), DocType.ROOT_ROTATION)
    with pytest.raises(SignedDocumentError, match="not signed by the fleet root key"):
        trust.verify(document(new, 3, doc_type=DocType.ROOT_ROTATION, content=content), DocType.ROOT_ROTATION)
    with pytest.raises(SignedDocumentError, match="root_version: must be 2"):
        trust.verify(document([old, new], 3, doc_type=DocType.ROOT_ROTATION, content={**content, "root_version": 3}),
                     DocType.ROOT_ROTATION)
    trust.accept(trust.verify(document([old, new], 3, doc_type=DocType.ROOT_ROTATION, content=content),
                              DocType.ROOT_ROTATION))
    assert trust.status() == {"root": key_id(new.public_key()), "root_version": 2, "counter": 3}
    with pytest.raises(SignedDocumentError, match=r"not signed by the fleet root key \(version 2\)"):
        trust.verify(document(old, 4), DocType.CONFIG_PATCH)
    trust.verify(document(new, 4), DocType.CONFIG_PATCH)
    # after a restart the rotated key is still the root (the provisioned file still holds the old one)
    again = TrustRoot("gate-01", tmp_path / "root.pub", tmp_path / "state" / "trust.json", clock=lambda: NOW)
    assert again.status()["root_version"] == 2
    with pytest.raises(SignedDocumentError):
        again.verify(document(old, 5), DocType.CONFIG_PATCH)


def test_a_root_installed_locally_out_of_band_starts_the_state_over(root, tmp_path: Path) -> None:
    key, trust = root
    trust.accept(trust.verify(document(key, 10), DocType.CONFIG_PATCH))
    replacement = Ed25519PrivateKey.generate()
    write_pub(tmp_path / "root.pub", replacement)
    again = TrustRoot("gate-01", tmp_path / "root.pub", tmp_path / "state" / "trust.json", clock=lambda: NOW)
    assert again.status() == {"root": key_id(replacement.public_key()), "root_version": 1, "counter": 0}


def test_unusable_key_or_state_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SignedDocumentError, match="cannot read it"):
        TrustRoot("d", tmp_path / "missing.pub", tmp_path / "s.json")
    rsa_like = tmp_path / "x.pub"
    rsa_like.write_text("not a key")
    with pytest.raises(SignedDocumentError, match="not a PEM public key"):
        TrustRoot("d", rsa_like, tmp_path / "s.json")
    good = write_pub(tmp_path / "good.pub", Ed25519PrivateKey.generate())
    (tmp_path / "s.json").write_text("{torn")
    with pytest.raises(SignedDocumentError, match="unreadable"):
        TrustRoot("d", good, tmp_path / "s.json")


def test_a_state_that_cannot_be_written_records_nothing(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    trust = TrustRoot("gate-01", write_pub(tmp_path / "root.pub", key), tmp_path / "state" / "trust.json",
                      clock=lambda: NOW)
    (tmp_path / "state").write_text("")  # the state's folder is a file now: every write fails, even as root
    doc = trust.verify(document(key, 2), DocType.CONFIG_PATCH)
    with pytest.raises(SignedDocumentError, match="cannot record"):
        trust.accept(doc)
    assert trust.status()["counter"] == 0
    trust.verify(document(key, 2), DocType.CONFIG_PATCH)  # still usable once the disk is fixed


def test_rollback_content_is_checked(root) -> None:
    key, trust = root
    good = {"model": "colour", "version": 1, "digest": "sha256:" + "b" * 64}
    assert trust.verify(document(key, 1, doc_type=DocType.ROLLBACK, content=good), DocType.ROLLBACK).content == good
    for bad, message in [({**good, "digest": "sha256:xyz"}, "digest"), ({**good, "version": -1}, "version"),
                         ({"model": "colour", "version": 1}, "missing key"), ({**good, "version": True}, "wrong type")]:
        with pytest.raises(SignedDocumentError, match=message):
            trust.verify(document(key, 1, doc_type=DocType.ROLLBACK, content=bad), DocType.ROLLBACK)


def test_documents_signed_now_verify_with_the_real_clock(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    trust = TrustRoot("gate-01", write_pub(tmp_path / "r.pub", key), tmp_path / "t.json")
    now = time.time()
    trust.verify(document(key, 1, issued=now, expires=now + 60), DocType.CONFIG_PATCH)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert (tmp_path / "r.pub").read_bytes() == pem
