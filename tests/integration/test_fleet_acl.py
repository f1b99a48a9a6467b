"""Who may write desired and reported state: a real Mosquitto with TLS, client certificates and the ACL of
`edgectl broker device-acl --homeassistant` (identities from `edgectl ca sign`).

Only the fleet operator writes desired state and rollout documents; a device writes its own
reported state and nothing of another device, not even its own desired state or commands; Home
Assistant reads and presses rollback, nothing else. The operator's `edgectl` runs from a context
in ~/.config/edgectl/config.toml (`--context`), one short line per command.
"""
from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from provisioning.cli import main as edgectl
from provisioning.pki.ca import key_pem, make_csr, new_private_key
from tests.fixtures.mosquitto import TlsMosquittoBroker
from tests.support.mqtt import NOT_AUTHORIZED, TlsClient
from tests.support.net import free_port

D1 = "sha256:" + "1" * 64
NO_SUBSCRIBERS = 16  # an MQTT 5 success code: accepted, nobody subscribed
IDENTITIES = {"dev-a": "device", "dev-b": "device", "fleet-operator": "operator", "homeassistant": "homeassistant"}


def run(*args: object) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = edgectl([str(a) for a in args])
    assert code == 0, f"edgectl {' '.join(map(str, args))}: {err.getvalue()}"
    return out.getvalue()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[TlsMosquittoBroker, dict[str, tuple[Path, Path]], Path]]:
    ca = tmp_path / "ca"
    run("ca", "init", "--out", ca, "--server-name", "127.0.0.1")
    identities = {}
    for name, role in IDENTITIES.items():
        key = new_private_key()
        (tmp_path / f"{name}.key").write_bytes(key_pem(key))
        (tmp_path / f"{name}.key").chmod(0o600)
        (tmp_path / f"{name}.csr").write_bytes(make_csr(key, name).public_bytes(serialization.Encoding.PEM))
        run("ca", "sign", tmp_path / f"{name}.csr", "--ca", ca, "--out", tmp_path / f"{name}.crt", "--role", role)
        identities[name] = (tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
    (tmp_path / "edge.acl").write_text(run("broker", "device-acl", "--homeassistant"))
    port = free_port()
    listener = run("broker", "config", "--ca-dir", ca, "--acl-file", tmp_path / "edge.acl", "--port", port,
                   "--bind", "127.0.0.1", "--devices", "100")
    (tmp_path / "broker").mkdir()
    broker = TlsMosquittoBroker(tmp_path / "broker", port, listener).start()
    yield broker, identities, ca / "ca.crt"
    broker.stop()


def test_only_the_operator_writes_desired_state_and_a_device_only_its_own_reported(fleet, tmp_path: Path,
                                                                                    monkeypatch) -> None:
    broker, identities, ca = fleet
    clients: list[TlsClient] = []

    def connect(name: str) -> TlsClient:
        cert, key = identities[name]
        client = TlsClient(broker, ca, cert, key, f"{name}-{len(clients)}").connected()
        clients.append(client)
        return client

    try:
        observer = connect("fleet-operator")
        assert observer.subscribe("edge/#") == 1
        a, b, ha = connect("dev-a"), connect("dev-b"), connect("homeassistant")
        assert a.subscribe("edge/dev-a/desired") == 1
        a.subscribe("edge/dev-b/desired")  # refused at SUBACK or filtered at delivery: either way nothing arrives
        forged = json.dumps({"generation": 99, "model": {"ref": "evil.example:5000/m:1", "digest": D1}}).encode()
        for topic in ("edge/dev-b/desired", "edge/dev-b/reported", "edge/dev-a/desired", "edge/fleet/rollouts/r-1",
                      "edge/dev-a/cmd/deploy", "edge/dev-b/model", "homeassistant/device/edge_dev-b/config"):
            assert a.publish(topic, forged) == NOT_AUTHORIZED, topic
        assert a.publish("edge/dev-a/reported", b'{"generation": 0, "state": "none"}') == 0
        info = a.client.publish("edge/dev-a/reported", b'{"generation": 0, "state": "none"}', qos=1, retain=True)
        a.wait(lambda: a.acks.get(info.mid) == 0)  # retained: what `fleet desired` reads
        assert a.publish("homeassistant/device/edge_dev-a/config", b"{}") == NO_SUBSCRIBERS  # accepted
        assert b.publish("edge/dev-b/reported", b'{"generation": 0, "state": "none"}') == 0
        # Home Assistant presses rollback, and nothing else
        assert ha.publish("edge/dev-a/cmd/rollback", b"{}") == 0  # the observer subscribes to edge/#
        for topic in ("edge/dev-a/cmd/deploy", "edge/dev-a/desired", "edge/dev-a/reported", "edge/fleet/rollouts/x"):
            assert ha.publish(topic, forged) == NOT_AUTHORIZED, topic

        # the operator's edgectl, from a context: one short line
        config = tmp_path / "xdg" / "edgectl" / "config.toml"
        config.parent.mkdir(parents=True)
        cert, key = identities["fleet-operator"]
        config.write_text(f'[contexts.prod]\nbroker = "{broker.url}"\nca_file = "{ca}"\ncert = "{cert}"\n'
                          f'key = "{key}"\n')
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
        monkeypatch.delenv("EDGE_CONTEXT", raising=False)
        written = json.loads(run("--context", "prod", "fleet", "desired", "set", "dev-a", "--model",
                                 f"reg.example:5000/models/colour:1@{D1}"))
        assert written["generation"] == 1  # above anything dev-a reported
        a.wait(lambda: any(t == "edge/dev-a/desired" for t, _ in a.messages))
        observer.wait(lambda: any(t == "edge/dev-a/desired" for t, _ in observer.messages))
        delivered = [json.loads(p) for t, p in a.messages if t == "edge/dev-a/desired"]
        assert delivered == [written]
        assert not any(t.startswith("edge/dev-b/") for t, _ in a.messages)
        shown = json.loads(run("--context", "prod", "fleet", "desired", "show", "dev-a"))
        assert shown["desired"] == written and shown["reported"]["generation"] == 0
        # nothing forged reached anyone: every desired/rollout message the broker passed is the operator's
        assert [p for t, p in observer.messages if t.endswith("/desired") or "/fleet/" in t] == [
            p for t, p in observer.messages if t == "edge/dev-a/desired"]
        assert forged not in [p for _, p in observer.messages]
    finally:
        for client in clients:
            client.close()
