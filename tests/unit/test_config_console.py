"""`[console]`: loopback by default; any other bind needs TLS and a token or password hash, or the config
is refused with one line naming the key and the fix; secrets never echoed."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.config.loader import parse_config
from edge.errors import ConfigError
from edge.util.passwords import hash_password, parse_hash, verify_password

HASH = hash_password("s3cret-pass", n=2**10)  # a low cost keeps the test fast; the format is the same


def config(tmp_path: Path, **console: object) -> dict:
    video = tmp_path / "front.avi"
    video.write_bytes(b"")
    return {"device_id": "gate-01", "cameras": [{"name": "front", "source": str(video)}],
            "model": {"name": "colour", "store": str(tmp_path / "models")}, "console": console}


@pytest.fixture
def tls(tmp_path: Path) -> dict[str, str]:
    cert, key = tmp_path / "console.crt", tmp_path / "console.key"
    cert.write_text("cert")
    key.write_text("key")
    os.chmod(key, 0o600)
    return {"tls_cert": str(cert), "tls_key": str(key)}


def test_defaults_are_off_and_on_loopback(tmp_path: Path) -> None:
    console = parse_config(config(tmp_path)).console
    assert console.enabled is False and console.bind == "127.0.0.1" and console.port == 8080
    assert parse_config(config(tmp_path, enabled=True)).console.enabled  # loopback needs nothing else
    assert parse_config(config(tmp_path, enabled=True, bind="::1", token="x" * 16)).console.bind == "::1"


@pytest.mark.parametrize(("console", "says"), [
    ({"bind": "0.0.0.0"}, "set tls_cert and tls_key (TLS) and token or password_hash (authentication)"),
    ({"bind": "192.0.2.5", "token": "t" * 20}, "set tls_cert and tls_key (TLS), or bind to 127.0.0.1"),
    ({"bind": "::"}, "is reachable from the network"),
])
def test_a_network_bind_without_tls_or_authentication_is_refused(tmp_path: Path, console: dict, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(tmp_path, enabled=True, **console), "gateway.toml")
    message = str(caught.value)
    assert message.startswith("gateway.toml: console: ") and says in message, message
    assert "\n" not in message


def test_a_network_bind_with_tls_and_authentication_is_accepted(tmp_path: Path, tls: dict[str, str]) -> None:
    assert parse_config(config(tmp_path, enabled=True, bind="0.0.0.0", token="t" * 24, **tls)).console.token
    assert parse_config(config(tmp_path, enabled=True, bind="0.0.0.0", password_hash=HASH, **tls)).console.bind
    # TLS without authentication is not enough
    with pytest.raises(ConfigError, match="token or password_hash"):
        parse_config(config(tmp_path, enabled=True, bind="0.0.0.0", **tls))


@pytest.mark.parametrize(("console", "says"), [
    ({"bind": "example.com"}, "console.bind: must be an IP address"),
    ({"port": 0}, "console.port"),
    ({"token": "short-secret"}, "console.token: must be 16-512 printable ASCII"),
    ({"token": "with space in the middle"}, "console.token: must be 16-512 printable ASCII"),
    ({"password_hash": "plain-password"}, "console.password_hash: must be a line from `edgectl console hash-password`"),
    ({"password_hash": "scrypt$3$8$1$c2FsdHNhbHQ=$a2V5a2V5a2V5a2V5a2V5a2V5"}, "scrypt cost out of range"),
    ({"token": "t" * 20, "password_hash": HASH}, "either token or password_hash"),
    ({"tls_cert": "/nonexistent/console.crt"}, "tls_cert and tls_key must be given together"),
    ({"live_fps": 50}, "console.live_fps"),
    ({"max_connections": 1}, "console.max_connections"),
    ({"basic_auth": True}, "console.basic_auth: unknown key"),
])
def test_bad_console_values_are_refused_in_one_line(tmp_path: Path, console: dict, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(tmp_path, **console))
    assert says in str(caught.value), str(caught.value)
    if "token" in console:
        assert console["token"] not in str(caught.value)  # a secret is never echoed


def test_tls_files_must_exist_and_the_key_must_be_private(tmp_path: Path, tls: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="tls_cert '/nonexistent/c.crt' is not a readable file"):
        parse_config(config(tmp_path, tls_cert="/nonexistent/c.crt", tls_key=tls["tls_key"]))
    os.chmod(tls["tls_key"], 0o644)
    with pytest.raises(ConfigError, match="readable or writable by others .*chmod 600"):
        parse_config(config(tmp_path, **tls))


def test_password_hash_round_trip() -> None:
    stored = parse_hash(HASH)
    assert HASH.startswith("scrypt$1024$8$1$") and len(stored.salt) == 16 and len(stored.key) == 32
    assert verify_password("s3cret-pass", stored)
    assert not verify_password("s3cret-pasS", stored)
    assert hash_password("s3cret-pass", n=2**10) != HASH  # a new salt every time
    with pytest.raises(ValueError):
        hash_password("")
