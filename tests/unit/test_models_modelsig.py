"""edge.models.artifact.modelsig: OpenSSF model-signing bundles made and checked with `cryptography`
alone, proven both ways against the real `model_signing` API, and refused when anything is off."""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import model_signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.errors import ArtifactError, SignatureError
from edge.models.artifact.channel import sign_channel
from edge.models.artifact.modelsig import (
    NotAModelSignature,
    compare_files,
    folder_digests,
    sign_dsse,
    sign_folder,
    statement,
    verify_bundle,
)
from edge.models.artifact.signing import key_hint


def model_folder(root: Path) -> Path:
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(os.urandom(2000))
    (root / "variables" / "variables.index").write_bytes(b"index")
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(5000))
    (root / "assets.extra").mkdir()
    (root / "assets.extra" / "model.json").write_text("{}")
    return root


def key_files(tmp_path: Path, curve: ec.EllipticCurve) -> tuple[ec.EllipticCurvePrivateKey, Path, Path]:
    key = ec.generate_private_key(curve)
    private, public = tmp_path / f"{curve.name}.key", tmp_path / f"{curve.name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, private, public


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()])
def test_bundles_interoperate_with_the_model_signing_api_both_ways(tmp_path: Path, curve: ec.EllipticCurve) -> None:
    folder = model_folder(tmp_path / "model")
    key, private, public = key_files(tmp_path, curve)
    ours, files = sign_folder(folder, key)
    assert files == folder_digests(folder) and len(files) == 4
    (tmp_path / "ours.sig").write_bytes(ours)
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public).verify(folder, tmp_path / "ours.sig")
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).sign(folder, tmp_path / "theirs.sig")
    assert verify_bundle((tmp_path / "theirs.sig").read_bytes(), key.public_key()) == files
    assert json.loads(ours)["verificationMaterial"]["publicKey"]["hint"] == key_hint(key.public_key())


def resign(bundle: bytes, key: ec.EllipticCurvePrivateKey, change) -> bytes:
    """The bundle's statement changed by `change(doc)`, signed again with `key`."""
    doc = json.loads(base64.b64decode(json.loads(bundle)["dsseEnvelope"]["payload"]))
    change(doc)
    return sign_dsse(json.dumps(doc).encode(), key)


def test_every_kind_of_bad_bundle_is_refused_with_one_line(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "model")
    key, stranger = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    bundle, files = sign_folder(folder, key)
    doc = json.loads(bundle)
    payload = base64.b64decode(doc["dsseEnvelope"]["payload"]).replace(b"variables.index", b"variables.indey")
    tampered = json.dumps({**doc, "dsseEnvelope": {**doc["dsseEnvelope"],
                                                   "payload": base64.b64encode(payload).decode()}}).encode()
    no_hint = json.dumps({**json.loads(sign_folder(folder, stranger)[0]),
                          "verificationMaterial": {"publicKey": {}, "tlogEntries": []}}).encode()
    refused = [
        (sign_folder(folder, stranger)[0], "signed with another key"),
        (tampered, "does not verify"),
        (no_hint, "does not verify"),
        (resign(bundle, key, lambda d: d["predicate"]["serialization"].update(method="shards")), "not supported"),
        (resign(bundle, key, lambda d: d["predicate"]["serialization"].update(allow_symlinks=True)), "not supported"),
        (resign(bundle, key, lambda d: d["predicate"]["resources"][0].update(name="../escape")), "relative path"),
        (resign(bundle, key, lambda d: d["predicate"]["resources"].append(d["predicate"]["resources"][0])),
         "listed twice"),
        (resign(bundle, key, lambda d: d["predicate"]["resources"][0].update(digest="00" * 32)), "subject digest"),
        (resign(bundle, key, lambda d: d["predicate"]["resources"][0].update(algorithm="blake3")), "sha256"),
        (resign(bundle, key, lambda d: d["predicate"].update(resources=[])), "1 to"),
    ]
    for raw, fragment in refused:
        with pytest.raises((SignatureError, ArtifactError)) as info:
            verify_bundle(raw, key.public_key())
        assert not isinstance(info.value, NotAModelSignature), fragment
        assert fragment in str(info.value) and "\n" not in str(info.value), (fragment, str(info.value))
    assert verify_bundle(bundle, key.public_key()) == files


def test_bundles_of_other_kinds_are_skipped_not_fatal() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    hint = {"publicKey": {"hint": key_hint(key.public_key())}}
    others = [
        b"not json",
        json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.2+json"}).encode(),
        json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial": hint,
                    "messageSignature": {"messageDigest": {}, "signature": ""}}).encode(),  # cosign's blob signature
        json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                    "verificationMaterial": {"certificate": {"rawBytes": ""}},
                    "dsseEnvelope": {}}).encode(),  # keyless
        sign_channel(key, "models/m", "stable", "sha256:" + "a" * 64, 3, 60.0)[0],  # a channel statement
        sign_dsse(json.dumps({"_type": "https://in-toto.io/Statement/v1", "predicateType": "https://slsa.dev/provenance/v1",
                              "subject": [], "predicate": {}}).encode(), key),
    ]
    for raw in others:
        with pytest.raises(NotAModelSignature):
            verify_bundle(raw, key.public_key())


def test_compare_files_names_what_differs(tmp_path: Path) -> None:
    signed = {"a": "1" * 64, "b": "2" * 64, "c": "3" * 64}
    compare_files(signed, dict(signed), "here")
    with pytest.raises(SignatureError) as info:
        compare_files(signed, {"a": "1" * 64, "b": "f" * 64, "d": "4" * 64}, "reg/m@sha256:x")
    assert str(info.value) == ("reg/m@sha256:x: files differ from what was signed (tampered?): changed: b; "
                               "not signed: d; missing: c")
    folder = model_folder(tmp_path / "m")
    (folder / "link").symlink_to(folder / "saved_model.pb")
    with pytest.raises(ArtifactError, match="link is a link or special file"):
        folder_digests(folder)
    assert json.loads(statement({"b/c": "2" * 64, "a": "1" * 64}, "m"))["predicate"]["resources"][0]["name"] == "a"
