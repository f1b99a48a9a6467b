"""A multi-platform version and a signed channel, end to end: real docker-registry + Mosquitto + gateway.

The gateway is configured as an arm64 box (`registry.platform = "linux/arm64"`) following `stable`,
which the publisher signs with expiring channel statements (`edgectl model promote --lifetime`):

- it installs the arm64 variant of a two-variant index and says so in the `model` state;
- when the newest statement expires (nobody re-signed), health and the `model` state report it and
  a `model_channel_expired` event is sent, while the version keeps serving;
- a new version moved onto `stable` without a statement is not installed (`missing`) until the
  publisher promotes it with a statement; then it installs, and the problem clears.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from edge.models.artifact.signing import load_model_private_key
from provisioning.cli import main
from provisioning.pki.keys import generate_keys
from tests.support.artifacts import attach_statement
from tests.support.config import render_config
from tests.support.mqtt import latest_retained, payloads
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow

REPO = "models/colour"
DEVICE = "gw-variants"
MODEL = f"edge/{DEVICE}/model"
HEALTH = f"edge/{DEVICE}/health"


def gateway_config(tmp_path: Path, broker, registry, cameras, public_key: Path) -> str:
    extra = "\n".join(["[registry]", f'ref = "{registry.address}/{REPO}:stable"', "poll_interval_s = 2.0",
                       "insecure = true", f'public_key = "{public_key}"', 'platform = "linux/arm64"', "",
                       "[rollout]", "probation_s = 3.0", ""])
    return render_config(DEVICE, cameras, tmp_path / "store", "colour", broker.url, tmp_path / "spool.db",
                         health_interval_s=1.0, extra_sections=extra)


def events(recorder, name: str | None = None) -> list[dict]:
    return [e for e in payloads(recorder, f"edge/{DEVICE}/events") if name is None or e["event"] == name]


def serving(recorder) -> int | None:
    doc = latest_retained(recorder, MODEL)
    return doc["serving"]["version"] if isinstance(doc, dict) else None


def variants(source: Path, out: Path) -> list[Path]:
    """The packaged folder twice, as the amd64 and the arm64 variant (each says which it is)."""
    folders = []
    for platform in ("linux/amd64", "linux/arm64"):
        folder = out / platform.replace("/", "-")
        shutil.copytree(source, folder)
        description = folder / "assets.extra" / "model.json"
        description.write_text(json.dumps({**json.loads(description.read_text()),
                                           "variant": {"platform": platform, "accelerator": None}}))
        (folder / "assets.extra" / "built-for.txt").write_text(platform)
        folders.append(folder)
    return folders


def edgectl(capsys, *argv: object) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out.strip()


def test_arm64_variant_and_an_expiring_channel(mosquitto, mqtt_recorder, registry, gateway_factory, colour_cameras,
                                               colour_packages, tmp_path: Path, capsys) -> None:
    generate_keys(tmp_path / "keys")
    key_file, pub = tmp_path / "keys" / "signing.key", tmp_path / "keys" / "signing.pub"
    repo_ref = f"{registry.address}/{REPO}"
    d1 = edgectl(capsys, "model", "push", *variants(colour_packages["good1"], tmp_path / "v1"), f"{repo_ref}:1",
                 "--insecure", "--sign-key", key_file)
    edgectl(capsys, "model", "promote", repo_ref, "1", "--channel", "stable", "--insecure", "--lifetime", "1h",
            "--sign-key", key_file)
    recorder = mqtt_recorder(mosquitto, f"edge/{DEVICE}/#")
    gw = gateway_factory("variants", gateway_config(tmp_path, mosquitto, registry, colour_cameras, pub)).start()
    wait_until(lambda: serving(recorder) == 1, 180, message="serving v1")
    store = tmp_path / "store" / "colour"
    assert (store / "1" / "assets.extra" / "built-for.txt").read_text() == "linux/arm64"
    wait_until(lambda: (latest_retained(recorder, MODEL).get("channel") or {}).get("status") == "fresh", 30,
               message="a fresh channel statement in the model state")
    state = latest_retained(recorder, MODEL)
    assert state["variant"]["platform"] == "linux/arm64" and state["signature"] == "model-signing"
    assert state["serving"]["digest"] == d1

    # the publisher signs a statement that runs out in a few seconds, then stops re-signing
    attach_statement(registry.client(), REPO, d1, load_model_private_key(key_file), time.time(), 4)
    wait_until(lambda: any(e["status"] == "expired" for e in events(recorder, "model_channel_expired")), 60,
               message="model_channel_expired")
    wait_until(lambda: any("channel" in p and "expired at" in p for p in latest_retained(recorder, HEALTH)["problems"]),
               30, message="the expired channel in health")
    assert latest_retained(recorder, MODEL)["channel"]["status"] == "expired" and serving(recorder) == 1
    assert latest_retained(recorder, HEALTH)["state"] == "degraded"

    # v2 moved onto stable without a statement (--lifetime forgotten): not installed until one names it
    d2 = edgectl(capsys, "model", "push", *variants(colour_packages["good2"], tmp_path / "v2"), f"{repo_ref}:2",
                 "--insecure", "--sign-key", key_file)
    edgectl(capsys, "model", "promote", repo_ref, "2", "--channel", "stable", "--insecure")
    wait_until(lambda: any(e["status"] == "missing" for e in events(recorder, "model_channel_expired")), 60,
               message="the missing statement for v2")
    time.sleep(3)  # a few more checks: still not installed
    assert serving(recorder) == 1 and not (store / "2").exists()
    edgectl(capsys, "model", "promote", repo_ref, "2", "--channel", "stable", "--insecure", "--lifetime", "1h",
            "--sign-key", key_file)
    wait_until(lambda: serving(recorder) == 2, 180, message="v2 once a statement names it")
    wait_until(lambda: not latest_retained(recorder, HEALTH)["problems"], 30, message="health ok again")
    state = latest_retained(recorder, MODEL)
    assert state["channel"]["status"] == "fresh" and state["variant"]["platform"] == "linux/arm64"
    assert state["serving"]["digest"] == d2
    assert gw.terminate() == 0
    assert [e["event"] for e in events(recorder) if e["event"].startswith("model_channel")] == [
        "model_channel_expired", "model_channel_expired"]
    print(f"{DEVICE}: events {[e['event'] for e in events(recorder)]}; channel {state['channel']}")
