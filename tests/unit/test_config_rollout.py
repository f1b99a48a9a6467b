"""`[registry]` and `[rollout]` config sections: defaults and one-line errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from edge.config.loader import parse_config
from edge.errors import ConfigError


def base(**sections: object) -> dict:
    doc = {"device_id": "d1", "cameras": [{"name": "c", "source": "rtsp://127.0.0.1:1/x"}],
           "model": {"name": "colour"}}
    doc.update(sections)
    return doc


def test_defaults_and_absent_registry() -> None:
    config = parse_config(base())
    assert config.registry is None
    assert config.rollout.keep_versions == 3 and config.rollout.tolerance == 1e-3
    assert config.rollout.latency_factor == 2.0 and config.rollout.require_golden is True
    assert config.rollout.probation_s == 60 and config.rollout.probation_max_error_rate == 0.05
    config = parse_config(base(registry={"ref": "127.0.0.1:5000/models/colour:stable", "insecure": True}))
    assert config.registry.poll_interval_s == 300 and config.registry.public_key is None


@pytest.mark.parametrize("sections, message", [
    ({"registry": {"ref": "http://r:5000/m:1"}}, "registry.ref: reference 'http://r:5000/m:1': leave out the scheme"),
    ({"registry": {"ref": "r:5000/m:1", "poll_interval_s": 0}}, "registry.poll_interval_s: Input should be greater than or equal to 1"),
    ({"registry": {"ref": "r:5000/m:1", "username": "u"}}, "registry: username and password must be given together"),
    ({"registry": {"ref": "r:5000/m:1", "public_key": "/nonexistent.pub"}},
     "registry: public_key '/nonexistent.pub' is not a readable file"),
    ({"registry": {"ref": "r:5000/m:1", "insecure": "yes"}}, "registry.insecure: Input should be a valid boolean"),
    ({"registry": {"ref": "r:5000/m:1", "tag": "x"}}, "registry.tag: unknown key"),
    ({"rollout": {"keep_versions": 1}}, "rollout.keep_versions: Input should be greater than or equal to 2"),
    ({"rollout": {"probation_max_error_rate": 1.5}}, "rollout.probation_max_error_rate: Input should be less than or equal to 1"),
    ({"registry": {"ref": "r:5000/m:1"}, "model": {"name": "colour", "version": 3}},
     'model.version must be "latest" when [registry] is configured'),
])
def test_one_line_errors(sections: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(base(**sections), "gw.toml")
    text = str(err.value)
    assert "\n" not in text and message in text, text


def test_public_key_file_accepted(tmp_path: Path) -> None:
    key = tmp_path / "signing.pub"
    key.write_text("-----BEGIN PUBLIC KEY-----\n")
    config = parse_config(base(registry={"ref": "r:5000/m:1", "public_key": str(key), "max_mb": 16.0}))
    assert config.registry.public_key == key and config.registry.max_mb == 16.0
