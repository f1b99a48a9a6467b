"""edge.transport.outbox (the MQTT reporter) against a real Mosquitto: availability, QoS 1 results with
seq, outages, restarts."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.transport.mqtt import MqttSettings
from edge.transport.outbox import MqttReporter
from edge.transport.spool import OutgoingMessage, Spool
from tests.fixtures.mosquitto import MosquittoBroker, MqttRecorder, RecordedMessage
from tests.support.net import free_port
from tests.support.paths import REPO
from tests.support.waits import wait_until

logger = logging.getLogger(__name__)
DEVICE = "dev1"


def seqs_of(messages: list[RecordedMessage]) -> list[int]:
    return [json.loads(m.payload)["seq"] for m in messages]


def payloads(messages: list[RecordedMessage]) -> list[bytes]:
    return [m.payload for m in messages]


class EventLog:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, payload: dict[str, Any]) -> None:
        with self.lock:
            self.events.append((name, payload))

    def named(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p for n, p in self.events if n == name]


@pytest.fixture
def make_reporter(tmp_path: Path) -> Iterator[Callable[..., MqttReporter]]:
    reporters: list[MqttReporter] = []

    def make(url: str, spool_path: Path | None = None, device: str = DEVICE,
             on_event: Callable[[str, dict[str, Any]], None] | None = None, **settings: Any) -> MqttReporter:
        settings.setdefault("reconnect_min_s", 0.2)
        settings.setdefault("reconnect_max_s", 1.0)
        spool = Spool(spool_path or tmp_path / f"spool-{len(reporters)}.db", sync="normal")
        reporter = MqttReporter(MqttSettings(url=url, **settings), device, spool, on_event=on_event)
        reporters.append(reporter)
        reporter.start()
        return reporter

    yield make
    for reporter in reporters:
        reporter.stop(flush_timeout_s=0.5)
        reporter.spool.close()


def test_online_retained_and_results_qos1_with_seq(mosquitto: MosquittoBroker, mqtt_recorder, make_reporter) -> None:
    recorder: MqttRecorder = mqtt_recorder(mosquitto, f"edge/{DEVICE}/#")
    reporter = make_reporter(mosquitto.url)
    assert reporter.wait_connected(30)
    recorder.wait_for(lambda ms: any(m.payload == b"online" for m in ms), 30)

    seqs = reporter.publish_results([(f"cam{i % 2}", {"label": "cat", "i": i}) for i in range(10)])
    assert seqs == list(range(1, 11))
    recorder.wait_for(lambda ms: len([m for m in ms if "/results/" in m.topic]) >= 10, 30)
    results = recorder.messages(f"edge/{DEVICE}/results/+")
    assert seqs_of(results) == seqs
    assert {m.topic for m in results} == {f"edge/{DEVICE}/results/cam0", f"edge/{DEVICE}/results/cam1"}
    assert all(m.qos == 1 and not m.retain for m in results)
    assert json.loads(results[3].payload) == {"label": "cat", "i": 3, "seq": 4}

    wait_until(lambda: reporter.spool.depth() == 0, 30, message="spool empty")
    stats = reporter.stats()
    assert stats["state"] == "connected" and stats["connected"] is True
    assert stats["acked"] == 10 and stats["inflight"] == 0
    assert stats["broker"] == f"127.0.0.1:{mosquitto.port}"

    late: MqttRecorder = mqtt_recorder(mosquitto, f"edge/{DEVICE}/status")
    late.wait_for(lambda ms: any(m.retain and m.payload == b"online" for m in ms), 30)


def test_events_get_name_and_timestamp(mosquitto: MosquittoBroker, mqtt_recorder, make_reporter) -> None:
    recorder = mqtt_recorder(mosquitto, f"edge/{DEVICE}/events")
    reporter = make_reporter(mosquitto.url)
    seq = reporter.publish_event("model_switched", {"version": 3})
    reporter.publish_event("custom", {"ts": 12.5})
    recorder.wait_for(lambda ms: len(ms) >= 2, 30)
    first, second = (json.loads(m.payload) for m in recorder.messages())
    assert first["event"] == "model_switched" and first["version"] == 3 and first["seq"] == seq
    assert isinstance(first["ts"], float) and abs(first["ts"] - time.time()) < 3600
    assert second["ts"] == 12.5


def test_health_is_retained_and_not_spooled(mosquitto: MosquittoBroker, mqtt_recorder, make_reporter) -> None:
    reporter = make_reporter(mosquitto.url)
    assert reporter.wait_connected(30)
    reporter.publish_health({"ok": True, "fps": 5})
    assert reporter.spool.depth() == 0
    late = mqtt_recorder(mosquitto, f"edge/{DEVICE}/health")
    (health,) = late.wait_for(lambda ms: len(ms) >= 1, 30)
    assert health.retain and json.loads(health.payload) == {"ok": True, "fps": 5}


def test_stop_publishes_stopped_and_no_will(mosquitto: MosquittoBroker, mqtt_recorder, make_reporter) -> None:
    watcher = mqtt_recorder(mosquitto, f"edge/{DEVICE}/status")
    reporter = make_reporter(mosquitto.url)
    watcher.wait_for(lambda ms: b"online" in payloads(ms), 30)
    reporter.publish_results([("cam0", {"i": 1})])
    reporter.stop(flush_timeout_s=10)
    assert reporter.spool.depth() == 0
    assert reporter.stats()["state"] == "disconnected"
    watcher.wait_for(lambda ms: b"stopped" in payloads(ms), 30)

    late = mqtt_recorder(mosquitto, f"edge/{DEVICE}/status")
    (retained,) = late.wait_for(lambda ms: len(ms) >= 1, 30)
    assert retained.payload == b"stopped" and retained.retain
    assert b"offline" not in payloads(watcher.messages())


REPORTER_PROCESS = """
import sys, threading
from pathlib import Path
from edge.transport.mqtt import MqttSettings
from edge.transport.outbox import MqttReporter
from edge.transport.spool import Spool
settings = MqttSettings(url=sys.argv[1], keepalive_s=2, reconnect_min_s=0.2, reconnect_max_s=1.0)
MqttReporter(settings, sys.argv[2], Spool(Path(sys.argv[3]))).start()
threading.Event().wait()
"""


def test_sigkilled_reporter_leaves_offline_will(mosquitto: MosquittoBroker, mqtt_recorder, tmp_path: Path) -> None:
    watcher = mqtt_recorder(mosquitto, "edge/dev-will/status")
    proc = subprocess.Popen([sys.executable, "-c", REPORTER_PROCESS, mosquitto.url, "dev-will",
                             str(tmp_path / "spool.db")], cwd=REPO)
    try:
        watcher.wait_for(lambda ms: b"online" in payloads(ms), 60)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    watcher.wait_for(lambda ms: payloads(ms)[-1:] == [b"offline"], 30)
    late = mqtt_recorder(mosquitto, "edge/dev-will/status")
    (retained,) = late.wait_for(lambda ms: len(ms) >= 1, 30)
    assert retained.payload == b"offline" and retained.retain


def test_backlog_spooled_while_broker_down_arrives_in_order(
    mosquitto: MosquittoBroker, mqtt_recorder, make_reporter
) -> None:
    recorder = mqtt_recorder(mosquitto, f"edge/{DEVICE}/results/#", client_id="recorder-backlog")
    mosquitto.wait_persisted()  # the recorder's session and subscription are on disk
    mosquitto.stop()

    reporter = make_reporter(mosquitto.url)
    seqs: list[int] = []
    for batch in range(20):
        seqs += reporter.publish_results([(f"cam{batch % 3}", {"batch": batch, "n": n}) for n in range(10)])
    assert seqs == list(range(1, 201))
    assert reporter.stats()["state"] == "connecting"
    assert not reporter.wait_connected(0.5)
    assert reporter.spool.depth() == 200

    mosquitto.start()
    recorder.wait_for(lambda ms: set(seqs_of(ms)) >= set(seqs), 60)
    arrived = seqs_of(recorder.messages())
    first_arrival = list(dict.fromkeys(arrived))
    assert first_arrival == seqs, "backlog not delivered in seq order"
    wait_until(lambda: reporter.spool.depth() == 0, 30, message="spool drained")
    logger.info("backlog: %d arrivals for 200 seqs", len(arrived))


def test_restarted_reporter_resends_what_the_spool_holds(
    mosquitto: MosquittoBroker, mqtt_recorder, make_reporter, tmp_path: Path
) -> None:
    """A process restart: the first reporter never reached a broker; the second sends its spool."""
    spool_path = tmp_path / "shared.db"
    dead_url = f"mqtt://127.0.0.1:{free_port()}"
    first = make_reporter(dead_url, spool_path=spool_path)
    seqs = first.publish_results([("cam0", {"n": n}) for n in range(30)])
    first.stop(flush_timeout_s=0.5)
    first.spool.close()

    recorder = mqtt_recorder(mosquitto, f"edge/{DEVICE}/results/#")
    second = make_reporter(mosquitto.url, spool_path=spool_path)
    more = second.publish_results([("cam0", {"n": 30})])
    assert more == [31]
    recorder.wait_for(lambda ms: set(seqs_of(ms)) >= set(seqs + more), 60)
    assert list(dict.fromkeys(seqs_of(recorder.messages()))) == seqs + more
    wait_until(lambda: second.spool.depth() == 0, 30, message="spool drained")


def take_over_session(broker: MosquittoBroker, client_id: str) -> None:
    """Connect with `client_id` and a clean start, then leave: the broker drops that session."""
    intruder = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    intruder.connect(broker.host, broker.port, keepalive=10, clean_start=True)
    intruder.loop_start()
    try:
        wait_until(intruder.is_connected, 30, message="intruder connected")
    finally:
        intruder.disconnect()
        intruder.loop_stop()


@pytest.mark.slow
@pytest.mark.parametrize("outage", ["kill", "stop", "session-taken-over"])
def test_broker_outage_mid_stream_every_seq_arrives(
    outage: str, mosquitto: MosquittoBroker, mqtt_recorder, make_reporter
) -> None:
    """kill: SIGKILL, state as last autosaved; stop: SIGTERM, the session resumes;
    session-taken-over: the broker stays up but the reporter's session is wiped, so the
    reporter must re-send everything unacked from the spool."""
    recorder = mqtt_recorder(mosquitto, f"edge/{DEVICE}/results/#", client_id="recorder-outage")
    mosquitto.wait_persisted()
    events = EventLog()
    # reconnect_min_s=1: the intruder is long gone before the reporter comes back.
    reporter = make_reporter(mosquitto.url, on_event=events, keepalive_s=3, reconnect_min_s=1.0)
    assert reporter.wait_connected(30)

    produced: list[int] = []
    stop_producing = threading.Event()

    def produce() -> None:
        n = 0
        while not stop_producing.is_set():
            produced.extend(reporter.publish_results([("cam0", {"n": n + k}) for k in range(5)]))
            n += 5
            time.sleep(0.02)

    producer = threading.Thread(target=produce, name="test-producer")
    producer.start()
    try:
        recorder.wait_for(lambda ms: len(ms) >= 100, 60)
        if outage == "session-taken-over":
            take_over_session(mosquitto, f"edge-{DEVICE}")
        else:
            mosquitto.wait_persisted()  # the reporter's session is on disk too
            mosquitto.kill() if outage == "kill" else mosquitto.stop()
            wait_until(lambda: not reporter.stats()["connected"], 30, message="reporter noticed the outage")
            outage_from = len(produced)
            wait_until(lambda: len(produced) >= outage_from + 200, 30, message="results produced during the outage")
            mosquitto.restart()
        wait_until(lambda: len(events.named("broker_reconnected")) >= 1, 60, message="broker_reconnected event")
        after = len(produced)
        wait_until(lambda: len(produced) >= after + 100, 30, message="results produced after the restart")
    finally:
        stop_producing.set()
        producer.join(timeout=30)

    expected = set(produced)
    recorder.wait_for(lambda ms: set(seqs_of(ms)) >= expected, 120)
    wait_until(lambda: reporter.spool.depth() == 0, 60, message="spool drained")
    arrived = seqs_of(recorder.messages())
    duplicates = sum(c - 1 for c in Counter(arrived).values())
    stats = reporter.stats()
    logger.info("%s outage: %d seqs, %d arrivals, %d duplicates, session_resets=%d, reconnects=%d",
                outage, len(expected), len(arrived), duplicates, stats["session_resets"], stats["reconnects"])
    assert set(arrived) == expected
    assert duplicates <= len(expected)  # at-least-once, not a storm
    (reconnected,) = events.named("broker_reconnected")
    assert reconnected["broker"] == f"127.0.0.1:{mosquitto.port}" and reconnected["downtime_s"] > 0
    if outage != "kill":  # after a SIGKILL it depends on whether the autosave caught the session
        assert reconnected["session_present"] is (outage == "stop")
    assert len(events.named("broker_disconnected")) == 1
    assert stats["reconnects"] == 1 and stats["inflight"] == 0


@pytest.mark.slow
def test_large_backlog_drains_in_pages(mosquitto: MosquittoBroker, mqtt_recorder, tmp_path: Path,
                                       make_reporter) -> None:
    spool_path = tmp_path / "big.db"
    spool = Spool(spool_path, sync="normal")

    for start in range(0, 20_000, 1000):
        spool.append([OutgoingMessage(f"edge/{DEVICE}/results/cam0", {"n": n}) for n in range(start, start + 1000)])
    spool.close()

    recorder = mqtt_recorder(mosquitto, f"edge/{DEVICE}/results/#")
    reporter = make_reporter(mosquitto.url, spool_path=spool_path)
    recorder.wait_for(lambda ms: len(set(seqs_of(ms))) >= 20_000, 240)
    assert list(dict.fromkeys(seqs_of(recorder.messages()))) == list(range(1, 20_001))
    wait_until(lambda: reporter.spool.depth() == 0, 60, message="spool drained")
    assert reporter.stats()["published"] >= 20_000


def test_stop_while_broker_down_keeps_spool_and_returns(make_reporter) -> None:
    reporter = make_reporter(f"mqtt://127.0.0.1:{free_port()}")
    reporter.publish_results([("cam0", {"n": 1})])
    reporter.publish_health({"ok": False})
    reporter.stop(flush_timeout_s=0.2)
    stats = reporter.stats()
    assert stats["state"] == "disconnected"
    assert stats["spool"]["depth"] == 1
    assert stats["health_dropped"] == 1
    assert stats["last_error"] and "cannot connect" in stats["last_error"]
