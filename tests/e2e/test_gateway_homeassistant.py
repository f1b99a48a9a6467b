"""Home Assistant MQTT discovery sent by the real gateway subprocess, re-sent when Home Assistant
comes online, and retained; its entities go unavailable on a clean stop; the score sensors' topic is
throttled and snapshots arrive as JPEG (the payload's shape: tests/unit/test_transport_homeassistant.py)."""
from __future__ import annotations

import json
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.config import CameraSpec, render_config
from tests.support.frames import RED, solid_frames
from tests.support.homeassistant import render
from tests.support.mqtt import latest_retained
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
    assert doc["cmps"]["edge_gw_ha_front_score"]["state_topic"] == f"edge/{DEVICE}/top/front"
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


def test_entities_go_unavailable_on_a_clean_stop_scores_are_throttled_and_snapshots_arrive(
        mosquitto, mqtt_recorder, gateway_factory, colour_model_store, video_file_factory, tmp_path) -> None:
    video = video_file_factory(frames=solid_frames(RED), fps=10.0)
    text = render_config(DEVICE, [CameraSpec("front", str(video), fps=5)], colour_model_store, "colour",
                         mosquitto.url, tmp_path / "spool.db", extra_sections="[homeassistant]\nenabled = true\n"
                         "score_interval_s = 2.0\nsnapshot_interval_s = 5.0\n")
    recorder = mqtt_recorder(mosquitto, "#")
    gw = gateway_factory("ha-stop", text).start()
    wait_until(lambda: len(recorder.messages(TOPIC)) >= 1 and recorder.messages(f"edge/{DEVICE}/snapshot/front"), 180,
               message="discovery and a first snapshot")
    cmps = json.loads(recorder.messages(TOPIC)[-1].payload)["cmps"]
    score = cmps["edge_gw_ha_front_score"]
    jpeg = recorder.messages(f"edge/{DEVICE}/snapshot/front")[0]
    assert jpeg.payload.startswith(b"\xff\xd8\xff") and not jpeg.retain  # the broker keeps no images

    # a solid red camera: 5 results a second, one top-1 for Home Assistant (nothing changes)
    results, tops = len(recorder.messages(f"edge/{DEVICE}/results/front")), len(recorder.messages(f"edge/{DEVICE}/top/front"))
    started = time.monotonic()
    wait_until(lambda: len(recorder.messages(f"edge/{DEVICE}/results/front")) >= results + 20, 60,
               message="20 more results")
    elapsed = time.monotonic() - started
    new_tops = len(recorder.messages(f"edge/{DEVICE}/top/front")) - tops
    assert new_tops <= elapsed / 2.0 + 1  # at most one per score_interval_s
    top = latest_retained(recorder, f"edge/{DEVICE}/top/front")
    assert top["label"] == "red" and render(score["value_template"], json.dumps(top)) == str(top["score"])

    def available() -> str:
        status = latest_retained(recorder, f"edge/{DEVICE}/status")
        return render(score["availability_template"], status)

    assert available() == score["payload_available"]
    assert gw.terminate() == 0  # a clean stop: retained status `stopped`
    wait_until(lambda: latest_retained(recorder, f"edge/{DEVICE}/status") == "stopped", 30, message="stopped")
    assert available() == score["payload_not_available"]
