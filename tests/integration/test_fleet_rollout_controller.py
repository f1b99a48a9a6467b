"""`edgectl fleet rollout` against a real Mosquitto and 60 simulated devices (bench/fleet_sim.py: the
gateway's desired-state rules, many devices on one thread).

- a three-stage rollout with devices offline: the controller is killed (SIGKILL) mid-rollout and
  `resume` finishes it; every device gets exactly one desired document from the rollout and
  installs the version once; the offline devices converge when they come back;
- failures above `--max-failures` abort the next rollout: every device it reached is set back to
  its previous desired target, including one that was offline and returns afterwards;
- an operator's `pause` stops the controller that drives a rollout (nothing undone, nothing more
  dispatched), `resume` goes on from the next stage, and a manual `abort` sets every device the
  rollout reached back, and only those. Two devices the test answers for itself hold a stage open
  until the test says they converged, so pausing never races a stage that settles by itself.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import paho.mqtt.publish as mqtt_publish
import pytest

from bench.fleet_sim import SimFleet
from edge.util.shadow import ShadowState, reported_document
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


def edgectl_done(broker, *args: str, log: Path) -> int:
    """`edgectl fleet rollout ARGS` to completion: its exit status."""
    return edgectl(broker, *args, log=log).wait(120)


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


class HeldDevice:
    """A device the test answers for: online and serving v1 (retained `status` and `model`), it takes
    its desired document and stays `reconciling` until the test calls `converge`."""

    def __init__(self, broker, name: str) -> None:
        self.broker, self.name = broker, name
        self.publish("status", b"online")
        self.publish("model", {"state": "serving", "serving": {"version": 1, "digest": D1}, "ref": f"{REF}:stable",
                               "name": "classifier"})

    def publish(self, kind: str, doc: dict | bytes) -> None:
        payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        mqtt_publish.single(f"edge/{self.name}/{kind}", payload, qos=1, retain=True, hostname=self.broker.host,
                            port=self.broker.port)

    def converge(self, recorder) -> None:
        desired = json.loads(recorder.messages(f"edge/{self.name}/desired")[-1].payload)
        self.publish("reported", reported_document(
            device=self.name, generation=desired["generation"], state=ShadowState.CONVERGED, since=None,
            rollout=desired.get("rollout"), model=None, config=None, serving={"version": 2, "digest": D2},
            config_revision=None, refused=None))


def last_desired(recorder, device: str) -> dict:
    return json.loads(recorder.messages(f"edge/{device}/desired")[-1].payload)


def test_pause_stops_the_controller_resume_goes_on_and_a_manual_abort_sets_every_reached_device_back(
        mosquitto, mqtt_recorder, tmp_path) -> None:
    recorder = mqtt_recorder(mosquitto, "edge/#")
    sims = NAMES[:20]
    sim = SimFleet(mosquitto.host, mosquitto.port, sims, ref=f"{REF}:stable", digest=D1,
                   install_s=(0.1, 0.3)).start(120)
    hold_a = HeldDevice(mosquitto, "hold-a")
    HeldDevice(mosquitto, "hold-b")  # never converges: holds stage 2 open
    canary = ["hold-a", "sim-000", "sim-001"]
    second = ["hold-b", *(f"sim-00{i}" for i in range(2, 10))]  # stage 2 adds these (stages are cumulative)
    drivers: list[subprocess.Popen[bytes]] = []
    try:
        start = edgectl(mosquitto, "start", "--id", "r3", "--model", f"{REF}:2@{D2}", "--stage", f"canary={','.join(canary)}",
                        "--stage", "half=hold-b,sim-00*", "--stage", "100%", log=tmp_path / "r3.log")
        drivers.append(start)
        wait_until(lambda: set(desired_writes(recorder)) == set(canary), 60, message="the canary stage dispatched")
        wait_until(lambda: all(sim.serving()[n] == D2 for n in canary[1:]), 60, message="sim-000/001 on v2")
        assert start.poll() is None  # driving: hold-a keeps the canary stage open

        # pause: the driving controller stops; nothing is undone and nothing more is dispatched
        assert edgectl_done(mosquitto, "pause", "r3", log=tmp_path / "pause.log") == 0
        assert start.wait(60) == 0, (tmp_path / "r3.log").read_text()
        assert "rollout r3: paused" in (tmp_path / "r3.log").read_text()
        doc = rollout_doc(recorder, "r3")
        assert doc["state"] == "paused" and doc["reason"].startswith("paused by ")
        hold_a.converge(recorder)  # the canary stage settles now: only a controller would go on
        wait_until(lambda: recorder.messages("edge/hold-a/reported"), 30, message="hold-a's report")
        assert desired_writes(recorder) == Counter(dict.fromkeys(canary, 1))
        assert all(last_desired(recorder, n)["rollout"] == "r3" for n in canary)
        assert all(sim.serving()[n] == D2 for n in canary[1:]) and all(sim.serving()[n] == D1 for n in sims[2:])

        # resume: from the next stage on, no device dispatched twice
        resumed = edgectl(mosquitto, "resume", "r3", log=tmp_path / "resume.log")
        drivers.append(resumed)
        wait_until(lambda: set(desired_writes(recorder)) == {*canary, *second}, 60, message="stage 2 dispatched")
        wait_until(lambda: all(sim.serving()[n] == D2 for n in second[1:]), 60, message="stage 2's sims on v2")
        assert set(desired_writes(recorder).values()) == {1}
        assert rollout_doc(recorder, "r3")["state"] == "running" and resumed.poll() is None  # hold-b holds stage 2

        # a manual abort (paused first, so that one controller drives it): every device the rollout
        # reached gets its previous desired state back, the others get nothing
        assert edgectl_done(mosquitto, "pause", "r3", log=tmp_path / "pause2.log") == 0
        assert resumed.wait(60) == 0, (tmp_path / "resume.log").read_text()
        aborted = edgectl_done(mosquitto, "abort", "r3", "--reason", "wrong model on the gates", log=tmp_path / "abort.log")
        assert aborted == 0, (tmp_path / "abort.log").read_text()
        reached = [*canary, *second]
        doc = rollout_doc(recorder, "r3")
        assert doc["state"] == "aborted" and doc["reason"] == "wrong model on the gates"
        assert "12 device(s) set back" in (tmp_path / "abort.log").read_text()
        assert desired_writes(recorder) == Counter(dict.fromkeys(reached, 2))  # the rollout's, then the restore
        for name in reached:
            restore = last_desired(recorder, name)
            assert restore["restores"] == "r3" and "rollout" not in restore, restore
            assert restore["model"] == {"ref": f"{REF}:stable", "digest": D1}, restore
        assert not any(recorder.messages(f"edge/{n}/desired") for n in sims[10:])  # never reached
        wait_until(lambda: all(d == D1 for d in sim.serving().values()), 60, message="every sim back on v1")
        wait_until(lambda: all(json.loads(recorder.messages(f"edge/{n}/reported")[-1].payload)["state"] == "converged"
                               for n in second[1:] + canary[1:]), 60, message="the reached sims converged on v1")
        assert all(sim.installs[n] == [D2] for n in reached if n.startswith("sim-"))  # v1 back by rollback only
        assert not any(sim.installs[n] for n in sims[10:])
    finally:
        for proc in drivers:  # a failed assertion leaves no controller behind
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        sim.stop()

