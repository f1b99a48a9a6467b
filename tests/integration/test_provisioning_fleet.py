"""`edgectl fleet ls/status/cmd` against a real Mosquitto holding 1,000 simulated devices' retained state."""
from __future__ import annotations

import json

import pytest

from bench.fleet import publish_fleet
from provisioning.cli import main
from provisioning.fleet.cli import select_devices

DEVICES = 1000


@pytest.fixture
def fleet_broker(mosquitto):
    assert publish_fleet(mosquitto.host, mosquitto.port, DEVICES) == 3 * DEVICES
    return mosquitto


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_fleet_ls_on_1000_devices(fleet_broker, capsys) -> None:
    code, out, err = run(capsys, "fleet", "ls", "--broker", fleet_broker.url, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == DEVICES and [r["device"] for r in rows] == [f"sim-{i:04d}" for i in range(DEVICES)]
    for i, row in enumerate(rows):
        assert row["model_version"] == 1 + i % 3 and row["online"] == bool(i % 7), row
        assert row["fps"] == 7.5 and row["state"] == ("ok" if i % 10 else "degraded")
        assert row["model_digest"] == f"sha256:{1 + i % 3:064x}" and row["last_seen"] > 0
    # the table: one line per device
    code, out, err = run(capsys, "fleet", "ls", "--broker", fleet_broker.url, "--width", "120")
    assert code == 0, err
    assert "1000 device(s)" in out and sum(line.startswith("│ sim-") for line in out.splitlines()) == DEVICES
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│ sim-")}
    assert "offline" in lines["sim-0007"] and "online" in lines["sim-0008"] and "offline" not in lines["sim-0008"]


def test_fleet_status_and_errors(fleet_broker, mosquitto_factory, capsys) -> None:
    code, out, err = run(capsys, "fleet", "status", "sim-0004", "--broker", fleet_broker.url, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["status"] == "online" and doc["model"]["serving"]["version"] == 2 and doc["health"]["device"] == "sim-0004"
    code, out, err = run(capsys, "fleet", "status", "sim-0004", "--broker", fleet_broker.url, "--width", "100")
    assert code == 0 and "sim-0004" in out and "front" in out and "model rollout" in out, err
    code, out, err = run(capsys, "fleet", "status", "nobody", "--broker", fleet_broker.url)
    assert code == 1 and err.count("\n") == 1 and "nothing retained under edge/nobody/" in err
    # a device that does not answer: one line, exit 1
    code, out, err = run(capsys, "fleet", "cmd", "sim-0001", "ping", "--broker", fleet_broker.url, "--timeout", "1")
    assert code == 1 and err.startswith("edgectl: no reply from sim-0001 to ping within 1s") and err.count("\n") == 1
    # bad arguments: exit 2, one line
    code, out, err = run(capsys, "fleet", "cmd", "sim-0001", "ping", "{nope", "--broker", fleet_broker.url)
    assert code == 2 and "JSON payload is not valid JSON" in err and err.count("\n") == 1
    code, out, err = run(capsys, "fleet", "deploy", "127.0.0.1:1/m:1", "--devices", "x", "--canary", "150%",
                         "--broker", fleet_broker.url)
    assert code == 2 and "--canary must be a percentage between 0 and 100" in err
    # an unreachable broker: exit 1, one line
    dead = mosquitto_factory()
    url = dead.url
    dead.stop()
    code, out, err = run(capsys, "fleet", "ls", "--broker", url, "--timeout", "3")
    assert code == 1 and err.startswith("edgectl: cannot connect to broker") and err.count("\n") == 1


def test_device_selectors() -> None:
    known = ["gate-01", "gate-02", "gate-10", "lab-1"]
    assert select_devices("all", known) == known
    assert select_devices("gate-0*", known) == ["gate-01", "gate-02"]
    assert select_devices("lab-1, gate-10,nope", known) == ["gate-10", "lab-1"]
    assert select_devices("x*", known) == []
