"""The sd_notify protocol against a real AF_UNIX datagram NOTIFY_SOCKET bound by the test.

The last test runs the real `edge-gateway` under a NOTIFY_SOCKET + WATCHDOG_USEC, as systemd would:
it needs edge/systemd.py wired into edge/gateway.py (READY=1 after the model is loaded, cameras
are started and MQTT is connected or spooling; STATUS= lines; WATCHDOG=1 while frames progress;
STOPPING=1 on SIGTERM).
"""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.device.systemd import ProgressReport, Supervisor, SystemdNotifier, pipeline_progress
from edge.inference.batcher import FrameBatcher
from edge.inference.pipeline import InferencePipeline
from tests.fixtures.gateway import CameraSpec, render_config, wait_until

try:
    import systemd.daemon  # noqa: F401

    BACKENDS = ["socket", "libsystemd"]
except ImportError:  # the code works without systemd-python; only the socket path exists then
    BACKENDS = ["socket"]


class NotifyListener:
    """A bound SOCK_DGRAM socket that collects every datagram (one sd_notify message each)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self._lock = threading.Lock()
        self._messages: list[list[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._messages.append(data.decode().split("\n"))

    def messages(self) -> list[list[str]]:
        with self._lock:
            return list(self._messages)

    def fields(self) -> list[str]:
        return [f for m in self.messages() for f in m]

    def wait_for(self, predicate, timeout_s: float = 20.0, what: str = "datagrams") -> list[str]:
        wait_until(lambda: predicate(self.fields()), timeout_s, 0.02, f"{what}; got {self.fields()[-20:]}")
        return self.fields()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    lst = NotifyListener(str(tmp_path / "notify.sock"))
    yield lst
    lst.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_ready_and_status_arrive(listener: NotifyListener, monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    notifier = SystemdNotifier(use_libsystemd=backend == "libsystemd")
    assert notifier.enabled and notifier.backend == backend
    assert notifier.ready("model colour v2, 2 cameras, broker connected")
    assert notifier.status("5.0 fps\nmodel v2")  # a newline would split the field: it becomes a space
    assert notifier.stopping()
    fields = listener.wait_for(lambda f: "STOPPING=1" in f)
    first = listener.messages()[0]
    assert first[:2] == ["READY=1", "STATUS=model colour v2, 2 cameras, broker connected"]
    assert f"MAINPID={os.getpid()}" in first
    assert "STATUS=5.0 fps model v2" in fields


def test_abstract_namespace_socket() -> None:
    lst = NotifyListener(f"@edge-test-{uuid.uuid4().hex}")
    try:
        notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": lst.address})
        assert notifier.backend == "socket"
        assert notifier.status("hello abstract")
        lst.wait_for(lambda f: "STATUS=hello abstract" in f)
    finally:
        lst.close()


def test_no_notify_socket_is_a_no_op() -> None:
    notifier = SystemdNotifier(environ={})
    assert not notifier.enabled and notifier.backend == "disabled"
    assert notifier.ready("x") is False and notifier.watchdog() is False
    assert notifier.watchdog_enabled() is None


def test_unreachable_socket_is_counted_not_raised(tmp_path: Path) -> None:
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    assert notifier.status("x") is False and notifier.status("y") is False
    assert notifier.send_errors == 2


def test_watchdog_enabled_reads_usec_and_pid(listener: NotifyListener) -> None:
    base = {"NOTIFY_SOCKET": listener.address}
    assert SystemdNotifier(environ={**base, "WATCHDOG_USEC": "30000000"}).watchdog_enabled() == 30.0
    mine = {**base, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    assert SystemdNotifier(environ=mine).watchdog_enabled() == 3.0
    assert SystemdNotifier(environ={**mine, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_enabled() is None
    assert SystemdNotifier(environ={**base, "WATCHDOG_USEC": "soon"}).watchdog_enabled() is None
    assert SystemdNotifier(environ={"WATCHDOG_USEC": "3000000"}).watchdog_enabled() is None  # no socket


def test_supervisor_pings_only_while_progressing(listener: NotifyListener) -> None:
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "300000"})
    state = {"alive": True}
    supervisor = Supervisor(notifier, progress=lambda: ProgressReport(state["alive"], "loop turning"),
                            status_text=lambda: "fps 5.0, model v2, broker connected")
    assert supervisor.interval_s == pytest.approx(0.1)  # WatchdogSec / 3
    supervisor.start()
    try:
        listener.wait_for(lambda f: f.count("WATCHDOG=1") >= 3, what="watchdog pings while alive")
        assert "STATUS=fps 5.0, model v2, broker connected" in listener.fields()
        state["alive"] = False
        fields = listener.wait_for(lambda f: sum(x.startswith("STATUS=WEDGED") for x in f) >= 4,
                                   what="wedged status updates")
        after_wedged = fields[next(i for i, x in enumerate(fields) if x.startswith("STATUS=WEDGED")):]
        assert "WATCHDOG=1" not in after_wedged  # pings stopped: systemd will restart the service
        assert supervisor.withheld >= 4
        state["alive"] = True
        count = len(fields)
        listener.wait_for(lambda f: "WATCHDOG=1" in f[count:], what="pings after recovery")
    finally:
        supervisor.stop()


def test_supervisor_treats_a_failing_progress_check_as_wedged(listener: NotifyListener) -> None:
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "3000000"})

    def broken() -> ProgressReport:
        raise RuntimeError("pipeline gone")

    supervisor = Supervisor(notifier, progress=broken, status_text=lambda: "s")
    report = supervisor.tick()
    assert not report.alive and "pipeline gone" in report.detail
    fields = listener.wait_for(lambda f: any("pipeline gone" in x for x in f))
    assert "WATCHDOG=1" not in fields


def test_supervisor_without_watchdog_sends_status_only(listener: NotifyListener) -> None:
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": listener.address})
    supervisor = Supervisor(notifier, progress=lambda: ProgressReport(True), status_text=lambda: "idle",
                            interval_s=0.05)
    supervisor.start()
    try:
        listener.wait_for(lambda f: f.count("STATUS=idle") >= 3)
    finally:
        supervisor.stop()
    assert "WATCHDOG=1" not in listener.fields() and supervisor.pings == 0


def test_pipeline_progress_tells_idle_from_wedged() -> None:
    """A real inference loop with no cameras turns (idle = alive); once its thread is gone, it is wedged."""
    batcher = FrameBatcher([], threading.Event(), max_batch_size=2, max_wait_s=0.01)
    pipeline = InferencePipeline(batcher, classifier=None, deliver=lambda batch: None)  # type: ignore[arg-type]
    progress = pipeline_progress(pipeline, max_stall_s=1.0)
    pipeline.start()
    try:
        time.sleep(1.5)  # longer than max_stall_s: only a turning loop keeps the report alive
        report = progress()
        assert report.alive and report.detail.startswith("idle"), report
    finally:
        pipeline.stop()
    wait_until(lambda: not progress().alive, 10.0, 0.1, "a stopped loop to read as stalled")
    assert "stalled" in progress().detail


# ------------------------------------------------------------------- gateway (needs the lead's wiring)

@pytest.mark.slow
def test_gateway_notifies_ready_status_and_watchdog(listener: NotifyListener, tmp_path: Path, gateway_factory,
                                                    colour_model_store: Path, mosquitto, video_file_factory,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_gateway_e2e import RED, solid_frames

    video = video_file_factory(frames=solid_frames(RED), fps=10.0)
    text = render_config("notify-gw", [CameraSpec("red-cam", str(video), fps=5)], colour_model_store, "colour",
                         mosquitto.url, tmp_path / "spool.db")
    gateway = gateway_factory("notify", text)
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")  # pings expected about every second
    gateway.start()
    try:
        fields = listener.wait_for(lambda f: "READY=1" in f, 180.0, "READY=1 from the gateway")
        assert gateway.alive(), gateway.log()
        ready_at = fields.index("READY=1")
        fields = listener.wait_for(lambda f: f[ready_at:].count("WATCHDOG=1") >= 3, 60.0, "watchdog pings")
        statuses = [f for f in fields if f.startswith("STATUS=")]
        assert statuses, "no STATUS= lines"
        assert any("colour" in s or "v2" in s or "model" in s for s in statuses), statuses
        assert not any(s.startswith("STATUS=WEDGED") for s in statuses), statuses
    finally:
        code = gateway.terminate()
    assert code == 0, gateway.log()
    listener.wait_for(lambda f: "STOPPING=1" in f, 10.0, "STOPPING=1 on SIGTERM")
