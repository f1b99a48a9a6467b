"""The chaos suite (tests/chaos) with a tiny budget: the same scenarios, a few faults each, and the
invariants asserted: no gateway-side seq gap, the gateway alive or restarted to READY, fd/thread
growth bounded, the spool passing `PRAGMA integrity_check`. `make chaos` runs the full version."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.ledger import Row
from tests.chaos.run import table
from tests.chaos.scenarios import run_broker, run_cameras, run_disk_full, run_gateway_kills, run_serving
from tests.chaos.world import Budget, Packages

pytestmark = pytest.mark.slow

BUDGET = Budget()  # the short defaults: 2-3 faults per scenario, seconds-long outages


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    return Packages(tmp_path_factory.mktemp("chaos-packages"))


def assert_rows(rows: list[Row]) -> None:
    print("\n" + table(rows))
    for row in rows:
        assert row.gaps == 0, table(rows)
        assert row.ok, table(rows)


def test_broker_faults_and_model_swap(packages: Packages, tmp_path: Path) -> None:
    rows = run_broker(tmp_path, Budget(broker_faults=3), packages)
    assert_rows(rows)
    assert rows[0].checks["spool integrity_check ok"]


def test_camera_cuts_and_silent_stream(packages: Packages, tmp_path: Path) -> None:
    row = run_cameras(tmp_path, Budget(camera_faults=3), packages)
    assert_rows([row])
    assert row.checks["fd/thread growth bounded"]


def test_serving_backend_killed(packages: Packages, tmp_path: Path) -> None:
    assert_rows([run_serving(tmp_path, Budget(serving_faults=1), packages)])


def test_gateway_sigkilled_during_writes_and_installs(packages: Packages, tmp_path: Path) -> None:
    row = run_gateway_kills(tmp_path, Budget(gateway_kills=3), packages)
    assert_rows([row])
    assert row.checks["every restart reached READY"]


def test_spool_disk_full(packages: Packages, tmp_path: Path) -> None:
    assert_rows([run_disk_full(tmp_path, Budget(disk_hold_s=3.0), packages)])
