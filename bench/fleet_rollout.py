"""A rollout over 10,000 simulated devices on one real Mosquitto: time to converge, broker messages per device.

    python bench/fleet_rollout.py [--devices 10000] [--offline 5] [--timeout 1800]

Starts a Mosquitto on a free loopback port (queues sized as `edgectl broker config` sizes them,
`$SYS` every second), connects N simulated devices (bench/fleet_sim.py: the gateway's desired-state
rules, one thread), then, each phase driven by the real `edgectl fleet rollout` as a subprocess:

1. **rollout** to v2 in three stages (canary 1%, 25%, 100%) with `--offline`% of the devices offline
   during it; they come back once every online device converged; the controller completes;
2. **abort**: a rollout to v3 that 3% of the devices roll back, with `--max-failures 1%`: the
   controller aborts and sets the previous desired state back; `--offline`% were offline during
   it and return afterwards; every device ends on v2 again.

Prints, per phase: seconds to converge (online devices, then all), the broker's PUBLISH messages
received and sent (`$SYS`) per device, desired documents per device, installs per device; and the
simulator's and the broker's RSS. Everything is measured in this run; nothing is asserted on time.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import psutil
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fleet_sim import SimFleet
from tools.loopback import stop_pid

logger = logging.getLogger(__name__)

REF = "registry.example:5000/models/classifier"
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(workdir: Path, devices: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join([f"listener {port} 127.0.0.1", "allow_anonymous true", "user root" if os.geteuid() == 0
                               else "", f"max_queued_messages {max(1000, 8 * devices)}", "max_inflight_messages 100",
                               "sys_interval 1", f"log_dest file {workdir / 'mosquitto.log'}", ""]))
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("mosquitto did not start")


class SysCounters:
    """The broker's $SYS publish counters (published every second)."""

    def __init__(self, port: int) -> None:
        self.values: dict[str, int] = {}
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sys-{uuid.uuid4().hex[:6]}",
                                  protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.subscribe([("$SYS/broker/publish/messages/sent", 0),
                                                            ("$SYS/broker/messages/+", 0)])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.values[msg.topic.removeprefix("$SYS/broker/")] = int(msg.payload)

    def snapshot(self, settle_s: float = 2.5) -> dict[str, int]:
        time.sleep(settle_s)  # the next $SYS round
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.values) >= 3:
                    return dict(self.values)
            time.sleep(0.2)
        raise RuntimeError(f"no $SYS counters from the broker (got {self.values})")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def controller(port: int, *args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "provisioning.cli", "fleet", "rollout", *args, "--broker",
                                 f"mqtt://127.0.0.1:{port}", "--timeout", "300"], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, env={**os.environ, "XDG_CONFIG_HOME": str(log.parent)})


def wait(predicate, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s:g}s")
        time.sleep(0.2)
    return time.monotonic() - started


