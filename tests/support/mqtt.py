"""MQTT helpers for tests: reading what a recorder got, a request/response client, a TLS client.

- `payloads(recorder, topic_filter)`, `latest_retained(recorder, topic)`, `seq_report(docs)`:
  read an `MqttRecorder` (tests/fixtures/mosquitto.py).
- `Requester(broker, device)`: MQTT 5 requests with a Response Topic, as `edgectl fleet cmd` sends.
- `TlsClient(broker, ca, cert, key, name)`: a TLS identity recording messages and PUBACK/SUBACK
  reason codes (`NOT_AUTHORIZED` = 135).
"""
from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.waits import wait_until

NOT_AUTHORIZED = 135


def payloads(recorder: Any, topic_filter: str) -> list[Any]:
    return [json.loads(m.payload) for m in recorder.messages(topic_filter)]


def latest_retained(recorder: Any, topic: str) -> Any:
    """The last payload recorded on `topic` (JSON decoded, else text), or None."""
    msgs = recorder.messages(topic)
    if not msgs:
        return None
    raw = msgs[-1].payload
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode()


def seq_report(docs: list[dict[str, Any]]) -> tuple[set[int], int, list[int]]:
    """(distinct seqs, duplicate count, gaps between the lowest and highest seq seen)."""
    seqs = [d["seq"] for d in docs]
    distinct = set(seqs)
    gaps = sorted(set(range(min(distinct), max(distinct) + 1)) - distinct) if distinct else []
    return distinct, len(seqs) - len(distinct), gaps


class Requester:
    """An MQTT 5 client that sends requests with a Response Topic and collects the replies."""

    def __init__(self, broker: Any, device: str) -> None:
        self.device = device
        self.replies: dict[bytes, dict[str, Any]] = {}
        self.response_topic = f"replies/{uuid.uuid4().hex[:8]}"
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"req-{uuid.uuid4().hex[:6]}",
                                  protocol=paho.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe(self.response_topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(20)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        self.replies[bytes(msg.properties.CorrelationData)] = json.loads(msg.payload)

    def send(self, command: str, payload: bytes, retain: bool = False) -> bytes:
        correlation = uuid.uuid4().bytes
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.response_topic
        props.CorrelationData = correlation
        self.client.publish(f"edge/{self.device}/cmd/{command}", payload, qos=1, retain=retain,
                            properties=props).wait_for_publish(10)
        return correlation

    def request(self, command: str, payload: bytes, timeout_s: float = 20.0) -> dict[str, Any]:
        correlation = self.send(command, payload)
        wait_until(lambda: correlation in self.replies, timeout_s, message=f"reply to {command}")
        return self.replies[correlation]

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class TlsClient:
    """A paho MQTT 5 client with a TLS identity that records messages and PUBACK/SUBACK reason codes."""

    def __init__(self, broker: Any, ca: Path, cert: Path | None, key: Path | None, name: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, int] = {}
        self.subacks: dict[int, list[int]] = {}
        self.connack: Any = None
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv5)
        self.client.tls_set(ca_certs=str(ca), certfile=str(cert) if cert else None, keyfile=str(key) if key else None)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, c: object, u: object, flags: object, reason: object, props: object) -> None:
        self.connack = reason

    def _on_message(self, c: object, u: object, msg: paho.MQTTMessage) -> None:
        self.messages.append((msg.topic, bytes(msg.payload)))

    def _on_publish(self, c: object, u: object, mid: int, reason: Any, props: object) -> None:
        self.acks[mid] = int(reason.value)

    def _on_subscribe(self, c: object, u: object, mid: int, reasons: list[Any], props: object) -> None:
        self.subacks[mid] = [int(r.value) for r in reasons]

    def wait(self, predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
        wait_until(predicate, timeout_s, interval_s=0.01,
                   message=f"a TLS client condition (when the wait began: messages {self.messages}, acks {self.acks})")

    def connected(self) -> TlsClient:
        self.wait(lambda: self.connack is not None)
        assert not self.connack.is_failure, self.connack
        return self

    def publish(self, topic: str, payload: bytes) -> int:
        """QoS 1 publish; returns the PUBACK reason code (0 = accepted, 135 = not authorized)."""
        mid = self.client.publish(topic, payload, qos=1).mid
        self.wait(lambda: mid in self.acks)
        return self.acks[mid]

    def subscribe(self, topic: str) -> int:
        _, mid = self.client.subscribe(topic, qos=1)
        self.wait(lambda: mid in self.subacks)
        return self.subacks[mid][0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
