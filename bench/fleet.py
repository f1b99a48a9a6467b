"""`edgectl fleet ls` on a simulated fleet: its time relative to just reading the retained messages.

Starts a Mosquitto on a free loopback port (or uses --broker), publishes the retained `status`,
`health` and `model` messages of N simulated devices (QoS 1), then, side by side in one run,
times (a) a raw paho subscriber that reads all 3N retained messages and stops when it has them,
and (b) `edgectl fleet ls --json` in-process (subscribe, marker, parse, build rows, print).
Prints the ratio b/a (median of --repeat runs). No assertion on time.

    python bench/fleet.py --devices 1000 --repeat 5
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the checkout

from tools.loopback import free_port, wait_port

logger = logging.getLogger(__name__)


def simulated_device(index: int, prefix: str = "edge") -> list[tuple[str, bytes]]:
    """The three retained messages of simulated device `sim-<index>` (version = 1 + index % 3)."""
    device = f"sim-{index:04d}"
    version = 1 + index % 3
    now = time.time()
    health = {"ts": now, "device": device, "state": "ok" if index % 10 else "degraded", "problems": [],
              "uptime_s": 3600.0 + index, "model": {"name": "classifier", "version": version},
              "cameras": [{"name": "front", "state": "online", "camera_fps": 30.0, "process_fps": 5.0,
                           "skipped_fps": 25.0, "reconnects": 0, "resolution": [1280, 720]},
                          {"name": "back", "state": "online", "camera_fps": 15.0, "process_fps": 2.5,
                           "skipped_fps": 12.5, "reconnects": 1, "resolution": [640, 480]}],
              "inference": {"frames_classified": 18000, "errors": 0, "inference_ms": {"p50": 30.1}},
              "mqtt": {"state": "connected"}, "spool": {"depth": 0, "dropped": 0}}
    model = {"state": "serving", "serving": {"version": version, "digest": f"sha256:{version:064x}"},
             "previous": {"version": None, "digest": None}, "installed": [version], "bad": [], "last_error": None,
             "name": "classifier", "ref": "registry.example/models/classifier:stable"}
    status = b"online" if index % 7 else b"offline"
    return [(f"{prefix}/{device}/status", status), (f"{prefix}/{device}/health", json.dumps(health).encode()),
            (f"{prefix}/{device}/model", json.dumps(model).encode())]


def publish_fleet(host: str, port: int, devices: int, prefix: str = "edge") -> int:
    """Publish every simulated device's retained messages at QoS 1; returns how many were acknowledged."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1, retain=True)
                 for i in range(devices) for topic, payload in simulated_device(i, prefix)]
        for info in infos:
            info.wait_for_publish(60)
        return sum(info.is_published() for info in infos)
    finally:
        client.disconnect()
        client.loop_stop()


def raw_read(host: str, port: int, expected: int, prefix: str = "edge", timeout_s: float = 120.0) -> float:
    """Seconds for a plain paho subscriber to receive `expected` retained messages (connect included)."""
    got = [0]
    done = threading.Event()

    def on_message(c: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        got[0] += 1
        if got[0] >= expected:
            done.set()

    start = time.perf_counter()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5)
    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe([(f"{prefix}/+/{t}", 1) for t in ("status", "health", "model")])
    client.connect(host, port)
    client.loop_start()
    ok = done.wait(timeout_s)
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    if not ok:
        raise TimeoutError(f"raw subscriber got {got[0]} of {expected} retained messages")
    return elapsed


def fleet_ls(url: str) -> tuple[float, list[dict]]:
    """Seconds for `edgectl fleet ls --json` (in-process), and its rows."""
    from provisioning.cli import main

    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = main(["fleet", "ls", "--broker", url, "--json"])
    elapsed = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"fleet ls exited {code}")
    return elapsed, json.loads(out.getvalue())


def start_mosquitto(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, timeout_s=20.0)
    return proc, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        proc, port = start_mosquitto(Path(tmp))
        try:
            acked = publish_fleet("127.0.0.1", port, args.devices)
            raw_times, ls_times = [], []
            for _ in range(args.repeat):
                raw_times.append(raw_read("127.0.0.1", port, 3 * args.devices))
                elapsed, rows = fleet_ls(f"mqtt://127.0.0.1:{port}")
                assert len(rows) == args.devices, len(rows)
                ls_times.append(elapsed)
        finally:
            proc.terminate()
            proc.wait(10)
    raw, ls = statistics.median(raw_times), statistics.median(ls_times)
    print(f"devices: {args.devices} ({acked} retained messages acknowledged)")
    print(f"raw paho read of the retained messages: median {raw * 1000:.0f} ms")
    print(f"edgectl fleet ls --json:                median {ls * 1000:.0f} ms")
    print(f"ratio fleet ls / raw read: {ls / raw:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
