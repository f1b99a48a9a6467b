"""The operator side of the fleet over MQTT 5: read retained device state, send commands, follow topics.

`FleetClient` is a thin, typed wrapper over one paho client (clean start, no session kept):

- :meth:`FleetClient.retained` subscribes to topic filters and returns every retained message,
  knowing the burst is over by a *marker*: after the SUBACK it publishes a unique message to a
  private topic it also subscribes to (``edgectl/<client-id>/marker``). A broker queues a new
  subscription's retained messages before anything published afterwards, so the marker arrives
  last (Mosquitto; on clustered brokers that do not promise this across topics, the `settle_s`
  quiet period after the marker covers the stragglers). If the marker cannot be published (an
  ACL), collection ends after `idle_s` without messages. Everything is bounded by `timeout_s`.
- :meth:`FleetClient.send` / :meth:`FleetClient.request`: MQTT 5 request/response with a Response
  Topic private to this client under the device's own tree (``<prefix>/<device>/reply/<client-id>``)
  and random Correlation Data. Under the broker ACL of ``edgectl broker device-acl`` a device may
  publish only below ``<prefix>/<device>/``, so that is where its replies must go; another device
  cannot write there, so it cannot forge them.

Only standard MQTT 5 is used, so the same code runs against a broker cluster (EMQX, HiveMQ,
VerneMQ). Shared subscriptions are not used for reading state: the MQTT 5 spec sends no
retained messages to shared subscriptions, and each edgectl needs all of them; they are the right
tool for a results *consumer* scaled out over several processes (``$share/<group>/edge/+/results/#``,
see ``edgectl fleet watch --share``).
"""
from __future__ import annotations

import argparse
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.errors import FleetError
from edge.transport.mqtt import parse_broker_url
from provisioning.profiles import resolve

logger = logging.getLogger(__name__)

Callback = Callable[[str, bytes, bool], None]



