"""The parts chaos scenarios are built from. Nothing here is mocked: real Mosquitto, ffmpeg,
edge-gateway, edge-model-server and docker-registry processes, a real network namespace, a real
tmpfs, a real NOTIFY_SOCKET datagram socket.

Seq accounting (`Ledger`): the gateway's own record is its spool. `sqlite_sequence` holds the
highest seq it ever assigned (AUTOINCREMENT: never reused, rolled-back appends consume nothing),
so every seq in 1..max was accepted. After the final clean stop, each of them must be either
recorded by the observer, still in the spool, or one of the `spool.dropped` (cap / disk full,
counted by the gateway). What is left is a gap. A gap whose neighbours were spooled in the
seconds before a SIGKILL of the broker is reported as a *broker* loss (Mosquitto acks a QoS 1
message before it has saved it; autosave_interval is 1 s), separately from *gateway* gaps.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from tests.fixtures.gateway import GATEWAY_BIN, CameraSpec, render_config
from tests.fixtures.mosquitto import MosquittoBroker, MqttRecorder, RecordedMessage
from tests.fixtures.net import free_port, wait_for_port
from tests.fixtures.streams import FfmpegStream, write_video

logger = logging.getLogger("chaos")

DEVICE = "gw-chaos"
MQTT_BACKOFF_CAP_S = 30.0  # edge.mqtt.MqttSettings.reconnect_max_s (not configurable)
GRPC_BACKOFF_CAP_S = 5.0  # edge.serving.tfserving: grpc.max_reconnect_backoff_ms
CAMERA_BACKOFF_CAP_S = 2.0  # backoff_max_s given to the cameras below
CAMERA_OPTS = {"watchdog_s": 3.0, "backoff_initial_s": 0.25, "backoff_max_s": CAMERA_BACKOFF_CAP_S,
               "open_timeout_s": 3.0, "read_timeout_s": 2.0}
BGR = {"red": (0, 0, 230), "green": (0, 230, 0), "blue": (230, 0, 0)}


def wait_until(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.1,
               what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


# ----------------------------------------------------------------------------------- the broker

class NetnsBroker(MosquittoBroker):
    """Mosquitto inside its own network namespace, reached over two veth pairs:

    - the *gateway link* (`gw_ip`), which faults take down (`ip link set … down`) or blackhole
      with a tc qdisc that drops every packet (`tbf` with a 1-byte bucket on both ends; `netem`
      is not built into every kernel): packets vanish, nobody gets a reset;
    - the *observer link* (`obs_ip`), never faulted, so the recorder stays subscribed through
      network faults and only the gateway's path is cut.
    """

    _counter = 0

    def __init__(self, workdir: Path) -> None:
        NetnsBroker._counter += 1
        used = sh("ip", "-o", "-4", "addr", "show").stdout
        n = next(k for k in [(os.getpid() + NetnsBroker._counter + i) % 200 + 20 for i in range(200)]
                 if f"10.213.{k}." not in used and f"10.214.{k}." not in used)  # a subnet nobody uses now
        self.ns = f"edgechaos-{os.getpid()}-{NetnsBroker._counter}"
        self.tag = f"{os.getpid() % 10000}{NetnsBroker._counter}"[-6:]
        self.gw_host_if, self.gw_ns_if = f"ecg{self.tag}h", f"ecg{self.tag}n"
        self.obs_host_if, self.obs_ns_if = f"eco{self.tag}h", f"eco{self.tag}n"
        self.gw_ip, self.gw_host_ip = f"10.213.{n}.2", f"10.213.{n}.1"
        self.obs_ip, self.obs_host_ip = f"10.214.{n}.2", f"10.214.{n}.1"
        super().__init__(workdir, 18830 + NetnsBroker._counter)
        self.host = self.gw_ip
        self._ns_created = False
        self.fault: str | None = None

    def create_namespace(self) -> None:
        sh("ip", "netns", "add", self.ns)
        self._ns_created = True
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        for host_if, ns_if, host_ip, ns_ip in ((self.gw_host_if, self.gw_ns_if, self.gw_host_ip, self.gw_ip),
                                               (self.obs_host_if, self.obs_ns_if, self.obs_host_ip, self.obs_ip)):
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", self.ns)
            sh("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
            sh("ip", "link", "set", host_if, "up")
            sh("ip", "-n", self.ns, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
            sh("ip", "-n", self.ns, "link", "set", ns_if, "up")

    def delete_namespace(self) -> None:
        if self._ns_created:
            sh("ip", "netns", "del", self.ns, check=False)  # removes both veth pairs with it
            sh("ip", "link", "del", self.gw_host_if, check=False)
            sh("ip", "link", "del", self.obs_host_if, check=False)
            self._ns_created = False

    def _write_conf(self) -> None:
        super()._write_conf()
        text = self.conf_path.read_text().replace(f"listener {self.port} {self.host}\n", f"listener {self.port}\n")
        self.conf_path.write_text(text)

    def start(self) -> NetnsBroker:
        self._write_conf()
        self._proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists()
             else "mosquitto", "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.workdir / "stderr.log", "ab"))
        self.starts += 1
        wait_for_port(self.port, self.obs_ip, timeout_s=20.0)
        return self

    # network faults on the gateway link only
    def cut(self, mode: str) -> None:
        if mode == "link-down":
            sh("ip", "link", "set", self.gw_host_if, "down")
        elif mode == "tc-drop":
            drop = ("root", "tbf", "rate", "8bit", "burst", "1", "latency", "1ms")
            sh("tc", "qdisc", "add", "dev", self.gw_host_if, *drop)
            sh("ip", "netns", "exec", self.ns, "tc", "qdisc", "add", "dev", self.gw_ns_if, *drop)
        else:
            raise ValueError(mode)
        self.fault = mode

    def restore(self) -> None:
        if self.fault == "link-down":
            sh("ip", "link", "set", self.gw_host_if, "up")
        elif self.fault == "tc-drop":
            sh("tc", "qdisc", "del", "dev", self.gw_host_if, "root", check=False)
            sh("ip", "netns", "exec", self.ns, "tc", "qdisc", "del", "dev", self.gw_ns_if, "root", check=False)
        self.fault = None


class Observer(MqttRecorder):
    """The recorder (persistent MQTT 5 session, QoS 1), keeping the arrival time of each message."""

    def __init__(self, host: str, port: int, topic_filter: str) -> None:
        self.arrivals: list[float] = []
        super().__init__(host, port, topic_filter, client_id=f"chaos-observer-{os.getpid()}")

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self._messages.append(RecordedMessage(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos))
            self.arrivals.append(time.time())

    def docs(self, sub: str) -> list[tuple[float, dict]]:
        """(arrival time, payload) for `edge/<device>/<sub>` messages with a JSON object payload."""
        import paho.mqtt.client as paho
        with self._lock:
            pairs = list(zip(self.arrivals, self._messages))
        out = []
        for at, m in pairs:
            if paho.topic_matches_sub(f"edge/{DEVICE}/{sub}", m.topic):
                try:
                    doc = json.loads(m.payload)
                except ValueError:
                    continue
                if isinstance(doc, dict):
                    out.append((at, doc))
        return out

    def seq_docs(self) -> list[tuple[float, dict]]:
        return [p for p in self.docs("results/+") + self.docs("events") if "seq" in p[1]]

    def first_arrival_after(self, t: float, sub: str = "results/+", camera: str | None = None) -> float | None:
        for at, doc in self.docs(sub):
            if at > t and (camera is None or doc.get("camera") == camera):
                return at
        return None

    def first_result_spooled_after(self, t: float, camera: str | None = None) -> float | None:
        """Arrival time of the first result produced (spool `ts`) after `t`."""
        for at, doc in self.docs("results/+"):
            if doc.get("ts", 0) > t and (camera is None or doc.get("camera") == camera):
                return at
        return None


# ----------------------------------------------------------------------------------- cameras

class SilentServer:
    """Accepts TCP connections on 127.0.0.1:`port` and never writes a byte (a wedged camera)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._clients: list[socket.socket] = []
        self._stop = threading.Event()
        self.accepted = 0
        self._thread = threading.Thread(target=self._run, name=f"silent-{port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self._clients.append(client)  # read nothing, write nothing

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._sock.close()
        for c in self._clients:
            with contextlib.suppress(OSError):
                c.close()


def solid_video(path: Path, colour: str, count: int = 20, size: tuple[int, int] = (160, 120)) -> Path:
    frame = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    frame[:, :] = BGR[colour]
    rng = np.random.default_rng(len(colour))
    frames = [np.clip(frame.astype(np.int16) + rng.integers(-8, 8, frame.shape), 0, 255).astype(np.uint8)
              for _ in range(count)]
    return write_video(path, frames, 10.0)


class Cameras:
    """4 cameras: two looping video files, one MJPEG-over-HTTP and one MPEG-TS-over-TCP ffmpeg stream.

    `cut(name)` kills a live stream (port closed), `silence(name)` puts a listener that never writes
    on its port, `restore(name)` brings ffmpeg back on the same port.
    """

    def __init__(self, work: Path, fps: float = 5.0) -> None:
        self.work = work
        red = solid_video(work / "red.avi", "red")
        blue = solid_video(work / "blue.avi", "blue")
        self.streams: dict[str, FfmpegStream] = {}
        self.silent: dict[str, SilentServer] = {}
        for name, kind in (("mjpeg", "mjpeg_http"), ("mpegts", "mpegts_tcp")):
            port = free_port()
            self.streams[name] = FfmpegStream(kind, port, (160, 120), 10, None, work / f"ffmpeg-{name}.log")
        self.specs = [
            CameraSpec("red", str(red), fps=fps, extra=dict(CAMERA_OPTS)),
            CameraSpec("blue", str(blue), fps=fps, extra=dict(CAMERA_OPTS)),
            CameraSpec("mjpeg", self.streams["mjpeg"].uri, fps=fps, extra=dict(CAMERA_OPTS)),
            CameraSpec("mpegts", self.streams["mpegts"].uri, fps=fps, extra=dict(CAMERA_OPTS)),
        ]

    def start(self) -> None:
        for s in self.streams.values():
            s.start()

    def cut(self, name: str) -> None:
        self.streams[name].stop()

    def silence(self, name: str) -> None:
        self.streams[name].stop()
        self.silent[name] = SilentServer(self.streams[name].port)

    def restore(self, name: str) -> None:
        if name in self.silent:
            self.silent.pop(name).close()
        stream = self.streams[name]
        for attempt in range(5):
            try:
                stream.start()
                return
            except OSError:  # the port may linger for a moment
                stream.stop()
                time.sleep(0.5)
        stream.start()

    def stop(self) -> None:
        for s in self.silent.values():
            s.close()
        self.silent.clear()
        for s in self.streams.values():
            with contextlib.suppress(Exception):
                s.stop()


# ----------------------------------------------------------------------------------- gateway

class NotifySocket:
    """A real NOTIFY_SOCKET: a unix datagram socket, every message kept with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except OSError:
                continue
            with self._lock:
                self.messages.append((time.time(), data.decode(errors="replace")))

    def ready_after(self, t: float) -> float | None:
        with self._lock:
            for at, text in self.messages:
                if at >= t and "READY=1" in text.splitlines():
                    return at
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class Gateway:
    """`edge-gateway run --config …` with NOTIFY_SOCKET set; stopped by PID."""

    def __init__(self, work: Path, config_text: str, notify: NotifySocket, name: str = "gw") -> None:
        self.config = work / f"{name}.toml"
        self.config.write_text(config_text)
        self.log_path = work / f"{name}.log"
        self.notify = notify
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.starts = 0
        self.ready_times: list[float] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Gateway:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", NOTIFY_SOCKET=str(self.notify.path))
        with open(self.log_path, "ab") as log:
            self.started_at = time.time()
            self.proc = subprocess.Popen([str(GATEWAY_BIN), "run", "--config", str(self.config)],
                                         stdout=log, stderr=log, env=env, stdin=subprocess.DEVNULL)
        self.starts += 1
        return self

    def wait_ready(self, timeout_s: float = 240.0) -> float:
        """Seconds from start to READY=1 on the notify socket."""
        def ready() -> float | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode} before READY:\n{self.tail()}")
            return self.notify.ready_after(self.started_at)
        at = wait_until(ready, timeout_s, what="READY=1 from the gateway")
        self.ready_times.append(at - self.started_at)
        return at - self.started_at

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(15)

    def terminate(self, timeout_s: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def gateway_config(work: Path, cameras: list[CameraSpec], broker_url: str, store: Path, spool: Path,
                   status: Path, serving: dict | None = None, registry_ref: str | None = None,
                   extra: str = "") -> str:
    sections = extra
    if registry_ref:
        sections += "\n".join(["", "[registry]", f'ref = "{registry_ref}"', "poll_interval_s = 2.0",
                               "insecure = true", "", "[rollout]", "probation_s = 3.0", ""])
    return render_config(DEVICE, cameras, store, "colour", broker_url, spool, health_interval_s=0.5,
                         keepalive_s=3, extra_sections=sections, serving=serving, status_file=status)


def read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# ----------------------------------------------------------------------------------- measurements

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
                   and d.get("mqtt", {}).get("connected"), timeout_s, 0.25, "spool drained")
        return True
    except TimeoutError:
        return False


def rand_between(rng: random.Random, lo: float, hi: float) -> float:
    return lo + (hi - lo) * rng.random()
