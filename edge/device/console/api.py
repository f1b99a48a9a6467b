"""The console's routes, independent of the HTTP framework: a :class:`Request` in, a :class:`Reply` out.

    GET /                          the page (static/index.html)
    GET /static/<file>             the page's scripts, styles, uPlot (read into memory at start:
                                   no request path ever reaches the file system)
    GET /api/config                device, cameras, live-view rate
    GET /api/status                the health snapshot and the recent events
    GET /api/history[?since=T]     an hour of fps / inference ms / capture->publish p99 samples
                                   (only those after unix time T with `since`)
    GET /api/<camera>/latest.jpg   the camera's last classified frame (``?annotated=1``: top labels
                                   and ROI boxes drawn); 204 before its first classified frame;
                                   ``ETag`` + ``If-None-Match`` -> 304; ``X-Edge-Frame``,
                                   ``X-Edge-Captured-At`` and (annotated) ``X-Edge-Labels``
                                   (percent-encoded JSON of what is drawn)
    GET /metrics                   Prometheus text format

Every route needs the configured credentials (:mod:`edge.device.console.auth`). Errors are
``{"error": "..."}`` with 401, 404 or 429. :meth:`ConsoleApi.handle` may block (JPEG encoding, a
password check): the server runs it on its worker threads, never on its event loop.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import quote

from edge.device.console.auth import Authenticator
from edge.device.console.frames import LiveFrames
from edge.device.console.history import History, RecentEvents
from edge.device.console.metrics import CONTENT_TYPE, GatewayMetrics
from edge.device.console.settings import ConsoleSettings, ConsoleSources

logger = logging.getLogger(__name__)

JSON = "application/json"
STATUS_CACHE_S = 1.0
EVENTS_SHOWN = 20
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".md": "text/plain; charset=utf-8",
                 "": "text/plain; charset=utf-8"}
TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Request:
    path: str  # decoded, without the query
    query: Mapping[str, str] = field(default_factory=dict)
    authorization: str | None = None
    if_none_match: str | None = None


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)


def _finite(value: Any) -> Any:
    """JSON for browsers: NaN and infinities become null (JSON.parse refuses them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def json_reply(doc: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Reply:
    try:
        body = json.dumps(doc, default=str, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:  # a NaN somewhere: walk the document only then
        body = json.dumps(_finite(doc), default=str, separators=(",", ":"), allow_nan=False).encode()
    return Reply(status, body, JSON, {"Cache-Control": "no-store", **(headers or {})})


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    return json_reply({"error": message}, status, headers)


class StaticFiles:
    """The files under the package's ``static/`` folder, read once: path -> (bytes, content type, etag)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        root = resources.files("edge.device.console").joinpath("static")
        stack = [("", root)]
        while stack:
            prefix, folder = stack.pop()
            for entry in folder.iterdir():
                name = f"{prefix}{entry.name}"
                if entry.is_dir():
                    stack.append((name + "/", entry))
                    continue
                data = entry.read_bytes()
                suffix = "." + entry.name.rsplit(".", 1)[1] if "." in entry.name else ""
                etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
                self.files[name] = (data, CONTENT_TYPES.get(suffix, "application/octet-stream"), etag)

    def reply(self, name: str, if_none_match: str | None) -> Reply:
        found = self.files.get(name)
        if found is None:
            return error(404, f"no such file: /static/{name[:100]}")
        data, content_type, etag = found
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if if_none_match == etag:
            return Reply(304, b"", content_type, headers)
        return Reply(200, data, content_type, headers)


class ConsoleApi:
    """Routes a request to its reply; the console's only logic between HTTP and the gateway's parts."""

    def __init__(self, settings: ConsoleSettings, sources: ConsoleSources, frames: LiveFrames, history: History,
                 events: RecentEvents, metrics: GatewayMetrics, auth: Authenticator) -> None:
        self._settings = settings
        self._sources = sources
        self._frames = frames
        self._history = history
        self._events = events
        self._metrics = metrics
        self._auth = auth
        self._static = StaticFiles()
        self._status_lock = threading.Lock()
        self._status: tuple[float, dict[str, Any]] | None = None

    def handle(self, request: Request) -> Reply:
        verdict = self._auth.check(request.authorization)
        if not verdict.ok:
            headers = {"WWW-Authenticate": verdict.challenge} if verdict.status == 401 else {
                "Retry-After": str(verdict.retry_after_s)}
            return error(verdict.status, verdict.reason, headers)
        path = request.path
        if path in ("/", "/index.html"):
            return self._static.reply("index.html", request.if_none_match)
        if path == "/favicon.ico":
            return self._static.reply("favicon.svg", request.if_none_match)
        if path.startswith("/static/"):
            return self._static.reply(path[len("/static/"):], request.if_none_match)
        if path == "/metrics":
            return Reply(200, self._metrics.render(), CONTENT_TYPE, {"Cache-Control": "no-store"})
        if path == "/api/config":
            return json_reply({"device": self._sources.device_id, "cameras": list(self._sources.cameras),
                               "live_fps": self._settings.live_fps, "history_interval_s": self._history.interval_s,
                               "auth": self._auth.kind})
        if path == "/api/status":
            return json_reply(self.status())
        if path == "/api/history":
            return json_reply(self._history.series(_number(request.query.get("since"))))
        parts = path.split("/")
        if len(parts) == 4 and parts[:2] == ["", "api"] and parts[3] == "latest.jpg":
            return self._latest(parts[2], request)
        return error(404, f"not found: {path[:100]} (see / for the console, /metrics, /api/status)")

    def status(self) -> dict[str, Any]:
        """The health snapshot (at most one per second however many viewers) and the recent events."""
        with self._status_lock:
            now = time.monotonic()
            if self._status is not None and now - self._status[0] < STATUS_CACHE_S:
                health = self._status[1]
            else:
                try:
                    health = self._sources.health()
                except Exception as exc:  # before the first version serves, health cannot be built
                    logger.debug("console: no health snapshot yet: %s", exc)
                    health = {"device": self._sources.device_id, "state": self._sources.status_state(),
                              "problems": [], "cameras": []}
                self._status = (now, health)
        return {"health": health, "events": self._events.items()[-EVENTS_SHOWN:]}

    def _latest(self, camera: str, request: Request) -> Reply:
        if camera not in self._sources.cameras:
            known = ", ".join(self._sources.cameras)
            return error(404, f"unknown camera {camera[:64]!r} (cameras: {known})")
        annotated = request.query.get("annotated", "").lower() in TRUE
        frame = self._frames.latest(camera, annotated)
        if frame is None:
            return Reply(204, b"", JSON, {"Cache-Control": "no-store"})
        headers = {"Cache-Control": "no-store", "ETag": frame.etag, "X-Edge-Frame": str(frame.frame),
                   "X-Edge-Captured-At": f"{frame.captured_wall:.3f}"}
        if annotated:
            headers["X-Edge-Labels"] = quote(json.dumps(frame.labels, separators=(",", ":")), safe="")
        if request.if_none_match == frame.etag:
            return Reply(304, b"", "image/jpeg", headers)
        return Reply(200, frame.jpeg, "image/jpeg", headers)
