"""The console's HTTP server: aiohttp on its own thread and event loop, bounded in every direction.

Nothing here runs on a camera or inference thread. The event loop only parses requests and writes
replies; routes (:class:`~edge.device.console.api.ConsoleApi`, which may encode a JPEG or check a
password) run on a small pool of worker threads. Limits (research notes for issue 14):

- at most `max_connections` open connections, TLS handshakes included: one more gets ``503`` (or,
  over TLS, is closed) as it is accepted (:mod:`~edge.device.console.listener`; aiohttp itself has
  no cap; file descriptors for the MQTT client and the cameras stay free);
- request line and each header at most 8190 bytes, at most 64 headers: ``400``;
- a connection that does not complete a request within `request_timeout_s` (idle, slow, trickling
  sockets), and a reply the client does not take within it, is closed;
- TLS when a certificate is configured, with handshake and shutdown timeouts;
- GET and HEAD only (anything else ``405``), request bodies of at most 1 KiB (``413``).

aiohttp is imported when the server starts, so a gateway without a console never loads it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from edge.device.console.api import Reply, Request
from edge.device.console.listener import CappedListener, listen
from edge.device.console.settings import ConsoleSettings
from edge.errors import StartupError

if TYPE_CHECKING:
    from aiohttp import web

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 8190
MAX_HEADERS = 64
MAX_BODY_BYTES = 1024
WORKERS = 2
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'",
}

Tick = tuple[float, Callable[[], None]]  # (interval s, work run on a worker thread)


def ssl_context(settings: ConsoleSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"console.tls_cert/tls_key ({settings.tls_cert}, {settings.tls_key}): cannot load "
                           f"the certificate and key: {exc}") from None
    return context


class ConsoleServer:
    """Serves `handle` on settings.bind:port until stop(); `ticks` run periodically on the workers."""

    def __init__(self, settings: ConsoleSettings, handle: Callable[[Request], Reply], ticks: Sequence[Tick] = ()) -> None:
        self._settings = settings
        self._handle = handle
        self._ticks = list(ticks)
        self._ssl = ssl_context(settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: str | None = None
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="console-work")
        self.port: int | None = None
        self._listener: CappedListener | None = None
        self.send_timeouts = 0
        self._cpu_lock = threading.Lock()
        self._work_cpu_s = 0.0  # CPU time of routes and periodic work on the worker threads
        self._loop_cpu_s = 0.0  # CPU time of the event loop thread (parsing, writing), sampled

    @property
    def busy_refusals(self) -> int:
        """Connections refused over the cap (503, or closed before the TLS handshake)."""
        return self._listener.refused if self._listener is not None else 0

    @property
    def cpu_seconds(self) -> float:
        """CPU time the console has used so far (its event loop and its workers)."""
        with self._cpu_lock:
            return self._loop_cpu_s + self._work_cpu_s

    def _timed(self, work: Callable[..., Any], *args: Any) -> Any:
        started = time.thread_time()
        try:
            return work(*args)
        finally:
            spent = time.thread_time() - started
            with self._cpu_lock:
                self._work_cpu_s += spent

    @property
    def url(self) -> str:
        return self._settings.url(self.port)

    def start(self, timeout_s: float = 15.0) -> None:
        """Listen, or raise StartupError naming the address and the fix (port in use, no permission...)."""
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise StartupError(f"console did not start listening on {self._settings.bind}:{self._settings.port} "
                               f"within {timeout_s:.0f}s")
        if self._error is not None:
            self._thread.join(5.0)
            raise StartupError(self._error)
        logger.info("console listening on %s", self.url)

    def stop(self, timeout_s: float = 5.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop closed meanwhile
                pass
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.error("console thread did not stop within %.0fs", timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except Exception as exc:  # never take the gateway down from here
            logger.exception("console server failed")
            self._error = self._error or f"console: {exc}"
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        from aiohttp import web  # the console's HTTP framework (~10 MB): loaded only when a console runs

        settings = self._settings
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("GET", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0,
                               keepalive_timeout=settings.request_timeout_s, max_line_size=MAX_LINE_BYTES,
                               max_field_size=MAX_LINE_BYTES, max_headers=MAX_HEADERS)
        await runner.setup()
        protocol = runner.server
        assert protocol is not None
        options: dict[str, Any] = {}
        if self._ssl is not None:
            options["ssl_handshake_timeout"] = 10.0
            if sys.version_info >= (3, 11):
                options["ssl_shutdown_timeout"] = 5.0
        loop = asyncio.get_running_loop()
        try:
            self._listener = listen(settings.bind, settings.port, settings.max_connections, self._ssl is not None)
            server = await loop.create_server(protocol, sock=self._listener, ssl=self._ssl, **options)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's strerror repeats the address
            self._error = (f"console cannot listen on {settings.bind}:{settings.port}: {reason} "
                           "(set console.port to a free port, or console.enabled = false)")
            await runner.cleanup()
            return
        self.port = int(server.sockets[0].getsockname()[1])
        ticks = [asyncio.create_task(self._tick(interval, work)) for interval, work in self._ticks]
        ticks.append(asyncio.create_task(self._account_loop_cpu()))
        self._ready.set()
        await self._stop.wait()
        for task in ticks:
            task.cancel()
        server.close()
        await runner.cleanup()
        await server.wait_closed()

    async def _account_loop_cpu(self) -> None:
        while True:
            spent = time.thread_time()  # this thread runs the loop and nothing else
            with self._cpu_lock:
                self._loop_cpu_s = spent
            await asyncio.sleep(1.0)

    async def _tick(self, interval_s: float, work: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(self._pool, self._timed, work)
            except Exception:
                logger.exception("console: periodic work failed")
            await asyncio.sleep(interval_s)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web  # already loaded by _serve

        console_request = Request(request.path, dict(request.query), request.headers.get("Authorization"),
                                  request.headers.get("If-None-Match"))
        reply = await asyncio.get_running_loop().run_in_executor(self._pool, self._timed, self._handle,
                                                                 console_request)
        headers = {**SECURITY_HEADERS, **reply.headers}
        if reply.status not in (204, 304):
            headers["Content-Type"] = reply.content_type  # as given: /metrics needs its version parameter
        response = web.StreamResponse(status=reply.status, headers=headers)
        if reply.status not in (204, 304):
            response.content_length = len(reply.body)
        await response.prepare(request)
        if reply.body and request.method != "HEAD" and reply.status not in (204, 304):
            try:  # a client that does not read its reply is cut off, not waited for
                await asyncio.wait_for(response.write(reply.body), self._settings.request_timeout_s)
            except asyncio.TimeoutError:
                self.send_timeouts += 1
                if request.transport is not None:
                    request.transport.close()
                return response
        await response.write_eof()
        return response
