"""A remote command cannot disarm the device (issue 19), against a real TLS + ACL Mosquitto, the real
docker-registry and the real gateway, driven by the operator's `edgectl fleet` client.

The attacker holds the fleet operator's broker account. Every trust anchor (the ONE list,
edge.config.trust_keys) is refused through cmd/config with a reply naming it, a `config_refused`
event and not one byte changed on disk; so is the issue's example patch, a sensitive command
without a signature, a replayed, expired, misaddressed, foreign-key or tampered signed document,
and, after a root rotation, documents signed by the old root. A signed change is applied and its
counter persists across a restart. After every refusal the model keeps serving and results keep
arriving on MQTT.
"""
from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.config.trust_keys import anchor_keys
from edge.errors import EXIT_RESTART
from edge.util.signed import DocType
from tests.support.processes import edgectl
from tests.support.trust import ISSUE_19_PATCH, attack_patch, rotation_content, sign
from tests.support.trust_fleet import TrustFleet
from tests.support.waits import wait_until

DEVICE = "gw-trust"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, colour_packages: dict[str, Path]) -> Iterator[TrustFleet]:
    fleet = TrustFleet.build(tmp_path_factory.mktemp("trust-e2e"), colour_packages, DEVICE)
    try:
        fleet.push("stable", "good1")
        fleet.start_gateway()
        fleet.wait_serving(1)
        fleet.results_flow(1)
        yield fleet
    finally:
        fleet.close()


def on_disk(fleet: TrustFleet) -> tuple[bytes, bytes | None, dict]:
    """The config file, its .bak and the trust state: what a refused change must leave alone."""
    bak = fleet.config_path.with_name(fleet.config_path.name + ".bak")
    return fleet.config_path.read_bytes(), bak.read_bytes() if bak.exists() else None, fleet.trust_state()


def refused(fleet: TrustFleet, reply: dict, *needles: str) -> None:
    assert reply["ok"] is False, reply
    for needle in needles:
        assert needle in reply["error"], (needle, reply["error"])


@pytest.mark.parametrize("key", anchor_keys())
def test_each_trust_anchor_is_refused_without_a_signature(fleet: TrustFleet, key: str) -> None:
    before, seq, refusals = on_disk(fleet), fleet.last_seq(), len(fleet.events("config_refused"))
    reply = fleet.request("config", {"patch": attack_patch(key, "red-cam", fleet.config_doc())})
    refused(fleet, reply, key, "trust anchor", "edgectl trust sign config", "Nothing was changed")
    assert on_disk(fleet) == before
    event = fleet.wait_event("config_refused", since=refusals)
    assert key in event["keys"] and event["signed"] is False
    fleet.results_flow(1, after_seq=seq)
    assert fleet.gateway is not None and fleet.gateway.alive()


def test_the_issue_19_patch_is_refused_and_changes_nothing(fleet: TrustFleet) -> None:
    before, seq = on_disk(fleet), fleet.last_seq()
    reply = fleet.request("config", ISSUE_19_PATCH)
    # (this registry is plain HTTP on loopback, so `insecure = true` is no change here)
    refused(fleet, reply, "refused: registry.public_key, registry.ref are trust anchors")
    assert on_disk(fleet) == before
    assert fleet.config_doc()["registry"]["public_key"] == str(fleet.keys["model.pub"])
    fleet.results_flow(1, after_seq=seq)
    ping = fleet.request("ping", {})["result"]
    assert ping["model"]["version"] == 1
    assert ping["trust"]["root_version"] == 1 and ping["trust"]["counter"] == 0
    assert ping["command_sensitivity"] == {"config": "operational", "deploy": "operational", "ping": "read-only",
                                           "restart-camera": "operational", "rollback": "operational",
                                           "snapshot": "read-only", "trust": "sensitive"}
    docs = (Path(__file__).resolve().parents[2] / "docs" / "threat-model.md").read_text()
    for name, sensitivity in ping["command_sensitivity"].items():  # the docs' table is the running code's
        assert f"| `{name}` | {sensitivity} |" in docs, name


