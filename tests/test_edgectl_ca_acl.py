"""A real Mosquitto with TLS + ACL built only from `edgectl ca` / `edgectl init --tls` / `edgectl broker` output.

Two devices (dev-a, dev-b) and an operator: a device publishes only under its own topics and
receives only its own commands; a client without a certificate from the fleet CA gets nowhere.
"""
from __future__ import annotations

import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from provisioning.pki.ca import key_pem, make_csr, new_private_key
from tests.fixtures.mosquitto import TlsMosquittoBroker
from tests.fixtures.net import free_port

EDGECTL = [sys.executable, "-m", "provisioning.cli"]
NOT_AUTHORIZED = 135


def edgectl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGECTL, *map(str, args)], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


class Client:
    """A paho MQTT 5 client with a TLS identity that records messages and PUBACK/SUBACK reason codes."""

    def __init__(self, broker: TlsMosquittoBroker, ca: Path, cert: Path | None, key: Path | None, name: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, int] = {}
        self.subacks: dict[int, list[int]] = {}
        self.connack: object = None
        self._cond = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv5)
        self.client.tls_set(ca_certs=str(ca), certfile=str(cert) if cert else None, keyfile=str(key) if key else None)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _on_connect(self, c: object, u: object, flags: object, reason: object, props: object) -> None:
        self.connack = reason
        self._notify()

    def _on_message(self, c: object, u: object, msg: paho.MQTTMessage) -> None:
        self.messages.append((msg.topic, bytes(msg.payload)))
        self._notify()

    def _on_publish(self, c: object, u: object, mid: int, reason: object, props: object) -> None:
        self.acks[mid] = int(reason.value)  # type: ignore[attr-defined]
        self._notify()

    def _on_subscribe(self, c: object, u: object, mid: int, reasons: list, props: object) -> None:
        self.subacks[mid] = [int(r.value) for r in reasons]
        self._notify()

    def wait(self, predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; messages {self.messages}, acks {self.acks}")
                self._cond.wait(left)

    def connected(self) -> Client:
        self.wait(lambda: self.connack is not None)
        assert not self.connack.is_failure, self.connack  # type: ignore[attr-defined]
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


@pytest.fixture
def fleet(tmp_path: Path, mosquitto_tls_factory: Callable[..., TlsMosquittoBroker]):
    ca = tmp_path / "ca"
    assert edgectl("ca", "init", "--out", ca, "--server-name", "127.0.0.1").returncode == 0
    identities: dict[str, tuple[Path, Path]] = {}
    for device in ("dev-a", "dev-b"):
        root = tmp_path / device
        proc = edgectl("init", "--root", root, "--device-id", device, "--broker", "mqtts://127.0.0.1:8883",
                       "--camera", "front=rtsp://192.0.2.10/stream1", "--model", "colour", "--tls")
        assert proc.returncode == 0, proc.stderr
        cert = tmp_path / f"{device}.crt"
        proc = edgectl("ca", "sign", root / "etc/edge/device.csr", "--ca", ca, "--out", cert)
        assert proc.returncode == 0, proc.stderr
        proc = edgectl("cert", "install", cert, "--ca-cert", ca / "ca.crt", "--root", root)
        assert proc.returncode == 0, proc.stderr
        identities[device] = (root / "etc/edge/device.crt", root / "etc/edge/device.key")
    op_key = new_private_key()
    (tmp_path / "op.key").write_bytes(key_pem(op_key))
    from cryptography.hazmat.primitives import serialization
    (tmp_path / "op.csr").write_bytes(make_csr(op_key, "fleet-operator").public_bytes(serialization.Encoding.PEM))
    proc = edgectl("ca", "sign", tmp_path / "op.csr", "--ca", ca, "--out", tmp_path / "op.crt", "--role", "operator")
    assert proc.returncode == 0, proc.stderr
    identities["fleet-operator"] = (tmp_path / "op.crt", tmp_path / "op.key")

    acl = edgectl("broker", "device-acl", "--prefix", "edge")
    assert acl.returncode == 0, acl.stderr
    (tmp_path / "edge.acl").write_text(acl.stdout)
    port = free_port()
    conf = edgectl("broker", "config", "--ca-dir", ca, "--acl-file", tmp_path / "edge.acl",
                   "--port", str(port), "--bind", "127.0.0.1")
    assert conf.returncode == 0, conf.stderr
    broker = mosquitto_tls_factory(conf.stdout, port)
    clients: list[Client] = []

    def connect(name: str, identity: str | None = None) -> Client:
        cert, key = identities[identity or name] if (identity or name) in identities else (None, None)
        client = Client(broker, ca / "ca.crt", cert, key, f"{name}-{len(clients)}")
        clients.append(client)
        return client

    yield connect, broker
    for client in clients:
        client.close()


def test_device_publishes_only_its_own_topics(fleet) -> None:
    connect, _ = fleet
    operator = connect("fleet-operator").connected()
    assert operator.subscribe("edge/#") == 1
    a = connect("dev-a").connected()
    assert a.publish("edge/dev-b/results/front", b"forged") == NOT_AUTHORIZED
    assert a.publish("edge/dev-b/status", b"offline") == NOT_AUTHORIZED
    assert a.publish("other/topic", b"x") == NOT_AUTHORIZED
    assert a.publish("edge/dev-a/results/front", b"mine") == 0
    assert a.publish("edge/dev-a/health", b"{}") == 0
    operator.wait(lambda: ("edge/dev-a/health", b"{}") in operator.messages)
    topics = [t for t, _ in operator.messages]
    assert "edge/dev-a/results/front" in topics
    assert not any(t.startswith("edge/dev-b/") or t == "other/topic" for t in topics)


def test_device_receives_only_its_own_commands(fleet) -> None:
    connect, _ = fleet
    a = connect("dev-a").connected()
    b = connect("dev-b").connected()
    a.subscribe("edge/dev-b/cmd/#")  # the broker may refuse it at SUBACK or filter at delivery; either way:
    assert a.subscribe("edge/dev-a/cmd/#") == 1
    assert b.subscribe("edge/dev-b/cmd/#") == 1
    operator = connect("fleet-operator").connected()
    assert operator.publish("edge/dev-b/cmd/deploy", b'{"ref": "b"}') == 0
    assert operator.publish("edge/dev-a/cmd/deploy", b'{"ref": "a"}') == 0
    b.wait(lambda: ("edge/dev-b/cmd/deploy", b'{"ref": "b"}') in b.messages)
    a.wait(lambda: ("edge/dev-a/cmd/deploy", b'{"ref": "a"}') in a.messages)
    # dev-b's command was sent first on the same connection, so it would have arrived before dev-a's
    assert a.messages == [("edge/dev-a/cmd/deploy", b'{"ref": "a"}')]
    # a device cannot read another device's results either
    a.subscribe("edge/dev-b/#")
    assert b.publish("edge/dev-b/results/front", b"secret") == 0
    assert a.publish("edge/dev-a/cmd/ping", b"sync") == 0  # own topic, comes back through own cmd subscription
    a.wait(lambda: ("edge/dev-a/cmd/ping", b"sync") in a.messages)
    assert not any(t.startswith("edge/dev-b/") for t, _ in a.messages)


def test_client_without_fleet_certificate_is_refused(fleet, tmp_path: Path) -> None:
    _, broker = fleet
    connacks: list[object] = []
    dropped = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="nocert", protocol=paho.MQTTv5)
    client.tls_set(ca_certs=str(tmp_path / "ca" / "ca.crt"))
    client.on_connect = lambda c, u, f, reason, p: connacks.append(reason)
    client.on_disconnect = lambda c, u, f, reason, p: dropped.set()
    try:
        client.connect(broker.host, broker.port, keepalive=5)
    except (ssl.SSLError, OSError):
        refused_in_handshake = True  # TLS 1.2: the server's verdict comes during the handshake
    else:
        refused_in_handshake = False  # TLS 1.3: it comes as an alert on the first read
        client.loop_start()
        try:
            assert dropped.wait(20), "the broker kept a client without a certificate"
        finally:
            client.disconnect()
            client.loop_stop()
    assert refused_in_handshake or not connacks


def test_ca_sign_refuses_bad_and_reserved_common_names(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    ca = tmp_path / "ca"
    assert edgectl("ca", "init", "--out", ca, "--server-name", "broker.example").returncode == 0
    for cn, expected in (("bad/id", "not a valid device id"), ("fleet-operator", "reserved")):
        key = new_private_key()
        csr = tmp_path / f"{len(cn)}.csr"
        csr.write_bytes(make_csr(key, cn).public_bytes(serialization.Encoding.PEM))
        proc = edgectl("ca", "sign", csr, "--ca", ca, "--out", tmp_path / "x.crt")
        assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "x.crt").exists()
    proc = edgectl("ca", "sign", tmp_path / "missing.csr", "--ca", ca, "--out", tmp_path / "x.crt")
    assert proc.returncode == 2 and "not found" in proc.stderr
    proc = edgectl("ca", "init", "--out", ca, "--server-name", "x")
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert (ca / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (ca / "server.key").stat().st_mode & 0o777 == 0o600
