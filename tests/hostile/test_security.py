"""Who may do what: broker ACLs between devices, and the modes of credentials `edgectl` writes.

Extends tests/integration/test_provisioning_ca_acl.py (which covers: a device publishes only its own
topics, receives only its own commands, a client without a fleet certificate is refused, CA key modes).
"""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.mqtt import NOT_AUTHORIZED
from tests.support.processes import EDGECTL


def edgectl_umask0(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """edgectl under umask 000: modes must come from edgectl itself, not from a friendly umask."""
    return subprocess.run([*EDGECTL, *map(str, args)], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, preexec_fn=lambda: os.umask(0))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_device_cannot_command_or_impersonate_another_device(tls_fleet) -> None:
    connect, _, _ = tls_fleet
    b = connect("dev-b").connected()
    assert b.subscribe("edge/dev-b/cmd/#") == 1
    a = connect("dev-a").connected()
    # commands into another device, its retained status / model state, a wildcard into everyone's topics
    for topic in ("edge/dev-b/cmd/deploy", "edge/dev-b/cmd/rollback", "edge/dev-b/status", "edge/dev-b/model",
                  "edge/dev-b/health", "edge//dev-b/cmd/deploy", "edge/dev-b"):
        assert a.publish(topic, b'{"ref": "evil"}') == NOT_AUTHORIZED, topic
    # a wildcard subscription sees nothing of dev-b (the broker filters at delivery if it grants it)
    a.subscribe("#")
    a.subscribe("edge/+/cmd/#")
    operator = connect("fleet-operator").connected()
    assert operator.publish("edge/dev-b/cmd/deploy", b'{"ref": "for-b"}') == 0
    assert operator.publish("edge/dev-a/cmd/deploy", b'{"ref": "for-a"}') == 0
    b.wait(lambda: ("edge/dev-b/cmd/deploy", b'{"ref": "for-b"}') in b.messages)
    a.wait(lambda: ("edge/dev-a/cmd/deploy", b'{"ref": "for-a"}') in a.messages)
    assert not any(t.startswith("edge/dev-b/") for t, _ in a.messages), a.messages
    assert ("edge/dev-b/cmd/deploy", b'{"ref": "evil"}') not in b.messages


@pytest.mark.slow
def test_keys_gen_and_init_tls_write_private_files_0600_under_umask_0(tmp_path: Path) -> None:
    proc = edgectl_umask0("keys", "gen", "--out", tmp_path / "keys")
    assert proc.returncode == 0, proc.stderr
    assert mode(tmp_path / "keys" / "signing.key") == 0o600
    assert mode(tmp_path / "keys" / "signing.pub") == 0o644
    root = tmp_path / "root"
    proc = edgectl_umask0("init", "--root", root, "--device-id", "gate-01", "--broker", "mqtts://broker.example:8883",
                          "--camera", "front=rtsp://192.0.2.10/s", "--model", "m", "--tls")
    assert proc.returncode == 0, proc.stderr
    etc = root / "etc/edge"
    assert mode(etc / "device.key") == 0o600
    assert mode(etc / "gateway.toml") & 0o007 == 0  # never world-readable
    proc = edgectl_umask0("ca", "init", "--out", tmp_path / "ca", "--server-name", "broker.example")
    assert proc.returncode == 0, proc.stderr
    assert mode(tmp_path / "ca" / "ca.key") == 0o600 and mode(tmp_path / "ca" / "server.key") == 0o600


@pytest.mark.slow
def test_init_password_config_is_0600_and_opts_into_plaintext_explicitly(tmp_path: Path) -> None:
    from edge.config.loader import load_config

    (tmp_path / "pw").write_text("s3cret\n")
    root = tmp_path / "root"
    proc = edgectl_umask0("init", "--root", root, "--device-id", "gate-01", "--broker", "mqtt://broker.example:1883",
                          "--camera", "front=rtsp://192.0.2.10/s", "--model", "m", "--username", "gate-01",
                          "--password-file", tmp_path / "pw")
    assert proc.returncode == 0, proc.stderr
    config_path = root / "etc/edge/gateway.toml"
    assert mode(config_path) == 0o600
    assert "allow_plaintext_password = true" in config_path.read_text()
    assert "plain text" in proc.stderr  # the operator is told
    assert load_config(config_path).mqtt.allow_plaintext_password is True
