"""Loopback helpers: free ports, waiting for a listener, and a server that never answers.

`wait_for_port` keeps the one polling contract of the suite (`tests.support.waits.wait_until`): an
AssertionError naming what it waited for. Fixtures that start a component catch it to raise a
RuntimeError carrying the component's log.
"""
from __future__ import annotations

import socket
import threading

from tests.support.waits import wait_until


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Does something accept a TCP connection on host:port now (within 0.5 s)?"""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, host: str = "127.0.0.1", timeout_s: float = 20.0) -> None:
    """Block until something accepts TCP connections on host:port; AssertionError after `timeout_s`."""
    wait_until(lambda: port_open(port, host), timeout_s, message=f"something listening on {host}:{port}")


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
