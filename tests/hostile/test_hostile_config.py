"""Hostile config input: random TOML documents and random values in known keys.

The contract (edge/config.py): whatever the file holds, `parse_config` / `load_config` return a
valid GatewayConfig or raise ConfigError whose message is ONE line naming a key; never another
exception. `edgectl config check` turns that into exit status 2 and one stderr line.
Also the refusals that protect credentials: a world-readable MQTT key, a password over mqtt://.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.config.loader import load_config, parse_config
from edge.config.schema import GatewayConfig
from edge.errors import ConfigError
from tests.support.processes import EDGECTL

HYPO = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])

BASE: dict[str, Any] = {
    "device_id": "gate-01",
    "cameras": [{"name": "front", "source": "/dev/video0", "rois": [{"name": "door", "x": 0, "y": 0, "w": 10, "h": 10}]}],
    "model": {"name": "classifier", "version": "latest", "preprocess": {"color": "RGB"}},
    "serving": {"backend": "embedded"},
    "mqtt": {"url": "mqtt://127.0.0.1:1883"},
    "spool": {"path": "/tmp/spool.db"},
    "health": {"interval_s": 15.0},
    "results": {"publish": "always"},
    "rollout": {"keep_versions": 3},
}
# every key docs/configuration.md documents, as (section path, key); the value gets replaced by hostile data
KNOWN_KEYS: list[tuple[tuple[Any, ...], str]] = [
    ((), "device_id"), ((), "log_level"), ((), "cameras"), ((), "model"), ((), "mqtt"),
    *[(("cameras", 0), k) for k in ("name", "source", "fps", "size", "loop", "realtime", "watchdog_s",
                                    "backoff_initial_s", "backoff_max_s", "open_timeout_s", "read_timeout_s", "decode",
                                    "rois")],
    *[(("cameras", 0, "rois", 0), k) for k in ("name", "x", "y", "w", "h")],
    *[(("model",), k) for k in ("name", "store", "version", "top_k", "preprocess")],
    *[(("model", "preprocess"), k) for k in ("color", "resize", "mean", "std")],
    *[(("serving",), k) for k in ("backend", "max_batch_size", "max_wait_ms", "threads", "runtime", "target",
                                  "timeout_ms", "send", "jpeg_quality")],
    *[(("mqtt",), k) for k in ("url", "client_id", "username", "password", "ca_file", "cert_file", "key_file",
                               "topic_prefix", "keepalive_s", "allow_plaintext_password")],
    *[(("spool",), k) for k in ("path", "max_mb", "sync")],
    *[(("health",), k) for k in ("interval_s", "status_file")],
    *[(("results",), k) for k in ("publish", "min_score")],
    *[(("rollout",), k) for k in ("keep_versions", "tolerance", "latency_factor", "require_golden", "probation_s",
                                  "probation_max_error_rate", "probation_latency_factor")],
    *[(("registry",), k) for k in ("ref", "poll_interval_s", "username", "password", "insecure", "ca_file",
                                   "public_key", "max_mb", "timeout_s")],
]


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = {"a": value} if i % 2 else [value]
    return value


hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8", categories=["Cc", "Cs", "Zs", "Lo", "So"]), max_size=20),
    st.sampled_from(["", " ", "\x00", "a\nb", "\r\n", "../../etc/passwd", "mqtt://h:0", "mqtts://[::1]:99999",
                     "rtsp://u:p@h/\x07", "unix:relative", "h:65536", "é" * 70, "latest", "RGB", "x" * 5000]),
    st.integers(min_value=1, max_value=200).map(lambda n: "é\u202e\U0001f600" * n),
)
hostile_number = st.one_of(
    st.integers(), st.integers(min_value=2**62, max_value=2**80), st.integers(max_value=-(2**62)),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]),
)
hostile_leaf = st.one_of(hostile_text, hostile_number, st.booleans(),
                         st.datetimes().map(lambda d: d), st.dates(), st.times())
hostile_value = st.one_of(
    hostile_leaf,
    st.lists(hostile_leaf, max_size=5),
    st.dictionaries(hostile_text, hostile_leaf, max_size=4),
    st.recursive(hostile_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                 max_leaves=12),
    st.integers(min_value=30, max_value=3000).map(nested),
    st.integers(min_value=100, max_value=2000).map(lambda n: ["x" * 1000] * n),
)


def assert_config_outcome(doc: dict[str, Any], section: str | None = None) -> GatewayConfig | None:
    """parse_config(doc) is a GatewayConfig, or a one-line ConfigError naming a key (under `section`)."""
    try:
        return parse_config(doc, "gateway.toml")
    except ConfigError as exc:
        message = str(exc)
    assert "\n" not in message and "\r" not in message, message
    assert not any(ord(c) < 32 for c in message), repr(message)
    assert len(message) < 1200, len(message)
    assert message.startswith("gateway.toml: "), message
    location = message.split(": ", 2)[1]
    assert location and "Traceback" not in message
    if section is not None:
        assert location.startswith(section) or location == "(top level)", (section, message)
    return None


def set_path(doc: dict[str, Any], where: tuple[Any, ...], key: str, value: Any) -> None:
    node: Any = doc
    for part in where:
        if isinstance(node, dict) and part not in node:
            node[part] = {"ref": "127.0.0.1:5000/models/classifier:stable"} if part == "registry" else {}
        node = node[part]
    node[key] = value


def test_base_document_is_valid() -> None:
    config = assert_config_outcome(copy.deepcopy(BASE))
    assert isinstance(config, GatewayConfig) and config.cameras[0].rois[0].name == "door"


@pytest.mark.slow
@HYPO
@given(target=st.sampled_from(KNOWN_KEYS), value=hostile_value)
def test_random_values_in_known_keys(target: tuple[tuple[Any, ...], str], value: Any) -> None:
    where, key = target
    doc = copy.deepcopy(BASE)
    set_path(doc, where, key, value)
    section = str(where[0]) if where else key
    assert_config_outcome(doc, section)


@HYPO
@given(extra=st.dictionaries(hostile_text, hostile_value, min_size=1, max_size=3))
def test_random_extra_keys_are_refused_by_name(extra: dict[str, Any]) -> None:
    doc = copy.deepcopy(BASE)
    doc.update({k: v for k, v in extra.items() if k not in BASE})
    if doc == BASE:
        return
    assert assert_config_outcome(doc) is None


# --- whole TOML documents ---------------------------------------------------------------------

def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=True)  # JSON string escapes are TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(doc: dict[str, Any]) -> str:
    return "\n".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in doc.items()) + "\n"


toml_int = st.integers(min_value=-(2**63), max_value=2**63 - 1)
toml_leaf = st.one_of(st.text(max_size=30), toml_int, st.floats(), st.booleans(), st.dates())
toml_tree = st.recursive(toml_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["name", "source", "fps", "url", "x", "model", "cameras", "version", "ü", ""]), inner, max_size=3),
    max_leaves=15)


@HYPO
@given(doc=st.dictionaries(st.sampled_from(sorted(BASE) + ["registry", "log_level", "zzz"]), toml_tree, max_size=6))
def test_random_toml_documents(tmp_path_factory: pytest.TempPathFactory, doc: dict[str, Any]) -> None:
    path = tmp_path_factory.mktemp("cfg") / "gateway.toml"
    path.write_text(toml_document(doc), encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(f"{path}: "), message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                     st.sampled_from([b"\xff\xfe", b"a = " + b"[" * 5000 + b"]" * 5000,
                                      b"a = " + b"{b = " * 3000 + b"1" + b"}" * 3000,
                                      b"[" + b".".join([b"a"] * 3000) + b"]\nx = 1\n",
                                      b"device_id = \"\x00\"", b"x = 1\nx = 2"])))
def test_random_bytes_as_a_config_file(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "gateway.toml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as info:  # no random byte string is a complete valid config
        load_config(path)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{path}: ")


# --- edgectl config check ---------------------------------------------------------------------

def config_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGECTL, "config", "check", str(path)], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def valid_text() -> str:
    return toml_document(BASE)


@pytest.mark.parametrize("name, text, key", [
    ("deep-array", "a = " + "[" * 3000 + "]" * 3000 + "\n", "nested"),
    ("deep-tables", valid_text() + "[zzz." + ".".join(["a"] * 200) + "]\nx = 1\n", "zzz.a"),
    ("nan-fps", valid_text().replace('"source" = "/dev/video0"', '"source" = "/dev/video0", "fps" = nan'),
     "cameras[0].fps"),
    ("huge-int", valid_text().replace('"keep_versions" = 3', '"keep_versions" = 9223372036854775807'),
     "rollout.keep_versions"),
    ("control-chars", valid_text().replace('"/dev/video0"', '"rtsp://cam/\\u0007\\n"'), "cameras[0].source"),
    ("nul-path", valid_text().replace('"/tmp/spool.db"', '"/tmp/sp\\u0000ool.db"'), "spool.path"),
    ("long-path", valid_text().replace('"/tmp/spool.db"', '"/tmp/' + "x" * 5000 + '"'), "spool.path"),
    ("huge-string", valid_text().replace('"gate-01"', '"' + "g" * 200_000 + '"'), "device_id"),
])
@pytest.mark.slow
def test_edgectl_config_check_one_line_refusals(tmp_path: Path, name: str, text: str, key: str) -> None:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    proc = config_check(path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr and key in lines[0], proc.stderr[-2000:]
    assert len(lines[0]) < 1500


@pytest.mark.slow
def test_edgectl_config_check_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(valid_text().encode() + b'# caf\xe9\n')
    proc = config_check(path)
    assert proc.returncode == 2 and "not UTF-8" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# --- credentials: refusals the gateway makes before it connects -------------------------------

def tls_doc(tmp_path: Path, key_mode: int) -> dict[str, Any]:
    cert, key = tmp_path / "device.crt", tmp_path / "device.key"
    cert.write_text("cert")
    key.write_text("key")
    os.chmod(key, key_mode)
    doc = copy.deepcopy(BASE)
    doc["mqtt"] = {"url": "mqtts://127.0.0.1:8883", "cert_file": str(cert), "key_file": str(key)}
    return doc


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o666, 0o660, 0o777])
def test_world_readable_mqtt_key_is_refused(tmp_path: Path, mode: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(tls_doc(tmp_path, mode), "gateway.toml")
    message = str(info.value)
    assert "key_file" in message and f"{mode:04o}" in message and "chmod 600" in message, message
    assert "\n" not in message


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640])
def test_private_mqtt_key_is_accepted(tmp_path: Path, mode: int) -> None:
    config = parse_config(tls_doc(tmp_path, mode), "gateway.toml")
    assert config.mqtt.key_file == tmp_path / "device.key"


@pytest.mark.slow
def test_gateway_refuses_world_readable_key_at_start(tmp_path: Path) -> None:
    doc = tls_doc(tmp_path, 0o644)
    path = tmp_path / "gateway.toml"
    path.write_text(toml_document(doc), encoding="utf-8")
    gateway = Path(sys.executable).with_name("edge-gateway")
    proc = subprocess.run([str(gateway), "run", "--config", str(path)], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "key_file" in proc.stderr and "chmod 600" in proc.stderr and "Traceback" not in proc.stderr


def test_plaintext_password_needs_an_explicit_opt_out() -> None:
    doc = copy.deepcopy(BASE)
    doc["mqtt"] = {"url": "mqtt://broker.example:1883", "username": "gate-01", "password": "s3cret"}
    with pytest.raises(ConfigError) as info:
        parse_config(doc, "gateway.toml")
    message = str(info.value)
    assert "mqtts://" in message and "allow_plaintext_password" in message and "s3cret" not in message
    doc["mqtt"]["allow_plaintext_password"] = True
    assert parse_config(doc, "gateway.toml").mqtt.password == "s3cret"
    doc["mqtt"] = {"url": "mqtts://broker.example:8883", "username": "gate-01", "password": "s3cret"}
    assert parse_config(doc, "gateway.toml").mqtt.username == "gate-01"
