"""`edgectl fleet deploy` over three real gateways, a real docker-registry and a real Mosquitto.

gate-01..03 serve the colour model from the registry. gate-03 overrides the model's preprocessing
(`[model.preprocess] color = "BGR"`), so any version with golden images fails validation there;
it starts from the golden-less variant (`require_golden = false`), version 6. A rollout of v2 (canary
gate-01, then one device per wave) HALTS at gate-03, which refuses v2 as older than the v6 it accepted
(rollback protection), and rolls gate-01 and gate-02 back to v1: exit 1. A
rollout of v3 to gate-01,gate-02 completes: exit 0. Also `fleet ls`, `cmd`, `watch` on live devices.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioning.cli import main
from tests.support.config import CameraSpec, render_config
from tests.support.frames import RED, solid_frames
from tests.support.mqtt import latest_retained
from tests.support.packages import push
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow

DEVICES = ("gate-01", "gate-02", "gate-03")


def gateway_config(device: str, tmp_path: Path, broker, registry, camera: str, tag: str, bgr: bool) -> str:
    extra = "\n".join([
        "[registry]", f'ref = "{registry.address}/models/colour:{tag}"', "poll_interval_s = 300.0",
        "insecure = true", "",
        "[rollout]", "probation_s = 1.0", f"require_golden = {'false' if bgr else 'true'}", "",
    ])
    if bgr:
        extra += '\n[model.preprocess]\ncolor = "BGR"\n'
    return render_config(device, [CameraSpec("cam", camera, fps=5)], tmp_path / device / "store", "colour",
                         broker.url, tmp_path / f"{device}-spool.db", health_interval_s=1.0,
                         serving={"runtime": "tensorflow"}, extra_sections=extra)


def serving(recorder, device: str) -> tuple[int | None, str | None]:
    doc = latest_retained(recorder, f"edge/{device}/model")
    if not isinstance(doc, dict):
        return None, None
    return doc["serving"]["version"], doc["state"]


def test_staged_rollout_halts_and_rolls_back_then_completes(
        mosquitto, mqtt_recorder, registry, gateway_factory, video_file_factory, colour_packages,
        tmp_path, capsys) -> None:
    recorder = mqtt_recorder(mosquitto, "edge/#")
    push(registry, "stable", colour_packages["good1"], None)
    push(registry, "start3", colour_packages["nogolden"], None)
    d2 = push(registry, "2", colour_packages["good2"], None)
    d3 = push(registry, "3", colour_packages["good3"], None)
    video = str(video_file_factory(frames=solid_frames(RED), fps=5.0))
    gateways = {}
    for device in DEVICES:
        bgr = device == "gate-03"
        text = gateway_config(device, tmp_path, mosquitto, registry, video, "start3" if bgr else "stable", bgr)
        gateways[device] = gateway_factory(device, text).start()
    expected_start = {"gate-01": 1, "gate-02": 1, "gate-03": 6}
    wait_until(lambda: all(serving(recorder, d) == (v, "serving") for d, v in expected_start.items()), 300,
               interval_s=0.5, message="all three gateways serving their first version")
    broker = ["--broker", mosquitto.url]

    assert main(["fleet", "ls", *broker, "--json"]) == 0
    rows = {r["device"]: r for r in json.loads(capsys.readouterr().out)}
    assert {d: (r["online"], r["model_version"]) for d, r in rows.items()} == {
        "gate-01": (True, 1), "gate-02": (True, 1), "gate-03": (True, 6)}
    assert main(["fleet", "cmd", "gate-02", "ping", *broker]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["ok"] and reply["result"]["device"] == "gate-02" and reply["result"]["model"]["version"] == 1
    assert main(["fleet", "watch", *broker, "--device", "gate-0[12]", "--seconds", "3", "--json"]) == 0
    watched = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {w["device"] for w in watched} == {"gate-01", "gate-02"}
    assert all(w["last"]["top_k"][0]["label"] == "red" and w["count"] >= 1 for w in watched)

    # v2: canary gate-01 ok, gate-02 ok, gate-03 refuses it (it serves v6: rollback protection) -> halt,
    # roll back gate-01 and gate-02
    code = main(["fleet", "deploy", f"{registry.address}/models/colour:2", "--devices", "gate-*", *broker,
                 "--canary", "30%", "--wave-size", "1", "--max-failures", "0%", "--timeout", "180",
                 "--registry-insecure", "--width", "200"])
    out = capsys.readouterr()
    assert code == 1, out.err
    lines = out.out.splitlines()
    assert any(line.startswith("canary: gate-01") for line in lines)
    assert "HALT: 1 failure(s), more than the 0 allowed" in out.out
    assert "gate-03: failed:" in out.out and "rollback refused" in out.out
    assert "gate-01: rolled back to v1" in out.out and "gate-02: rolled back to v1" in out.out
    assert "rollout NOT completed: 1 failed, 2 rolled-back" in out.out
    for device, version in (("gate-01", 1), ("gate-02", 1), ("gate-03", 6)):
        doc = latest_retained(recorder, f"edge/{device}/model")
        assert doc["serving"]["version"] == version and d2 in doc["bad"], (device, doc)
    def rolled_back() -> list[str]:
        return sorted(m.topic.split("/")[1] for m in recorder.messages("edge/+/events")
                      if json.loads(m.payload)["event"] == "model_rolled_back")

    # the device publishes its retained model state (what `fleet deploy` waits on) just before the event
    wait_until(lambda: len(rolled_back()) >= 2, 30, message="both model_rolled_back events")
    assert rolled_back() == ["gate-01", "gate-02"]
    switched = [m.topic.split("/")[1] for m in recorder.messages("edge/+/events")
                if json.loads(m.payload)["event"] == "model_switched" and json.loads(m.payload)["digest"] == d2]
    assert sorted(switched) == ["gate-01", "gate-02"]

    # v3 to the two healthy devices: completes
    code = main(["fleet", "deploy", f"{registry.address}/models/colour:3", "--devices", "gate-01,gate-02", *broker,
                 "--canary", "50%", "--timeout", "180", "--registry-insecure", "--width", "200"])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "rollout completed: 2 ok" in out.out
    assert "gate-01 │ ok      │ v1   │ v3" in out.out
    for device in ("gate-01", "gate-02"):
        doc = latest_retained(recorder, f"edge/{device}/model")
        assert doc["serving"] == {"version": 3, "digest": d3} and doc["state"] == "serving"
    # running it again changes nothing
    assert main(["fleet", "deploy", f"{registry.address}/models/colour:3", "--devices", "gate-01,gate-02", *broker,
                 "--registry-insecure"]) == 0
    assert "rollout completed: 2 unchanged" in capsys.readouterr().out
    for gw in gateways.values():
        assert gw.terminate() == 0
