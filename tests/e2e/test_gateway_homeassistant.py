"""Home Assistant MQTT discovery sent by the real gateway subprocess, re-sent when Home Assistant
comes online, and retained (the payload's shape: tests/unit/test_transport_homeassistant.py)."""
from __future__ import annotations

import json

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.config import CameraSpec, render_config
from tests.support.frames import RED, solid_frames
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow

DEVICE = "gw-ha"
TOPIC = f"homeassistant/device/edge_{DEVICE}/config"


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
    wait_until(lambda: len(late.messages(TOPIC)) == 1 and late.messages(TOPIC)[0].retain, 30,
               message="the retained discovery message for a late subscriber")
    assert gw.terminate() == 0
