"""Model updates end to end: real docker-registry + real Mosquitto + the real gateway subprocess.

- swap: v1 -> v2 by polling, v2 -> v3 by MQTT command, under continuous frames: every seq
  arrives, each camera's results change version exactly once per swap, no frame fails.
- bad artifacts, one gateway run: corrupted blob, signed by another key, unsigned, tampered (a file
  swapped, the signature copied), `../` and symlink tars (signed), oversized layer, wrong outputs,
  NaN outputs — each refused with an event while v1 serves.
- power loss: SIGKILL during download and after it; the restarted gateway serves a complete
  version, leaves no partial folder, and finishes the update.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge.models.artifact.format import ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, read_description
from edge.models.artifact.modelsig import sign_folder
from edge.models.artifact.signing import load_model_private_key
from edge.transport.oci import OCI_MANIFEST
from provisioning.pki.keys import generate_keys
from tests.support.artifacts import attach_bundle, tamper
from tests.support.config import CameraSpec, render_config
from tests.support.frames import BLUE, RED, solid_frames
from tests.support.mqtt import Requester, latest_retained, payloads, seq_report
from tests.support.packages import package_colour, push
from tests.support.registry_proxy import RegistryProxy
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow

DEVICE = "gw-roll"
EVENTS = f"edge/{DEVICE}/events"
MODEL = f"edge/{DEVICE}/model"
HEALTH = f"edge/{DEVICE}/health"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    good, other = tmp_path_factory.mktemp("keys-good"), tmp_path_factory.mktemp("keys-other")
    generate_keys(good)
    generate_keys(other)
    return {"pub": good / "signing.pub", "key": good / "signing.key", "other_key": other / "signing.key"}


def rollout_config(tmp_path: Path, broker, registry, cameras, ref_tag: str, public_key: Path | None,
                   name: str, max_mb: float = 64.0, probation_s: float = 3.0) -> str:
    key_line = f'public_key = "{public_key}"' if public_key else ""
    extra = "\n".join([
        "[registry]", f'ref = "{registry.address}/models/colour:{ref_tag}"', "poll_interval_s = 2.0",
        "insecure = true", key_line, f"max_mb = {max_mb}", "",
        "[rollout]", f"probation_s = {probation_s}", "",
    ])
    return render_config(DEVICE, cameras, tmp_path / "store", "colour", broker.url, tmp_path / f"{name}-spool.db",
                         health_interval_s=1.0, extra_sections=extra)


@pytest.fixture
def cameras(video_file_factory) -> list[CameraSpec]:
    red = video_file_factory(frames=solid_frames(RED), fps=10.0)
    blue = video_file_factory(frames=solid_frames(BLUE), fps=10.0)
    return [CameraSpec("red-cam", str(red), fps=10), CameraSpec("blue-cam", str(blue), fps=10)]


def events(recorder, name: str | None = None) -> list[dict]:
    return [e for e in payloads(recorder, EVENTS) if name is None or e["event"] == name]


def serving(recorder) -> int | None:
    doc = latest_retained(recorder, MODEL)
    return doc["serving"]["version"] if isinstance(doc, dict) else None


def push_layer(registry, tag: str, layer: bytes, config: dict, key: Path | None, folder: Path) -> str:
    """Push a hand-made layer as an edge model artifact; with `key`, attach a model-signing bundle of
    `folder` (what the layer claims to hold)."""
    client = registry.client()
    repo = "models/colour"
    config_raw = json.dumps(config, sort_keys=True).encode()
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
                "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": client.push_blob(repo, config_raw),
                           "size": len(config_raw)},
                "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": client.push_blob(repo, layer), "size": len(layer)}]}
    digest = client.push_manifest(repo, tag, manifest)
    if key is not None:
        attach_bundle(client, repo, digest, sign_folder(folder, load_model_private_key(key))[0])
    return digest


def evil_layer(folder: Path, member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    """The version folder as a tar.gz, plus one hostile member."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
        tar.addfile(member, io.BytesIO(data) if data else None)
    return raw.getvalue()


def versions_by_camera(recorder) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for doc in sorted(payloads(recorder, f"edge/{DEVICE}/results/+"), key=lambda d: d["seq"]):
        out.setdefault(doc["camera"], []).append(doc["model"]["version"])
    return out


