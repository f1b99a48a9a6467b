"""Home Assistant MQTT discovery from the real gateway subprocess, and the payload's shape."""
from __future__ import annotations

import json

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.app.wiring import discovery_settings
from edge.config.loader import parse_config
from edge.errors import ConfigError
from edge.transport.homeassistant import discovery_payload
from tests.fixtures.gateway import CameraSpec, render_config, wait_until
from tests.test_gateway_e2e import RED, solid_frames

DEVICE = "gw-ha"
TOPIC = f"homeassistant/device/edge_{DEVICE}/config"


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


@pytest.mark.slow
def test_gateway_sends_discovery_and_resends_when_home_assistant_comes_online(
        mosquitto, mqtt_recorder, gateway_factory, colour_model_store, video_file_factory, tmp_path) -> None:
    video = video_file_factory(frames=solid_frames(RED), fps=10.0)
    text = render_config(DEVICE, [CameraSpec("front", str(video))], colour_model_store, "colour", mosquitto.url,
                         tmp_path / "spool.db", extra_sections="[homeassistant]\nenabled = true\n")
    recorder = mqtt_recorder(mosquitto, "homeassistant/#")
    gw = gateway_factory("ha", text).start()
    wait_until(lambda: len(recorder.messages(TOPIC)) >= 1, 180, message="discovery message")
    doc = json.loads(recorder.messages(TOPIC)[0].payload)
    assert doc["cmps"]["edge_gw_ha_front_score"]["state_topic"] == f"edge/{DEVICE}/results/front"
    sent = len(recorder.messages(TOPIC))
    ha = paho.Client(CallbackAPIVersion.VERSION2, client_id="home-assistant", protocol=paho.MQTTv5)
    ha.connect(mosquitto.host, mosquitto.port)
    ha.loop_start()
    try:
        ha.publish("homeassistant/status", b"online", qos=1).wait_for_publish(10)
        wait_until(lambda: len(recorder.messages(TOPIC)) > sent, 60, message="discovery re-sent")
    finally:
        ha.disconnect()
        ha.loop_stop()
    # retained: a Home Assistant that subscribes later still gets it
    late = mqtt_recorder(mosquitto, TOPIC)
    wait_until(lambda: len(late.messages(TOPIC)) == 1 and late.messages(TOPIC)[0].retain, 30)
    assert gw.terminate() == 0
