"""Multi-platform versions and channel statements through the device's installer, on a real registry.

- a two-variant index pushed by `edgectl model push` installs the variant for this machine, and the
  arm64 variant when the config forces `registry.platform = "linux/arm64"`; the state says which;
- freeze detection: a channel statement that expired, went missing, or is older than one seen is
  judged, recorded (persisted) and reported once as an event.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.app.wiring import device_target
from edge.config.loader import parse_config
from edge.models.artifact.format import OCI_INDEX
from edge.models.artifact.signing import load_model_private_key, load_model_public_key
from edge.models.state import StateStore
from edge.rollout.channels import ChannelWatch, channel_key
from edge.rollout.installer import ModelInstaller
from edge.transport.oci import referrers_tag
from edge.util.ociref import Reference
from edge.util.platforms import host_platform
from provisioning.cli import main
from provisioning.pki.keys import generate_keys
from provisioning.publish import push_version
from tests.support.artifacts import attach_statement
from tests.support.packages import make_version

REPO = "models/fake"


def variant_folder(root: Path, platform: str) -> Path:
    folder = make_version(root / platform.replace("/", "-"), version=5)
    description = folder / "assets.extra" / "model.json"
    description.write_text(json.dumps({**json.loads(description.read_text()),
                                       "variant": {"platform": platform, "accelerator": None}}))
    (folder / "assets.extra" / "built-for.txt").write_text(platform)
    return folder


def device_config(registry, **registry_keys: object):
    return parse_config({"device_id": "d1", "cameras": [{"name": "c", "source": "rtsp://127.0.0.1:1/x"}],
                         "model": {"name": "fake"},
                         "registry": {"ref": f"{registry.address}/{REPO}:5", "insecure": True, **registry_keys}})


def test_a_two_variant_index_installs_the_variant_for_the_platform(registry, tmp_path: Path, capsys) -> None:
    generate_keys(tmp_path / "keys")
    public = tmp_path / "keys" / "signing.pub"
    amd64, arm64 = variant_folder(tmp_path, "linux/amd64"), variant_folder(tmp_path, "linux/arm64")
    assert main(["model", "push", str(amd64), str(arm64), f"{registry.address}/{REPO}:5", "--insecure",
                 "--sign-key", str(tmp_path / "keys" / "signing.key")]) == 0
    digest = capsys.readouterr().out.strip()
    client = registry.client()
    index = client.get_manifest(REPO, digest)[0]
    assert index["mediaType"] == OCI_INDEX and [m["platform"] for m in index["manifests"]] == [
        {"os": "linux", "architecture": "amd64"}, {"os": "linux", "architecture": "arm64"}]
    assert all(client.referrers(REPO, m["digest"]) for m in index["manifests"])  # each variant is signed
    here = str(host_platform())
    for name, keys, expected in (("here", {}, here), ("arm", {"platform": "linux/arm64"}, "linux/arm64")):
        config = device_config(registry, public_key=str(public), **keys)
        base = tmp_path / name / "fake"
        store = StateStore(base)
        installer = ModelInstaller(base, client, store, public_key=load_model_public_key(public),
                                   target=device_target(config))
        state = store.load()
        installed = installer.install(Reference.parse(config.registry.ref), state)
        assert installed.digest == digest and installed.signature == "model-signing"
        assert (base / "5" / "assets.extra" / "built-for.txt").read_text() == expected
        summary = StateStore(base).load()
        summary.serving_version, summary.serving_digest = 5, digest
        assert summary.summary()["variant"]["platform"] == expected
        assert summary.summary()["signature"] == "model-signing"
    assert here == "linux/amd64"  # this machine: the arm64 answer above came from the override alone


def test_channel_statements_fresh_expired_replayed_and_missing(registry, tmp_path: Path) -> None:
    generate_keys(tmp_path / "keys")
    key = load_model_private_key(tmp_path / "keys" / "signing.key")
    client = registry.client()
    d1, _ = push_version(client, Reference.parse(f"{registry.address}/{REPO}:1"),
                         make_version(tmp_path / "v1", version=1), private_key=key)
    base = tmp_path / "store" / "fake"
    store = StateStore(base)
    state = store.load()
    installer = ModelInstaller(base, client, store, public_key=key.public_key())
    events: list[tuple[str, dict]] = []
    watch = ChannelWatch(installer, state, threading.RLock(), lambda kind, **p: events.append((kind, p)),
                         lambda: store.save(state))
    stable = Reference.parse(f"{registry.address}/{REPO}:stable")
    name = channel_key(stable)
    assert main(["model", "promote", f"{registry.address}/{REPO}", "1", "--channel", "stable", "--insecure"]) == 0
    assert watch.check(stable, d1) is False and state.channels == {}  # never signed: nothing required
    now = time.time()
    attach_statement(client, REPO, d1, key, now - 120, 60)  # issued 2 minutes ago, expired a minute ago
    assert watch.check(stable, d1) is True
    assert [(k, p["status"]) for k, p in events] == [("model_channel_expired", "expired")]
    assert "expired at" in events[0][1]["reason"] and watch.summary(stable)["status"] == "expired"
    assert watch.check(stable, d1) is True and len(events) == 1  # reported once
    assert main(["model", "promote", f"{registry.address}/{REPO}", "1", "--channel", "stable", "--insecure",
                 "--lifetime", "1h", "--sign-key", str(tmp_path / "keys" / "signing.key")]) == 0  # re-signed
    assert watch.check(stable, d1) is False and watch.summary(stable)["status"] == "fresh"
    assert watch.problem(stable) is None and len(events) == 1
    # the registry hides the newest statement and serves an older one that has not expired yet
    older = attach_statement(client, REPO, d1, key, now - 60, 7200)
    index = client.get_manifest(REPO, referrers_tag(d1))[0]
    index["manifests"] = [m for m in index["manifests"] if m["digest"] == older]
    client.push_manifest(REPO, referrers_tag(d1), index)
    assert watch.check(stable, d1) is True
    assert events[-1][0] == "model_channel_statement_refused" and "older than one already seen" in events[-1][1]["reason"]
    # the channel moves to a version nobody signed a statement for
    d2, _ = push_version(client, Reference.parse(f"{registry.address}/{REPO}:stable"),
                         make_version(tmp_path / "v2", version=2), private_key=key)
    assert watch.check(stable, d2) is True
    assert events[-1][0] == "model_channel_expired" and events[-1][1]["status"] == "missing"
    assert StateStore(base).load().channels[name]["status"] == "missing"  # persisted: survives a restart
    # a statement signed by another key does not count
    attach_statement(client, REPO, d2, ec.generate_private_key(ec.SECP256R1()), now, 3600)
    found, skipped = installer.channel_statement(stable, d2)
    assert found is None and "signed with another key" in skipped[0]
    legacy = ModelInstaller(base, client, store, public_key=Ed25519PrivateKey.generate().public_key())
    assert legacy.channel_statement(stable, d2) is None  # ed25519 devices do not judge channels
    assert installer.channel_statement(stable.with_tag("2"), d2) is None  # a version tag is no channel
