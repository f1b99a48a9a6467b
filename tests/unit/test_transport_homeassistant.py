"""Home Assistant MQTT discovery: the payload's shape, its templates rendered with Jinja2 as Home Assistant
renders them, and the throttled top-1 per camera (sent by the real gateway:
tests/e2e/test_gateway_homeassistant.py)."""
from __future__ import annotations

import json

import pytest

from edge.app.wiring import discovery_settings
from edge.config.loader import parse_config
from edge.errors import ConfigError
from edge.transport.ha_states import ThrottledTop
from edge.transport.homeassistant import discovery_payload
from tests.support.homeassistant import render

DEVICE = "gw-ha"
D1, D2 = ("sha256:" + c * 64 for c in "12")


def base_config(**extra) -> dict:
    return {"device_id": DEVICE, "cameras": [{"name": "front", "source": "rtsp://192.0.2.1/a"},
                                             {"name": "back-yard", "source": "rtsp://192.0.2.1/b"}],
            "model": {"name": "colour"}, **extra}


def test_discovery_payload_components() -> None:
    config = parse_config(base_config(homeassistant={"enabled": True}))
    doc = discovery_payload(discovery_settings(config))
    assert doc["dev"]["ids"] == ["edge_gw_ha"]
    cmps = doc["cmps"]
    assert sorted(cmps) == ["edge_gw_ha_back_yard_label", "edge_gw_ha_back_yard_score", "edge_gw_ha_back_yard_snapshot",
                            "edge_gw_ha_fleet_state", "edge_gw_ha_fps", "edge_gw_ha_front_label",
                            "edge_gw_ha_front_score", "edge_gw_ha_front_snapshot", "edge_gw_ha_model_version",
                            "edge_gw_ha_online"]
    assert cmps["edge_gw_ha_online"]["state_topic"] == f"edge/{DEVICE}/status"
    assert cmps["edge_gw_ha_front_label"]["state_topic"] == f"edge/{DEVICE}/top/front"
    assert cmps["edge_gw_ha_front_snapshot"]["image_topic"] == f"edge/{DEVICE}/snapshot/front"
    assert cmps["edge_gw_ha_model_version"]["state_topic"] == f"edge/{DEVICE}/model"
    assert all(c["unique_id"] == key for key, c in cmps.items())
    with pytest.raises(ConfigError, match="homeassistant.discovery_prefix"):
        parse_config(base_config(homeassistant={"enabled": True, "discovery_prefix": "a/#"}))
    with pytest.raises(ConfigError, match="homeassistant.snapshot_interval_s"):
        parse_config(base_config(homeassistant={"enabled": True, "snapshot_interval_s": 1.0}))
    assert parse_config(base_config()).homeassistant.enabled is False
    quiet = parse_config(base_config(homeassistant={"enabled": True, "snapshot_interval_s": 0.0},
                                     fleet={"desired_state": False}))
    assert not any(k.endswith("_snapshot") or k.endswith("_fleet_state")
                   for k in discovery_payload(discovery_settings(quiet))["cmps"])


def test_every_entity_but_online_is_unavailable_unless_the_gateway_is_online() -> None:
    cmps = discovery_payload(discovery_settings(parse_config(base_config(homeassistant={"enabled": True}))))["cmps"]
    for key, component in cmps.items():
        if key.endswith("_online"):
            assert "availability_topic" not in component  # connectivity itself: ON / OFF
            assert [render(component["value_template"], s) for s in ("online", "stopped")] == ["ON", "OFF"]
            continue
        assert component["availability_topic"] == f"edge/{DEVICE}/status"
        seen = {status: render(component["availability_template"], status)
                for status in ("online", "offline", "stopped", "restarting")}
        assert seen == {"online": component["payload_available"], "offline": component["payload_not_available"],
                        "stopped": "offline", "restarting": "offline"}, key


def test_the_update_entity_shows_the_desired_version_and_the_rollback_button_sends_rollback() -> None:
    config = parse_config(base_config(homeassistant={"enabled": True},
                                      registry={"ref": "reg.example:5000/models/colour:stable"}))
    cmps = discovery_payload(discovery_settings(config))["cmps"]
    update, button = cmps["edge_gw_ha_model_update"], cmps["edge_gw_ha_rollback"]
    assert update["p"] == "update" and update["state_topic"] == update["latest_version_topic"] == f"edge/{DEVICE}/reported"
    converged = json.dumps({"serving": {"version": 2, "digest": D2}, "model": {"digest": D2, "version": 2}})
    pending = json.dumps({"serving": {"version": 2, "digest": D2}, "model": {"digest": D1, "version": None}})
    known = json.dumps({"serving": {"version": 2, "digest": D2}, "model": {"digest": D1, "version": 3}})
    none = json.dumps({"serving": {"version": 1, "digest": D1}, "model": None})
    assert render(update["value_template"], converged) == "2"
    assert [render(update["latest_version_template"], p) for p in (converged, pending, known, none)] == [
        "2", D1[7:19], "3", "1"]
    assert button["p"] == "button" and button["command_topic"] == f"edge/{DEVICE}/cmd/rollback"
    assert json.loads(button["payload_press"]) == {}
    top = cmps["edge_gw_ha_front_score"]
    assert render(top["value_template"], json.dumps({"label": "red", "score": 0.91})) == "0.91"
    assert render(cmps["edge_gw_ha_fps"]["value_template"], json.dumps({"cameras": [{"process_fps": 2.5},
                                                                                   {"process_fps": 1.0}]})) == "3.5"


class Sink:
    def __init__(self) -> None:
        self.items: list[tuple[str, dict]] = []

    def publish_results(self, items) -> list[int]:
        self.items += items
        return list(range(len(items)))


def result(label: str, score: float, roi: str | None = None) -> dict:
    doc = {"ts": 1.0, "top_k": [{"label": label, "score": score}]}
    return {**doc, "roi": roi} if roi else doc


def test_top1_reaches_home_assistant_only_on_a_change_and_at_most_once_per_interval() -> None:
    now = [0.0]
    sent: list[tuple[str, dict]] = []
    sink = Sink()
    top = ThrottledTop(sink, lambda camera, doc: sent.append((camera, doc)) is None, 10.0, clock=lambda: now[0])
    for i in range(50):  # 5 results a second for 10 s, the same label
        now[0] = i * 0.2
        top.publish_results([("front", result("red", 0.9)), ("front", result("door", 0.2, roi="door"))])
    assert len(sink.items) == 100  # everything passes through to the real sink
    assert sent == [("front", {"label": "red", "score": 0.9, "roi": None, "ts": 1.0})]  # ROI results not used
    now[0] = 10.5
    top.publish_results([("front", result("green", 0.8))])
    now[0] = 11.0
    top.publish_results([("front", result("blue", 0.7))])  # within the interval: held back...
    assert [d["label"] for _, d in sent] == ["red", "green"]
    now[0] = 20.6
    top.flush()  # ... and sent when the interval ends
    assert [d["label"] for _, d in sent] == ["red", "green", "blue"]
    top.flush()
    assert len(sent) == 3
