"""`edgectl fleet export --database DSN`: results and events into PostgreSQL, exactly once per (device, seq).

The reference consumer of a fleet's results. It joins the MQTT 5 shared subscriptions
``$share/<group>/<prefix>/+/results/#`` and ``$share/<group>/<prefix>/+/events``: the broker hands
each message to one member of the group, so more consumers with the same ``--group`` (and each its
own ``--client-id``) share the load. Exactly once per (device, seq) comes from three rules:

1. a **persistent session** (clean start off, session expiry ``--session-expiry``) under a stable
   client id: while a consumer restarts, the broker queues its share for it (Mosquitto gives a
   member's queued or in-flight messages to no other member; restart it with the same id);
2. **acknowledge after commit** (paho ``manual_ack``): a message is PUBACKed only once its batch is
   committed, so a crash re-delivers it (DUP) instead of losing it;
3. **idempotent inserts**: ``PRIMARY KEY (device, seq)`` and ``ON CONFLICT DO NOTHING``, so a
   re-delivery, or the same message sent twice by a gateway whose PUBACK was lost, lands once.

The device is taken from the topic (the broker's ACL lets a device publish only its own), ``seq``
from the payload. A message that is not a JSON object with an integer ``seq`` is kept in
``edge_rejected`` with the reason (and acknowledged): nothing is dropped silently.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.errors import FleetError, UsageError
from edge.transport.mqtt import parse_broker_url
from provisioning.fleet.client import BrokerOptions, options_from
from provisioning.profiles import resolve

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS edge_results (
    device text NOT NULL, seq bigint NOT NULL, camera text NOT NULL, ts double precision,
    model_version bigint, top_label text, top_score double precision, payload jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (device, seq));
CREATE TABLE IF NOT EXISTS edge_events (
    device text NOT NULL, seq bigint NOT NULL, event text NOT NULL, ts double precision, payload jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (device, seq));
CREATE TABLE IF NOT EXISTS edge_rejected (
    id bigserial PRIMARY KEY, topic text NOT NULL, payload bytea NOT NULL, reason text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now());
"""
# Concurrent CREATE TABLE IF NOT EXISTS races in PostgreSQL (both see no table, one fails on the
# catalog's unique index): exporters that start together take this transaction-scoped advisory lock.
SCHEMA_LOCK_KEY = 0x65646765  # "edge"


def create_schema(db: Any) -> None:
    """Create the export tables if missing, in one transaction, safe when several exporters start at once."""
    with db.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        cur.execute(SCHEMA)
    db.commit()


INSERT_RESULT = ("INSERT INTO edge_results (device, seq, camera, ts, model_version, top_label, top_score, payload) "
                 "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (device, seq) DO NOTHING")
INSERT_EVENT = ("INSERT INTO edge_events (device, seq, event, ts, payload) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (device, seq) DO NOTHING")
INSERT_REJECTED = "INSERT INTO edge_rejected (topic, payload, reason) VALUES (%s, %s, %s)"


@dataclass(frozen=True)
class Row:
    table: str  # "results" | "events" | "rejected"
    values: tuple[Any, ...]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def to_row(prefix: str, topic: str, payload: bytes) -> Row:
    """The table row for one message (a `rejected` row naming the reason when it cannot be stored)."""
    parts = topic[len(prefix) + 1:].split("/") if topic.startswith(prefix + "/") else []
    kind = parts[1] if len(parts) >= 2 else ""
    try:
        doc = json.loads(payload)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        seq = doc.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**63:
            raise ValueError(f"seq must be a non-negative integer, got {seq!r}")
    except ValueError as exc:
        return Row("rejected", (topic, payload, f"unreadable: {exc}"))
    device = parts[0]
    text = json.dumps(doc, separators=(",", ":"))
    if kind == "results" and len(parts) == 3:
        top = (doc.get("top_k") or [{}])[0] if isinstance(doc.get("top_k"), list) else {}
        model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
        version = model.get("version") if isinstance(model.get("version"), int) else None
        return Row("results", (device, seq, parts[2], _number(doc.get("ts")), version,
                               str(top.get("label")) if isinstance(top, dict) and "label" in top else None,
                               _number(top.get("score")) if isinstance(top, dict) else None, text))
    if kind == "events" and len(parts) == 2:
        return Row("events", (device, seq, str(doc.get("event", "")), _number(doc.get("ts")), text))
    return Row("rejected", (topic, payload, "not a results or events topic"))