def changes(seq: list[int]) -> list[tuple[int, int]]:
    return [(a, b) for a, b in zip(seq, seq[1:]) if a != b]


def test_swap_by_command_and_by_polling_loses_nothing(
        mosquitto, mqtt_recorder, registry, gateway_factory, cameras, colour_packages, keys, tmp_path) -> None:
    recorder = mqtt_recorder(mosquitto, f"edge/{DEVICE}/#")
    # Started before anything is published: the daemon stays up, waits and says so in health.
    gw = gateway_factory("swap", rollout_config(tmp_path, mosquitto, registry, cameras, "stable", keys["pub"],
                                                "swap")).start()

    def waiting() -> bool:
        doc = latest_retained(recorder, HEALTH)
        return isinstance(doc, dict) and any("no model version to serve yet" in p for p in doc["problems"])

    wait_until(waiting, 120, message="health saying it waits for a first version")
    assert gw.alive() and latest_retained(recorder, HEALTH)["state"] == "degraded"
    d1 = push(registry, "stable", colour_packages["good1"], keys["key"])
    wait_until(lambda: serving(recorder) == 1 and len(payloads(recorder, f"edge/{DEVICE}/results/+")) >= 10, 180,
               message="first install serving v1")
    assert latest_retained(recorder, MODEL)["serving"]["digest"] == d1
    # v2 by polling the configured channel
    d2 = push(registry, "stable", colour_packages["good2"], keys["key"])
    wait_until(lambda: any(e["digest"] == d2 for e in events(recorder, "model_probation_passed")), 120,
               message="v2 by polling, switched and through probation")
    # v3 by MQTT command, naming a tag other than the configured one (followed from now on)
    d3 = push(registry, "3", colour_packages["good3"], keys["key"])
    req = Requester(mosquitto, DEVICE)
    try:
        reply = req.request("deploy", json.dumps({"ref": f"{registry.address}/models/colour:3"}).encode(), 60)
    finally:
        req.stop()
    assert reply["ok"] and reply["result"]["queued"], reply
    wait_until(lambda: any(e["digest"] == d3 for e in events(recorder, "model_probation_passed")), 120,
               message="v3 by command")
    seen = len(payloads(recorder, f"edge/{DEVICE}/results/+"))
    wait_until(lambda: len(payloads(recorder, f"edge/{DEVICE}/results/+")) > seen + 20, 60)
    wait_until(lambda: latest_retained(recorder, HEALTH)["model"]["version"] == 3, 30)
    health = latest_retained(recorder, HEALTH)
    assert health["inference"]["frames_failed"] == 0 and health["inference"]["errors"] == 0
    assert health["model"]["rollout"]["serving"] == {"version": 3, "digest": d3}
    assert gw.terminate() == 0
    docs = payloads(recorder, f"edge/{DEVICE}/results/+") + payloads(recorder, EVENTS)
    _, _, gaps = seq_report(docs)
    assert gaps == [], f"lost seqs {gaps[:20]}"
    for camera, versions in versions_by_camera(recorder).items():
        assert changes(versions) == [(1, 2), (2, 3)], (camera, changes(versions))
    names = [e["event"] for e in events(recorder)]
    for name in ("model_download_started", "model_downloaded", "model_switched"):
        assert names.count(name) == 3, (name, names)
    assert names.count("model_probation_passed") == 2  # the first install has nothing to fall back to
    store = tmp_path / "store" / "colour"
    assert sorted(p.name for p in store.iterdir() if p.name.isdigit()) == ["1", "2", "3"]
    state = json.loads((store / ".edge-state.json").read_text())
    assert state["serving"]["version"] == 3 and state["previous"]["version"] == 2


