"""MQTT 5 reporting: results and events through the on-disk spool, health and availability direct.

Topics (prefix `edge` by default): `<prefix>/<device>/results/<camera>`, `.../events`,
`.../health` (retained) and `.../status` (retained `online` on every connect, `offline` as the
last will, `stopped` on a clean `stop()`).

Delivery guarantee: at least once for results and events (edge.transport.outbox says how); health
messages are not spooled: latest wins, and they are dropped (counted) while offline.

`MqttConnection` is the only code that touches paho; `MqttReporter` builds on it.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

logger = logging.getLogger(__name__)


class Availability(str, Enum):
    """The retained payload of `<prefix>/<device>/status`."""

    ONLINE = "online"  # sent on every connect
    OFFLINE = "offline"  # the last will: the broker sends it when the gateway dies or loses the network
    STOPPED = "stopped"  # a clean shutdown
    RESTARTING = "restarting"  # a clean shutdown the gateway asked for (exit 75; systemd starts it again)


@dataclass(frozen=True)
class InboundMessage:
    """A message received on a subscription, with its MQTT 5 request/response properties."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None


MessageCallback = Callable[[InboundMessage], None]


@dataclass(frozen=True)
class MqttSettings:
    url: str = "mqtt://127.0.0.1:1883"  # mqtt://host[:port] or mqtts://host[:port]
    client_id: str | None = None  # default: "edge-<device_id>"
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    topic_prefix: str = "edge"
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    max_inflight: int = 64
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """`mqtt://host[:port]` / `mqtts://host[:port]` -> (host, port, tls)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"mqtt url {url!r} is not mqtt://host[:port] or mqtts://host[:port]")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ValueError(f"mqtt url {url!r} has an invalid port: {exc}") from exc
    return parts.hostname, port, tls


class MqttConnection:
    """A thin, typed wrapper over one paho MQTT 5 client with a persistent session.

    Callbacks run on paho's network thread and must be quick:
    `on_connected(session_present, receive_maximum)`, `on_disconnected(reason)`,
    `on_puback(mid, success, reason)`.
    """

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        will_topic: str,
        on_connected: Callable[[bool, int], None],
        on_disconnected: Callable[[str], None],
        on_puback: Callable[[int, bool, str], None],
    ) -> None:
        self.host, self.port, tls = parse_broker_url(settings.url)
        self._settings = settings
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_puback = on_puback
        self.last_error: str | None = None
        self.connected = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        if tls:
            client.tls_set(
                ca_certs=str(settings.ca_file) if settings.ca_file else None,
                certfile=str(settings.cert_file) if settings.cert_file else None,
                keyfile=str(settings.key_file) if settings.key_file else None,
            )
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        client.will_set(will_topic, Availability.OFFLINE.value.encode(), qos=1, retain=True)
        client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)  # type: ignore[arg-type]  # paho sleeps fractional seconds fine
        client.max_inflight_messages_set(max(1, settings.max_inflight))
        client.max_queued_messages_set(0)  # the reporter bounds what it hands over
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        self._client = client
        self._subscriptions: dict[str, tuple[int, MessageCallback]] = {}
        self._sub_lock = threading.Lock()

    @property
    def broker(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        """Connect in the background and keep reconnecting; fine while the broker is down."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: untyped constructor
        props.SessionExpiryInterval = self._settings.session_expiry_s
        self._client.connect_async(
            self.host, self.port, keepalive=self._settings.keepalive_s, clean_start=False, properties=props
        )
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> paho.MQTTMessageInfo | None:
        """Hand one message to paho. None if paho refused it; queued (and sent on reconnect) if offline."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            return info
        self.last_error = f"publish to {topic} refused by client: {paho.error_string(info.rc)}"
        return None

    def subscribe(self, topic_filter: str, callback: MessageCallback, qos: int = 1) -> None:
        """Deliver messages matching `topic_filter` to `callback` (on paho's network thread: be quick).

        The subscription is (re)sent on every connect, so it survives reconnects and lost sessions.
        """
        with self._sub_lock:
            self._subscriptions[topic_filter] = (qos, callback)
        if self.connected.is_set():
            self._client.subscribe(topic_filter, qos=qos)

    def publish_response(self, topic: str, payload: bytes, correlation_data: bytes | None) -> bool:
        """QoS 1 reply to an MQTT 5 request: to its Response Topic, echoing its Correlation Data."""
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: untyped constructor
        if correlation_data is not None:
            props.CorrelationData = correlation_data
        props.ContentType = "application/json"
        info = self._client.publish(topic, payload, qos=1, retain=False, properties=props)
        if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            return True
        self.last_error = f"response to {topic} refused by client: {paho.error_string(info.rc)}"
        return False

    def close(self) -> None:
        """Send DISCONNECT (normal: the broker discards the will) and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()

    def _handle_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.last_error = f"broker {self.broker} refused the connection: {reason}"
            logger.error("%s", self.last_error)
            return
        session_present = bool(flags.session_present)
        if not session_present:
            # The broker has no session for us: whatever paho still holds would be re-sent under
            # stale packet ids. Drop it; the reporter re-sends everything unacked from the spool.
            dropped = client.drop_out_messages()
            if dropped:
                logger.info("broker %s had no session; dropped %d unacked from paho", self.broker, len(dropped))
        receive_maximum = int(getattr(props, "ReceiveMaximum", 65535) or 65535)
        with self._sub_lock:
            subscriptions = [(f, q) for f, (q, _) in self._subscriptions.items()]
        if subscriptions:
            client.subscribe(subscriptions)
        self.connected.set()
        self._on_connected(session_present, receive_maximum)

    def _handle_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self.last_error = f"cannot connect to broker {self.broker}"
        logger.debug("%s", self.last_error)

    def _handle_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected:
            self._on_disconnected(str(reason))

    def _handle_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        inbound = InboundMessage(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain),
                                 response_topic or None, bytes(correlation) if correlation is not None else None)
        with self._sub_lock:
            matching = [cb for f, (_, cb) in self._subscriptions.items() if paho.topic_matches_sub(f, msg.topic)]
        for callback in matching:
            try:
                callback(inbound)
            except Exception:  # a handler bug must not kill paho's network thread
                logger.exception("message handler for %s failed", msg.topic)

    def _handle_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._on_puback(mid, not reason.is_failure, str(reason))


