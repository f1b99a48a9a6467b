"""systemd glue: the notify protocol (READY, STATUS, STOPPING, WATCHDOG) and a watchdog supervisor.

    notifier = SystemdNotifier()                      # no-op when NOTIFY_SOCKET is unset
    notifier.ready("model colour v2, 2 cameras, broker connected")
    supervisor = Supervisor(notifier, progress=pipeline_progress(pipeline), status_text=lambda: "...")
    supervisor.start()
    ...
    notifier.stopping()
    supervisor.stop()

The supervisor pings the watchdog (``WATCHDOG=1``) only while the progress callable says the
pipeline is alive. A wedged inference loop therefore makes the pings stop, and systemd kills and
restarts the service after ``WatchdogSec`` (with ``Restart=on-failure``). It never sends
``WATCHDOG=trigger``: stopping the pings is enough, and it leaves the decision (and the timeout)
to the unit file.

systemd-python's ``systemd.daemon.notify`` is used when importable and the socket comes from the
environment; otherwise the datagram is written to ``$NOTIFY_SOCKET`` directly (a path, or an
abstract socket when it starts with ``@``).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_STATUS_INTERVAL_S = 10.0  # STATUS= period when no watchdog is configured


@dataclass(frozen=True)
class ProgressReport:
    """What the pipeline says about itself: `alive` = the inference loop turned recently."""

    alive: bool
    detail: str = ""


def _libsystemd_notify() -> Callable[[str], Any] | None:
    try:
        from systemd import daemon  # type: ignore[attr-defined]  # systemd-python, optional, untyped
    except ImportError:
        return None
    notify: Callable[[str], Any] = daemon.notify
    return notify


class SystemdNotifier:
    """Sends sd_notify messages to the service manager; every method is a no-op outside systemd.

    `environ` defaults to ``os.environ`` (``NOTIFY_SOCKET``, ``WATCHDOG_USEC``, ``WATCHDOG_PID``).
    Sending never raises: a failed send is logged once and counted in `send_errors`.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, use_libsystemd: bool = True) -> None:
        env = os.environ if environ is None else environ
        self.socket_path: str | None = env.get("NOTIFY_SOCKET") or None
        self._watchdog_usec = env.get("WATCHDOG_USEC")
        self._watchdog_pid = env.get("WATCHDOG_PID")
        # libsystemd reads NOTIFY_SOCKET from the real environment, so only use it for that one.
        from_process_env = environ is None or env.get("NOTIFY_SOCKET") == os.environ.get("NOTIFY_SOCKET")
        self._lib_notify = _libsystemd_notify() if use_libsystemd and from_process_env else None
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.send_errors = 0
        self.sent = 0

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens for notifications."""
        return self.socket_path is not None

    @property
    def backend(self) -> str:
        if not self.enabled:
            return "disabled"
        return "libsystemd" if self._lib_notify is not None else "socket"

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; True when it was sent."""
        if not self.enabled or not fields:
            return False
        message = "\n".join(f.replace("\n", " ") for f in fields)  # one line per field
        try:
            if self._lib_notify is not None:
                if not self._lib_notify(message):
                    raise OSError("sd_notify returned 0")
            else:
                self._send_datagram(message.encode("utf-8"))
        except OSError as exc:
            self.send_errors += 1
            if self.send_errors == 1:
                logger.warning("systemd notify to %s failed: %s", self.socket_path, exc)
            return False
        self.sent += 1
        return True

    def _send_datagram(self, data: bytes) -> None:
        assert self.socket_path is not None
        address = self.socket_path
        if address.startswith("@"):
            address = "\0" + address[1:]
        elif not address.startswith("/"):
            raise OSError(f"NOTIFY_SOCKET {self.socket_path!r} is neither an absolute path nor @abstract")
        with self._lock:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(data, address)

    def ready(self, status: str = "") -> bool:
        """Start-up finished: systemd marks the unit active and starts the watchdog timer."""
        fields = ["READY=1"] + ([f"STATUS={status}"] if status else [])
        return self.notify(*fields, f"MAINPID={os.getpid()}")

    def status(self, text: str) -> bool:
        """Free-form one-line status shown by `systemctl status`."""
        return self.notify(f"STATUS={text}")

    def stopping(self, status: str = "stopping") -> bool:
        """Clean shutdown has begun (TimeoutStopSec runs from here)."""
        return self.notify("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        """One keep-alive ping (``WATCHDOG=1``)."""
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start-up (or stop) time, e.g. while the first model version downloads."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def watchdog_enabled(self) -> float | None:
        """The watchdog timeout in seconds when systemd expects pings from this process, else None."""
        if not self.enabled or not self._watchdog_usec:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            logger.warning("ignoring WATCHDOG_USEC=%r (not a number)", self._watchdog_usec)
            return None
        return usec / 1_000_000 if usec > 0 else None

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def pipeline_progress(pipeline: Any, max_stall_s: float = 10.0,
                      clock: Callable[[], float] = time.monotonic) -> Callable[[], ProgressReport]:
    """A progress callable for an ``edge.pipeline.InferencePipeline`` (or anything with the same fields).

    Alive when the inference loop turned within `max_stall_s` (``last_progress_mono``), whether
    or not it had frames: idle (all cameras offline) is healthy, a loop stuck in a call is not.
    """
    def progress() -> ProgressReport:
        age = clock() - float(pipeline.last_progress_mono)
        classified = getattr(pipeline, "frames_classified", 0)
        if age > max_stall_s:
            return ProgressReport(False, f"inference loop stalled for {age:.0f}s ({classified} frames classified)")
        last = getattr(pipeline, "last_classified_mono", None)
        if last is None or clock() - last > max_stall_s:
            return ProgressReport(True, f"idle: no frames to classify ({classified} so far)")
        return ProgressReport(True, f"{classified} frames classified")
    return progress


class Supervisor:
    """A daemon thread: every interval, STATUS=<status_text()> and, while progress() is alive, WATCHDOG=1.

    `interval_s` defaults to a third of the watchdog timeout (systemd's advice is half; a third
    tolerates one late tick), or 10 s when no watchdog is configured (STATUS only).
    """

    def __init__(self, notifier: SystemdNotifier, progress: Callable[[], ProgressReport],
                 status_text: Callable[[], str], interval_s: float | None = None) -> None:
        self.notifier = notifier
        self._progress = progress
        self._status_text = status_text
        timeout = notifier.watchdog_enabled()
        self.watchdog_s = timeout
        if interval_s is not None and interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s or (timeout / 3.0 if timeout else DEFAULT_STATUS_INTERVAL_S)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pings = 0
        self.withheld = 0  # ticks where the pipeline was wedged and no ping went out
        self.last_report: ProgressReport | None = None

    def tick(self) -> ProgressReport:
        """One round: ask for progress and status, notify; returns the progress report."""
        try:
            report = self._progress()
        except Exception as exc:  # a broken callable must read as "not alive", never kill the thread
            report = ProgressReport(False, f"progress check failed: {exc}")
        try:
            text = self._status_text()
        except Exception as exc:
            text = f"status unavailable: {exc}"
        previous = self.last_report
        self.last_report = report
        if not report.alive:
            text = f"WEDGED: {report.detail}; {text}"
            if previous is None or previous.alive:
                logger.error("pipeline not making progress (%s): withholding watchdog pings", report.detail)
        elif previous is not None and not previous.alive:
            logger.warning("pipeline making progress again (%s)", report.detail)
        self.notifier.status(text)
        if self.watchdog_s is not None:
            if report.alive:
                if self.notifier.watchdog():
                    self.pings += 1
            else:
                self.withheld += 1
        return report

    def start(self) -> Supervisor:
        if self._thread is not None:
            raise RuntimeError("supervisor already started")
        self._thread = threading.Thread(target=self._run, name="systemd-supervisor", daemon=True)
        self._thread.start()
        logger.info("systemd supervisor: %s, watchdog %s, every %.1fs", self.notifier.backend,
                    f"{self.watchdog_s:.1f}s" if self.watchdog_s else "off", self.interval_s)
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.interval_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
