"""edge.transport.spool against real SQLite files: numbering, cap, paging, crashes, unwritable storage."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.errors import SpoolError
from edge.transport.spool import OutgoingMessage, Spool
from tests.support.paths import REPO
from tests.support.waits import wait_until


def msgs(n: int, topic: str = "edge/dev/results/cam0", **payload: object) -> list[OutgoingMessage]:
    return [OutgoingMessage(topic, {"i": i, **payload}) for i in range(n)]


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def test_seq_strictly_increases_across_acks_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = Spool(path)
    first = spool.append(msgs(5))
    assert first == [1, 2, 3, 4, 5]
    spool.ack(first)  # delete everything, including the highest seq
    assert spool.depth() == 0
    assert spool.append(msgs(2)) == [6, 7]
    spool.close()

    reopened = Spool(path)
    assert reopened.depth() == 2
    reopened.ack([6, 7])
    assert reopened.append(msgs(1)) == [8]
    assert [m.seq for m in reopened.pending()] == [8]
    reopened.close()


def test_payload_is_compact_json_with_seq(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    seqs = spool.append([OutgoingMessage("t/a", {"label": "cat", "score": 0.5}, qos=0, retain=True)])
    (stored,) = spool.pending()
    assert stored.seq == seqs[0]
    assert stored.topic == "t/a" and stored.qos == 0 and stored.retain is True
    assert stored.payload == b'{"label":"cat","score":0.5,"seq":1}'
    assert spool.size_bytes() == len(stored.payload)
    spool.close()


def test_pending_pages_oldest_first_and_ack_removes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    spool.append(msgs(250))
    seen: list[int] = []
    cursor = 0
    while page := spool.pending(after_seq=cursor, limit=100):
        assert len(page) <= 100
        seen.extend(m.seq for m in page)
        cursor = page[-1].seq
    assert seen == list(range(1, 251))
    spool.ack(range(1, 101))
    spool.ack([100, 99999])  # already gone / unknown: ignored
    assert spool.depth() == 150
    assert spool.pending(limit=1)[0].seq == 101
    assert spool.stats()["depth"] == 150
    spool.close()


def test_cap_drops_oldest_and_counts_persistently(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    one = len(json.dumps({"i": 0, "pad": "x" * 100, "seq": 1}, separators=(",", ":")))
    spool = Spool(path, max_bytes=10 * one + 5)
    spool.append(msgs(8, pad="x" * 100))
    assert spool.dropped == 0
    seqs = spool.append(msgs(5, pad="x" * 100))
    assert seqs == [9, 10, 11, 12, 13]
    assert spool.dropped == 3
    assert [m.seq for m in spool.pending()] == list(range(4, 14))
    assert spool.size_bytes() <= spool.max_bytes
    spool.close()

    reopened = Spool(path, max_bytes=10 * one + 5)
    assert reopened.dropped == 3
    assert reopened.stats()["dropped"] == 3
    assert reopened.size_bytes() == sum(len(m.payload) for m in reopened.pending())
    reopened.close()


def test_concurrent_appends_get_unique_seqs(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", sync="normal")
    results: list[list[int]] = []
    lock = threading.Lock()

    def writer() -> None:
        for _ in range(20):
            got = spool.append(msgs(5))
            with lock:
                results.append(got)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    all_seqs = sorted(s for batch in results for s in batch)
    assert all_seqs == list(range(1, 401))
    assert all(batch == list(range(batch[0], batch[0] + 5)) for batch in results)  # one transaction each
    assert spool.depth() == 400
    spool.close()


CRASH_WRITER = """
import sys
from pathlib import Path
from edge.transport.spool import OutgoingMessage, Spool
spool = Spool(Path(sys.argv[1]), sync="full")
i = 0
while True:
    spool.append([OutgoingMessage("edge/d/results/c", {"i": i, "pad": "y" * 200}) for _ in range(3)])
    spool.ack(m.seq for m in spool.pending(limit=1))
    i += 1
