"""A real Mosquitto with TLS + ACL built only from `edgectl ca` / `edgectl init --tls` / `edgectl broker` output
(the `tls_fleet` fixture, tests/fixtures/pki.py).

Two devices (dev-a, dev-b) and an operator: a device publishes only under its own topics and
receives only its own commands; a client without a certificate from the fleet CA gets nowhere.
"""
from __future__ import annotations

import ssl
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from provisioning.pki.ca import make_csr, new_private_key
from tests.support.mqtt import NOT_AUTHORIZED
from tests.support.processes import edgectl


def test_device_publishes_only_its_own_topics(tls_fleet) -> None:
    connect, _, _ = tls_fleet
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


def test_device_receives_only_its_own_commands(tls_fleet) -> None:
    connect, _, _ = tls_fleet
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
    # a device cannot publish into its own command topics either (only the operator commands); the
    # operator's sync message comes back through a's own cmd subscription after b's result
    assert a.publish("edge/dev-a/cmd/ping", b"forged") == NOT_AUTHORIZED
    assert operator.publish("edge/dev-a/cmd/ping", b"sync") == 0
    a.wait(lambda: ("edge/dev-a/cmd/ping", b"sync") in a.messages)
    assert not any(t.startswith("edge/dev-b/") for t, _ in a.messages)


def test_client_without_fleet_certificate_is_refused(tls_fleet) -> None:
    _, broker, ca_cert = tls_fleet
    connacks: list[object] = []
    dropped = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="nocert", protocol=paho.MQTTv5)
    client.tls_set(ca_certs=str(ca_cert))
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


@pytest.mark.slow
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