class Exporter:
    """One member of the share group: MQTT in, PostgreSQL out, acknowledgements after each commit."""

    def __init__(self, options: BrokerOptions, dsn: str, group: str, client_id: str, session_expiry_s: int,
                 batch: int = 500, batch_ms: float = 100.0) -> None:
        self.options, self.dsn, self.group, self.client_id = options, dsn, group, client_id
        self.batch, self.batch_s = batch, batch_ms / 1000.0
        self.host, self.port, tls = parse_broker_url(options.url)
        self._pending: list[tuple[paho.MQTTMessage, Row]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.counts = {"received": 0, "results": 0, "events": 0, "duplicates": 0, "rejected": 0, "batches": 0}
        self._db: Any = None
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5,
                             manual_ack=True)
        if tls:
            client.tls_set(ca_certs=str(options.ca_file) if options.ca_file else None,
                           certfile=str(options.cert_file) if options.cert_file else None,
                           keyfile=str(options.key_file) if options.key_file else None)
        if options.username is not None:
            client.username_pw_set(options.username, options.password)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        self._props = Properties(PacketTypes.CONNECT)
        self._props.SessionExpiryInterval = session_expiry_s
        self._props.ReceiveMaximum = max(20, min(65535, batch))

    @property
    def filters(self) -> list[str]:
        return [f"$share/{self.group}/{self.options.prefix}/+/results/#", f"$share/{self.group}/{self.options.prefix}/+/events"]

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            logger.error("broker refused the connection: %s", reason)
            return
        logger.info("connected as %s (session present: %s)", self.client_id, flags.session_present)
        client.subscribe([(f, 1) for f in self.filters])

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            logger.error("the broker refused the subscriptions %s: %s (ACL?)", self.filters, refused)
        else:
            print(f"subscribed: {' '.join(self.filters)} as {self.client_id}", flush=True)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        row = to_row(self.options.prefix, msg.topic, bytes(msg.payload))
        with self._cond:
            self._pending.append((msg, row))
            self.counts["received"] += 1
            if len(self._pending) >= self.batch:
                self._cond.notify()

    def run(self, seconds: float | None = None) -> dict[str, int]:
        self._db = self._connect_db()
        self._client.connect_async(self.host, self.port, keepalive=30, clean_start=False, properties=self._props)
        self._client.loop_start()
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
                with self._cond:
                    if len(self._pending) < self.batch:
                        self._cond.wait(self.batch_s)
                    taken, self._pending = self._pending, []
                if taken:
                    self._store(taken)
            with self._cond:
                taken, self._pending = self._pending, []
            if taken:
                self._store(taken)
        finally:
            self._client.disconnect()  # normal disconnect: the session (and anything unacked) stays
            self._client.loop_stop()
            self._db.close()
        return dict(self.counts)

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify()

    def _connect_db(self) -> Any:
        db = _psycopg().connect(self.dsn)
        create_schema(db)
        return db

    def _store(self, taken: list[tuple[paho.MQTTMessage, Row]]) -> None:
        """One transaction for the batch; then the PUBACKs, in the order the messages came."""
        rows: dict[str, list[tuple[Any, ...]]] = {"results": [], "events": [], "rejected": []}
        for _, row in taken:
            rows[row.table].append(row.values)
        psycopg = _psycopg()
        while True:
            try:
                new = self._write(rows)
                break
            except psycopg.OperationalError as exc:  # the database went away: nothing acknowledged, retry
                logger.error("database write failed (%s); retrying in 2s, nothing acknowledged", exc)
                self._db.close()
                if self._stop.wait(2.0):
                    raise FleetError(f"stopped while the database was unreachable: {exc}") from None
                try:
                    self._db = self._connect_db()
                except psycopg.OperationalError:
                    continue
        for msg, _ in taken:
            self._client.ack(msg.mid, msg.qos)
        stored = len(rows["results"]) + len(rows["events"])
        self.counts["batches"] += 1
        self.counts["rejected"] += len(rows["rejected"])
        self.counts["duplicates"] += stored - new
        self.counts["results"] += len(rows["results"])
        self.counts["events"] += len(rows["events"])

    def _write(self, rows: dict[str, list[tuple[Any, ...]]]) -> int:
        """Insert and commit; the number of rows that were new (the rest were already there)."""
        new = 0
        with self._db.cursor() as cur:
            for table, sql in (("results", INSERT_RESULT), ("events", INSERT_EVENT)):
                if rows[table]:
                    cur.executemany(sql + " RETURNING seq", rows[table], returning=True)
                    while True:
                        new += len(cur.fetchall())
                        if not cur.nextset():
                            break
            if rows["rejected"]:
                cur.executemany(INSERT_REJECTED, rows["rejected"])
        self._db.commit()
        return new


def _psycopg() -> Any:
    try:
        import psycopg  # optional: only `fleet export` needs a PostgreSQL driver
    except ImportError:
        raise UsageError("edgectl fleet export needs psycopg: pip install 'edge-gateway[fleet]'") from None
    return psycopg


def cmd_export(args: argparse.Namespace) -> int:
    resolve(args, ("database",))
    if not args.database:
        raise UsageError("--database: a PostgreSQL connection string (or EDGE_DATABASE, or `database` in the context)")
    if not 0 < args.batch <= 10_000:
        raise UsageError("--batch must be 1-10000")
    client_id = args.client_id or f"edge-export-{args.group}-{socket.gethostname()}"
    exporter = Exporter(options_from(args), args.database, args.group, client_id, args.session_expiry,
                        batch=args.batch, batch_ms=args.batch_ms)
    signal.signal(signal.SIGTERM, lambda *a: exporter.stop())
    try:
        counts = exporter.run(args.seconds)
    except KeyboardInterrupt:
        counts = dict(exporter.counts)
    except _psycopg().Error as exc:
        raise FleetError(f"PostgreSQL: {exc}".splitlines()[0]) from None
    print(json.dumps({"client_id": client_id, "group": args.group, **counts}), flush=True)
    return 0
