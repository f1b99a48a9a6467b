"""At-least-once delivery of results and events through the on-disk spool, for one device.

Topics (prefix `edge` by default): `<prefix>/<device>/results/<camera>`, `.../events`,
`.../health` (retained) and `.../status` (retained `online` on every connect, `offline` as the
last will, `stopped` on a clean `stop()`).

Delivery guarantee: **at-least-once** for results and events. Each message is committed to the
`Spool` first (which assigns its `seq`); a sender thread hands spooled messages to paho in seq
order with at most `max_inflight` unacknowledged, and deletes a message from the spool only after
its PUBACK arrived with a success reason code. Consequences:
- a broker outage with the session resumed: paho re-sends its in-flight messages (DUP flag);
- a broker that lost the session, or a process restart: everything unacknowledged is sent again
  from the spool, in seq order.
Either way a consumer may see a seq twice (never zero times, unless the spool cap dropped it —
counted in `spool.dropped`); consumers de-duplicate by `seq`. Health messages are not spooled:
latest wins, and they are dropped (counted) while offline.

:class:`edge.transport.mqtt.MqttConnection` is the only code that touches paho; the outbox builds on it.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from edge.errors import SpoolError
from edge.transport.mqtt import Availability, InboundMessage, MessageCallback, MqttConnection, MqttSettings
from edge.transport.spool import OutgoingMessage, Spool, SpooledMessage

logger = logging.getLogger(__name__)


EventCallback = Callable[[str, dict[str, Any]], None]


class MqttReporter:
    """Spool-backed, at-least-once publisher of results and events for one device."""

    def __init__(self, settings: MqttSettings, device_id: str, spool: Spool,
                 on_event: EventCallback | None = None) -> None:
        if not device_id or any(c in device_id for c in "/+#"):
            raise ValueError(f"device_id {device_id!r} must be non-empty and free of '/', '+', '#'")
        self.settings = settings
        self.device_id = device_id
        self.spool = spool
        self._on_event = on_event
        self._conn = MqttConnection(
            settings, settings.client_id or f"edge-{device_id}", self.topic("status"),
            self._paho_connected,
            lambda reason: self._push_paho_event("disconnected", reason, time.monotonic()),
            lambda mid, ok, reason: self._push_paho_event("puback", mid, ok, reason),
        )
        # paho thread -> sender thread: ("puback", mid, ok, reason) | ("connected", session, recv_max, t)
        # | ("disconnected", reason, t). Bounded in practice by max_inflight + reconnects.
        self._paho_events: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._stop_sender = threading.Event()
        self._sender: threading.Thread | None = None
        self._started = False
        # Owned by the sender thread:
        self._inflight: dict[int, int] = {}  # paho mid -> seq
        self._inflight_seqs: set[int] = set()
        self._unflushed_acks: set[int] = set()
        self._first_unflushed_at = 0.0
        self._buffer: deque[SpooledMessage] = deque()
        self._cursor = 0  # highest seq fetched from the spool in this pass over it
        self._window = max(1, settings.max_inflight)
        self._page_size = max(100, 2 * self._window)
        self._ready = False  # connected and the sender has processed that connect
        self._ever_connected = False
        self._disconnected_at: float | None = None
        self._retry_rejected_at: float | None = None
        # Counters (reported by stats()).
        self._reconnects = 0
        self._published = 0
        self._acked = 0
        self._rejected = 0
        self._untracked_acks = 0
        self._session_resets = 0
        self._health_dropped = 0
        self._sender_loops = 0
        self._last_error: str | None = None

    # -- public API --------------------------------------------------------------------------

    def topic(self, *parts: str) -> str:
        for part in parts:
            if not part or any(c in part for c in "/+#"):
                raise ValueError(f"topic level {part!r} must be non-empty and free of '/', '+', '#'")
        return "/".join((self.settings.topic_prefix, self.device_id, *parts))

    def topic_filter(self, *parts: str) -> str:
        """Like :meth:`topic`, but a level may be the single-level wildcard `+`."""
        return "/".join((self.settings.topic_prefix, self.device_id,
                         *("+" if p == "+" else self.topic(p).rsplit("/", 1)[-1] for p in parts)))

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._sender = threading.Thread(target=self._sender_main, name="mqtt-sender", daemon=True)
        self._sender.start()
        self._conn.start()
        logger.info("mqtt reporter for %s connecting to %s", self.device_id, self._conn.broker)

    def publish_results(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[int]:
        messages = [OutgoingMessage(self.topic("results", camera), payload) for camera, payload in items]
        seqs = self.spool.append(messages)
        self._wake.set()
        return seqs

    def publish_event(self, event: str, payload: dict[str, Any]) -> int:
        body = {**payload, "event": event}
        body.setdefault("ts", time.time())
        seq = self.spool.append([OutgoingMessage(self.topic("events"), body)])[0]
        self._wake.set()
        return seq

    def publish_health(self, payload: dict[str, Any]) -> None:
        if not self._conn.connected.is_set():
            self._health_dropped += 1
            return
        data = json.dumps(payload, separators=(",", ":")).encode()
        if self._conn.publish(self.topic("health"), data, qos=1, retain=True) is None:
            self._health_dropped += 1

    def publish_retained(self, subtopic: str, payload: dict[str, Any]) -> bool:
        """Latest-wins retained JSON on `<prefix>/<device>/<subtopic>` (not spooled; False while offline)."""
        if not self._conn.connected.is_set():
            return False
        data = json.dumps(payload, separators=(",", ":")).encode()
        return self._conn.publish(self.topic(subtopic), data, qos=1, retain=True) is not None

    def publish_raw(self, topic: str, payload: bytes, retain: bool = True) -> bool:
        """QoS 1 publish to any topic (e.g. Home Assistant discovery); not spooled, False while offline."""
        if not self._conn.connected.is_set():
            return False
        return self._conn.publish(topic, payload, qos=1, retain=retain) is not None

    def subscribe(self, topic_filter: str, callback: MessageCallback, qos: int = 1) -> None:
        """Receive messages on `topic_filter` (re-subscribed on every reconnect); see MqttConnection."""
        self._conn.subscribe(topic_filter, callback, qos)

    def respond(self, request: InboundMessage, payload: dict[str, Any]) -> bool:
        """Reply to an MQTT 5 request on its Response Topic; False when it named none."""
        if not request.response_topic:
            return False
        data = json.dumps(payload, separators=(",", ":")).encode()
        return self._conn.publish_response(request.response_topic, data, request.correlation_data)

    def wait_connected(self, timeout_s: float) -> bool:
        return self._conn.connected.wait(timeout_s)

    def stop(self, flush_timeout_s: float = 3.0, final_status: Availability = Availability.STOPPED) -> None:
        """Publish retained `final_status` (`stopped`, or `restarting` before a restart the gateway
        asked for), let the backlog drain for up to `flush_timeout_s`, disconnect."""
        if not self._started:
            return
        deadline = time.monotonic() + flush_timeout_s
        stopped_info = None
        if self._conn.connected.is_set():
            stopped_info = self._conn.publish(self.topic("status"), Availability(final_status).value.encode(), qos=1,
                                              retain=True)
        while time.monotonic() < deadline and self._conn.connected.is_set():
            if not self._inflight and self.spool.depth() == 0 and (stopped_info is None or stopped_info.is_published()):
                break
            time.sleep(0.05)
        self._stop_sender.set()
        self._wake.set()
        if self._sender is not None:
            self._sender.join(timeout=10.0)
        self._conn.close()
        self._started = False
        logger.info("mqtt reporter stopped; %d message(s) left in the spool", self.spool.depth())

    def stats(self) -> dict[str, Any]:
        connected = self._conn.connected.is_set()
        state = "connected" if connected else ("connecting" if self._started else "disconnected")
        return {
            "state": state,
            "connected": connected,
            "reconnects": self._reconnects,
            "published": self._published,
            "acked": self._acked,
            "inflight": len(self._inflight),
            "rejected": self._rejected,
            "untracked_acks": self._untracked_acks,
            "session_resets": self._session_resets,
            "health_dropped": self._health_dropped,
            "sender_loops": self._sender_loops,
            "spool": self.spool.stats(),
            "last_error": self._last_error or self._conn.last_error,
            "broker": self._conn.broker,
        }

    # -- paho network thread: record and wake, nothing else ------------------------------------

    def _paho_connected(self, session_present: bool, receive_maximum: int) -> None:
        self._conn.publish(self.topic("status"), Availability.ONLINE.value.encode(), qos=1, retain=True)
        self._push_paho_event("connected", session_present, receive_maximum, time.monotonic())

    def _push_paho_event(self, *event: Any) -> None:
        self._paho_events.append(event)
        self._wake.set()

    # -- sender thread -------------------------------------------------------------------------

    def _sender_main(self) -> None:
        while not self._stop_sender.is_set():
            self._wake.wait(0.2 if self._unflushed_acks else 1.0)
            self._wake.clear()
            self._sender_loops += 1
            try:
                for name, payload in self._process_paho_events():
                    self._emit(name, payload)
                self._flush_acks(force=False)
                self._feed()
            except Exception as exc:  # keep the sender alive whatever happens; stats shows it
                self._last_error = f"sender: {exc}"
                logger.exception("mqtt sender pass failed")
        self._process_paho_events()
        self._flush_acks(force=True)

    def _process_paho_events(self) -> list[tuple[str, dict[str, Any]]]:
        notices: list[tuple[str, dict[str, Any]]] = []
        while self._paho_events:
            kind, *args = self._paho_events.popleft()
            if kind == "puback":
                self._on_puback(*args)
            elif kind == "connected":
                session_present, receive_maximum, at = args
                self._window = max(1, min(self.settings.max_inflight, receive_maximum))
                if not session_present:
                    self._session_resets += self._ever_connected
                    self._inflight.clear()
                    self._inflight_seqs.clear()
                    self._rewind()
                if self._ever_connected:
                    self._reconnects += 1
                    downtime = at - self._disconnected_at if self._disconnected_at is not None else 0.0
                    notices.append(("broker_reconnected", {
                        "broker": self._conn.broker, "downtime_s": round(downtime, 3),
                        "session_present": session_present}))
                    logger.info("reconnected to %s after %.1fs (session %s)", self._conn.broker, downtime,
                                "resumed" if session_present else "lost")
                self._ever_connected = True
                self._ready = True
            elif kind == "disconnected":
                reason, at = args
                self._ready = False
                self._disconnected_at = at
                self._last_error = f"disconnected from {self._conn.broker}: {reason}"
                logger.warning("%s", self._last_error)
                notices.append(("broker_disconnected", {"broker": self._conn.broker, "reason": reason}))
        return notices

    def _on_puback(self, mid: int, ok: bool, reason: str) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is None:
            self._untracked_acks += 1  # status/health, or a message sent before a session reset
            return
        self._inflight_seqs.discard(seq)
        if ok:
            if not self._unflushed_acks:
                self._first_unflushed_at = time.monotonic()
            self._unflushed_acks.add(seq)
            self._acked += 1
        else:
            self._rejected += 1
            self._last_error = f"broker rejected seq {seq}: {reason}"
            logger.warning("%s; it stays in the spool and is retried", self._last_error)
            if self._retry_rejected_at is None:
                self._retry_rejected_at = time.monotonic() + self.settings.reconnect_max_s

    def _flush_acks(self, force: bool) -> None:
        if not self._unflushed_acks:
            return
        due = (force or not self._inflight or len(self._unflushed_acks) >= self._window // 2
               or time.monotonic() - self._first_unflushed_at >= 0.2)
        if not due:
            return
        try:
            self.spool.ack(self._unflushed_acks)
        except SpoolError as exc:
            self._last_error = str(exc)
            logger.error("could not remove acknowledged messages from the spool: %s", exc)
            return
        self._unflushed_acks.clear()

    def _rewind(self) -> None:
        """Start a new pass over the spool from its oldest message."""
        self._buffer.clear()
        self._cursor = 0

    def _feed(self) -> None:
        if self._retry_rejected_at is not None and time.monotonic() >= self._retry_rejected_at:
            self._retry_rejected_at = None
            self._rewind()
        while self._ready and len(self._inflight) < self._window and not self._stop_sender.is_set():
            while not self._buffer:
                if not self._refill():
                    return
            message = self._buffer.popleft()
            info = self._conn.publish(message.topic, message.payload, message.qos, message.retain)
            if info is None:
                self._buffer.appendleft(message)
                return
            self._inflight[info.mid] = message.seq
            self._inflight_seqs.add(message.seq)
            self._published += 1

    def _refill(self) -> bool:
        try:
            page = self.spool.pending(after_seq=self._cursor, limit=self._page_size)
        except SpoolError as exc:
            self._last_error = str(exc)
            logger.error("could not read the spool: %s", exc)
            return False
        if not page:
            return False
        self._cursor = page[-1].seq
        skip = self._inflight_seqs | self._unflushed_acks
        self._buffer.extend(m for m in page if m.seq not in skip)
        return True

    def _emit(self, name: str, payload: dict[str, Any]) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(name, payload)
        except Exception:
            logger.exception("on_event(%r) handler failed", name)
