"""The sd_notify protocol against a real AF_UNIX datagram NOTIFY_SOCKET bound by the test
(the gateway under systemd's NOTIFY_SOCKET: tests/e2e/test_gateway_systemd.py)."""
from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from edge.device.systemd import ProgressReport, Supervisor, SystemdNotifier, pipeline_progress
from edge.inference.batcher import FrameBatcher
from edge.inference.pipeline import InferencePipeline
from tests.support.notify import NotifyListener
from tests.support.waits import wait_until

try:
    import systemd.daemon  # noqa: F401

    BACKENDS = ["socket", "libsystemd"]
except ImportError:  # the code works without systemd-python; only the socket path exists then
    BACKENDS = ["socket"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_ready_and_status_arrive(notify_listener: NotifyListener, monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_listener.address)
    notifier = SystemdNotifier(use_libsystemd=backend == "libsystemd")
    assert notifier.enabled and notifier.backend == backend
    assert notifier.ready("model colour v2, 2 cameras, broker connected")
    assert notifier.status("5.0 fps\nmodel v2")  # a newline would split the field: it becomes a space
    assert notifier.stopping()
    fields = notify_listener.wait_for(lambda f: "STOPPING=1" in f)
    first = notify_listener.messages()[0]
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


def test_watchdog_enabled_reads_usec_and_pid(notify_listener: NotifyListener) -> None:
    base = {"NOTIFY_SOCKET": notify_listener.address}
    assert SystemdNotifier(environ={**base, "WATCHDOG_USEC": "30000000"}).watchdog_enabled() == 30.0
    mine = {**base, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    assert SystemdNotifier(environ=mine).watchdog_enabled() == 3.0
    assert SystemdNotifier(environ={**mine, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_enabled() is None
    assert SystemdNotifier(environ={**base, "WATCHDOG_USEC": "soon"}).watchdog_enabled() is None
    assert SystemdNotifier(environ={"WATCHDOG_USEC": "3000000"}).watchdog_enabled() is None  # no socket


def test_supervisor_pings_only_while_progressing(notify_listener: NotifyListener) -> None:
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": notify_listener.address, "WATCHDOG_USEC": "300000"})
    state = {"alive": True}
    supervisor = Supervisor(notifier, progress=lambda: ProgressReport(state["alive"], "loop turning"),
                            status_text=lambda: "fps 5.0, model v2, broker connected")
    assert supervisor.interval_s == pytest.approx(0.1)  # WatchdogSec / 3
    supervisor.start()
    try:
        notify_listener.wait_for(lambda f: f.count("WATCHDOG=1") >= 3, what="watchdog pings while alive")
        assert "STATUS=fps 5.0, model v2, broker connected" in notify_listener.fields()
        state["alive"] = False
        fields = notify_listener.wait_for(lambda f: sum(x.startswith("STATUS=WEDGED") for x in f) >= 4,
                                   what="wedged status updates")
        after_wedged = fields[next(i for i, x in enumerate(fields) if x.startswith("STATUS=WEDGED")):]
        assert "WATCHDOG=1" not in after_wedged  # pings stopped: systemd will restart the service
        assert supervisor.withheld >= 4
        state["alive"] = True
        count = len(fields)
        notify_listener.wait_for(lambda f: "WATCHDOG=1" in f[count:], what="pings after recovery")
    finally:
        supervisor.stop()


def test_supervisor_treats_a_failing_progress_check_as_wedged(notify_listener: NotifyListener) -> None:
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": notify_listener.address, "WATCHDOG_USEC": "3000000"})

    def broken() -> ProgressReport:
        raise RuntimeError("pipeline gone")

    supervisor = Supervisor(notifier, progress=broken, status_text=lambda: "s")
    report = supervisor.tick()
    assert not report.alive and "pipeline gone" in report.detail
    fields = notify_listener.wait_for(lambda f: any("pipeline gone" in x for x in f))
    assert "WATCHDOG=1" not in fields


def test_supervisor_without_watchdog_sends_status_only(notify_listener: NotifyListener) -> None:
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": notify_listener.address})
    supervisor = Supervisor(notifier, progress=lambda: ProgressReport(True), status_text=lambda: "idle",
                            interval_s=0.05)
    supervisor.start()
    try:
        notify_listener.wait_for(lambda f: f.count("STATUS=idle") >= 3)
    finally:
        supervisor.stop()
    assert "WATCHDOG=1" not in notify_listener.fields() and supervisor.pings == 0


@pytest.mark.slow
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
    wait_until(lambda: not progress().alive, 10.0, interval_s=0.1, message="a stopped loop to read as stalled")
    assert "stalled" in progress().detail