def test_a_sensitive_command_needs_a_signed_document(fleet: TrustFleet) -> None:
    before, seq = on_disk(fleet), fleet.last_seq()
    refused(fleet, fleet.request("trust", {}), "sensitive command", "edgectl trust sign")
    refused(fleet, fleet.request("trust", {"signed": {"payload": "e30=", "signatures": []}}), "root rotation refused")
    content = rotation_content(fleet.keys["stranger"], 2)
    forged = sign(DocType.ROOT_ROTATION, fleet.keys["stranger"], device=DEVICE, content=content)
    refused(fleet, fleet.request("trust", {"signed": forged}), "not signed by the fleet root key")
    assert on_disk(fleet) == before
    fleet.wait_event("signed_document_refused", command="trust")
    fleet.results_flow(1, after_seq=seq)


def test_deploy_or_rollback_from_another_registry_is_refused(fleet: TrustFleet) -> None:
    before, seq = on_disk(fleet), fleet.last_seq()
    refused(fleet, fleet.request("deploy", {"ref": "evil.example:5000/models/colour:stable"}),
            "is on registry evil.example:5000", f"configured for {fleet.registry.address}")
    content = {"model": "colour", "version": 1, "digest": "sha256:" + "0" * 64,
               "ref": "evil.example:5000/models/colour@sha256:" + "0" * 64}
    doc = sign(DocType.ROLLBACK, fleet.keys["root"], device=DEVICE, content=content)
    refused(fleet, fleet.request("rollback", {"signed": doc}), "signed rollback refused", "is on registry evil")
    assert on_disk(fleet) == before
    fleet.results_flow(1, after_seq=seq)


def test_signed_change_applies_once_and_bad_documents_are_refused(fleet: TrustFleet) -> None:
    new_source = str(fleet.workdir / "red-cam-2.avi")
    patch = {"patch": {"cameras": {"red-cam": {"source": new_source}}}}  # an anchor that applies live
    doc = sign(DocType.CONFIG_PATCH, fleet.keys["root"], device=DEVICE, content=patch)
    config_before = fleet.config_path.read_bytes()
    reply = fleet.request("config", {"signed": doc})
    assert reply["ok"], reply
    assert reply["result"]["applied"] == "live" and reply["result"]["changed"] == ["cameras.red-cam.source"]
    assert fleet.config_doc()["cameras"][0]["source"] == new_source
    assert fleet.config_path.with_name("gateway.toml.bak").read_bytes() == config_before
    counter = json.loads(base64.b64decode(doc["payload"]))["counter"]
    assert fleet.trust_state()["counter"] == counter
    accepted = fleet.wait_event("signed_document_accepted", command="config")
    assert accepted["counter"] == counter and accepted["changed"] == ["cameras.red-cam.source"]
    fleet.results_flow(1)

    now = time.time()
    attacks = {
        "replayed": ({"signed": doc}, "replayed or outdated document"),
        "expired": ({"signed": sign(DocType.CONFIG_PATCH, fleet.keys["root"], device=DEVICE, content=patch,
                                    now=now - 7200, expires_in_s=3600)}, "expired at"),
        "for another device": ({"signed": sign(DocType.CONFIG_PATCH, fleet.keys["root"], device="gw-other",
                                               content=patch)}, "this device is 'gw-trust'"),
        "foreign key": ({"signed": sign(DocType.CONFIG_PATCH, fleet.keys["stranger"], device=DEVICE,
                                        content=patch)}, "not signed by the fleet root key"),
        "tampered": ({"signed": tamper(sign(DocType.CONFIG_PATCH, fleet.keys["root"], device=DEVICE, content=patch),
                                      {"registry": {"public_key": None}})}, "the document was altered"),
        "patch and signed": ({"patch": {}, "signed": doc}, "either"),
    }
    for name, (payload, needle) in attacks.items():
        before, seq = on_disk(fleet), fleet.last_seq()
        refusals = len(fleet.events("config_refused"))
        refused(fleet, fleet.request("config", payload), needle)
        assert on_disk(fleet) == before, name
        if name != "patch and signed":
            assert fleet.wait_event("config_refused", since=refusals)["signed"] is True
        fleet.results_flow(1, after_seq=seq)


