"""Chaos measurements: resource samples, the seq ledger read from the gateway's spool, the accounting
of every seq, and the result row of a scenario (see tests/chaos/__init__.py for the seq accounting)."""
from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.chaos.broker import MQTT_BACKOFF_CAP_S, Observer
from tests.chaos.gateway import read_status
from tests.support.waits import wait_until


@dataclass
class Resources:
    rss_mb: float
    fds: int
    threads: int

    @classmethod
    def of(cls, pid: int) -> Resources:
        p = psutil.Process(pid)
        return cls(p.memory_info().rss / 1048576, p.num_fds(), p.num_threads())


@dataclass
class Row:
    scenario: str
    faults: int = 0
    fault_detail: str = ""
    produced: int = 0
    delivered: int = 0
    duplicates: int = 0
    gaps: int = 0  # gateway-side losses
    broker_lost: int = 0  # lost inside a SIGKILLed broker (acked, not yet saved/forwarded)
    dropped: int = 0  # counted by the gateway (spool cap / disk full)
    undelivered: int = 0  # still in the spool at the end
    recovery_s: float = 0.0
    backoff_cap_s: float = MQTT_BACKOFF_CAP_S
    growth: str = ""
    ok: bool = True
    notes: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks[name] = bool(ok)
        if not ok:
            self.ok = False
            self.notes.append(f"FAILED {name}{': ' + detail if detail else ''}")

    @property
    def recovery_x(self) -> str:
        return f"{self.recovery_s / self.backoff_cap_s:.2f}x ({self.recovery_s:.1f}s/{self.backoff_cap_s:g}s)"


def growth_text(before: Resources | None, after: Resources | None) -> str:
    if before is None or after is None:
        return "n/a"
    return (f"rss {after.rss_mb - before.rss_mb:+.0f}MB, fd {after.fds - before.fds:+d}, "
            f"thr {after.threads - before.threads:+d}")


def growth_bounded(before: Resources, after: Resources, fd_slack: int = 8, thread_slack: int = 6) -> bool:
    return after.fds - before.fds <= fd_slack and after.threads - before.threads <= thread_slack


@dataclass
class Ledger:
    max_seq: int
    in_spool: set[int]
    dropped_total: int
    integrity: str


def spool_record(path: Path) -> Ledger:
    """Open the spool (gateway stopped) and read its seq record."""
    conn = sqlite3.connect(str(path), timeout=10)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        seqs = {int(s) for (s,) in conn.execute("SELECT seq FROM messages")}
        dropped = conn.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
    finally:
        conn.close()
    return Ledger(int(row[0]) if row else 0, seqs, int(dropped[0]) if dropped else 0, integrity)


def integrity_of(path: Path) -> str:
    conn = sqlite3.connect(str(path), timeout=10)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def account(row: Row, observer: Observer, ledger: Ledger, broker_kills: list[float],
            window_s: float = 3.0) -> list[int]:
    """Fill produced/delivered/duplicates/gaps/broker_lost/dropped/undelivered; return the gateway gaps."""
    docs = observer.seq_docs()
    seen: dict[int, dict] = {}
    for _, doc in docs:
        seen.setdefault(int(doc["seq"]), doc)
    row.produced = ledger.max_seq
    row.delivered = len(seen)
    row.duplicates = len(docs) - len(seen)
    row.undelivered = len(ledger.in_spool - set(seen))
    missing = sorted(set(range(1, ledger.max_seq + 1)) - set(seen) - ledger.in_spool)
    ordered = sorted(seen)

    def neighbour_ts(seq: int) -> list[float]:
        import bisect
        i = bisect.bisect_left(ordered, seq)
        out = []
        for j in (i - 1, i):
            if 0 <= j < len(ordered):
                out.append(float(seen[ordered[j]].get("ts", 0)))
        return out

    broker_lost, gateway = [], []
    for seq in missing:
        ts = neighbour_ts(seq)
        if any(k - window_s <= t <= k + 0.5 for k in broker_kills for t in ts):
            broker_lost.append(seq)
        else:
            gateway.append(seq)
    row.broker_lost = len(broker_lost)
    row.dropped = ledger.dropped_total
    # the spool's counted drops (oldest first) explain that many missing seqs
    explained = min(len(gateway), ledger.dropped_total)
    gaps = gateway[explained:] if ledger.dropped_total else gateway
    row.gaps = len(gaps)
    if broker_lost:
        row.notes.append(f"broker lost {len(broker_lost)} acked seq(s) when SIGKILLed: {broker_lost[:10]}")
    if gaps:
        row.notes.append(f"GATEWAY GAPS {gaps[:20]}")
    return gaps


def drain(status: Path, timeout_s: float) -> bool:
    """Wait until the gateway says its spool is empty and it is connected."""
    try:
        wait_until(lambda: (d := read_status(status)) and d.get("spool", {}).get("depth") == 0
                   and d.get("mqtt", {}).get("connected"), timeout_s, interval_s=0.25, message="spool drained")
        return True
    except AssertionError:
        return False


def rand_between(rng: random.Random, lo: float, hi: float) -> float:
    return lo + (hi - lo) * rng.random()
