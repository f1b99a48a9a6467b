"""edge.models.artifact: deterministic packing, hostile archives, signatures, pull_model end to end."""
from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.errors import ArtifactError, KeyFileError, RegistryNotFound, SignatureError, UnsafeArtifact
from edge.models.artifact.format import pack_version
from edge.models.artifact.legacy import sign_digest, signature_tag, verify_signature
from edge.models.artifact.pull import pull_model
from edge.models.artifact.signing import (
    key_hint,
    key_id,
    load_model_private_key,
    load_model_public_key,
    load_private_key,
    load_public_key,
)
from edge.models.artifact.tarsafe import safe_extract
from edge.transport.oci import OCI_MANIFEST, referrers_tag
from edge.util.ociref import Reference
from provisioning.pki.keys import generate_keys
from provisioning.publish import push_version
from tests.support.packages import make_version

REPO = "models/fake"


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tar_gz(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def test_pack_is_deterministic_and_extracts_identically(tmp_path: Path) -> None:
    version = make_version(tmp_path / "fake" / "3")
    config = pack_version(version, tmp_path / "a.tar.gz")
    os.utime(version / "saved_model.pb", (1, 1))  # mtimes do not matter
    pack_version(version, tmp_path / "b.tar.gz")
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    assert config["name"] == "fake" and config["version"] == 3
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == sorted(i.name for i in infos)
    assert all(i.mtime == 0 and i.uid == 0 and i.gid == 0 and not i.uname for i in infos)
    safe_extract(tmp_path / "a.tar.gz", tmp_path / "out", max_bytes=1 << 20)
    assert files_of(tmp_path / "out") == files_of(version)


def test_pack_refuses_folders_that_are_not_packaged(tmp_path: Path) -> None:
    version = make_version(tmp_path / "v")
    (version / "assets.extra" / "model.json").unlink()
    with pytest.raises(ArtifactError, match="edgectl model package"):
        pack_version(version, tmp_path / "x.tar.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="no saved_model.pb"):
        pack_version(tmp_path / "empty", tmp_path / "x.tar.gz")
    version2 = make_version(tmp_path / "w")
    (version2 / "link").symlink_to("/etc/passwd")
    with pytest.raises(ArtifactError, match="only regular files"):
        pack_version(version2, tmp_path / "x.tar.gz")


@pytest.mark.parametrize("members, fragment", [
    ([(member("../evil"), b"x")], "outside the folder"),
    ([(member("a/../../evil"), b"x")], "outside the folder"),
    ([(member("/tmp/evil"), b"x")], "absolute path"),
    ([(member("link", tarfile.SYMTYPE, "../../outside"), None)], "is a link"),
    ([(member("link", tarfile.SYMTYPE, "variables"), None)], "is a link"),
    ([(member("saved_model.pb"), b"x"), (member("hard", tarfile.LNKTYPE, "saved_model.pb"), None)], "is a link"),
    ([(member("dev", tarfile.CHRTYPE), None)], "device, fifo"),
    ([(member("fifo", tarfile.FIFOTYPE), None)], "device, fifo"),
    ([(member("a"), b"1"), (member("a"), b"2")], "appears twice"),
])
def test_safe_extract_refuses_hostile_members(tmp_path: Path, members, fragment: str) -> None:
    archive = tar_gz(tmp_path / "bad.tar.gz", members)
    dest = tmp_path / "stage" / "dest"
    with pytest.raises(UnsafeArtifact, match=fragment):
        safe_extract(archive, dest, max_bytes=1 << 20)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["bad.tar.gz", "stage"]


def test_safe_extract_stops_a_gzip_bomb_before_it_fills_the_disk(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.tar.gz"
    with gzip.open(archive, "wb", compresslevel=9) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        zeros = 64 << 20
        info = member("saved_model.pb")
        info.size = zeros

        class Zeros(io.RawIOBase):
            def __init__(self) -> None:
                self.left = zeros

            def readinto(self, buf) -> int:
                n = min(len(buf), self.left)
                buf[:n] = bytes(n)
                self.left -= n
                return n

        tar.addfile(info, Zeros())
    assert archive.stat().st_size < 1 << 20  # 64 MiB of zeros compress to under 1 MiB
    with pytest.raises(UnsafeArtifact, match="larger than the 1048576-byte limit"):
        safe_extract(archive, tmp_path / "dest", max_bytes=1 << 20)
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("mangle", ["random", "truncated", "empty"])
def test_safe_extract_reports_corrupt_archives_clearly(tmp_path: Path, mangle: str) -> None:
    good = pack_version(make_version(tmp_path / "v"), tmp_path / "good.tar.gz") and (tmp_path / "good.tar.gz")
    archive = tmp_path / "bad.tar.gz"
    data = good.read_bytes()
    archive.write_bytes({"random": os.urandom(5000), "truncated": data[: len(data) // 2], "empty": b""}[mangle])
    with pytest.raises(UnsafeArtifact, match="not a readable tar.gz|archive is empty"):
        safe_extract(archive, tmp_path / "dest", max_bytes=1 << 30)
    assert not (tmp_path / "dest").exists()


def test_sign_and_verify(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    digest = "sha256:" + "ab" * 32
    doc = sign_digest(key, digest)
    assert doc["algorithm"] == "ed25519" and doc["key_id"] == key_id(key.public_key())
    verify_signature(key.public_key(), digest, doc)
    with pytest.raises(SignatureError, match="another artifact"):
        verify_signature(key.public_key(), "sha256:" + "cd" * 32, doc)
    with pytest.raises(SignatureError, match="not the configured key"):
        verify_signature(Ed25519PrivateKey.generate().public_key(), digest, doc)
    forged = dict(doc, signature=sign_digest(Ed25519PrivateKey.generate(), digest)["signature"])
    with pytest.raises(SignatureError, match="invalid"):
        verify_signature(key.public_key(), digest, forged)
    assert signature_tag(digest) == "sha256-" + "ab" * 32 + ".sig"


def test_key_files(tmp_path: Path) -> None:
    kid = generate_keys(tmp_path / "keys")  # the model-signing key: EC P-256
    private, public = tmp_path / "keys" / "signing.key", tmp_path / "keys" / "signing.pub"
    assert key_hint(load_model_private_key(private).public_key()) == kid == key_hint(load_model_public_key(public))
    with pytest.raises(KeyFileError, match="not an ed25519 key"):  # the fleet root must be ed25519
        load_public_key(public)
    root = generate_keys(tmp_path / "root", name="fleet-root", algorithm="ed25519")
    assert key_id(load_private_key(tmp_path / "root" / "fleet-root.key").public_key()) == root
    assert isinstance(load_model_public_key(tmp_path / "root" / "fleet-root.pub"), Ed25519PublicKey)  # deprecated
    odd = tmp_path / "p192.pub"
    odd.write_bytes(ec.generate_private_key(ec.SECP192R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(KeyFileError, match="secp192r1 is not one model-signing uses.*edgectl keys gen"):
        load_model_public_key(odd)
    private.chmod(0o640)
    with pytest.raises(KeyFileError, match="readable by group/others.*chmod 600"):
        load_model_private_key(private)
    with pytest.raises(KeyFileError, match="not an unencrypted PEM private key"):
        public.chmod(0o600)
        load_model_private_key(public)
    with pytest.raises(KeyFileError, match="cannot read"):
        load_model_public_key(tmp_path / "missing.pub")


def test_pull_model_round_trip_signed_and_unsigned(registry, tmp_path: Path) -> None:
    version = make_version(tmp_path / "fake" / "3")
    key = ec.generate_private_key(ec.SECP256R1())
    client = registry.client()
    ref = Reference.parse(f"{registry.address}/{REPO}:3")
    digest, sig = push_version(client, ref, version, private_key=key)
    assert sig is not None and client.list_tags(REPO) == ["3", referrers_tag(digest)]
    pulled = pull_model(client, ref, tmp_path / "staging", public_key=key.public_key())
    assert (pulled.digest, pulled.name, pulled.version) == (digest, "fake", 3)
    assert pulled.signed_by == key_hint(key.public_key()) and pulled.signature == "model-signing"
    assert files_of(pulled.path) == files_of(version)
    assert pulled.path.parent == tmp_path / "staging" and not pulled.path.name.isdigit()
    assert [p for p in (tmp_path / "staging").iterdir() if p != pulled.path] == []  # layer tarball removed
    by_digest = pull_model(client, Reference.parse(f"{registry.address}/{REPO}@{digest}"), tmp_path / "s2")
    assert by_digest.signed_by is None and files_of(by_digest.path) == files_of(version)

    with pytest.raises(SignatureError, match="signed with another key"):
        pull_model(client, ref, tmp_path / "s3", public_key=ec.generate_private_key(ec.SECP256R1()).public_key())
    unsigned_ref = ref.with_tag("4")
    push_version(client, unsigned_ref, make_version(tmp_path / "fake" / "4", version=4))
    with pytest.raises(SignatureError, match="unsigned artifact"):
        pull_model(client, unsigned_ref, tmp_path / "s4", public_key=key.public_key())
    assert not (tmp_path / "s3").exists() or not any((tmp_path / "s3").iterdir())


def test_pull_model_refuses_tampered_signature_and_foreign_artifacts(registry, tmp_path: Path) -> None:
    """(the deprecated ed25519 format: a signature document swapped under the .sig tag)"""
    client = registry.client()
    key = Ed25519PrivateKey.generate()
    ref = Reference.parse(f"{registry.address}/{REPO}:1")
    digest, _ = push_version(client, ref, make_version(tmp_path / "v1", version=1), private_key=key)
    # Replace the signature with one over another digest, signed by the same key.
    other = sign_digest(key, "sha256:" + "1" * 64)
    doc = json.dumps(dict(other, digest=digest)).encode()
    sig_manifest, _, _ = client.get_manifest(REPO, signature_tag(digest))
    sig_manifest["layers"][0].update(digest=client.push_blob(REPO, doc), size=len(doc))
    client.push_manifest(REPO, signature_tag(digest), sig_manifest)
    with pytest.raises(SignatureError, match="invalid"):
        pull_model(client, ref, tmp_path / "s", public_key=key.public_key())

    config = b"{}"
    foreign = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                          "digest": client.push_blob(REPO, config), "size": 2}, "layers": []}
    client.push_manifest(REPO, "image", foreign)
    with pytest.raises(ArtifactError, match="not an edge model artifact"):
        pull_model(client, ref.with_tag("image"), tmp_path / "s")
    with pytest.raises(RegistryNotFound):
        pull_model(client, Reference.parse(f"{registry.address}/{REPO}@sha256:{'0' * 64}"), tmp_path / "s")


def test_pull_model_refuses_layers_over_max_bytes_and_non_version_content(registry, tmp_path: Path) -> None:
    client = registry.client()
    ref = Reference.parse(f"{registry.address}/{REPO}:2")
    version = make_version(tmp_path / "v", version=2)
    push_version(client, ref, version)
    with pytest.raises(UnsafeArtifact, match="over the 1000-byte limit"):
        pull_model(client, ref, tmp_path / "s", max_bytes=1000)
    manifest, _, _ = client.get_manifest(REPO, "2")
    manifest["layers"] = [layer for layer in manifest["layers"]
                          if layer["annotations"]["org.opencontainers.image.title"] != "saved_model.pb"]
    client.push_manifest(REPO, "2", manifest)
    with pytest.raises(ArtifactError, match="holds no saved_model.pb"):
        pull_model(client, ref, tmp_path / "s")
    assert list((tmp_path / "s").iterdir()) == []
