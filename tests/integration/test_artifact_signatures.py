"""Signatures against a real docker-registry: what a device with the fleet's model key refuses, before
any layer is downloaded, and the deprecated ed25519 format that still verifies for one release.

Every refusal is a SignatureError with one line that says what is wrong, and leaves nothing in staging.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.errors import SignatureError
from edge.models.artifact.format import ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, OCI_MANIFEST, pack_version
from edge.models.artifact.legacy import signature_tag
from edge.models.artifact.modelsig import sign_folder
from edge.models.artifact.pull import pull_model
from edge.util.ociref import Reference
from provisioning.publish import publish, push_version
from tests.support.artifacts import attach_bundle, push_cosign_signature, tamper
from tests.support.packages import make_version

REPO = "models/fake"


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def layer_downloads(registry, digest: str, client) -> int:
    """How many layer blobs of manifest `digest` the registry served (its access log)."""
    layers = {layer["digest"] for layer in client.get_manifest(REPO, digest)[0]["layers"]}
    return sum(1 for line in registry.access_log() if '"GET /v2/' in line and any(d in line for d in layers))


def refused(client, registry, tag: str, staging: Path, public_key, fragment: str) -> str:
    ref = Reference.parse(f"{registry.address}/{REPO}:{tag}")
    with pytest.raises(SignatureError) as info:
        pull_model(client, ref, staging, public_key=public_key)
    message = str(info.value)
    assert fragment in message and "\n" not in message, message
    assert not staging.exists() or [p.name for p in staging.iterdir()] == [], list(staging.iterdir())
    return message


def test_unsigned_wrongly_signed_and_tampered_versions_are_refused_before_download(registry, tmp_path: Path) -> None:
    key, stranger = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    client = registry.client()
    staging = tmp_path / "staging"
    digest, _ = push_version(client, Reference.parse(f"{registry.address}/{REPO}:1"),
                             make_version(tmp_path / "v1", version=1), private_key=key)
    unsigned, _ = push_version(client, Reference.parse(f"{registry.address}/{REPO}:2"), make_version(tmp_path / "v2", version=2))
    refused(client, registry, "2", staging, key.public_key(), "unsigned artifact")
    other, _ = push_version(client, Reference.parse(f"{registry.address}/{REPO}:3"),
                            make_version(tmp_path / "v3", version=3), private_key=stranger)
    refused(client, registry, "3", staging, key.public_key(), "signed with another key")
    # a cosign signature is not a model signature: still unsigned, and said so
    push_cosign_signature(client, REPO, unsigned)
    refused(client, registry, "2", staging, key.public_key(), "unsigned artifact")
    # the registry swaps a file and copies the signature onto the new manifest
    bad = tamper(client, REPO, digest, "saved_model.pb", b"evil graph", "tampered")
    message = refused(client, registry, "tampered", staging, key.public_key(), "files differ from what was signed")
    assert "changed: saved_model.pb" in message
    # a file the signature does not list; a signed file left out
    manifest = client.get_manifest(REPO, digest)[0]
    extra = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": client.push_blob(REPO, b"x"), "size": 1,
             "annotations": {"org.opencontainers.image.title": "assets.extra/extra.txt"}}
    for tag, layers, fragment in (("extra", manifest["layers"] + [extra], "not signed: assets.extra/extra.txt"),
                                  ("fewer", manifest["layers"][1:], "missing:")):
        changed = client.push_manifest(REPO, tag, {**manifest, "layers": layers})
        attach_bundle(client, REPO, changed, sign_folder(tmp_path / "v1", key)[0])
        refused(client, registry, tag, staging, key.public_key(), fragment)
    for refused_digest in (unsigned, other, bad):
        assert layer_downloads(registry, refused_digest, client) == 0
    # the deprecated key type on the device: model-signing bundles are not its format
    refused(client, registry, "1", staging, Ed25519PrivateKey.generate().public_key(), "no ed25519 signature")
    assert pull_model(client, Reference.parse(f"{registry.address}/{REPO}:1"), staging,
                      public_key=key.public_key()).signature == "model-signing"


def test_the_deprecated_ed25519_format_still_verifies(registry, tmp_path: Path) -> None:
    """Fleets migrate by signing with both keys; a device with the old key checks the old `.sig` tag."""
    old, new = Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())
    client = registry.client()
    ref = Reference.parse(f"{registry.address}/{REPO}:7")
    pushed = publish(client, ref, [make_version(tmp_path / "v7", version=7)], keys=[new, old])
    assert pushed.signatures[1] == signature_tag(pushed.digest) and pushed.signatures[0].startswith("sha256:")
    for public_key, method in ((old.public_key(), "ed25519"), (new.public_key(), "model-signing")):
        pulled = pull_model(client, ref, tmp_path / f"s-{method}", public_key=public_key)
        assert (pulled.signature, pulled.version) == (method, 7)
    push_cosign_signature(client, REPO, pushed.digest)  # cosign overwrites the .sig tag: the old format is gone
    with pytest.raises(SignatureError, match=r"holds another kind of signature \(cosign\?\)"):
        pull_model(client, ref, tmp_path / "s-after-cosign", public_key=old.public_key())
    assert pull_model(client, ref, tmp_path / "s-new", public_key=new.public_key()).signature == "model-signing"


def test_the_edge_0_2_single_archive_layout_is_still_read_and_checked_file_by_file(registry, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    client = registry.client()
    folder = make_version(tmp_path / "v8", version=8)

    def push_archive(tag: str, source: Path) -> str:
        archive = tmp_path / f"{tag}.tar.gz"
        config = json.dumps(pack_version(source, archive), sort_keys=True).encode()
        data = archive.read_bytes()
        return client.push_manifest(REPO, tag, {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": client.push_blob(REPO, config), "size": len(config)},
            "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": client.push_blob(REPO, data), "size": len(data)}]})

    bundle = sign_folder(folder, key)[0]
    attach_bundle(client, REPO, push_archive("8", folder), bundle)
    pulled = pull_model(client, Reference.parse(f"{registry.address}/{REPO}:8"), tmp_path / "s",
                        public_key=key.public_key())
    assert files_of(pulled.path) == files_of(folder) and pulled.signature == "model-signing"
    (folder / "variables" / "variables.index").write_bytes(b"changed")  # signed before: the archive is now tampered
    attach_bundle(client, REPO, push_archive("8-tampered", folder), bundle)
    with pytest.raises(SignatureError, match="changed: variables/variables.index"):
        pull_model(client, Reference.parse(f"{registry.address}/{REPO}:8-tampered"), tmp_path / "s2",
                   public_key=key.public_key())
    assert [p.name for p in (tmp_path / "s2").iterdir()] == []  # the archive is intact: the signed list caught it
