"""The unit files pass `systemd-analyze verify` (no systemd runs as PID 1 here)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO

UNITS = REPO / "systemd"
BIN = Path(sys.executable).parent


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module", autouse=True)
def _systemd_analyze() -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze is installed by `make test` (package systemd)"


def installed_copy(tmp_path: Path, name: str) -> Path:
    """The unit as `edgectl install` writes it: program names resolved to this installation."""
    text = (UNITS / name).read_text()
    text = text.replace("ExecStart=edge-model-server ", f"ExecStart={BIN / 'edge-model-server'} ")
    out = tmp_path / name
    out.write_text(text)
    return out


def test_model_server_unit_verifies(tmp_path: Path) -> None:
    unit = installed_copy(tmp_path, "edge-model-server.service")
    proc = verify(unit)
    assert proc.returncode == 0, proc.stderr
    text = unit.read_text()
    assert "--model_name=${MODEL_NAME}" in text and "--model_base_path=${MODEL_BASE_PATH}" in text
    assert "ReadOnlyPaths=/var/lib/edge" in text and "User=edge" in text


def test_tensorflow_serving_container_unit_verifies() -> None:
    proc = verify(UNITS / "tensorflow-serving.service")
    assert proc.returncode == 0, proc.stderr
    text = (UNITS / "tensorflow-serving.service").read_text()
    assert "-p 127.0.0.1:${GRPC_PORT}:8500" in text  # published on loopback only
    assert "-v /var/lib/edge/models:/models:ro" in text


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    broken = tmp_path / "broken.service"
    broken.write_text("[Service]\nExecStart=relative/path --x\nRestart=sometimes\n")
    assert verify(broken).returncode != 0
