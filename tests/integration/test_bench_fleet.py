"""bench/fleet_rollout.py and bench/fleet_export.py run small (200 devices, 2,000 results) and print figures
that say every device converged, got one desired document per rollout and installed once, and every
(device, seq) landed once; nothing is asserted on time."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.slow


def run(script: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_fleet_benches_run_small_and_report_what_they_measured() -> None:
    rollout = run("fleet_rollout.py", "--devices", "200", "--timeout", "300")
    assert rollout["devices"] == 200 and rollout["rollout"]["exit"] == 0 and rollout["abort"]["exit"] == 1
    assert rollout["rollout"]["desired_per_device"] == 1.0 and rollout["rollout"]["installs_per_device"] == 1.0
    assert rollout["rollout"]["publish_out_per_device"] > 0 and rollout["abort"]["desired_per_device"] > 1.0
    export = run("fleet_export.py", "--messages", "2000", "--devices", "20")
    assert all(export[k]["rows"] == export[k]["distinct"] == 2000 for k in ("one", "two"))