def test_bad_artifacts_are_refused_while_v1_serves(
        mosquitto, mqtt_recorder, registry, gateway_factory, cameras, colour_packages, keys, tmp_path) -> None:
    recorder = mqtt_recorder(mosquitto, f"edge/{DEVICE}/#")
    push(registry, "stable", colour_packages["good1"], keys["key"])
    gw = gateway_factory("bad", rollout_config(tmp_path, mosquitto, registry, cameras, "stable", keys["pub"],
                                               "bad", max_mb=4.0)).start()
    wait_until(lambda: serving(recorder) == 1, 180, message="serving v1")
    req = Requester(mosquitto, DEVICE)
    client = registry.client()
    fresh = tmp_path / "fresh"

    def package(version: int, variant: str = "good") -> Path:
        return package_colour(fresh / f"{version}-{variant}", version, variant)

    def layer_digest(digest: str) -> str:
        return client.get_manifest("models/colour", digest)[0]["layers"][0]["digest"]

    def deploy_and_expect(tag: str, digest: str, event: str, reason: str) -> dict:
        reply = req.request("deploy", json.dumps({"ref": f"{registry.address}/models/colour:{tag}"}).encode(), 60)
        assert reply["ok"], reply
        wait_until(lambda: any(e.get("digest") == digest for e in events(recorder, event)), 120,
                   message=f"{event} for {tag}")
        found = [e for e in events(recorder, event) if e.get("digest") == digest][-1]
        assert reason in found["reason"], (tag, found["reason"])
        assert serving(recorder) == 1
        print(f"{tag}: {event}: {found['reason'][:160]}")
        return found

    try:
        # corrupted blob in the registry's storage
        d = push(registry, "corrupt", package(2), keys["key"])
        blob = registry.blob_path(layer_digest(d))
        blob.write_bytes(b"\0" * blob.stat().st_size)
        deploy_and_expect("corrupt", d, "model_install_failed", "hashes to")
        # signed with a key the device does not trust
        d = push(registry, "badsig", package(3), keys["other_key"])
        deploy_and_expect("badsig", d, "model_install_failed", "signed with another key")
        # unsigned while a key is configured
        d = push(registry, "unsigned", package(4), None)
        deploy_and_expect("unsigned", d, "model_install_failed", "unsigned artifact")
        # a registry that swaps a file and copies the signature onto the new manifest
        d = tamper(client, "models/colour", push(registry, "source10", package(10), keys["key"]),
                   "saved_model.pb", b"evil graph", "tampered")
        deploy_and_expect("tampered", d, "model_install_failed", "changed: saved_model.pb")
        # ../ in the tar (signed: extraction itself must refuse it)
        folder = package(5)
        config = read_description(folder)
        member = tarfile.TarInfo("../escape.txt")
        member.size = 4
        d = push_layer(registry, "dotdot", evil_layer(folder, member, b"evil"), config, keys["key"], folder)
        deploy_and_expect("dotdot", d, "model_install_failed", "..")
        # a symlink pointing out of the folder
        member = tarfile.TarInfo("assets.extra/link")
        member.type, member.linkname = tarfile.SYMTYPE, "../../../../etc"
        d = push_layer(registry, "symlink", evil_layer(folder, member), config, keys["key"], folder)
        deploy_and_expect("symlink", d, "model_install_failed", "link")
        # a layer bigger than registry.max_mb
        big = package(7)
        (big / "assets.extra" / "padding.bin").write_bytes(os.urandom(5 << 20))
        d = push(registry, "big", big, keys["key"])
        deploy_and_expect("big", d, "model_install_failed", "limit")
        # outputs that do not match the golden reference; NaN outputs
        d = push(registry, "wrong", package(8, "permuted"), keys["key"])
        deploy_and_expect("wrong", d, "model_validation_failed", "top-1")
        d = push(registry, "nan", package(9, "nan"), keys["key"])
        deploy_and_expect("nan", d, "model_validation_failed", "NaN")
        # nothing of them on disk; v1 still classifies correctly
        store = tmp_path / "store" / "colour"
        assert sorted(p.name for p in store.iterdir() if p.name.isdigit()) == ["1"]
        assert not (tmp_path / "escape.txt").exists() and not (store / "escape.txt").exists()
        assert [p.name for p in (store / ".staging").iterdir() if not p.name.endswith(".part")] == []
        state = json.loads((store / ".edge-state.json").read_text())
        assert len(state["bad"]) >= 7 and state["serving"]["version"] == 1
        reply = req.request("rollback", b"{}")
        assert reply == {"ok": False, "command": "rollback", "error": "no previous version to roll back to"}
    finally:
        req.stop()
    assert gw.terminate() == 0
    for camera, versions in versions_by_camera(recorder).items():
        assert set(versions) == {1}, camera
    results = payloads(recorder, f"edge/{DEVICE}/results/red-cam")
    assert all(d["top_k"][0]["label"] == "red" for d in results)
    assert latest_retained(recorder, HEALTH)["inference"]["frames_failed"] == 0


