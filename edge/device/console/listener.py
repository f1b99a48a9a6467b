"""The console's listening socket, which caps open connections where they are accepted.

aiohttp has no connection cap, and counting its request handlers misses TLS connections whose
handshake is still running (they get a handler only once it completes), so a flood of half-open
TLS connections could use up the process's file descriptors, which the MQTT client and the cameras
need too. :class:`CappedListener` counts every accepted socket until it is closed (a closed
socket's ``fileno()`` is -1) and refuses those over the cap at once: a plain ``503`` over HTTP, a
close over TLS (nothing can be said before the handshake).
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from typing import Any

logger = logging.getLogger(__name__)

BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 40\r\n"
        b"Connection: close\r\n\r\nconsole busy: too many open connections\n")
BACKLOG = 64


class CappedListener(socket.socket):
    """A listening TCP socket whose accept() keeps at most `cap` accepted sockets open."""

    def __init__(self, family: int, cap: int, tls: bool) -> None:
        super().__init__(family, socket.SOCK_STREAM)
        self.cap = cap
        self.tls = tls
        self.refused = 0
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def open_connections(self) -> int:
        with self._lock:
            self._open = [conn for conn in self._open if conn.fileno() != -1]
            return len(self._open)

    def accept(self) -> tuple[socket.socket, Any]:
        """The next connection under the cap; those over it are refused here (BlockingIOError when
        none is pending, as the event loop expects)."""
        while True:
            conn, address = super().accept()
            if self.open_connections < self.cap:
                with self._lock:
                    self._open.append(conn)
                return conn, address
            self.refused += 1
            try:
                if not self.tls:
                    conn.setblocking(False)
                    conn.send(BUSY)  # small: it fits the new socket's send buffer
            except OSError:
                pass
            finally:
                conn.close()


def listen(bind: str, port: int, cap: int, tls: bool) -> CappedListener:
    """A CappedListener bound to bind:port and listening (OSError if the address cannot be had)."""
    host = "127.0.0.1" if bind == "localhost" else bind
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = CappedListener(family, cap, tls)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
