"""Hostile registry artifacts: `safe_extract` on crafted archives, `pull_model` against a real docker-registry.

Contract: every bad artifact is refused with an ArtifactError / RegistryError subclass and a clear
message, and nothing is written outside the staging folder.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.errors import ArtifactError, DigestMismatch, RegistryError, RegistryNotFound, UnsafeArtifact
from edge.models.artifact.format import (
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    FILE_MEDIA_TYPE,
    FOLDER_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    TITLE,
)
from edge.models.artifact.layout import check_model_manifest
from edge.models.artifact.pull import pull_model
from edge.models.artifact.tarsafe import safe_extract
from edge.transport.oci import OCI_MANIFEST
from edge.util.ociref import Reference

REPO = "models/hostile"
CONFIG = {"format": 1, "name": "hostile", "version": 1, "input": {"name": "x", "dtype": "float32", "shape": [-1, 1]}}


def tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]], compresslevel: int = 6) -> bytes:
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=compresslevel) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def member(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, size: int | None = None) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if size is None else size
    return info, data if kind == tarfile.REGTYPE else None


def link(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = "/etc/passwd"
    return info, None


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def extract_refused(tmp_path: Path, layer: bytes, max_bytes: int = 1 << 20) -> str:
    """safe_extract refuses `layer`; only the (removed) destination was touched. Returns the message."""
    outer = tmp_path / "outer"
    outer.mkdir(exist_ok=True)
    archive = outer / "layer.tar.gz"
    archive.write_bytes(layer)
    before = snapshot(tmp_path)
    with pytest.raises(ArtifactError) as info:
        safe_extract(archive, outer / "staging" / "dest", max_bytes=max_bytes)
    after = snapshot(tmp_path) - {"outer/staging"}
    assert after == before, sorted(after ^ before)[:20]
    message = str(info.value)
    assert message and "\n" not in message and len(message) < 2000, message[:500]
    return message


@pytest.mark.parametrize("label, members, words", [
    ("absolute", [member("/tmp/evil")], "absolute"),
    ("dotdot", [member("a/../../evil")], ".."),
    ("symlink", [link("l", tarfile.SYMTYPE)], "link"),
    ("hardlink", [link("l", tarfile.LNKTYPE)], "link"),
    ("fifo", [member("f", kind=tarfile.FIFOTYPE)], "special"),
    ("chardev", [member("c", kind=tarfile.CHRTYPE)], "special"),
    ("duplicate", [member("a"), member("a")], "twice"),
    ("file then dir under it", [member("a"), member("a/b")], "inside a file"),
    ("backslash", [member("a\\..\\b")], "backslash"),
    ("empty", [], "empty"),
    ("deep path", [member("/".join(["d"] * 100) + "/f")], "deep"),
    ("very deep path", [member("/".join(["d"] * 3000) + "/f")], "long"),
    ("long name", [member("n" * 5000)], "long"),
])
def test_hostile_tar_members(tmp_path: Path, label: str, members, words: str) -> None:
    message = extract_refused(tmp_path, tar_gz(members))
    assert words in message, (label, message)


@pytest.mark.slow
def test_tar_bomb_many_members(tmp_path: Path) -> None:
    members = [member(f"f{i}", b"") for i in range(20_001)]
    message = extract_refused(tmp_path, tar_gz(members))
    assert "members" in message


def test_tar_bomb_huge_sparse_member(tmp_path: Path) -> None:
    info = tarfile.TarInfo("big")
    info.size = 1 << 40  # a header claiming 1 TiB with (almost) no data behind it
    layer = tar_gz([(info, None)])
    message = extract_refused(tmp_path, layer)
    assert "limit" in message or "truncated" in message or "corrupt" in message


def test_gzip_bomb(tmp_path: Path) -> None:
    zeros = b"\x00" * (8 << 20)
    info = tarfile.TarInfo("zeros")
    info.size = len(zeros)
    layer = tar_gz([(info, zeros)], compresslevel=9)
    assert len(layer) < 64 << 10  # 8 MiB of content in a few KiB
    assert "limit" in extract_refused(tmp_path, layer, max_bytes=1 << 20)


@pytest.mark.parametrize("label, layer", [
    ("truncated gzip", tar_gz([member("saved_model.pb", os.urandom(4096))])[:-1500]),
    ("not gzip", b"PK\x03\x04 this is a zip"),
    ("gzip of garbage", gzip.compress(os.urandom(2048))),
    ("zero bytes", b""),
])
def test_corrupt_layers(tmp_path: Path, label: str, layer: bytes) -> None:
    extract_refused(tmp_path, layer)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layer=st.one_of(st.binary(max_size=4096), st.binary(max_size=2048).map(gzip.compress),
                       st.binary(min_size=1, max_size=64).map(lambda b: tar_gz([member("saved_model.pb", b * 50)])[: len(b) * 3])))
def test_random_bytes_as_a_layer(tmp_path_factory: pytest.TempPathFactory, layer: bytes) -> None:
    extract_refused(tmp_path_factory.mktemp("rand"), layer)


# --- manifests ------------------------------------------------------------------------------------

GOOD_DIGEST = "sha256:" + "a" * 64


def titled(title: object, media_type: str = FILE_MEDIA_TYPE, digest: str = GOOD_DIGEST) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": 1, "annotations": {TITLE: title}}


def manifest(**override) -> dict:
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
           "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": GOOD_DIGEST, "size": 10},
           "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": GOOD_DIGEST, "size": 10}]}
    doc.update(override)
    return doc


@pytest.mark.parametrize("doc", [
    manifest(mediaType="application/vnd.docker.distribution.manifest.v2+json"),
    manifest(schemaVersion=1), manifest(artifactType="application/vnd.oci.image.config.v1+json"),
    manifest(config={"mediaType": "application/json", "digest": GOOD_DIGEST, "size": 1}),
    manifest(config="sha256:abc"), manifest(config=None), manifest(layers=[]), manifest(layers="x"),
    manifest(layers=[{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": GOOD_DIGEST, "size": 1}]),
    manifest(layers=[manifest()["layers"][0]] * 2), manifest(layers=["x"]), manifest(layers=[None]),
    manifest(layers=[{"mediaType": LAYER_MEDIA_TYPE, "digest": "sha256:../../../etc/x", "size": 1}]),
    manifest(layers=[{"mediaType": LAYER_MEDIA_TYPE, "digest": "nocolon", "size": 1}]),
    manifest(layers=[{"mediaType": LAYER_MEDIA_TYPE, "digest": GOOD_DIGEST, "size": -1}]),
    manifest(layers=[{"mediaType": LAYER_MEDIA_TYPE, "digest": GOOD_DIGEST, "size": True}]),
    manifest(layers=[{"mediaType": LAYER_MEDIA_TYPE, "digest": GOOD_DIGEST, "size": "10"}]),
    *[manifest(layers=[titled(name)]) for name in ("../escape", "a/../../b", "/etc/passwd", "a\\b", "a\x00b", "",
                                                    "./a", "a//b", ".", "d/" * 40 + "f", "n" * 2000, 7, None)],
    manifest(layers=[{"mediaType": FILE_MEDIA_TYPE, "digest": GOOD_DIGEST, "size": 1}]),  # no title
    manifest(layers=[titled("a"), titled("a")]), manifest(layers=[titled("a"), titled("a/b")]),
    manifest(layers=[titled("v", FOLDER_MEDIA_TYPE), titled("v/x")]),
    manifest(layers=[titled("saved_model.pb"), manifest()["layers"][0]]),  # 0.2's archive is the only layer
    manifest(layers=[titled("assets.extra/model.json", digest="sha256:" + "b" * 64)]),  # config != model.json
    manifest(layers=[titled(f"f{i}") for i in range(10_001)]),
])
def test_bad_manifests_are_refused(doc: dict) -> None:
    with pytest.raises(ArtifactError) as info:
        check_model_manifest(doc, "reg/models/x@sha256:0")
    assert "reg/models/x" in str(info.value)


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(doc=st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                            st.sampled_from(["schemaVersion", "mediaType", "artifactType", "config", "layers",
                                             "digest", "size"]), inner, max_size=5), max_leaves=20)
       .filter(lambda d: isinstance(d, dict)))
def test_random_manifests(doc: dict) -> None:
    try:
        check_model_manifest(doc, "where")
    except ArtifactError:
        pass


# --- pull_model against a real registry -----------------------------------------------------------

def push_artifact(registry, tag: str, layer: bytes, config: dict | bytes = CONFIG, manifest_override: dict | None = None) -> str:
    client = registry.client()
    config_raw = config if isinstance(config, bytes) else json.dumps(config).encode()
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
           "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": client.push_blob(REPO, config_raw), "size": len(config_raw)},
           "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": client.push_blob(REPO, layer), "size": len(layer)}]}
    doc.update(manifest_override or {})
    return client.push_manifest(REPO, tag, doc)


def pull_refused(registry, tmp_path: Path, tag: str, error: type[Exception] = ArtifactError, max_bytes: int = 1 << 20) -> str:
    staging = tmp_path / "store" / "hostile" / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    before = snapshot(tmp_path)
    with pytest.raises((ArtifactError, RegistryError)) as info:
        pull_model(registry.client(), Reference.parse(f"{registry.address}/{REPO}:{tag}"), staging, max_bytes=max_bytes)
    assert isinstance(info.value, error), (type(info.value), info.value)
    outside = {p for p in snapshot(tmp_path) - before if not p.startswith("store/hostile/.staging")}
    assert not outside, sorted(outside)
    leftovers = [p for p in staging.iterdir() if not p.name.endswith(".part")]
    assert not leftovers, leftovers
    message = str(info.value)
    assert message and "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.slow
def test_pull_model_refuses_hostile_artifacts(registry, tmp_path: Path) -> None:
    model = [member("saved_model.pb", b"pb")]
    push_artifact(registry, "random", os.urandom(3000))
    pull_refused(registry, tmp_path, "random", UnsafeArtifact)
    push_artifact(registry, "truncated", tar_gz(model + [member("v", os.urandom(5000))])[:-2000])
    pull_refused(registry, tmp_path, "truncated", UnsafeArtifact)
    zeros = b"\x00" * (4 << 20)
    push_artifact(registry, "gzbomb", tar_gz(model + [member("zeros", zeros)], compresslevel=9))
    assert "limit" in pull_refused(registry, tmp_path, "gzbomb", UnsafeArtifact)
    push_artifact(registry, "dotdot", tar_gz(model + [member("../../../../escaped", b"x")]))
    pull_refused(registry, tmp_path, "dotdot", UnsafeArtifact)
    push_artifact(registry, "nomodel", tar_gz([member("readme.txt", b"hi")]))
    assert "saved_model.pb" in pull_refused(registry, tmp_path, "nomodel", ArtifactError)
    # the config names the staging folder's prefix: a path in it must not lead outside staging
    for i, name in enumerate(["../../../escaped", "/abs/olute", "a/b", "..", "x\x00y", "é" * 300]):
        push_artifact(registry, f"badname{i}", tar_gz(model), config={**CONFIG, "name": name})
        pull_refused(registry, tmp_path, f"badname{i}", ArtifactError)
    push_artifact(registry, "badconfig", tar_gz(model), config=b"\xff not json")
    pull_refused(registry, tmp_path, "badconfig", ArtifactError)
    push_artifact(registry, "cfgarray", tar_gz(model), config=b"[1, 2]")
    pull_refused(registry, tmp_path, "cfgarray", ArtifactError)
    # wrong media types and a wrong artifact type, pushed as real manifests
    push_artifact(registry, "wrongtype", tar_gz(model), manifest_override={"artifactType": "application/x-other"})
    assert "artifactType" in pull_refused(registry, tmp_path, "wrongtype", ArtifactError)
    # a layer descriptor whose size lies (smaller than the blob)
    layer = tar_gz(model)
    client = registry.client()
    config_raw = json.dumps(CONFIG).encode()
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
           "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": client.push_blob(REPO, config_raw), "size": len(config_raw)},
           "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": client.push_blob(REPO, layer), "size": 10}]}
    client.push_manifest(REPO, "liar", doc)
    pull_refused(registry, tmp_path, "liar", RegistryError)
    # content that does not match its digest (the stored blob corrupted on the registry's disk)
    layer = tar_gz(model + [member("variables/v", os.urandom(1000))])
    push_artifact(registry, "corrupt", layer)
    from edge.util.ociref import sha256_digest
    blob = registry.blob_path(sha256_digest(layer))
    blob.write_bytes(bytes([layer[0] ^ 1]) + layer[1:])
    pull_refused(registry, tmp_path, "corrupt", DigestMismatch)
    # a manifest pointing at a blob the registry does not have: the registry refuses to store it
    with pytest.raises(RegistryError):
        client.push_manifest(REPO, "missing", {**doc, "layers": [{"mediaType": LAYER_MEDIA_TYPE,
                                                                  "digest": "sha256:" + "b" * 64, "size": 5}]})
    pull_refused(registry, tmp_path, "missing", RegistryNotFound)


@pytest.mark.slow
def test_pull_model_refuses_hostile_titled_layers(registry, tmp_path: Path) -> None:
    """One layer per file: folder layers that hold more than their folder, links, bombs, sizes that lie."""
    client = registry.client()
    config_raw = json.dumps(CONFIG).encode()

    def push(tag: str, layers: list[tuple[str, bytes, str]], config: bytes = config_raw) -> None:
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
               "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": client.push_blob(REPO, config), "size": len(config)},
               "layers": [{"mediaType": kind, "digest": client.push_blob(REPO, data), "size": len(data),
                           "annotations": {TITLE: title}} for title, data, kind in layers]}
        client.push_manifest(REPO, tag, doc)

    pb = ("saved_model.pb", b"pb", FILE_MEDIA_TYPE)
    push("outside", [pb, ("variables", tar_gz([member("variables/v", b"1"), member("elsewhere", b"x")]), FOLDER_MEDIA_TYPE)])
    assert "outside 'variables/'" in pull_refused(registry, tmp_path, "outside", UnsafeArtifact)
    push("folderlink", [pb, ("variables", tar_gz([link("variables/l", tarfile.SYMTYPE)]), FOLDER_MEDIA_TYPE)])
    assert "link" in pull_refused(registry, tmp_path, "folderlink", UnsafeArtifact)
    push("folderbomb", [pb, ("variables", tar_gz([member("variables/z", b"\x00" * (4 << 20))], compresslevel=9),
                             FOLDER_MEDIA_TYPE)])
    assert "limit" in pull_refused(registry, tmp_path, "folderbomb", UnsafeArtifact)
    push("notafolder", [pb, ("variables", tar_gz([member("other/v", b"1")]), FOLDER_MEDIA_TYPE)])
    pull_refused(registry, tmp_path, "notafolder", UnsafeArtifact)
    push("big", [pb, ("variables/v", os.urandom(2 << 20), FILE_MEDIA_TYPE)])
    assert "over the 1048576-byte limit" in pull_refused(registry, tmp_path, "big", UnsafeArtifact)
    push("nodescription", [pb])
    assert "model.json" in pull_refused(registry, tmp_path, "nodescription", ArtifactError)
    bad_name = json.dumps({**CONFIG, "name": "../../escaped"}).encode()
    push("badname", [pb, ("assets.extra/model.json", bad_name, FILE_MEDIA_TYPE)], config=bad_name)
    assert "name" in pull_refused(registry, tmp_path, "badname", ArtifactError)
