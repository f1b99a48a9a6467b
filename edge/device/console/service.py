"""`Console`: the local web console as one part the gateway starts and stops.

It owns the live-view encoder, the history ring, the recent events, the Prometheus metrics and
the HTTP server. The gateway hands it :class:`~edge.device.console.settings.ConsoleSources` and
calls three things on its own paths: :meth:`Console.observe_batch` (inference thread: two
histogram updates), :meth:`Console.wrap_sink` (the result sink, for capture->publish latency) and
:meth:`Console.record_event`.
"""
from __future__ import annotations

import logging
from typing import Any

from edge.device.console.api import ConsoleApi
from edge.device.console.auth import Authenticator
from edge.device.console.frames import LiveFrames
from edge.device.console.history import History, RecentEvents
from edge.device.console.metrics import GatewayMetrics, ObservingSink
from edge.device.console.server import ConsoleServer
from edge.device.console.settings import ConsoleSettings, ConsoleSources
from edge.inference.results import ResultSink

logger = logging.getLogger(__name__)


class Console:
    """Live view, status page, snapshots and /metrics over HTTP(S), off the inference path."""

    def __init__(self, settings: ConsoleSettings, sources: ConsoleSources) -> None:
        self.settings = settings
        self._sources = sources
        self.frames = LiveFrames(sources.snapshots, settings.live_fps)
        self.history = History(sources.cameras)
        self.events = RecentEvents()
        self.auth = Authenticator(settings.token, settings.password_hash)
        self.metrics = GatewayMetrics(sources, self.stats)
        self.api = ConsoleApi(settings, sources, self.frames, self.history, self.events, self.metrics, self.auth)
        self.server = ConsoleServer(settings, self.api.handle, ticks=[(self.history.interval_s, self._sample)])

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        """Listen (StartupError when the address cannot be had)."""
        self.server.start()
        logger.info("console: %s (authentication: %s)", self.url, self.auth.kind)

    def stop(self) -> None:
        self.server.stop()

    def observe_batch(self, frames: int, inference_ms: float) -> None:
        self.metrics.observe_batch(frames, inference_ms / 1000.0)

    def wrap_sink(self, sink: ResultSink) -> ResultSink:
        return ObservingSink(sink, self.metrics)

    def record_event(self, kind: str, payload: dict[str, Any]) -> None:
        self.events.add(kind, payload)

    def stats(self) -> dict[str, float]:
        return {"encodes": self.frames.encodes, "encode_seconds": self.frames.encode_seconds,
                "cpu_seconds": self.server.cpu_seconds, "auth_refusals": self.auth.refused,
                "busy_refusals": self.server.busy_refusals}

    def _sample(self) -> None:
        sources = self._sources
        try:
            cameras = sources.camera_stats()
        except Exception as exc:
            logger.debug("console: camera stats unavailable: %s", exc)
            return
        pipeline = results = None
        try:
            pipeline = sources.pipeline_stats()
            results = sources.results_stats()
        except Exception as exc:  # not serving yet: fps still plotted
            logger.debug("console: pipeline stats unavailable: %s", exc)
        self.history.add(cameras, pipeline, results)