def tamper(envelope: dict, patch: dict) -> dict:
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["content"]["patch"] = patch
    return {**envelope, "payload": base64.b64encode(json.dumps(payload).encode()).decode()}


def test_root_rotation_retires_the_old_key(fleet: TrustFleet) -> None:
    seq = fleet.last_seq()
    rotate = sign(DocType.ROOT_ROTATION, fleet.keys["root"], device="*", content=rotation_content(fleet.keys["root2"], 2),
                  extra_keys=(fleet.keys["root2"],))
    reply = fleet.request("trust", {"signed": rotate})
    assert reply["ok"] and reply["result"]["root_version"] == 2, reply
    fleet.wait_event("trust_root_rotated", root_version=2)
    refused(fleet, fleet.request("trust", {"signed": rotate}), "replayed")

    back = {"patch": {"cameras": {"red-cam": {"source": str(fleet.workdir / "red-cam.avi")}}}}
    before = on_disk(fleet)
    old_root = sign(DocType.CONFIG_PATCH, fleet.keys["root"], device=DEVICE, content=back)
    refused(fleet, fleet.request("config", {"signed": old_root}), "not signed by the fleet root key (version 2)")
    assert on_disk(fleet) == before
    new_root = sign(DocType.CONFIG_PATCH, fleet.keys["root2"], device=DEVICE, content=back)
    reply = fleet.request("config", {"signed": new_root})
    assert reply["ok"] and reply["result"]["changed"] == ["cameras.red-cam.source"], reply
    fleet.results_flow(1, after_seq=seq)


def test_signed_restart_change_through_edgectl_persists_with_its_counter(fleet: TrustFleet) -> None:
    """The operator's whole workflow: `edgectl trust sign` offline, `edgectl fleet cmd --signed` over TLS."""
    gateway = fleet.gateway
    assert gateway is not None
    signed = fleet.workdir / "timeout.json"
    proc = edgectl("trust", "sign", "config", "--key", fleet.keys["root2"], "--device", DEVICE,
                   "--patch", '{"registry": {"timeout_s": 20.0}}', "--out", signed)
    assert proc.returncode == 0, proc.stderr
    broker = ["--broker", fleet.broker.url, "--ca-file", fleet.tls["ca"], "--cert", fleet.tls["op_cert"],
              "--key", fleet.tls["op_key"]]
    proc = edgectl("fleet", "cmd", DEVICE, "config", "--signed", signed, *broker)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)["result"]
    assert result["applied"] == "restart" and result["restart_keys"] == ["registry.timeout_s"]
    assert gateway.proc is not None and gateway.proc.wait(60) == EXIT_RESTART
    assert fleet.config_doc()["registry"]["timeout_s"] == 20.0
    counter = fleet.trust_state()["counter"]

    seq = fleet.last_seq()
    fleet.start_gateway()  # what systemd does on exit status 75
    fleet.results_flow(1, after_seq=seq, timeout_s=180)
    before = on_disk(fleet)
    proc = edgectl("fleet", "cmd", DEVICE, "config", "--signed", signed, *broker)
    assert proc.returncode == 1 and "replayed or outdated document" in proc.stdout
    assert on_disk(fleet) == before
    ping = fleet.request("ping", {})["result"]
    assert ping["trust"]["root_version"] == 2 and ping["trust"]["counter"] == counter
    wait_until(lambda: fleet.gateway is not None and fleet.gateway.alive(), 1)
