"""edge.transport.oci (the registry client) against a real docker-registry: blobs, manifests, resume,
auth (references on their own: tests/unit/test_util_ociref.py)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path

import pytest

from edge.errors import DigestMismatch, RegistryAuthError, RegistryError, RegistryNotFound
from edge.transport.oci import OCI_MANIFEST, RegistryClient
from edge.util.ociref import Reference, sha256_digest
from tests.support.net import free_port
from tests.support.waits import wait_until

REPO = "models/classifier"


def _manifest(client: RegistryClient, layer: bytes) -> dict:
    config = b'{"name":"x"}'
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.test",
            "config": {"mediaType": "application/vnd.test.config+json", "digest": client.push_blob(REPO, config),
                       "size": len(config)},
            "layers": [{"mediaType": "application/octet-stream", "digest": client.push_blob(REPO, layer),
                        "size": len(layer)}]}


def test_manifest_push_resolve_get_and_tags(registry, tmp_path: Path) -> None:
    client = registry.client()
    manifest = _manifest(client, b"layer-bytes")
    digest = client.push_manifest(REPO, "3", manifest)
    ref = Reference.parse(f"{registry.address}/{REPO}:3")
    assert client.resolve(ref) == digest
    parsed, got_digest, raw = client.get_manifest(REPO, digest)
    assert parsed == manifest and got_digest == digest and sha256_digest(raw) == digest
    assert client.get_manifest(REPO, "3")[1] == digest
    # re-tagging with the exact bytes keeps the digest
    assert client.push_manifest_bytes(REPO, "stable", raw, OCI_MANIFEST) == digest
    assert client.list_tags(REPO) == ["3", "stable"]
    assert client.resolve(ref.with_tag("stable")) == digest


def test_blob_round_trip_monolithic_and_chunked(registry, tmp_path: Path, monkeypatch) -> None:
    import edge.transport.oci as registry_module

    monkeypatch.setattr(registry_module, "UPLOAD_CHUNK_BYTES", 256 << 10)
    client = registry.client()
    small = os.urandom(1000)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom((1 << 20) + 123))
    seen: list[tuple[int, int]] = []
    d_small = client.push_blob(REPO, small)
    d_big = client.push_blob(REPO, big, progress=lambda done, total: seen.append((done, total)))
    assert d_big == "sha256:" + hashlib.sha256(big.read_bytes()).hexdigest()
    assert len(seen) >= 5 and seen[-1] == (big.stat().st_size, big.stat().st_size)
    assert sum('"PATCH /v2/' in line for line in registry.access_log()) == 5  # 4 full chunks + the rest
    assert client.download_blob(REPO, d_small, tmp_path / "small.out").read_bytes() == small
    assert client.download_blob(REPO, d_big, tmp_path / "big.out").read_bytes() == big.read_bytes()
    posts = sum('"POST /v2/' in line for line in registry.access_log())
    assert client.push_blob(REPO, big) == d_big  # already there: HEAD, no new upload session
    assert sum('"POST /v2/' in line for line in registry.access_log()) == posts


def _last_blob_get(registry, digest: str, timeout_s: float = 10.0) -> list[str]:
    """The access-log lines of GETs of `digest`, once there are two (or whatever is there after `timeout_s`)."""
    def lines() -> list[str]:
        return [line for line in registry.access_log() if f'"GET /v2/{REPO}/blobs/{digest}' in line]

    with contextlib.suppress(AssertionError):  # the caller's assertion on the lines says what is missing
        wait_until(lambda: len(lines()) >= 2, timeout_s, message=f"two GETs of {digest} in the access log")
    return lines()


def test_download_resumes_with_range_request(registry, tmp_path: Path) -> None:
    client = registry.client()
    data = os.urandom(4 << 20)
    digest = client.push_blob(REPO, data)
    dest = tmp_path / "layer.tar.gz"

    class Interrupted(Exception):
        pass

    def interrupt_halfway(done: int, total: int) -> None:
        if done >= total // 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        client.download_blob(REPO, digest, dest, progress=interrupt_halfway)
    part = tmp_path / "layer.tar.gz.part"
    offset = part.stat().st_size
    assert 0 < offset < len(data) and not dest.exists()
    assert part.read_bytes() == data[:offset]
    progress: list[tuple[int, int]] = []
    client.download_blob(REPO, digest, dest, progress=lambda d, t: progress.append((d, t)))
    assert dest.read_bytes() == data and not part.exists()
    assert progress[0][0] > offset and progress[-1] == (len(data), len(data))
    lines = _last_blob_get(registry, digest)
    assert re.search(rf'" 206 {len(data) - offset} ', lines[-1]), lines[-1]  # only the rest was sent


def test_corrupted_blob_in_registry_storage_raises_digest_mismatch(registry, tmp_path: Path) -> None:
    client = registry.client()
    data = os.urandom(100_000)
    digest = client.push_blob(REPO, data)
    stored = registry.blob_path(digest)
    assert stored.read_bytes() == data
    stored.write_bytes(bytes(b ^ 0xFF for b in data[:10]) + data[10:])
    dest = tmp_path / "blob"
    with pytest.raises(DigestMismatch, match="hashes to"):
        client.download_blob(REPO, digest, dest)
    assert not dest.exists() and not (tmp_path / "blob.part").exists()
    with pytest.raises(DigestMismatch):
        client.fetch_blob(REPO, digest)


def test_unknown_digest_tag_and_repository(registry, tmp_path: Path) -> None:
    client = registry.client()
    client.push_manifest(REPO, "1", _manifest(client, b"x"))
    missing = "sha256:" + "0" * 64
    with pytest.raises(RegistryNotFound, match=re.escape(f"{REPO}@{missing} not found")):
        client.get_manifest(REPO, missing)
    with pytest.raises(RegistryNotFound, match=re.escape(f"{REPO}:nope not found")):
        client.resolve(Reference.parse(f"{registry.address}/{REPO}:nope"))
    with pytest.raises(RegistryNotFound, match="models/other"):
        client.list_tags("models/other")
    with pytest.raises(RegistryNotFound):
        client.download_blob(REPO, missing, tmp_path / "x")


def test_connection_refused_names_the_registry() -> None:
    address = f"127.0.0.1:{free_port()}"
    client = RegistryClient(address, insecure=True, timeout_s=5)
    with pytest.raises(RegistryError, match=re.escape(f"cannot connect to registry {address}: connection refused")):
        client.list_tags(REPO)


def test_basic_auth(basic_registry, tmp_path: Path) -> None:
    client = basic_registry.client()
    digest = client.push_manifest(REPO, "1", _manifest(client, b"secret layer"))
    assert client.list_tags(REPO) == ["1"]
    assert client.get_manifest(REPO, "1")[1] == digest
    anonymous = RegistryClient(basic_registry.address, insecure=True)
    with pytest.raises(RegistryAuthError, match=re.escape(f"registry {basic_registry.address}: not authorised")):
        anonymous.list_tags(REPO)
    wrong = RegistryClient(basic_registry.address, username="edge", password="wrong", insecure=True)
    with pytest.raises(RegistryAuthError, match="credentials were refused"):
        wrong.resolve(Reference.parse(f"{basic_registry.address}/{REPO}:1"))


def test_token_auth(token_registry, tmp_path: Path) -> None:
    client = token_registry.client()
    layer = os.urandom(50_000)
    digest = client.push_manifest(REPO, "1", _manifest(client, layer))
    assert client.resolve(Reference.parse(f"{token_registry.address}/{REPO}:1")) == digest
    manifest = client.get_manifest(REPO, digest)[0]
    out = client.download_blob(REPO, manifest["layers"][0]["digest"], tmp_path / "layer")
    assert out.read_bytes() == layer
    granted = {(r["scope"].rsplit(":", 1)[0], frozenset(r["scope"].rsplit(":", 1)[1].split(",")))
               for r in token_registry.token_server.requests if r["user"] == "edge"}
    assert (f"repository:{REPO}", frozenset({"pull", "push"})) in granted  # order varies with the registry
    wrong = RegistryClient(token_registry.address, username="edge", password="nope", insecure=True)
    with pytest.raises(RegistryAuthError, match="token server refused the credentials"):
        wrong.list_tags(REPO)
    anonymous = RegistryClient(token_registry.address, insecure=True)
    with pytest.raises(RegistryAuthError, match=re.escape(token_registry.address)):
        anonymous.get_manifest(REPO, "1")
