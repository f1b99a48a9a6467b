"""Home Assistant MQTT discovery (device-based), behind ``[homeassistant] enabled = true``.

One retained message, ``<discovery_prefix>/device/edge_<device_id>/config``, declares the gateway as
one Home Assistant device with these entities:

- ``binary_sensor`` *online* (connectivity) from ``<prefix>/<device>/status``;
- ``sensor`` *model version* (retained ``model``), *fps* (retained ``health``), *fleet state*
  (``reported.state``, with desired state);
- with ``[registry]``: ``update`` *model* (installed: the serving version; latest: the desired
  target once known) and ``button`` *roll back model* (``cmd/rollback {}``, the one-step rollback);
- per camera: ``sensor`` *<camera> label* and *<camera> score* from ``top/<camera>``, which the
  gateway publishes at most every ``score_interval_s`` and only on a change (the raw results come 5
  times a second per camera and Home Assistant's recorder keeps every state), and ``image``
  *<camera> snapshot* from ``snapshot/<camera>`` (a JPEG with the labels drawn, every
  ``snapshot_interval_s``; not retained, so the broker holds no images).

Availability: every entity but *online* is unavailable unless ``status`` says ``online``: Home
Assistant compares the rendered payload with ``payload_available``/``payload_not_available`` and
ignores anything else, so ``availability_template`` maps ``offline``, ``stopped`` and
``restarting`` to ``offline``.

It is sent once per broker connection (checked every second) and again whenever Home Assistant
announces itself on ``<discovery_prefix>/status`` with ``online``.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from edge.inference.results import ResultSink
from edge.inference.snapshots import SnapshotTap
from edge.transport.ha_states import SnapshotPublisher, ThrottledTop
from edge.transport.mqtt import InboundMessage
from edge.transport.outbox import MqttReporter

logger = logging.getLogger(__name__)

AVAILABILITY_TEMPLATE = "{{ 'online' if value == 'online' else 'offline' }}"


@dataclass(frozen=True)
class DiscoverySettings:
    """What the discovery message is built from (derived from the config by the app)."""

    device_id: str
    topic_prefix: str
    discovery_prefix: str
    cameras: tuple[str, ...]
    model_name: str = "model"
    registry: bool = False  # model updates from a registry: the update entity and the rollback button
    desired_state: bool = False  # the device reports desired-state progress on `reported`
    score_interval_s: float = 10.0
    snapshot_interval_s: float = 60.0


def discovery_topic(settings: DiscoverySettings) -> str:
    return f"{settings.discovery_prefix}/device/edge_{settings.device_id}/config"


def _key(text: str) -> str:
    return text.replace("-", "_").replace(".", "_")


def discovery_payload(settings: DiscoverySettings, sw_version: str = "edge") -> dict[str, Any]:
    device, prefix = settings.device_id, settings.topic_prefix
    base = f"{prefix}/{device}"
    uid = _key(f"edge_{device}")
    available = {"availability_topic": f"{base}/status", "availability_template": AVAILABILITY_TEMPLATE,
                 "payload_available": "online", "payload_not_available": "offline"}
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
    if settings.desired_state:
        components[f"{uid}_fleet_state"] = {
            "p": "sensor", "name": "fleet state", "unique_id": f"{uid}_fleet_state", "state_topic": f"{base}/reported",
            "entity_category": "diagnostic", "value_template": "{{ value_json.state }}", **available}
    if settings.registry:
        source = f"{base}/reported" if settings.desired_state else f"{base}/model"
        latest = ("{% set t = value_json.model %}{% set s = value_json.serving or {} %}"
                  "{% if t and t.digest != s.digest %}{{ t.version if t.version is not none else t.digest[7:19] }}"
                  "{% else %}{{ s.version }}{% endif %}") if settings.desired_state else \
            "{{ value_json.serving.version }}"
        components[f"{uid}_model_update"] = {
            "p": "update", "name": "model", "unique_id": f"{uid}_model_update", "title": settings.model_name,
            "state_topic": source, "value_template": "{{ (value_json.serving or {}).version }}",
            "latest_version_topic": source, "latest_version_template": latest, **available}
        components[f"{uid}_rollback"] = {
            "p": "button", "name": "roll back model", "unique_id": f"{uid}_rollback", "entity_category": "config",
            "command_topic": f"{base}/cmd/rollback", "payload_press": "{}", "qos": 1, **available}
    for camera in settings.cameras:
        key = _key(f"{uid}_{camera}")
        top = f"{base}/top/{camera}"
        components[f"{key}_label"] = {
            "p": "sensor", "name": f"{camera} label", "unique_id": f"{key}_label", "state_topic": top,
            "value_template": "{{ value_json.label }}", **available}
        components[f"{key}_score"] = {
            "p": "sensor", "name": f"{camera} score", "unique_id": f"{key}_score", "state_topic": top,
            "state_class": "measurement", "value_template": "{{ value_json.score }}", **available}
        if settings.snapshot_interval_s > 0:
            components[f"{key}_snapshot"] = {
                "p": "image", "name": f"{camera} snapshot", "unique_id": f"{key}_snapshot",
                "image_topic": f"{base}/snapshot/{camera}", "content_type": "image/jpeg", **available}
    return {"dev": {"ids": [uid], "name": f"edge {device}", "mf": "edge", "mdl": "edge-gateway", "sw": sw_version},
            "o": {"name": "edge-gateway", "sw": sw_version}, "cmps": components, "qos": 1}


class HomeAssistantDiscovery:
    """Publishes the discovery message on each connection and when Home Assistant comes online, and
    the throttled states (top-1 per camera, snapshots) on its own thread."""

    def __init__(self, settings: DiscoverySettings, reporter: MqttReporter, snapshots: SnapshotTap) -> None:
        self.settings = settings
        self.reporter = reporter
        self.sent = 0
        self._sent_for: int | None = None  # reporter reconnect count the last send was for
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._top: ThrottledTop | None = None
        self.snapshots = SnapshotPublisher(snapshots, settings.cameras, self._publish_snapshot,
                                           settings.snapshot_interval_s)

    def wrap_sink(self, sink: ResultSink) -> ResultSink:
        """Results pass through to `sink`; the newest top-1 per camera is kept for `top/<camera>`."""
        self._top = ThrottledTop(sink, self._publish_top, self.settings.score_interval_s)
        return self._top

    def start(self) -> None:
        self.reporter.subscribe(f"{self.settings.discovery_prefix}/status", self._on_ha_status)
        self._thread = threading.Thread(target=self._run, name="home-assistant", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def tick(self) -> None:
        """Send the discovery once per broker connection; flush throttled states that are due."""
        stats = self.reporter.stats()
        if stats["connected"] and self._sent_for != stats["reconnects"]:
            if self.publish():
                self._sent_for = stats["reconnects"]
        if self._top is not None:
            self._top.flush()
        self.snapshots.tick()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.tick()
            except Exception:  # Home Assistant must never take anything else down
                logger.exception("home assistant tick failed")

    def publish(self) -> bool:
        with self._lock:
            data = json.dumps(discovery_payload(self.settings), separators=(",", ":")).encode()
            ok = self.reporter.publish_raw(discovery_topic(self.settings), data, retain=True)
            if ok:
                self.sent += 1
                logger.info("home assistant discovery sent to %s", discovery_topic(self.settings))
            return ok

    def _publish_top(self, camera: str, doc: dict[str, Any]) -> bool:
        data = json.dumps(doc, separators=(",", ":")).encode()
        return self.reporter.publish_raw(self.reporter.topic("top", camera), data, retain=True)

    def _publish_snapshot(self, camera: str, jpeg: bytes) -> bool:
        return self.reporter.publish_raw(self.reporter.topic("snapshot", camera), jpeg, retain=False)

    def _on_ha_status(self, message: InboundMessage) -> None:
        if message.payload.strip() == b"online":
            threading.Thread(target=self.publish, name="ha-discovery", daemon=True).start()
