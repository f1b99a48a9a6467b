"""A loopback HTTP proxy in front of a real registry that misbehaves on chosen blobs or manifests
(TUF's slow-retrieval and endless-data attacks, made from a real docker-registry's answers).

    proxy = RegistryProxy("127.0.0.1:5000")       # the gateway's registry.ref names proxy.address
    proxy.misbehave("trickle", {layer_digest})    # or "stall", "endless"; only GETs of these digests
    ...
    proxy.heal()                                  # pass everything through again
    proxy.close()                                 # at teardown: the listener and every open response

Every request is forwarded to the registry as it came (method, path, `Accept`, `Range`,
`Authorization`); the answer is relayed as it is, except the GET of a targeted digest
(`/v2/<repo>/blobs/<digest>` or `/v2/<repo>/manifests/<digest>`), answered according to the mode:

- ``trickle``: the registry's status and headers, the first `FAST_BYTES` of the body at once, then
  `TRICKLE_BYTES` every `TRICKLE_INTERVAL_S` (256 bytes/s: slower than the gateway's floor of 1 KiB/s,
  yet a byte arrives far more often than any socket timeout);
- ``stall``: the status, headers and the first `FAST_BYTES`, then nothing;
- ``endless``: the whole body from byte 0 (a `Range` is not passed on, as a registry may ignore it),
  without `Content-Length`, followed by zeros until the client hangs up (at most `ENDLESS_BYTES`:
  a client that reads that far does not bound what it reads, and the test fails on what it got).

Bounded in time: a misbehaving answer ends after `hold_s` (then the connection is closed), when the
client goes away, or at `close()`. `requests` records what was asked (`Seen`: path, `Range`,
status, mode, body bytes sent), so a test can show that a download resumed from where it was cut.
"""
from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAST_BYTES = 64 << 10
TRICKLE_BYTES = 32
TRICKLE_INTERVAL_S = 0.125
MODES = ("pass", "trickle", "stall", "endless")
ENDLESS_BYTES = 64 << 20
FORWARDED = ("Accept", "Range", "Authorization", "User-Agent")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


def named_digest(path: str) -> str | None:
    """The digest a `/v2/<repo>/blobs/<digest>` or `/v2/<repo>/manifests/<digest>` path names (None
    for anything else: tags, referrers, uploads)."""
    parts = path.split("?", 1)[0].split("/")
    return parts[-1] if len(parts) >= 4 and parts[-2] in ("blobs", "manifests") and ":" in parts[-1] else None


@dataclass
class Seen:
    method: str
    path: str
    range: str | None
    mode: str
    status: int = 0
    sent: int = 0  # body bytes sent to the client
    done: bool = False


class RegistryProxy:
    def __init__(self, upstream: str, *, hold_s: float = 30.0) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.hold_s = hold_s
        self.mode = "pass"
        self.targets: frozenset[str] = frozenset()
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # on the client's socket: a blocked write or an idle keep-alive ends

            def do_GET(self) -> None:
                proxy._answer(self)

            def do_HEAD(self) -> None:
                proxy._answer(self)

            def log_message(self, fmt: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="registry-proxy", daemon=True)
        self._thread.start()
        self.address = f"127.0.0.1:{self._server.server_address[1]}"

    # -- control -------------------------------------------------------------------------------------

    def misbehave(self, mode: str, digests: set[str]) -> None:
        """Answer GETs of `digests` (blobs or manifests) in `mode` from now on (open answers keep theirs)."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: one of {MODES}")
        with self._lock:
            self.mode, self.targets = mode, frozenset(digests)

    def heal(self) -> None:
        self.misbehave("pass", set())

    def seen(self, digest: str) -> list[Seen]:
        """The GETs of blob or manifest `digest` so far, oldest first."""
        with self._lock:
            return [s for s in self.requests if s.method == "GET" and named_digest(s.path) == digest]

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # -- answering -----------------------------------------------------------------------------------

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        with self._lock:
            target = request.command == "GET" and named_digest(request.path) in self.targets
            mode = self.mode if target else "pass"
            seen = Seen(request.command, request.path, request.headers.get("Range"), mode)
            self.requests.append(seen)
        headers = {name: request.headers[name] for name in FORWARDED if request.headers.get(name)}
        if mode == "endless":
            headers.pop("Range", None)
        upstream = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            upstream.request(request.command, request.path, headers=headers)
            answer = upstream.getresponse()
            seen.status = answer.status
            misbehaving = mode != "pass" and answer.status in (200, 206)
            request.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() in HOP_BY_HOP or (mode == "endless" and name.lower() == "content-length"):
                    continue
                request.send_header(name, value)
            if misbehaving:
                request.send_header("Connection", "close")
                request.close_connection = True
            request.end_headers()
            if request.command == "HEAD":
                return
            if not misbehaving:
                self._relay(request, answer, seen, limit=None)
            elif mode == "endless":
                self._relay(request, answer, seen, limit=None)
                self._endless(request, seen)
            else:
                self._relay(request, answer, seen, limit=FAST_BYTES)
                if mode == "trickle":
                    self._trickle(request, answer, seen)
                else:
                    self._hold(request)
        except OSError:
            request.close_connection = True  # the client went away (what a cut-off download does) or upstream failed
        finally:
            seen.done = True
            upstream.close()

    def _write(self, request: BaseHTTPRequestHandler, data: bytes, seen: Seen) -> None:
        request.wfile.write(data)
        request.wfile.flush()
        seen.sent += len(data)

    def _relay(self, request: BaseHTTPRequestHandler, answer: http.client.HTTPResponse, seen: Seen,
               limit: int | None) -> None:
        while limit is None or seen.sent < limit:
            piece = answer.read(64 << 10 if limit is None else min(64 << 10, limit - seen.sent))
            if not piece:
                return
            self._write(request, piece, seen)

    def _trickle(self, request: BaseHTTPRequestHandler, answer: http.client.HTTPResponse, seen: Seen) -> None:
        deadline = time.monotonic() + self.hold_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            piece = answer.read(TRICKLE_BYTES)
            if not piece:
                return
            self._write(request, piece, seen)
            self._stop.wait(TRICKLE_INTERVAL_S)

    def _endless(self, request: BaseHTTPRequestHandler, seen: Seen) -> None:
        zeros, padded = bytes(64 << 10), 0
        deadline = time.monotonic() + self.hold_s
        while not self._stop.is_set() and time.monotonic() < deadline and padded < ENDLESS_BYTES:
            self._write(request, zeros, seen)
            padded += len(zeros)

    def _hold(self, request: BaseHTTPRequestHandler) -> None:
        """Send nothing more until the client hangs up, `hold_s` passes or the proxy closes."""
        deadline = time.monotonic() + self.hold_s
        connection: socket.socket = request.connection
        while not self._stop.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([connection], [], [], 0.2)
            if readable and not connection.recv(1, socket.MSG_PEEK):
                return  # end of stream: the client closed the connection
