"""`edgectl trust` as an operator runs it: the offline fleet root, signed documents, rotation, and the
root key installed on a device by `edgectl init --trust-root`."""
from __future__ import annotations

import base64
import contextlib
import io
import json
import stat
import subprocess
import sys
import time
from pathlib import Path

from edge.config.loader import load_config
from edge.util.signed import DocType
from edge.util.trustroot import TrustRoot
from provisioning.cli import main
from provisioning.fleet.cli import signed_payload
from tests.support.processes import edgectl

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def run(*args: object) -> subprocess.CompletedProcess[str]:
    """edgectl in this process (each subprocess pays ~2 s of imports; the first test runs the real one)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def payload_of(envelope: dict) -> dict:
    return json.loads(base64.b64decode(envelope["payload"]))


def test_init_sign_show_and_counters(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = edgectl("trust", "init", "--out", root)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE((root / "fleet-root.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "fleet-root.pub").stat().st_mode) == 0o644
    assert "keep it offline" in proc.stderr and proc.stdout.startswith("fleet root key id ")
    assert run("trust", "init", "--out", root).returncode == 2  # never overwrites a root by accident

    patch = '{"registry": {"ref": "reg2.example:5000/models/colour:stable"}}'
    before = time.time()
    proc = edgectl("trust", "sign", "config", "--key", root / "fleet-root.key", "--device", "gate-01",
                   "--patch", patch, "--expires-in", "2h", "--out", tmp_path / "move.json")
    assert proc.returncode == 0, proc.stderr
    assert "edgectl fleet cmd DEVICE config --signed" in proc.stderr
    first = payload_of(json.loads((tmp_path / "move.json").read_text()))
    assert first["_type"] == "config-patch" and first["target"] == "gate-01"
    assert first["content"] == {"patch": json.loads(patch)}
    assert first["counter"] >= int(before)  # above the time: rises even from a fresh copy of the key
    proc = run("trust", "sign", "config", "--key", root / "fleet-root.key", "--device", "gate-*", "--patch", "{}")
    assert proc.returncode == 0, proc.stderr
    assert payload_of(json.loads(proc.stdout))["counter"] > first["counter"]
    assert int((root / "fleet-root.counter").read_text()) == payload_of(json.loads(proc.stdout))["counter"]

    proc = edgectl("trust", "show", tmp_path / "move.json", "--pub", root / "fleet-root.pub")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["payload"] == first and shown["verified_with"] == str(root / "fleet-root.pub")
    other = tmp_path / "other"
    assert run("trust", "init", "--out", other).returncode == 0
    proc = run("trust", "show", tmp_path / "move.json", "--pub", other / "fleet-root.pub")
    assert proc.returncode == 1 and "does not verify" in proc.stderr

    # what the device makes of it
    device = TrustRoot("gate-01", root / "fleet-root.pub", tmp_path / "device-trust.json")
    doc = device.verify(json.loads((tmp_path / "move.json").read_text()), DocType.CONFIG_PATCH)
    assert doc.content["patch"] == json.loads(patch)


def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert run("trust", "init", "--out", root).returncode == 0
    key = root / "fleet-root.key"
    for args, message in [
        (("config", "--patch", "[1]"), "must be a JSON object"),
        (("config", "--patch", "{", "--expires-in", "1h"), "not valid JSON"),
        (("config", "--patch", "{}", "--expires-in", "soon"), "--expires-in 'soon'"),
        (("rollback", "--model", "m", "--version", "1", "--digest", "sha256:nope"), "--digest"),
    ]:
        proc = run("trust", "sign", args[0], "--key", key, "--device", "gate-01", *args[1:])
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    key.chmod(0o644)
    proc = run("trust", "sign", "config", "--key", key, "--device", "d", "--patch", "{}")
    assert proc.returncode == 2 and "chmod 600" in proc.stderr


def test_what_no_device_accepts_is_refused_instead_of_signed(tmp_path: Path) -> None:
    """A device accepts counters 1 .. 2**63-1 only (edge.util.trustroot), a model version is a positive
    integer, and a rotation names the devices' root version + 1 (they start at 1): anything else would
    be signed for nothing, so it is refused with exit status 2 and nothing is written."""
    old, new = tmp_path / "old", tmp_path / "new"
    assert run("trust", "init", "--out", old).returncode == 0
    assert run("trust", "init", "--out", new).returncode == 0
    key, out = old / "fleet-root.key", tmp_path / "doc.json"
    rollback = ("rollback", "--model", "m", "--digest", "sha256:" + "a" * 64)
    rotate = ("rotate", "--new-key", new / "fleet-root.key")
    for args, message in [
        (("config", "--patch", "{}", "--counter", "0"), "--counter 0: devices accept only counters from 1 to"),
        (("config", "--patch", "{}", "--counter", "-5"), "--counter -5: devices accept only counters from 1 to"),
        (("config", "--patch", "{}", "--counter", str(2**63)), f"--counter {2**63}: devices accept only counters"),
        ((*rollback, "--version", "-3"), "--version -3: a model version is a positive integer"),
        ((*rollback, "--version", "0"), "--version 0: a model version is a positive integer"),
        ((*rotate, "--root-version", "1"), "--root-version 1: the devices' current root version + 1, so at least 2"),
        ((*rotate, "--root-version", "-2"), "--root-version -2: the devices' current root version + 1"),
    ]:
        proc = run("trust", "sign", args[0], "--key", key, "--device", "gate-01", *args[1:], "--out", out)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and message in proc.stderr, proc.stderr
        assert not out.exists() and not (old / "fleet-root.counter").exists()
    # the largest counter a device accepts is signed; one not above the last signed only warns (devices
    # that never saw the last one accept it)
    assert run("trust", "sign", "config", "--key", key, "--device", "gate-01", "--patch", "{}", "--counter", "5",
               "--out", out).returncode == 0
    proc = run("trust", "sign", "config", "--key", key, "--device", "gate-01", "--patch", "{}", "--counter", "3")
    assert proc.returncode == 0 and payload_of(json.loads(proc.stdout))["counter"] == 3
    proc = run("trust", "sign", *rollback, "--version", "1", "--key", key, "--device", "gate-*", "--counter", 2**63 - 1)
    assert proc.returncode == 0, proc.stderr
    device = TrustRoot("gate-01", old / "fleet-root.pub", tmp_path / "t.json")
    assert device.verify(json.loads(proc.stdout), DocType.ROLLBACK).counter == 2**63 - 1


def test_rotation_document_is_signed_by_both_keys_and_carries_the_counter_over(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    assert run("trust", "init", "--out", old).returncode == 0
    assert run("trust", "init", "--out", new).returncode == 0
    proc = run("trust", "sign", "rotate", "--key", old / "fleet-root.key", "--new-key", new / "fleet-root.key",
                   "--root-version", "2", "--device", "*", "--out", tmp_path / "rotate.json")
    assert proc.returncode == 0, proc.stderr
    envelope = json.loads((tmp_path / "rotate.json").read_text())
    assert len(envelope["signatures"]) == 2
    payload = payload_of(envelope)
    assert payload["_type"] == "root-rotation" and payload["content"]["root_version"] == 2
    assert payload["content"]["public_key"] == (new / "fleet-root.pub").read_text()
    assert int((new / "fleet-root.counter").read_text()) == payload["counter"]  # the new key goes on from there
    device = TrustRoot("gate-01", old / "fleet-root.pub", tmp_path / "t.json")
    device.accept(device.verify(envelope, DocType.ROOT_ROTATION))
    assert device.status()["root_version"] == 2


def test_init_installs_the_trust_root_out_of_band(tmp_path: Path) -> None:
    root_keys = tmp_path / "fleet-root"
    assert run("trust", "init", "--out", root_keys).returncode == 0
    image = tmp_path / "image"
    proc = run("init", "--root", image, "--device-id", "gate-01", "--broker", "mqtt://127.0.0.1:1883",
                   "--camera", "front=rtsp://192.0.2.10/s", "--model", "colour",
                   "--trust-root", root_keys / "fleet-root.pub")
    assert proc.returncode == 0, proc.stderr
    installed = image / "etc/edge/fleet-root.pub"
    assert installed.read_bytes() == (root_keys / "fleet-root.pub").read_bytes()
    doc = tomllib.loads((image / "etc/edge/gateway.toml").read_text())
    assert doc["trust"] == {"root_key": "/etc/edge/fleet-root.pub"}
    doc["trust"]["root_key"] = str(installed)  # as the device sees it
    (tmp_path / "check.toml").write_text((image / "etc/edge/gateway.toml").read_text().replace(
        '"/etc/edge/fleet-root.pub"', json.dumps(str(installed))))
    config = load_config(tmp_path / "check.toml")
    assert config.trust.root_key == installed
    assert config.trust_state_file == Path("/var/lib/edge/trust-state.json")  # beside the model store
    proc = run("init", "--root", tmp_path / "image2", "--device-id", "gate-01", "--camera", "f=rtsp://h/s",
                   "--model", "m", "--no-input", "--trust-root", root_keys / "fleet-root.key")
    assert proc.returncode == 2 and "--trust-root" in proc.stderr and not (tmp_path / "image2").exists()


def test_fleet_cmd_signed_sends_the_document_as_the_payload(tmp_path: Path) -> None:
    envelope = {"payloadType": "application/vnd.edge.trust.v1+json", "payload": "e30=", "signatures": []}
    (tmp_path / "doc.json").write_text(json.dumps(envelope))
    assert json.loads(signed_payload(tmp_path / "doc.json")) == {"signed": envelope}
    (tmp_path / "wrapped.json").write_text(json.dumps({"signed": envelope}))
    assert json.loads(signed_payload(tmp_path / "wrapped.json")) == {"signed": envelope}
    proc = run("fleet", "cmd", "gate-01", "config", "{}", "--signed", tmp_path / "doc.json")
    assert proc.returncode == 2 and "either a JSON payload or --signed" in proc.stderr