def phase(sim: SimFleet, sys_counters: SysCounters, port: int, workdir: Path, name: str, args: list[str],
          offline: list[str], final: str, timeout_s: float, aborts: bool) -> dict[str, float]:
    """One rollout with `offline` devices away; they come back once the online ones are on `final` (and,
    for an abort, once the controller has finished setting the previous state back)."""
    n = len(sim.devices)
    before = sys_counters.snapshot()
    installs_before = sum(len(v) for v in sim.installs.values())
    published_before = sim.published
    seen_before = sum(len(v) for v in sim.desired_seen.values())
    sim.go_offline(offline)
    sim.wait(lambda: sim.connected == n - len(offline), 120, "devices offline")
    away = set(offline)
    started = time.monotonic()
    proc = controller(port, *args, log=workdir / f"{name}.log")
    online_s = wait(lambda: (not aborts or proc.poll() is not None)
                    and all(d == final for k, d in sim.serving().items() if k not in away), timeout_s,
                    f"{name}: online devices on {final[:12]}")
    sim.come_back(offline)
    wait(lambda: set(sim.serving().values()) == {final}, timeout_s, f"{name}: every device on {final[:12]}")
    code = proc.wait(timeout_s)
    all_s = time.monotonic() - started
    after = sys_counters.snapshot()
    def delta(key: str) -> float:
        return (after.get(key, 0) - before.get(key, 0)) / n

    desired = (sum(len(v) for v in sim.desired_seen.values()) - seen_before) / n
    return {"online_s": online_s, "all_s": all_s, "exit": code,
            # PUBLISH into the broker: the devices' (counted by them; Mosquitto 2.0's $SYS counter skips retained
            # ones) and the controller's desired documents (one per device it reached)
            "publish_in_per_device": (sim.published - published_before) / n + desired,
            "publish_out_per_device": delta("publish/messages/sent"),
            "packets_in_per_device": delta("messages/received"), "packets_out_per_device": delta("messages/sent"),
            "installs_per_device": (sum(len(v) for v in sim.installs.values()) - installs_before) / n,
            "desired_per_device": desired}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--offline", type=float, default=5.0, help="percent of devices offline during each rollout")
    parser.add_argument("--timeout", type=float, default=1800.0, help="bound for each step")
    args = parser.parse_args()
    names = [f"sim-{i:05d}" for i in range(args.devices)]
    with tempfile.TemporaryDirectory(prefix="bench-fleet-rollout-") as tmp:
        workdir = Path(tmp)
        broker, port = start_broker(workdir, args.devices)
        base_rss = psutil.Process().memory_info().rss / 1e6
        sim = SimFleet("127.0.0.1", port, names, ref=f"{REF}:stable", digest=D1, install_s=(1.0, 5.0),
                       fail_digests={n: {D3} for n in names[::33]})
        try:
            sys_counters = SysCounters(port)  # first: paho's own loop uses select(), which needs an fd below 1024
            started = time.monotonic()
            sim.start(args.timeout)
            connect_s = time.monotonic() - started
            away = names[7::int(100 / args.offline)] if args.offline > 0 else []
            one = phase(sim, sys_counters, port, workdir, "rollout",
                        ["start", "--id", "bench-1", "--model", f"{REF}:2@{D2}", "--stage", "canary=1%", "--stage",
                         "25%", "--stage", "100%", "--max-failures", "1%"], away, D2, args.timeout, aborts=False)
            away2 = names[11::int(100 / args.offline)] if args.offline > 0 else []
            two = phase(sim, sys_counters, port, workdir, "abort",
                        ["start", "--id", "bench-2", "--model", f"{REF}:3@{D3}", "--stage", "canary=1%", "--stage",
                         "25%", "--stage", "100%", "--max-failures", "1%"], away2, D2, args.timeout, aborts=True)
            sim_rss = psutil.Process().memory_info().rss / 1e6 - base_rss
            broker_rss = psutil.Process(broker.pid).memory_info().rss / 1e6
            sys_counters.close()
        finally:
            sim.stop()
            stop_pid(broker)
    print(f"devices: {args.devices}, {args.offline:g}% offline during each rollout; connect: {connect_s:.1f} s")
    print(f"simulated devices: +{sim_rss:.0f} MB RSS ({sim_rss * 1e3 / args.devices:.1f} KB/device), broker RSS "
          f"{broker_rss:.0f} MB ({broker_rss * 1e3 / args.devices:.1f} KB/device)")
    for name, row in (("rollout v1 -> v2 (3 stages)", one), ("abort v2 -> v3 -> v2", two)):
        print(f"{name}: online devices converged in {row['online_s']:.1f} s, all (offline ones back) in "
              f"{row['all_s']:.1f} s; controller exit {row['exit']:.0f}; per device: PUBLISH into the broker "
              f"{row['publish_in_per_device']:.2f}, out of it {row['publish_out_per_device']:.2f}; all MQTT packets "
              f"in {row['packets_in_per_device']:.2f}, out {row['packets_out_per_device']:.2f}; desired documents "
              f"{row['desired_per_device']:.2f}, installs {row['installs_per_device']:.2f}")
    print(json.dumps({"devices": args.devices, "connect_s": connect_s, "rollout": one, "abort": two,
                      "sim_rss_mb": sim_rss, "broker_rss_mb": broker_rss}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
