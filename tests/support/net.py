"""Loopback helpers: free ports, waiting for a listener, and a server that never answers.

`wait_for_port` raises TimeoutError (not the AssertionError of `tests.support.waits.wait_until`):
it is used by fixtures starting a component, where a port that never opens is a fixture error that
each caller turns into a RuntimeError carrying the component's log.
"""
from __future__ import annotations

import socket
import threading
import time


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, host: str = "127.0.0.1", timeout_s: float = 20.0) -> None:
    """Block until something accepts TCP connections on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s}s")


class SilentServer:
    """Accepts TCP connections on 127.0.0.1:`port` (0: any free port) and never sends a byte: a hung
    camera. `connections` holds every accepted socket; `close()` closes them and the listener."""

    def __init__(self, port: int = 0) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self.connections: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name=f"silent-{self.port}", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(connection)  # read nothing, write nothing

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2.0)
        self._listener.close()
        for connection in self.connections:
            try:
                connection.close()
            except OSError:
                pass
