"""`edgectl fleet export`: two consumers in one MQTT 5 share group land every (device, seq) exactly once in
a real PostgreSQL, through a restart of the real Mosquitto in the middle of the stream.

The devices are the gateway's own at-least-once outbox (`MqttReporter` over a SQLite `Spool`): each
message is re-sent until the broker acknowledged it, so the restart produces re-deliveries on both
sides (devices re-send, the broker re-delivers unacknowledged messages to the consumers' persistent
sessions). A malformed message lands in `edge_rejected`, not nowhere.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.transport.mqtt import MqttSettings
from edge.transport.outbox import MqttReporter
from edge.transport.spool import Spool
from provisioning.fleet.export import create_schema
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow

DEVICES = ("dev-a", "dev-b", "dev-c")
RESULTS_PER_DEVICE = 240
EVENTS_PER_DEVICE = 20


def start_exporter(broker, dsn: str, client_id: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "provisioning.cli", "fleet", "export", "--broker", broker.url,
                                 "--database", dsn, "--group", "ingest", "--client-id", client_id, "--batch", "50"],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                env={**os.environ, "XDG_CONFIG_HOME": str(log.parent)})


def rows(dsn: str) -> tuple[set[tuple[str, int]], int, list[tuple[str, str]]]:
    with psycopg.connect(dsn) as db:
        results = db.execute("SELECT device, seq FROM edge_results").fetchall()
        events = db.execute("SELECT device, seq FROM edge_events").fetchall()
        rejected = db.execute("SELECT topic, reason FROM edge_rejected").fetchall()
    every = [(str(d), int(s)) for d, s in results + events]
    return set(every), len(every), [(str(t), str(r)) for t, r in rejected]


def test_two_consumers_land_every_device_seq_exactly_once_through_a_broker_restart(
        mosquitto, postgres_dsn, tmp_path) -> None:
    exporters = [start_exporter(mosquitto, postgres_dsn, f"exp-{i}", tmp_path / f"exp-{i}.log") for i in (1, 2)]
    reporters = []
    try:
        try:
            wait_until(lambda: all("subscribed:" in (tmp_path / f"exp-{i}.log").read_text() for i in (1, 2)), 120,
                       message="both exporters subscribed (their sessions hold the share from now on)")
        except AssertionError as exc:
            logs = "\n".join(f"exp-{i} (exit {proc.poll()}): {(tmp_path / f'exp-{i}.log').read_text()[-2000:]}"
                              for i, proc in zip((1, 2), exporters))
            raise AssertionError(f"{exc}\n{logs}") from None
        for device in DEVICES:
            spool = Spool(tmp_path / f"{device}.db", sync="normal")
            reporter = MqttReporter(MqttSettings(url=mosquitto.url, keepalive_s=5, reconnect_min_s=0.2,
                                                 reconnect_max_s=1.0), device, spool)
            reporter.start()
            reporters.append(reporter)
        expected: set[tuple[str, int]] = set()

        def send(count: int, start: int) -> None:
            for i in range(start, start + count):
                for reporter in reporters:
                    [seq] = reporter.publish_results([("front", {"device": reporter.device_id, "camera": "front",
                                                                 "ts": time.time(), "frame": i,
                                                                 "top_k": [{"label": "red", "score": 0.9}]})])
                    expected.add((reporter.device_id, seq))
                    if i % (RESULTS_PER_DEVICE // EVENTS_PER_DEVICE) == 0:
                        expected.add((reporter.device_id, reporter.publish_event("camera_online", {"camera": "front"})))
                time.sleep(0.01)

        half = RESULTS_PER_DEVICE // 2
        send(half, 0)
        wait_until(lambda: len(rows(postgres_dsn)[0]) > 50, 60, message="the first rows in PostgreSQL")
        mosquitto.stop()  # SIGTERM: Mosquitto saves sessions, queued and in-flight messages, retained state
        send(half // 2, half)  # spooled by the devices meanwhile
        mosquitto.start()
        send(RESULTS_PER_DEVICE - half - half // 2, half + half // 2)
        wait_until(lambda: all(r.spool.depth() == 0 for r in reporters), 120, message="every device's spool acked")
        wait_until(lambda: rows(postgres_dsn)[0] >= expected, 120, message="every (device, seq) in PostgreSQL")
        got, count, _ = rows(postgres_dsn)
        assert got == expected and count == len(expected)  # each exactly once, nothing else
        assert len(expected) == len(DEVICES) * (RESULTS_PER_DEVICE + EVENTS_PER_DEVICE)

        # a malformed result is kept with its reason, never dropped
        raw = paho.Client(CallbackAPIVersion.VERSION2, client_id="raw", protocol=paho.MQTTv5)
        raw.connect(mosquitto.host, mosquitto.port)
        raw.loop_start()
        raw.publish("edge/dev-x/results/front", b"{not json", qos=1).wait_for_publish(10)
        raw.publish("edge/dev-x/results/front", json.dumps({"seq": "7"}).encode(), qos=1).wait_for_publish(10)
        raw.disconnect()
        raw.loop_stop()
        wait_until(lambda: len(rows(postgres_dsn)[2]) == 2, 30, message="two rejected rows")
        reasons = sorted(r for _, r in rows(postgres_dsn)[2])
        assert reasons[0].startswith("unreadable: Expecting property name") and "seq must be" in reasons[1]
    finally:
        for reporter in reporters:
            reporter.stop(flush_timeout_s=1.0)
            reporter.spool.close()
        summaries = []
        for proc in exporters:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        for i in (1, 2):
            lines = (tmp_path / f"exp-{i}.log").read_text().strip().splitlines()
            summaries.append(json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {})
    assert all(proc.returncode == 0 for proc in exporters), summaries
    # the share group split the stream: both consumers stored some of it
    assert all(s.get("results", 0) > 0 for s in summaries), summaries
    assert sum(s["results"] + s["events"] - s["duplicates"] for s in summaries) == len(expected)


def test_exporters_starting_together_on_a_fresh_database_all_get_the_schema(postgres_server) -> None:
    """Two CREATE TABLE IF NOT EXISTS at once fail in PostgreSQL (a unique violation in its catalog):
    two exporters started together on a new database must both come up (failed in CI before the lock)."""
    for _ in range(10):
        dsn = postgres_server.create_database()
        barrier, errors = threading.Barrier(3), []

        def start() -> None:
            with psycopg.connect(dsn) as db:
                barrier.wait(30)
                try:
                    create_schema(db)
                except psycopg.Error as exc:
                    errors.append(repr(exc))

        threads = [threading.Thread(target=start) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert len(rows(dsn)[0]) == 0
