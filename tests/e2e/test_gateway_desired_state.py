"""Desired state end to end: the real gateway, a real docker-registry and a real Mosquitto.

One device, one story: it converges to a desired model and config revision (`edgectl fleet desired
set`); it is stopped, its desired state changes while it is away, and it converges when it starts
again; a stale generation, a reused generation with another target and malformed documents are
refused (reported, an event each) while it keeps serving and publishing results, also after a
restart; a config revision touching a trust anchor is refused; the previous desired target is set
back (what an aborted rollout does) with the one-step rollback.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioning.cli import main
from provisioning.fleet.client import BrokerOptions, FleetClient
from tests.support.config import CameraSpec, render_config
from tests.support.frames import RED, solid_frames
from tests.support.mqtt import latest_retained, payloads
from tests.support.packages import push
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow

DEVICE = "gw-ds"
BASE = f"edge/{DEVICE}"


def events(recorder, name: str) -> list[dict]:
    return [e for e in payloads(recorder, f"{BASE}/events") if e["event"] == name]


def test_device_converges_reconnects_refuses_bad_documents_and_sets_the_previous_target_back(
        mosquitto, mqtt_recorder, registry, gateway_factory, video_file_factory, colour_packages, tmp_path,
        capsys) -> None:
    recorder = mqtt_recorder(mosquitto, f"{BASE}/#")
    push(registry, "stable", colour_packages["good1"], None)
    d2 = push(registry, "2", colour_packages["good2"], None)
    d3 = push(registry, "3", colour_packages["good3"], None)
    video = video_file_factory(frames=solid_frames(RED), fps=5.0)
    extra = "\n".join(["[registry]", f'ref = "{registry.address}/models/colour:stable"', "poll_interval_s = 300.0",
                       "insecure = true", "", "[rollout]", "probation_s = 1.0", "probation_latency_factor = 1000.0",
                       "", "[fleet]", f'state_file = "{tmp_path / "desired-state.json"}"', ""])
    text = render_config(DEVICE, [CameraSpec("cam", str(video), fps=5)], tmp_path / "store", "colour", mosquitto.url,
                         tmp_path / "spool.db", health_interval_s=1.0, serving={"runtime": "tensorflow"},
                         extra_sections=extra)
    gw = gateway_factory("ds", text).start()

    def reported() -> dict:
        doc = latest_retained(recorder, f"{BASE}/reported")
        return doc if isinstance(doc, dict) else {}

    def serving() -> int | None:
        doc = latest_retained(recorder, f"{BASE}/model")
        return doc["serving"]["version"] if isinstance(doc, dict) and doc.get("state") == "serving" else None

    wait_until(lambda: serving() == 1 and reported().get("state") == "none", 300, message="v1 and reported (none)")
    broker = ["--broker", mosquitto.url]

    # 1. converge: model v2 and a config revision, written by `edgectl fleet desired set`
    assert main(["fleet", "desired", "set", DEVICE, "--model", f"{registry.address}/models/colour:2",
                 "--config", '{"results": {"min_score": 0.01}}', "--registry-insecure", *broker]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["generation"] == 1 and written["model"] == {"ref": f"{registry.address}/models/colour:2",
                                                                "digest": d2}
    wait_until(lambda: reported().get("generation") == 1 and reported().get("state") == "converged", 240,
               message="generation 1 converged")
    doc = reported()
    assert doc["serving"] == {"version": 2, "digest": d2} and doc["model"]["state"] == "serving"
    assert doc["config"] == {"revision": 1, "state": "applied", "reason": None} and doc["config_revision"] == 1
    # the event travels through the spool, a moment after the retained `reported`
    wait_until(lambda: [e["generation"] for e in events(recorder, "desired_state_converged")] == [1], 30,
               message="the desired_state_converged event")
    assert main(["fleet", "desired", "show", DEVICE, *broker]) == 0
    assert json.loads(capsys.readouterr().out)["reported"]["generation"] == 1

    # 2. offline while its desired state changes: it converges when it is back
    assert gw.terminate() == 0
    wait_until(lambda: latest_retained(recorder, f"{BASE}/status") == "stopped", 30, message="status stopped")
    op = FleetClient(BrokerOptions(url=mosquitto.url)).connect(20)
    try:
        def publish(doc: dict | bytes) -> None:
            payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
            op.publish(f"{BASE}/desired", payload, retain=True).wait_for_publish(20)

        target3 = {"ref": f"{registry.address}/models/colour:3", "digest": d3}
        publish({"generation": 2, "model": target3, "config": {"revision": 1, "values": {"results": {
            "min_score": 0.01}}}, "rollout": "r-week"})
        gw = gateway_factory("ds-2", text).start()
        wait_until(lambda: reported().get("generation") == 2 and reported().get("state") == "converged", 300,
                   message="generation 2 converged after the restart")
        assert reported()["serving"] == {"version": 3, "digest": d3} and serving() == 3

        # 3. bad documents: refused, reported, nothing changes, results keep coming
        results_before = len(recorder.messages(f"{BASE}/results/+"))
        publish({"generation": 1, "model": {"ref": f"{registry.address}/models/colour:2", "digest": d2}})
        wait_until(lambda: (reported().get("refused") or {}).get("generation") == 1, 60, message="stale refused")
        assert "older than generation 2" in reported()["refused"]["reason"]
        publish({"generation": 2, "model": {"ref": f"{registry.address}/models/colour:2", "digest": d2}})
        wait_until(lambda: "another model/config" in str((reported().get("refused") or {}).get("reason")), 60,
                   message="conflicting generation refused")
        publish(b'{"generation": 9, "model": ')
        wait_until(lambda: "not valid JSON" in str((reported().get("refused") or {}).get("reason")), 60,
                   message="malformed document refused")
        publish({"generation": 9, "model": target3, "registry": {"ref": "evil.example:5000/m:1"}})
        wait_until(lambda: "unknown field(s) ['registry']" in str((reported().get("refused") or {}).get("reason")),
                   60, message="unknown field refused")
        assert reported()["generation"] == 2 and reported()["state"] == "converged" and serving() == 3
        wait_until(lambda: len(events(recorder, "desired_state_refused")) == 4, 30, message="four refusal events")
        wait_until(lambda: len(recorder.messages(f"{BASE}/results/+")) > results_before + 5, 60,
                   message="results still flowing")
        # the broker now retains the stale document: a restart refuses it again (the generation is on disk)
        publish({"generation": 1, "model": {"ref": f"{registry.address}/models/colour:2", "digest": d2}})
        assert gw.terminate() == 0
        refusals = len(events(recorder, "desired_state_refused"))
        gw = gateway_factory("ds-3", text).start()
        wait_until(lambda: len(events(recorder, "desired_state_refused")) > refusals, 240,
                   message="the stale document refused after the restart")
        wait_until(lambda: serving() == 3, 120, message="v3 still serving")

        # 4. a config revision that touches a trust anchor is refused; the model part is unaffected
        publish({"generation": 3, "model": target3, "config": {"revision": 2, "values": {
            "registry": {"ref": "evil.example:5000/models/colour:1"}}}})
        wait_until(lambda: reported().get("generation") == 3 and reported().get("state") == "failed", 60,
                   message="anchor revision refused")
        assert "never changes trust anchors" in reported()["config"]["reason"]
        assert "evil.example" not in Path(gw.config_path).read_text() and serving() == 3

        # 5. the previous target set back (an aborted rollout's restore): the one-step rollback to v2
        publish({"generation": 4, "model": {"ref": f"{registry.address}/models/colour:2", "digest": d2},
                 "config": {"revision": 3, "values": {}}, "restores": "r-week"})
        wait_until(lambda: reported().get("generation") == 4 and reported().get("state") == "converged", 120,
                   message="set back to v2")
        assert reported()["serving"] == {"version": 2, "digest": d2}
        wait_until(lambda: events(recorder, "model_rolled_back"), 30, message="the model_rolled_back event")
        assert events(recorder, "model_rolled_back")[-1]["version"] == 2
        assert "min_score" not in Path(gw.config_path).read_text()  # the device's own value (unset) is back
    finally:
        op.close()
    assert gw.terminate() == 0
