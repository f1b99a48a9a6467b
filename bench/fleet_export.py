"""`edgectl fleet export` throughput into PostgreSQL: one consumer against two in one share group, side by side.

    python bench/fleet_export.py [--messages 20000] [--devices 200]

Starts a Mosquitto and a throwaway PostgreSQL (Debian's, on free loopback ports, fsync and synchronous
commits on as in production), then per run
(1 consumer, then 2 in one group, each into a fresh database): the consumers subscribe (their
persistent sessions now hold the share) and stop; N results from D simulated devices are published
at QoS 1 into those sessions; the consumers start again and drain them. Prints rows per second
(N / the time from the first row's commit to the last) for each run, the ratio, and that every
(device, seq) landed exactly once.
Nothing is asserted on time.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.postgres import PostgresServer  # after the path fix: run as a script
from tools.loopback import stop_pid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join([f"listener {port} 127.0.0.1", "allow_anonymous true",
                               "user root" if os.geteuid() == 0 else "", "max_queued_messages 0",
                               "max_inflight_messages 100", ""]))
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("mosquitto did not start")


def exporter(port: int, dsn: str, group: str, client_id: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "provisioning.cli", "fleet", "export", "--broker",
                                 f"mqtt://127.0.0.1:{port}", "--database", dsn, "--group", group, "--client-id",
                                 client_id, "--batch", "500"], stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                env={**os.environ, "XDG_CONFIG_HOME": str(log.parent)})


def wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def publish(port: int, messages: int, devices: int) -> float:
    """Publish `messages` results round-robin over `devices` (seq per device); seconds it took."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}", protocol=paho.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.monotonic()
    infos = []
    for i in range(messages):
        device, seq = f"sim-{i % devices:04d}", i // devices + 1
        body = {"seq": seq, "ts": time.time(), "device": device, "camera": "front", "frame": seq,
                "model": {"name": "classifier", "version": 2}, "top_k": [{"label": "tabby cat", "index": 281,
                                                                          "score": 0.61}]}
        infos.append(client.publish(f"edge/{device}/results/front", json.dumps(body).encode(), qos=1))
    for info in infos:
        info.wait_for_publish(120)
    elapsed = time.monotonic() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


def count(dsn: str) -> tuple[int, int]:
    with psycopg.connect(dsn) as db:
        row = db.execute("SELECT count(*), count(DISTINCT (device, seq)) FROM edge_results").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def insert_span(dsn: str) -> float:
    """Seconds from the first row's commit to the last's (the consumers' start-up left out)."""
    with psycopg.connect(dsn) as db:
        row = db.execute("SELECT extract(epoch FROM max(received_at) - min(received_at)) FROM edge_results").fetchone()
    assert row is not None
    return float(row[0])


def run(port: int, pg: PostgresServer, workdir: Path, members: int, messages: int, devices: int) -> dict[str, float]:
    dsn = pg.create_database()
    group = f"bench{members}"
    logs = [workdir / f"{group}-{i}.log" for i in range(members)]
    procs = [exporter(port, dsn, group, f"{group}-{i}", log) for i, log in enumerate(logs)]
    wait(lambda: all("subscribed:" in log.read_text() for log in logs), 60, "consumers subscribed")
    for proc in procs:  # their sessions keep the subscription and queue their share
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    publish_s = publish(port, messages, devices)
    started = time.monotonic()
    procs = [exporter(port, dsn, group, f"{group}-{i}", log) for i, log in enumerate(logs)]
    try:
        wait(lambda: count(dsn)[1] >= messages, 600, "every row in PostgreSQL")
        drain_s = time.monotonic() - started
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    rows, distinct = count(dsn)
    span = insert_span(dsn)
    return {"members": members, "rows_per_s": messages / span, "insert_span_s": span, "drain_s": drain_s,
            "publish_s": publish_s, "rows": rows, "distinct": distinct}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--devices", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-export-") as tmp:
        workdir = Path(tmp)
        broker, port = start_broker(workdir)
        pg_dir = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        pg = PostgresServer(pg_dir, free_port(), durable=True)
        try:
            pg.start()
            one = run(port, pg, workdir, 1, args.messages, args.devices)
            two = run(port, pg, workdir, 2, args.messages, args.devices)
        finally:
            pg.stop()
            shutil.rmtree(pg_dir, ignore_errors=True)
            stop_pid(broker)
    for row in (one, two):
        print(f"{row['members']:.0f} consumer(s): {row['rows_per_s']:.0f} rows/s ({args.messages} results committed "
              f"within {row['insert_span_s']:.1f} s, {row['drain_s']:.1f} s with the consumers' start; published in "
              f"{row['publish_s']:.1f} s); rows {row['rows']:.0f}, distinct (device, seq) {row['distinct']:.0f}")
    print(f"ratio 2 consumers / 1: {two['rows_per_s'] / one['rows_per_s']:.2f}")
    print(json.dumps({"one": one, "two": two}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
