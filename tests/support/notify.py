"""A NOTIFY_SOCKET for tests: what systemd listens on, bound by the test (`sd_notify` datagrams)."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.waits import wait_until


class NotifyListener:
    """A bound AF_UNIX SOCK_DGRAM socket (a path, or `@name` in the abstract namespace) that keeps
    every datagram, one sd_notify message each, with its arrival time."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._path = None if address.startswith("@") else Path(address)
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self._lock = threading.Lock()
        self._messages: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-listener", daemon=True)
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
                self._messages.append((time.time(), data.decode(errors="replace").split("\n")))

    def messages(self) -> list[list[str]]:
        with self._lock:
            return [fields for _, fields in self._messages]

    def fields(self) -> list[str]:
        return [f for m in self.messages() for f in m]

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout_s: float = 20.0,
                 what: str = "datagrams") -> list[str]:
        """Until `predicate(all fields so far)` holds; returns the fields (`wait_until`'s contract)."""
        wait_until(lambda: predicate(self.fields()), timeout_s, interval_s=0.02,
                   message=f"{what} (the last fields when the wait began: {self.fields()[-20:]})")
        return self.fields()

    def ready_after(self, t: float) -> float | None:
        """Arrival time of the first READY=1 at or after `t` (time.time()), if any."""
        with self._lock:
            for at, fields in self._messages:
                if at >= t and "READY=1" in fields:
                    return at
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
