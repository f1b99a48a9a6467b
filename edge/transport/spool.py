"""Durable on-disk outbox for MQTT messages (SQLite in WAL mode).

Every result and event is written here *before* it is handed to the broker, and removed
only once the broker has acknowledged it (see `edge.mqtt`). The spool is what gives each
message its `seq`: a per-device integer that strictly increases and is never reused, not
after rows are deleted and not after a restart or a crash (SQLite AUTOINCREMENT keeps the
high-water mark in `sqlite_sequence`). The seq is injected into the JSON payload so that
consumers can order and de-duplicate.

Durability: each `append` is one transaction; with `sync="full"` (the default) SQLite
fsyncs the WAL on every commit, so a committed append survives power loss, and a SIGKILL
at any moment leaves a consistent database. Disk-full or I/O errors raise `SpoolError`
and roll the transaction back; nothing already in the spool is touched.

Size cap: when the payload bytes held would exceed `max_bytes`, the oldest rows are
deleted (in the same transaction as the append) and counted in a persisted `dropped`
counter.

Disk space: the spool never lets its filesystem run full. The WAL is kept small (checkpoint
every `_WAL_PAGES` pages, truncated back to that size), and before each append the space the
database can still use (free blocks on the filesystem plus SQLite's own free pages) is
compared with a reserve (twice the WAL's size, at most a quarter of a small filesystem): below it,
the oldest rows are dropped (counted in `dropped`, like the cap) and `last_error` says so until
an append fits again without dropping. Without the reserve a full disk would leave SQLite
unable even to delete rows (the WAL must grow for that), and every new message would be lost.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge.errors import SpoolError

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""
_ACK_CHUNK = 500  # stays far below SQLite's host-parameter limit
_WAL_PAGES = 128  # wal_autocheckpoint: the WAL stays around 512 KiB with 4 KiB pages



@dataclass(frozen=True)
class OutgoingMessage:
    """A message to spool; `payload` is a JSON-serialisable dict (the spool adds "seq")."""

    topic: str
    payload: dict[str, Any] = field(default_factory=dict)
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class SpooledMessage:
    """A message as stored: `payload` is the compact JSON bytes, including "seq"."""

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


def _hint(exc: BaseException) -> str:
    text = str(exc).lower()
    if "full" in text:
        return "free disk space on that filesystem or lower the spool's max_bytes"
    if "readonly" in text or "read-only" in text or "unable to open" in text or "permission" in text:
        return "make the spool directory and file writable by the gateway's user, or set another spool path"
    if "disk i/o" in text or "i/o" in text:
        return "check the storage device (dmesg) and free space"
    return "check the spool path and its filesystem"


class Spool:
    """Thread-safe SQLite outbox. One connection, guarded by a lock."""

    def __init__(
        self,
        path: Path,
        max_bytes: int = 256 * 1024 * 1024,
        sync: Literal["full", "normal"] = "full",
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"spool max_bytes must be > 0, got {max_bytes}")
        if sync not in ("full", "normal"):
            raise ValueError(f"spool sync must be 'full' or 'normal', got {sync!r}")
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self._lock = threading.RLock()
        self._last_error: str | None = None
        self._conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(self.path), timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"cannot open spool at {self.path}: {exc}; {_hint(exc)}") from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"journal_mode is {mode!r}, WAL is required")
            conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
            conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_PAGES}")
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            conn.execute(f"PRAGMA journal_size_limit={_WAL_PAGES * (page_size + 24) + 32}")
            conn.executescript(_SCHEMA)
            depth, nbytes = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages"
            ).fetchone()
            row = conn.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        except sqlite3.Error as exc:
            conn.close()
            raise SpoolError(f"cannot open spool at {self.path}: {exc}; {_hint(exc)}") from exc
        self._conn = conn
        self._page_size = page_size
        self._disk_pressure = False  # the last append had to drop rows for disk space
        self._depth = int(depth)
        self._bytes = int(nbytes)
        self._dropped = int(row[0]) if row else 0
        logger.info(
            "spool %s opened: %d messages, %d bytes, %d dropped so far",
            self.path, self._depth, self._bytes, self._dropped,
        )

    # -- writing ---------------------------------------------------------------------------

    def append(self, messages: Sequence[OutgoingMessage]) -> list[int]:
        """Store `messages` in one transaction; return the seq assigned to each, in order."""
        if not messages:
            return []
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                last = conn.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'messages'"
                ).fetchone()
                next_seq = (int(last[0]) if last else 0) + 1
                now = time.time()
                rows, seqs, added = [], [], 0
                for offset, message in enumerate(messages):
                    seq = next_seq + offset
                    body = json.dumps({**message.payload, "seq": seq}, separators=(",", ":"))
                    data = body.encode("utf-8")
                    added += len(data)
                    seqs.append(seq)
                    rows.append((seq, message.topic, data, int(message.qos), int(message.retain), now))
                conn.executemany(
                    "INSERT INTO messages (seq, topic, payload, qos, retain, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                disk_short = self._disk_shortfall(conn, added)
                # leave the disk-full state only with room to spare (twice the reserve), not at the edge
                cramped = disk_short > 0 or (self._disk_pressure and self._disk_shortfall(conn, added, 2) > 0)
                dropped_count, dropped_bytes = self._trim(conn, max(self._bytes + added, self.max_bytes + disk_short))
                conn.execute("COMMIT")
            except (sqlite3.Error, TypeError, ValueError) as exc:
                self._rollback(conn)
                if isinstance(exc, (TypeError, ValueError)):
                    raise  # a payload that is not JSON-serialisable: the caller's bug
                self._last_error = f"append failed: {exc}"
                raise SpoolError(
                    f"spool {self.path}: could not store {len(messages)} message(s): {exc}; {_hint(exc)}"
                ) from exc
            self._depth += len(messages) - dropped_count
            self._bytes += added - dropped_bytes
            if disk_short > 0:
                self._last_error = (f"disk nearly full at {self.path.parent}: dropping the oldest messages to keep "
                                    f"room ({self._dropped + dropped_count} dropped so far); free disk space there "
                                    f"or lower spool.max_mb")
                if not self._disk_pressure:
                    logger.warning("spool %s: %s", self.path, self._last_error)
                self._disk_pressure = True
            elif not cramped and (self._disk_pressure or (self._last_error or "").startswith("append failed")):
                self._disk_pressure = False
                logger.info("spool %s: appends fit again (was: %s)", self.path, self._last_error)
                self._last_error = None
            if dropped_count:
                self._dropped += dropped_count
            if dropped_count and disk_short <= 0:
                logger.warning(
                    "spool %s over its cap of %d bytes: dropped the %d oldest message(s) (%d in total)",
                    self.path, self.max_bytes, dropped_count, self._dropped,
                )
            return seqs

    def _disk_shortfall(self, conn: sqlite3.Connection, adding: int, factor: int = 1) -> int:
        """Bytes to free so that `adding` more still leaves `factor` x the reserve on the spool's filesystem."""
        try:
            fs = os.statvfs(self.path.parent)
        except OSError:
            return 0
        wal_bytes = _WAL_PAGES * (self._page_size + 24)
        reserve = min(2 * wal_bytes, max(fs.f_blocks * fs.f_frsize // 4, 64 * 1024)) if fs.f_blocks else 0
        freelist = int(conn.execute("PRAGMA freelist_count").fetchone()[0]) * self._page_size
        usable = fs.f_bavail * fs.f_frsize + freelist
        # rows take somewhat more room than their payload (b-tree pages, other columns): count 2x
        return max(0, factor * reserve + 2 * adding - usable)

    def _trim(self, conn: sqlite3.Connection, total_bytes: int) -> tuple[int, int]:
        """Delete the oldest rows until `total_bytes` fits the cap; return (rows, bytes) removed."""
        excess = total_bytes - self.max_bytes
        if excess <= 0:
            return 0, 0
        freed, count, cutoff = 0, 0, None
        for seq, size in conn.execute("SELECT seq, LENGTH(payload) FROM messages ORDER BY seq"):
            freed += int(size)
            count += 1
            cutoff = int(seq)
            if freed >= excess:
                break
        if cutoff is None:
            return 0, 0
        conn.execute("DELETE FROM messages WHERE seq <= ?", (cutoff,))
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('dropped', ?)"
            " ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            (count,),
        )
        return count, freed

    def ack(self, seqs: Iterable[int]) -> None:
        """Remove the given seqs (acknowledged by the broker). Unknown seqs are ignored."""
        unique = sorted({int(s) for s in seqs})
        if not unique:
            return
        with self._lock:
            conn = self._connection()
            removed, removed_bytes = 0, 0
            try:
                conn.execute("BEGIN IMMEDIATE")
                for start in range(0, len(unique), _ACK_CHUNK):
                    chunk = unique[start:start + _ACK_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    count, size = conn.execute(
                        f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages WHERE seq IN ({marks})",
                        chunk,
                    ).fetchone()
                    conn.execute(f"DELETE FROM messages WHERE seq IN ({marks})", chunk)
                    removed += int(count)
                    removed_bytes += int(size)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                self._last_error = f"ack failed: {exc}"
                raise SpoolError(f"spool {self.path}: could not remove acknowledged messages: {exc}; {_hint(exc)}") from exc
            self._depth -= removed
            self._bytes -= removed_bytes
            if (self._last_error or "").startswith("ack failed"):
                self._last_error = None

    # -- reading ---------------------------------------------------------------------------

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[SpooledMessage]:
        """Up to `limit` stored messages with seq > `after_seq`, oldest first."""
        with self._lock:
            conn = self._connection()
            try:
                rows = conn.execute(
                    "SELECT seq, topic, payload, qos, retain FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
                    (int(after_seq), int(limit)),
                ).fetchall()
            except sqlite3.Error as exc:
                self._last_error = f"read failed: {exc}"
                raise SpoolError(f"spool {self.path}: could not read: {exc}; {_hint(exc)}") from exc
        return [SpooledMessage(int(s), t, bytes(p), int(q), bool(r)) for s, t, p, q, r in rows]

    def depth(self) -> int:
        """Number of messages held."""
        with self._lock:
            return self._depth

    def size_bytes(self) -> int:
        """Payload bytes held (what the cap counts)."""
        with self._lock:
            return self._bytes

    @property
    def dropped(self) -> int:
        """Messages deleted because of the cap, over the spool's whole life."""
        with self._lock:
            return self._dropped

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "depth": self._depth,
                "bytes": self._bytes,
                "dropped": self._dropped,
                "max_bytes": self.max_bytes,
                "last_error": self._last_error,
            }

    def close(self) -> None:
        """Close the database (idempotent). Further calls raise SpoolError."""
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.close()
            except sqlite3.Error as exc:  # pragma: no cover - close errors are only logged
                logger.warning("spool %s: error while closing: %s", self.path, exc)
            self._conn = None

    # -- helpers ---------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SpoolError(f"spool {self.path} is closed")
        return self._conn

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                logger.error("spool rollback failed: %s", exc)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