"""


def test_sigkill_mid_append_leaves_consistent_db_and_numbering_continues(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    proc = subprocess.Popen([sys.executable, "-c", CRASH_WRITER, str(path)], cwd=REPO)
    try:
        def progressed() -> bool:
            if not path.exists():
                return False
            try:
                with sqlite3.connect(path, timeout=5) as conn:
                    return conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] >= 300
            except sqlite3.OperationalError:
                return False  # schema not there yet

        wait_until(progressed, 60, message="the crash writer to append 300 messages")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    assert integrity(path) == "ok"
    spool = Spool(path)
    rows = spool.pending(limit=1_000_000)
    seqs = [m.seq for m in rows]
    # Each loop appends 3 and acks the oldest one; committed appends are whole.
    assert seqs == sorted(seqs) and len(seqs) >= 300
    assert all(json.loads(m.payload)["seq"] == m.seq for m in rows)
    high = seqs[-1]
    with sqlite3.connect(path) as conn:
        recorded_high = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='messages'").fetchone()[0]
    assert recorded_high == high  # the batch that was cut short left no trace
    assert spool.append(msgs(1)) == [high + 1]
    spool.close()


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp dir that an unprivileged user can enter (pytest's tmp_path is root-only here)."""
    path = Path(tempfile.mkdtemp(prefix="spool-perm-"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir():
            sub.chmod(0o755)
    shutil.rmtree(path)


OPEN_AND_APPEND = """
import json, os, sys
from pathlib import Path
from edge.errors import SpoolError
from edge.transport.spool import OutgoingMessage, Spool
if os.geteuid() == 0:  # root is never denied a write: become nobody (everything is imported already)
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
try:
    Spool(Path(sys.argv[1])).append([OutgoingMessage("t", {"x": 1})])
except SpoolError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps({"error": None}))
"""


def open_and_append_unprivileged(path: Path) -> str | None:
    """Open a spool and append in a child process that runs unprivileged (see OPEN_AND_APPEND)."""
    out = subprocess.run(
        [sys.executable, "-c", OPEN_AND_APPEND, str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )
    return json.loads(out.stdout)["error"]


def test_read_only_directory_gives_clear_spool_error(shared_tmp: Path) -> None:
    ro_dir = shared_tmp / "ro"
    ro_dir.mkdir()
    ro_dir.chmod(0o555)
    error = open_and_append_unprivileged(ro_dir / "spool.db")
    assert error is not None
    assert str(ro_dir / "spool.db") in error
    assert "writable" in error


def test_unwritable_spool_file_gives_clear_spool_error(shared_tmp: Path) -> None:
    path = shared_tmp / "spool.db"
    spool = Spool(path)
    spool.append(msgs(3))
    spool.close()
    path.chmod(0o444)
    error = open_and_append_unprivileged(path)
    assert error is not None
    assert str(path) in error and "writable" in error
    path.chmod(0o644)
    reopened = Spool(path)
    assert [m.seq for m in reopened.pending()] == [1, 2, 3]
    reopened.close()


FILL_UNTIL_FULL = """
import json, resource, signal, sys
from pathlib import Path
from edge.errors import SpoolError
from edge.transport.spool import OutgoingMessage, Spool
spool = Spool(Path(sys.argv[1]))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # make the kernel return EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, 512 * 1024))
last_ok = 0
for _ in range(10_000):
    try:
        last_ok = spool.append([OutgoingMessage("t", {"pad": "z" * 4000}) for _ in range(4)])[-1]
    except SpoolError as exc:
        print(json.dumps({"error": str(exc), "last_ok": last_ok, "stats": spool.stats()}))
        break
else:
    print(json.dumps({"error": None, "last_ok": last_ok}))
"""


def test_disk_full_raises_spool_error_and_keeps_committed_messages(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    Spool(path).close()
    out = subprocess.run(
        [sys.executable, "-c", FILL_UNTIL_FULL, str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    )
    report = json.loads(out.stdout)
    assert report["error"] is not None, "the file size limit was never hit"
    assert str(path) in report["error"] and "could not store" in report["error"]
    assert report["stats"]["last_error"]
    assert report["last_ok"] > 0

    assert integrity(path) == "ok"
    spool = Spool(path)
    seqs = [m.seq for m in spool.pending(limit=1_000_000)]
    assert seqs == list(range(1, report["last_ok"] + 1))
    assert spool.append(msgs(1))[0] > report["last_ok"]
    spool.close()


def test_closed_spool_raises(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    spool.close()
    spool.close()
    with pytest.raises(SpoolError, match="closed"):
        spool.append(msgs(1))
