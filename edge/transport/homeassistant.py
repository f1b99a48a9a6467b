"""Home Assistant MQTT discovery (device-based), behind ``[homeassistant] enabled = true``.

One retained message, ``<discovery_prefix>/device/edge_<device_id>/config``, declares the gateway as
one Home Assistant device with these entities, all reading the gateway's own topics (nothing extra
is published for Home Assistant):

- ``binary_sensor`` *online* (connectivity) from ``<prefix>/<device>/status``;
- ``sensor`` *model version* from the retained ``model`` topic; *fps* (sum of the cameras'
  process_fps) from the retained ``health`` topic;
- per camera: ``sensor`` *<camera> label* and *<camera> score* (top-1) from ``results/<camera>``.

It is sent once per broker connection (checked on the health tick) and again whenever Home
Assistant announces itself on ``<discovery_prefix>/status`` with ``online``.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from edge.transport.mqtt import InboundMessage
from edge.transport.outbox import MqttReporter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiscoverySettings:
    """What the discovery message is built from (derived from the config by the app)."""

    device_id: str
    topic_prefix: str
    discovery_prefix: str
    cameras: tuple[str, ...]


def discovery_topic(settings: DiscoverySettings) -> str:
    return f"{settings.discovery_prefix}/device/edge_{settings.device_id}/config"


def discovery_payload(settings: DiscoverySettings, sw_version: str = "edge") -> dict[str, Any]:
    device, prefix = settings.device_id, settings.topic_prefix
    base = f"{prefix}/{device}"
    uid = f"edge_{device}".replace("-", "_").replace(".", "_")
    available = {"availability_topic": f"{base}/status", "payload_available": "online",
                 "payload_not_available": "offline"}
    components: dict[str, dict[str, Any]] = {
        f"{uid}_online": {"p": "binary_sensor", "name": "online", "device_class": "connectivity",
                          "unique_id": f"{uid}_online", "state_topic": f"{base}/status",
                          "value_template": "{{ 'ON' if value == 'online' else 'OFF' }}"},
        f"{uid}_model_version": {"p": "sensor", "name": "model version", "unique_id": f"{uid}_model_version",
                                 "state_topic": f"{base}/model", "entity_category": "diagnostic",
                                 "value_template": "{{ value_json.serving.version }}", **available},
        f"{uid}_fps": {"p": "sensor", "name": "fps", "unique_id": f"{uid}_fps", "state_topic": f"{base}/health",
                       "unit_of_measurement": "fps", "state_class": "measurement",
                       "value_template": "{{ value_json.cameras | sum(attribute='process_fps') | round(1) }}",
                       **available},
    }
    for camera in settings.cameras:
        key = f"{uid}_{camera}".replace("-", "_").replace(".", "_")
        topic = f"{base}/results/{camera}"
        components[f"{key}_label"] = {
            "p": "sensor", "name": f"{camera} label", "unique_id": f"{key}_label", "state_topic": topic,
            "value_template": "{{ value_json.top_k[0].label if value_json.top_k else 'none' }}", **available}
        components[f"{key}_score"] = {
            "p": "sensor", "name": f"{camera} score", "unique_id": f"{key}_score", "state_topic": topic,
            "state_class": "measurement",
            "value_template": "{{ value_json.top_k[0].score if value_json.top_k else 0 }}", **available}
    return {"dev": {"ids": [uid], "name": f"edge {device}", "mf": "edge", "mdl": "edge-gateway", "sw": sw_version},
            "o": {"name": "edge-gateway", "sw": sw_version}, "cmps": components, "qos": 1}


class HomeAssistantDiscovery:
    """Publishes the discovery message on each connection and when Home Assistant comes online."""

    def __init__(self, settings: DiscoverySettings, reporter: MqttReporter) -> None:
        self.settings = settings
        self.reporter = reporter
        self.sent = 0
        self._sent_for: int | None = None  # reporter reconnect count the last send was for
        self._lock = threading.Lock()

    def start(self) -> None:
        self.reporter.subscribe(f"{self.settings.discovery_prefix}/status", self._on_ha_status)

    def tick(self) -> None:
        """Called on every health tick: send once per broker connection."""
        stats = self.reporter.stats()
        if stats["connected"] and self._sent_for != stats["reconnects"]:
            if self.publish():
                self._sent_for = stats["reconnects"]

    def publish(self) -> bool:
        with self._lock:
            data = json.dumps(discovery_payload(self.settings), separators=(",", ":")).encode()
            ok = self.reporter.publish_raw(discovery_topic(self.settings), data, retain=True)
            if ok:
                self.sent += 1
                logger.info("home assistant discovery sent to %s", discovery_topic(self.settings))
            return ok

    def _on_ha_status(self, message: InboundMessage) -> None:
        if message.payload.strip() == b"online":
            threading.Thread(target=self.publish, name="ha-discovery", daemon=True).start()