@dataclass(frozen=True)
class BrokerOptions:
    url: str = "mqtt://127.0.0.1:1883"
    prefix: str = "edge"
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class FleetClient:
    """One MQTT 5 connection for an `edgectl fleet` command."""

    def __init__(self, options: BrokerOptions, client_id: str | None = None) -> None:
        self.options = options
        self.client_id = client_id or f"edgectl-{uuid.uuid4().hex[:12]}"
        self.reply_filter = f"{options.prefix}/+/reply/{self.client_id}"
        self.marker_topic = f"edgectl/{self.client_id}/marker"
        try:
            self.host, self.port, tls = parse_broker_url(options.url)
        except ValueError as exc:
            raise FleetError(str(exc)) from None
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5)
        if tls:
            try:
                client.tls_set(ca_certs=str(options.ca_file) if options.ca_file else None,
                               certfile=str(options.cert_file) if options.cert_file else None,
                               keyfile=str(options.key_file) if options.key_file else None)
            except (OSError, ValueError) as exc:
                raise FleetError(f"TLS setup failed: {exc}") from None
        if options.username is not None:
            client.username_pw_set(options.username, options.password)
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)  # the controller hands over a stage's desired documents at once
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.message_callback_add(self.reply_filter, self._on_reply)
        self._client = client
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self._lock = threading.Lock()
        self._callbacks: list[tuple[str, Callback]] = []
        self._suback: dict[int, threading.Event] = {}
        self._replies: dict[bytes, dict[str, Any]] = {}
        self._reply_ready = threading.Condition(self._lock)
        self.received = 0

    # -- connection ----------------------------------------------------------------------------

    def connect(self, timeout_s: float = 10.0) -> FleetClient:
        try:
            self._client.connect(self.host, self.port, keepalive=30, clean_start=True)
        except (OSError, ValueError) as exc:
            raise FleetError(f"cannot connect to broker {self.host}:{self.port}: {exc}") from None
        self._client.loop_start()
        if not self._connected.wait(timeout_s):
            self.close()
            raise FleetError(self._connect_error or f"broker {self.host}:{self.port} did not accept the "
                             f"connection within {timeout_s:g}s")
        self.subscribe(self.reply_filter, lambda *a: None)
        return self

    def close(self) -> None:
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def topic(self, device: str, *parts: str) -> str:
        return "/".join((self.options.prefix, device, *parts))

    def device_of(self, topic: str) -> str | None:
        prefix = self.options.prefix + "/"
        if not topic.startswith(prefix):
            return None
        rest = topic[len(prefix):].split("/")
        return rest[0] if len(rest) >= 2 else None

    # -- subscriptions -------------------------------------------------------------------------

    def subscribe(self, topic_filter: str | list[str], callback: Callback, timeout_s: float = 10.0) -> None:
        """Deliver messages matching the filter(s) to `callback(topic, payload, retained)` (paho thread)."""
        filters = [topic_filter] if isinstance(topic_filter, str) else list(topic_filter)
        with self._lock:
            self._callbacks += [(f, callback) for f in filters]
        rc, mid = self._client.subscribe([(f, 1) for f in filters])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise FleetError(f"subscribe to {filters} failed: {paho.error_string(rc)}")
        event = self._suback.setdefault(mid, threading.Event())
        if not event.wait(timeout_s):
            raise FleetError(f"broker did not acknowledge the subscription to {filters} within {timeout_s:g}s")

    def follow(self, filters: list[str], callback: Callback, timeout_s: float = 60.0) -> None:
        """Deliver every message on `filters` to `callback` from now on, and return once the retained
        burst of the subscription has been delivered (the marker came back, see :meth:`retained`)."""
        marker = uuid.uuid4().hex.encode()
        marker_seen = threading.Event()
        topic = f"{self.marker_topic}/{marker.decode()}"

        def on_marker(topic_: str, payload: bytes, retained: bool) -> None:
            if payload == marker:
                marker_seen.set()

        self.subscribe(filters, callback, timeout_s)
        self.subscribe(topic, on_marker, timeout_s)
        info = self._client.publish(topic, marker, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not marker_seen.wait(timeout_s):
            raise FleetError(f"the retained state of {filters} did not arrive within {timeout_s:g}s (is "
                             "edgectl/# writable for this identity? see `edgectl broker device-acl`)")

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> paho.MQTTMessageInfo:
        """QoS 1 publish; FleetError when paho refuses it. Wait on the result for the PUBACK."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise FleetError(f"could not publish to {topic}: {paho.error_string(info.rc)}")
        return info

    def retained(self, filters: list[str], idle_s: float = 1.0, settle_s: float = 0.0,
                 timeout_s: float = 30.0) -> dict[str, bytes]:
        """Every retained message on `filters` (topic -> payload; empty payloads are deletions, left out)."""
        found: dict[str, bytes] = {}
        last_message = [time.monotonic()]
        marker = uuid.uuid4().hex.encode()
        marker_seen = threading.Event()

        def on_message(topic: str, payload: bytes, retained: bool) -> None:
            last_message[0] = time.monotonic()
            if topic == self.marker_topic:
                if payload == marker:
                    marker_seen.set()
            elif retained:
                if payload:
                    found[topic] = payload
                else:
                    found.pop(topic, None)

        self.subscribe([*filters, self.marker_topic], on_message, timeout_s)
        info = self._client.publish(self.marker_topic, marker, qos=1)
        use_marker = info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if use_marker and marker_seen.is_set():
                if settle_s <= 0 or time.monotonic() - last_message[0] >= settle_s:
                    break
            elif time.monotonic() - last_message[0] >= idle_s:
                if use_marker:
                    logger.warning("marker not echoed within %.1fs (ACL?); using what arrived", idle_s)
                break
            marker_seen.wait(0.02)
        else:
            raise FleetError(f"reading retained state took longer than {timeout_s:g}s; try --timeout")
        return dict(found)

    # -- request / response --------------------------------------------------------------------

    def send(self, device: str, command: str, payload: bytes = b"{}", respond: bool = True) -> bytes:
        """Publish one command; returns its correlation data (look the reply up with `reply`)."""
        correlation = uuid.uuid4().bytes
        props = Properties(PacketTypes.PUBLISH)
        if respond:
            props.ResponseTopic = self.topic(device, "reply", self.client_id)
            props.CorrelationData = correlation
        props.ContentType = "application/json"
        info = self._client.publish(self.topic(device, "cmd", command), payload, qos=1, properties=props)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise FleetError(f"could not send {command} to {device}: {paho.error_string(info.rc)}")
        return correlation

    def reply(self, correlation: bytes, timeout_s: float) -> dict[str, Any] | None:
        with self._reply_ready:
            self._reply_ready.wait_for(lambda: correlation in self._replies, timeout=timeout_s)
            return self._replies.pop(correlation, None)

    def request(self, device: str, command: str, payload: bytes = b"{}", timeout_s: float = 30.0) -> dict[str, Any]:
        reply = self.reply(self.send(device, command, payload), timeout_s)
        if reply is None:
            raise FleetError(f"no reply from {device} to {command} within {timeout_s:g}s (offline, or not "
                             "subscribed to commands)")
        return reply

    # -- paho callbacks ------------------------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._connect_error = f"broker {self.host}:{self.port} refused the connection: {reason}"
            return
        self._connected.set()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            logger.warning("subscription %d refused: %s", mid, failed)
        self._suback.setdefault(mid, threading.Event()).set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.received += 1
        with self._lock:
            callbacks = [cb for f, cb in self._callbacks if paho.topic_matches_sub(f, msg.topic)]
        for callback in callbacks:
            try:
                callback(msg.topic, bytes(msg.payload), bool(msg.retain))
            except Exception:
                logger.exception("handler for %s failed", msg.topic)

    def _on_reply(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        """Replies on the private response topic, keyed by their Correlation Data."""
        correlation = getattr(msg.properties, "CorrelationData", None)
        if correlation is None:
            return
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            doc = {"ok": False, "error": f"unreadable reply: {bytes(msg.payload[:200])!r}"}
        with self._reply_ready:
            self._replies[bytes(correlation)] = doc
            self._reply_ready.notify_all()


def options_from(args: argparse.Namespace) -> BrokerOptions:
    """The broker settings: flags, else EDGE_* variables, else the context (provisioning.profiles)."""
    resolve(args)
    return BrokerOptions(url=args.broker, prefix=args.prefix, username=args.username, password=args.password,
                         ca_file=args.ca_file, cert_file=args.cert, key_file=args.key)