def wait_log(gw, text: str, timeout_s: float) -> None:
    wait_until(lambda: text in gw.log(), timeout_s, interval_s=0.005, message=f"{text!r} in the gateway log")


def test_sigkill_during_install_restarts_into_a_complete_version(
        mosquitto, mqtt_recorder, registry, gateway_factory, cameras, colour_packages, keys, tmp_path) -> None:
    """SIGKILL right after the download starts, with a layer half on disk, and after the download
    (unpacked, not validated): each restart serves v1, then v2 installs whole. The gateway reads the
    registry through a loopback proxy that stalls the big layer after its first 64 KiB while the first
    two kills happen (on loopback 48 MiB arrive faster than a poll could see the half-written file)."""
    recorder = mqtt_recorder(mosquitto, f"edge/{DEVICE}/#")
    push(registry, "stable", colour_packages["good1"], keys["key"])
    proxy = RegistryProxy(registry.address, hold_s=120)
    try:
        config = rollout_config(tmp_path, mosquitto, SimpleNamespace(address=proxy.address), cameras, "stable",
                                keys["pub"], "kill", probation_s=1.0)
        gw = gateway_factory("kill", config).start()
        wait_until(lambda: serving(recorder) == 1, 180, message="serving v1")
        store = tmp_path / "store" / "colour"
        big = package_colour(tmp_path / "big2", 2)
        (big / "assets.extra" / "padding.bin").write_bytes(os.urandom(48 << 20))
        d2 = push(registry, "2", big, keys["key"])  # not on the channel yet: stall its big layer first
        with registry.client() as client:
            manifest = client.get_manifest("models/colour", d2)[0]
        big_layer = max(manifest["layers"], key=lambda layer: layer["size"])["digest"]
        proxy.misbehave("stall", {big_layer})
        assert push(registry, "stable", big, keys["key"]) == d2
        killed_at = []
        staging = store / ".staging"

        def partial_download() -> bool:
            return staging.is_dir() and any(p.name.endswith(".part") and p.stat().st_size > 0
                                            for p in staging.iterdir())

        # right after the download starts; with the layer half on disk; downloaded and unpacked, not validated
        for marker in ("event model_download_started", "partial download", "event model_downloaded"):
            if marker == "partial download":
                wait_until(partial_download, 120, message="a partial layer download on disk")
            else:
                wait_log(gw, marker, 120)
            gw.kill()
            killed_at.append(marker)
            if marker == "partial download":
                proxy.heal()  # the next start downloads the rest
            leftovers = sorted(p.name for p in store.iterdir())
            assert all(name.isdigit() is False or (store / name / "saved_model.pb").is_file() for name in leftovers)
            staged = sorted(p.name for p in staging.iterdir()) if staging.exists() else []
            print(f"killed after {marker!r}: store {leftovers}, staging {staged}")
            gw.log_path.write_text("")  # the next marker must come from the restarted process
            gw.start()
            wait_until(lambda: "gateway_started" in gw.log(), 180, message="restarted gateway serving")
            assert "model colour version 1 ready" in gw.log() or "version 1" in gw.log()
        resumed = [seen for seen in proxy.seen(big_layer) if seen.mode == "pass"]
        assert resumed and resumed[0].range is not None, resumed  # the half on disk was kept and resumed
        wait_until(lambda: any(e["digest"] == d2 for e in events(recorder, "model_probation_passed")), 180,
                   message="v2 installed after the kills")
        assert gw.terminate() == 0
        assert sorted(p.name for p in store.iterdir() if p.name.isdigit()) == ["1", "2"]
        assert [p.name for p in (store / ".staging").iterdir() if not p.name.endswith(".part")] == []
        state = json.loads((store / ".edge-state.json").read_text())
        assert state["serving"] == {"version": 2, "digest": d2} and state["installing"] is None
        for camera, versions in versions_by_camera(recorder).items():
            assert set(changes(versions)) <= {(1, 2)}, camera
        print(f"killed at {killed_at}; restarted into v1, then installed v2")
    finally:
        proxy.close()
