"""Shared pytest fixtures: real Mosquitto, ffmpeg streams, test models. See tests/fixtures/."""
pytest_plugins = [
    "tests.fixtures.net",
    "tests.fixtures.mosquitto",
    "tests.fixtures.streams",
    "tests.fixtures.models",
    "tests.fixtures.gateway",
    "tests.fixtures.model_server",
    "tests.fixtures.registry",
]
