"""Home Assistant MQTT discovery: the payload's shape (sent by the real gateway: tests/e2e/test_gateway_homeassistant.py)."""
from __future__ import annotations

import pytest

from edge.app.wiring import discovery_settings
from edge.config.loader import parse_config
from edge.errors import ConfigError
from edge.transport.homeassistant import discovery_payload

DEVICE = "gw-ha"


def base_config(**extra) -> dict:
    return {"device_id": DEVICE, "cameras": [{"name": "front", "source": "rtsp://192.0.2.1/a"},
                                             {"name": "back-yard", "source": "rtsp://192.0.2.1/b"}],
            "model": {"name": "colour"}, **extra}


def test_discovery_payload_components() -> None:
    config = parse_config(base_config(homeassistant={"enabled": True}))
    doc = discovery_payload(discovery_settings(config))
    assert doc["dev"]["ids"] == ["edge_gw_ha"]
    cmps = doc["cmps"]
    assert sorted(cmps) == ["edge_gw_ha_back_yard_label", "edge_gw_ha_back_yard_score", "edge_gw_ha_fps",
                            "edge_gw_ha_front_label", "edge_gw_ha_front_score", "edge_gw_ha_model_version",
                            "edge_gw_ha_online"]
    assert cmps["edge_gw_ha_online"]["state_topic"] == f"edge/{DEVICE}/status"
    assert cmps["edge_gw_ha_front_label"]["state_topic"] == f"edge/{DEVICE}/results/front"
    assert cmps["edge_gw_ha_model_version"]["state_topic"] == f"edge/{DEVICE}/model"
    assert all(c["unique_id"] == key for key, c in cmps.items())
    with pytest.raises(ConfigError, match="homeassistant.discovery_prefix"):
        parse_config(base_config(homeassistant={"enabled": True, "discovery_prefix": "a/#"}))
    assert parse_config(base_config()).homeassistant.enabled is False
