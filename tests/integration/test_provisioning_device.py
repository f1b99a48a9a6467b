"""`edgectl init`, `cert install`, `install` and `uninstall` under --root: real files, real validators."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config.loader import load_config
from tests.support.processes import EDGECTL

BIN = Path(sys.executable).parent


def edgectl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGECTL, *map(str, args)], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgectl: ") and words in lines[0], proc.stderr


def init_password(root: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "mqtt.pw").write_text("s3cret-pw\n")
    return edgectl("init", "--root", root, "--device-id", "gate-01", "--broker", "mqtt://broker.example:1883",
                   "--camera", "front=rtsp://192.0.2.10/stream1", "--camera", "usb=/dev/video0",
                   "--model", "classifier", "--username", "gate-01", "--password-file", tmp_path / "mqtt.pw", *extra)


@pytest.mark.slow
def test_init_with_password_writes_a_config_the_gateway_loads(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = init_password(root, tmp_path, "--registry", "registry.example:5000/models/classifier:stable")
    assert proc.returncode == 0, proc.stderr
    config_path = root / "etc/edge/gateway.toml"
    config = load_config(config_path)
    assert config.device_id == "gate-01"
    assert [(c.name, c.source) for c in config.cameras] == [("front", "rtsp://192.0.2.10/stream1"),
                                                             ("usb", "/dev/video0")]
    assert (config.mqtt.username, config.mqtt.password) == ("gate-01", "s3cret-pw")
    assert config.model.name == "classifier" and config.model.store == Path("/var/lib/edge/models")
    assert config.registry is not None and config.registry.ref.endswith("classifier:stable")
    assert mode(config_path) == 0o600  # it holds the MQTT password
    assert (root / "etc/edge/device-id").read_text() == "gate-01\n"
    check = edgectl("config", "check", config_path)
    assert check.returncode == 0, check.stderr


@pytest.mark.slow
def test_init_refuses_bad_input_with_one_line(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert_one_line_error(edgectl("init", "--root", root, "--camera", "a=0", "--model", "m"), 2, "missing --device-id")
    assert_one_line_error(edgectl("init", "--root", root, "--device-id", "bad/id", "--camera", "a=0",
                                  "--model", "m"), 2, "--device-id 'bad/id'")
    assert_one_line_error(edgectl("init", "--root", root, "--device-id", "d", "--camera", "nouri",
                                  "--model", "m"), 2, "expected NAME=URI")
    assert_one_line_error(edgectl("init", "--root", root, "--device-id", "d", "--camera", "a=ftp://x/y",
                                  "--model", "m"), 2, "cameras[0].source")
    assert_one_line_error(edgectl("init", "--root", root, "--device-id", "d", "--camera", "a=0", "--model", "m",
                                  "--broker", "mqtt://h:1883", "--tls"), 2, "mqtts://")
    assert_one_line_error(edgectl("init", "--root", root, "--device-id", "d", "--camera", "a=0", "--model", "m",
                                  "--username", "u"), 2, "--password-file")
    assert not (root / "etc/edge/gateway.toml").exists()  # nothing written on refusal
    assert init_password(root, tmp_path).returncode == 0
    assert_one_line_error(init_password(root, tmp_path), 2, "already exists; pass --force")
    assert init_password(root, tmp_path, "--force").returncode == 0


@pytest.mark.slow
def test_init_tls_key_csr_and_cert_install(tmp_path: Path) -> None:
    from cryptography import x509

    root, ca = tmp_path / "root", tmp_path / "ca"
    assert edgectl("ca", "init", "--out", ca, "--server-name", "broker.example").returncode == 0
    proc = edgectl("init", "--root", root, "--device-id", "gate-02", "--broker", "mqtts://broker.example:8883",
                   "--camera", "front=rtsp://192.0.2.10/stream1", "--model", "classifier", "--tls")
    assert proc.returncode == 0, proc.stderr
    etc = root / "etc/edge"
    assert mode(etc / "device.key") == 0o600
    csr = x509.load_pem_x509_csr((etc / "device.csr").read_bytes())
    assert csr.subject.rfc4514_string() == "CN=gate-02" and csr.is_signature_valid
    assert "BEGIN PRIVATE KEY" not in (etc / "device.csr").read_text()
    # a certificate for another key is refused; the right one is installed
    other = tmp_path / "other"
    assert edgectl("init", "--root", other, "--device-id", "gate-02", "--broker", "mqtts://b:8883", "--camera",
                   "a=0", "--model", "m", "--tls").returncode == 0
    assert edgectl("ca", "sign", other / "etc/edge/device.csr", "--ca", ca, "--out", tmp_path / "o.crt").returncode == 0
    assert_one_line_error(edgectl("cert", "install", tmp_path / "o.crt", "--ca-cert", ca / "ca.crt", "--root", root),
                          2, "not issued for this device's key")
    assert edgectl("ca", "sign", etc / "device.csr", "--ca", ca, "--out", tmp_path / "d.crt").returncode == 0
    proc = edgectl("cert", "install", tmp_path / "d.crt", "--ca-cert", ca / "ca.crt", "--root", root)
    assert proc.returncode == 0, proc.stderr
    # the config, read the way the device will (its /etc/edge is <root>/etc/edge), loads
    text = (etc / "gateway.toml").read_text()
    assert 'cert_file = "/etc/edge/device.crt"' in text
    device_view = tmp_path / "device-view.toml"
    device_view.write_text(text.replace('"/etc/edge/', f'"{etc}/'))
    config = load_config(device_view)
    assert config.mqtt.url == "mqtts://broker.example:8883" and config.mqtt.key_file == etc / "device.key"
    # re-running init keeps the device key (the certificate stays valid)
    before = (etc / "device.key").read_bytes()
    assert edgectl("init", "--root", root, "--device-id", "gate-02", "--broker", "mqtts://broker.example:8883",
                   "--camera", "front=0", "--model", "classifier", "--tls", "--no-input",
                   "--force").returncode == 0
    assert (etc / "device.key").read_bytes() != before  # --force replaces it...
    (etc / "gateway.toml").unlink()
    key = (etc / "device.key").read_bytes()
    assert edgectl("init", "--root", root, "--device-id", "gate-02", "--broker", "mqtts://broker.example:8883",
                   "--camera", "front=0", "--model", "classifier", "--tls").returncode == 0
    assert (etc / "device.key").read_bytes() == key  # ... without --force it is kept


@pytest.mark.slow
def test_install_and_uninstall_under_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert init_password(root, tmp_path).returncode == 0
    proc = edgectl("install", "--root", root)
    assert proc.returncode == 0, proc.stderr
    assert "user edge not created" in proc.stdout
    units = root / "etc/systemd/system"
    gateway_unit = units / "edge-gateway.service"
    text = gateway_unit.read_text()
    assert f"ExecStart={BIN / 'edge-gateway'} run --config /etc/edge/gateway.toml" in text
    assert f"ExecStart={BIN / 'edge-model-server'} " in (units / "edge-model-server.service").read_text()
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", str(gateway_unit), str(units / "edge-model-server.service")],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr
    wants = units / "multi-user.target.wants/edge-gateway.service"
    assert wants.is_symlink() and os.readlink(wants).endswith("edge-gateway.service")
    for folder in ("etc/edge", "var/lib/edge", "var/lib/edge/models"):
        assert (root / folder).is_dir() and mode(root / folder) == 0o750
    load_config(root / "etc/edge/gateway.toml")  # install left the config alone

    # an operator's own unit with the same name is never removed
    (units / "tensorflow-serving.service").write_text("[Service]\nExecStart=/bin/true\n")
    proc = edgectl("uninstall", "--root", root)
    assert proc.returncode == 0, proc.stderr
    assert not gateway_unit.exists() and not wants.exists() and not (units / "edge-model-server.service").exists()
    assert (units / "tensorflow-serving.service").exists() and "not written by edgectl" in proc.stdout
    assert (root / "etc/edge/gateway.toml").exists()  # config and data survive a plain uninstall
    proc = edgectl("uninstall", "--root", root, "--purge")
    assert proc.returncode == 0, proc.stderr
    assert not (root / "etc/edge").exists() and not (root / "var/lib/edge").exists()


@pytest.mark.slow
def test_install_no_enable(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = edgectl("install", "--root", root, "--no-enable")
    assert proc.returncode == 0, proc.stderr
    assert (root / "etc/systemd/system/edge-gateway.service").is_file()
    assert not (root / "etc/systemd/system/multi-user.target.wants").exists()


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["install", "--bogus"], ["init", "--camera"], ["ca", "sign"]])
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    proc = edgectl(*argv)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "error:" in proc.stderr


@pytest.mark.slow
def test_init_asks_for_missing_values_on_a_terminal(tmp_path: Path) -> None:
    import pty

    root = tmp_path / "root"
    master, slave = pty.openpty()
    proc = subprocess.Popen([*EDGECTL, "init", "--root", str(root), "--broker", "mqtt://broker.example"],
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(slave)
    answers = "gate-07\nfront=rtsp://192.0.2.10/s\nusb=0\n\nclassifier\n\n"
    os.write(master, answers.encode())
    out, err = proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 0, err
    assert "device id" in out and "camera 3" in out and "model name" in out
    config = load_config(root / "etc/edge/gateway.toml")
    assert config.device_id == "gate-07" and [c.name for c in config.cameras] == ["front", "usb"]
    assert config.mqtt.url == "mqtt://broker.example" and config.registry is None
    assert mode(root / "etc/edge/gateway.toml") == 0o640
