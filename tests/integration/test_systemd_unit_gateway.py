"""systemd/edge-gateway.service: verifies, is hardened (exposure <= 2.0), every relaxation is commented."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO

UNITS = REPO / "systemd"
UNIT = UNITS / "edge-gateway.service"
BIN = Path(sys.executable).parent
MAX_EXPOSURE = 2.0


@pytest.fixture(scope="module", autouse=True)
def _systemd_analyze() -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze is installed by `make test` (package systemd)"


def installed_copy(tmp_path: Path) -> Path:
    """The unit as `edgectl install` writes it: the program name resolved to this installation."""
    text = UNIT.read_text().replace("ExecStart=edge-gateway ", f"ExecStart={BIN / 'edge-gateway'} ")
    out = tmp_path / UNIT.name
    out.write_text(text)
    return out


def settings(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def exposure(unit: Path) -> float:
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                          capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert match, f"no exposure level in: {proc.stdout[-500:]} {proc.stderr}"
    return float(match.group(1))


def test_gateway_unit_verifies(tmp_path: Path) -> None:
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(installed_copy(tmp_path))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr  # not even warnings


def test_gateway_unit_settings() -> None:
    s = settings(UNIT.read_text())
    one = {k: v[-1] for k, v in s.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main" and one["WatchdogSec"] == "30"
    assert one["Restart"] == "on-failure" and float(one["RestartSec"]) > 0
    assert int(one["TimeoutStartSec"]) >= 300 and one["TimeoutStopSec"] == "20"
    assert int(one["StartLimitBurst"]) >= 2 and int(one["StartLimitIntervalSec"]) > 0
    assert one["ExecStart"] == "edge-gateway run --config /etc/edge/gateway.toml"
    assert (one["User"], one["Group"], one["SupplementaryGroups"]) == ("edge", "edge", "video")
    assert (one["StateDirectory"], one["ConfigurationDirectory"], one["RuntimeDirectory"]) == ("edge",) * 3
    assert one["DevicePolicy"] == "closed" and "char-video4linux rw" in s["DeviceAllow"]
    assert "/dev/nvmap rw" in s["DeviceAllow"]
    assert set(one["RestrictAddressFamilies"].split()) <= {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}


def test_gateway_unit_exposure_at_most_2(tmp_path: Path) -> None:
    assert exposure(installed_copy(tmp_path)) <= MAX_EXPOSURE


def test_exposure_parser_sees_an_unhardened_unit(tmp_path: Path) -> None:
    bare = tmp_path / "bare.service"
    bare.write_text(f"[Service]\nType=notify\nExecStart={BIN / 'edge-gateway'} run\n")
    assert exposure(bare) > 5.0


def test_every_relaxation_is_commented() -> None:
    """Each setting that loosens the sandbox is preceded by a comment saying why."""
    lines = UNIT.read_text().splitlines()
    relaxations = ("PrivateDevices=no", "DeviceAllow=", "MemoryDenyWriteExecute=no", "RestrictAddressFamilies=",
                   "SupplementaryGroups=")
    for index, line in enumerate(lines):
        if line.startswith(relaxations):
            block = index - 1
            while block >= 0 and lines[block].startswith(("DeviceAllow=",)):
                block -= 1  # consecutive DeviceAllow lines share their comment
            assert lines[block].startswith("#"), f"uncommented relaxation: {line}"
    text = UNIT.read_text()
    for word in ("Relaxation: PrivateDevices", "XNNPACK", "AF_NETLINK", "IPAddressDeny", "PrivateNetwork"):
        assert word in text
