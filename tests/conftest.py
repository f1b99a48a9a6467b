"""The test suite's layout and tiers.

- tests/fixtures/: pytest plugins (listed below) that start real components: Mosquitto, ffmpeg
  streams, docker-registry, TensorFlow/LiteRT test models, the gateway and edge-model-server
  processes, a TLS fleet, PostgreSQL, and the delivery artefacts (the wheel, the .deb, a debootstrap
  root, podman). Fixtures only, plus the process classes they need.
- tests/support/: plain helpers, no fixtures: `waits.wait_until` (the one polling helper),
  `net`, `fakes` (fake cameras, classifiers, sinks), `frames`, `models`, `packages`, `mqtt`,
  `config` (gateway TOML), `processes`, `paths`.
- tests/unit/: no external component and no TensorFlow model load where avoidable.
- tests/integration/: one real component (broker, registry, ffmpeg, model server, a TensorFlow or
  LiteRT model, systemd-analyze, our own CLIs as subprocesses).
- tests/e2e/: the real edge-gateway process end to end. tests/hostile/: hostile-input suites.
  tests/chaos/: the chaos harness and its short run.

Marker `slow` (declared in pyproject.toml): end-to-end tests that start several real components or
take more than 5 s; `make test-fast` runs `pytest -m "not slow"`. Added here at collection, before
`-m` deselects: to everything under tests/e2e/ and tests/chaos/, and to every test using a fixture
in SLOW_FIXTURES (each use starts a process that takes seconds to come up); elsewhere a test says
`@pytest.mark.slow` itself.
"""
from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.mosquitto",
    "tests.fixtures.streams",
    "tests.fixtures.cameras",
    "tests.fixtures.models",
    "tests.fixtures.gateway",
    "tests.fixtures.model_server",
    "tests.fixtures.registry",
    "tests.fixtures.pki",
    "tests.fixtures.postgres",
    "tests.fixtures.systemd",
    "tests.fixtures.browser",
    "tests.fixtures.packaging",
]

TESTS = Path(__file__).resolve().parent
SLOW_DIRS = {"e2e", "chaos"}
SLOW_FIXTURES = {
    "gateway_factory": "an edge-gateway process: a TensorFlow model load per start",
    "model_server_factory": "an edge-model-server process per test: a TensorFlow import per start",
    "tls_fleet": "a fleet CA, three identities and a TLS broker from about ten edgectl runs",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark slow: every test under tests/e2e/ and tests/chaos/, and every test using a SLOW_FIXTURES one."""
    for item in items:
        path = item.path.resolve()
        parts = path.relative_to(TESTS).parts if path.is_relative_to(TESTS) else ()
        fixtures = set(getattr(item, "fixturenames", ()))
        if (parts and parts[0] in SLOW_DIRS) or fixtures & SLOW_FIXTURES.keys():
            item.add_marker(pytest.mark.slow)
