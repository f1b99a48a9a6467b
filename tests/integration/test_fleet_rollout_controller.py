"""`edgectl fleet rollout` against a real Mosquitto and 60 simulated devices (bench/fleet_sim.py: the
gateway's desired-state rules, many devices on one thread).

- a three-stage rollout with devices offline: the controller is killed (SIGKILL) mid-rollout and
  `resume` finishes it; every device gets exactly one desired document from the rollout and
  installs the version once; the offline devices converge when they come back;
- failures above `--max-failures` abort the next rollout: every device it reached is set back to
  its previous desired target, including one that was offline and returns afterwards.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.fleet_sim import SimFleet
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow

REF = "reg.example:5000/models/colour"
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")
NAMES = [f"sim-{i:03d}" for i in range(60)]


def edgectl(broker, *args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "provisioning.cli", "fleet", "rollout", *args,
                                 "--broker", broker.url], stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                env={**os.environ, "XDG_CONFIG_HOME": str(log.parent)})


def desired_writes(recorder) -> Counter[str]:
    """Desired documents published per device (live deliveries; the recorder subscribed before)."""
    return Counter(m.topic.split("/")[1] for m in recorder.messages("edge/+/desired") if not m.retain)


def rollout_doc(recorder, rollout_id: str) -> dict:
    messages = recorder.messages(f"edge/fleet/rollouts/{rollout_id}")
    return json.loads(messages[-1].payload) if messages else {}


def test_a_killed_controller_resumes_and_offline_devices_converge_then_an_abort_sets_everything_back(
        mosquitto, mqtt_recorder, tmp_path) -> None:
    recorder = mqtt_recorder(mosquitto, "edge/#")
    offline = NAMES[5:8]
    sim = SimFleet(mosquitto.host, mosquitto.port, NAMES, ref=f"{REF}:stable", digest=D1, install_s=(0.1, 0.5),
                   fail_digests={n: {D3} for n in NAMES[40:43]}).start(120)
    try:
        sim.go_offline(offline)
        wait_until(lambda: sim.connected == len(NAMES) - len(offline), 30, message="three devices offline")
        log = tmp_path / "r1.log"
        proc = edgectl(mosquitto, "start", "--id", "r1", "--model", f"{REF}:2@{D2}", "--stage", "canary=2",
                       "--stage", "30%", "--stage", "100%", "--bake", "4", log=log)
        stage2 = 18
        wait_until(lambda: sum(desired_writes(recorder).values()) >= stage2, 60, message="stage 2 dispatched")
        proc.send_signal(signal.SIGKILL)  # the laptop closes mid-rollout
        proc.wait(10)
        assert rollout_doc(recorder, "r1")["state"] == "running"
        written_before = sum(desired_writes(recorder).values())
        assert written_before < len(NAMES)
        resumed = edgectl(mosquitto, "resume", "r1", log=tmp_path / "r1-resume.log")
        wait_until(lambda: sum(desired_writes(recorder).values()) == len(NAMES), 60,
                   message="the resumed controller dispatched the last stage")
        assert resumed.poll() is None  # still waiting: three devices are offline
        sim.come_back(offline)
        assert resumed.wait(120) == 0, (tmp_path / "r1-resume.log").read_text()
        assert rollout_doc(recorder, "r1")["state"] == "completed"
        assert set(desired_writes(recorder).values()) == {1}  # one document per device, none twice
        assert all(sim.installs[n] == [D2] for n in NAMES)  # each device installed v2 once
        assert set(sim.serving().values()) == {D2}
        out = (tmp_path / "r1-resume.log").read_text()
        assert "stage 3/3 (100%)" in out and "completed: 60 converged" in out

        # r2: three devices roll v3 back; past the one failure allowed it aborts and sets everything back
        late = NAMES[50]
        sim.go_offline([late])
        r2 = edgectl(mosquitto, "start", "--id", "r2", "--model", f"{REF}:3@{D3}", "--stage", "50%",
                     "--stage", "100%", "--max-failures", "1", log=tmp_path / "r2.log")
        assert r2.wait(120) == 1, (tmp_path / "r2.log").read_text()
        doc = rollout_doc(recorder, "r2")
        assert doc["state"] == "aborted" and "device(s) failed, more than the 1 allowed" in doc["reason"]
        sim.come_back([late])
        wait_until(lambda: set(sim.serving().values()) == {D2}, 60, message="every device back on v2")
        wait_until(lambda: all(json.loads(m.payload)["state"] == "converged" for m in
                               [recorder.messages(f"edge/{n}/reported")[-1] for n in NAMES]), 60,
                   message="every device converged on the restored state")
        assert D3 not in sim.installs[late]  # it only ever saw the restore
        status = subprocess.run([sys.executable, "-m", "provisioning.cli", "fleet", "rollout", "status", "r2", "--json",
                                 "--broker", mosquitto.url], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path)})
        report = json.loads(status.stdout)
        assert report["state"] == "aborted" and report["restored"] == report["restored_converged"] > 0
    finally:
        sim.stop()
