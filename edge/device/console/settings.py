"""What the console is given: its settings (from `[console]`) and the sources it reads.

The app derives :class:`ConsoleSettings` from the config section and hands over
:class:`ConsoleSources`: callables and objects the console reads, never the gateway itself. Every
callable may raise (a part not started yet, a remote backend not reachable): the console then
shows what it has and leaves the rest out.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from camera import CameraStats
from edge.inference.snapshots import SnapshotTap

logger = logging.getLogger(__name__)

StatsSource = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class ConsoleSettings:
    """The `[console]` section as the console uses it (see edge.config.console.ConsoleConfig)."""

    enabled: bool = False
    bind: str = "127.0.0.1"
    port: int = 8080
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = None
    password_hash: str | None = None
    live_fps: float = 2.0
    max_connections: int = 64
    request_timeout_s: float = 15.0

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert is not None else "http"

    def url(self, port: int | None = None) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"{self.scheme}://{host}:{port or self.port}/"


@dataclass(frozen=True)
class ConsoleSources:
    """Where the console's figures and frames come from (all read-only).

    - `health`: the health snapshot (status page); `status_state` is used while it cannot be built
      (before the first model version is serving): ``starting`` / ``waiting-for-model``;
    - `camera_stats`, `pipeline_stats`, `results_stats`, `mqtt_stats` (with its ``spool`` section),
      `model` (``name``, ``version``, ``runtime``): the parts' own ``stats()``, for /metrics and
      the plots;
    - `snapshots`: each camera's last classified frame, for the live view and latest.jpg.
    """

    device_id: str
    cameras: Sequence[str]
    snapshots: SnapshotTap
    health: StatsSource
    status_state: Callable[[], str]
    camera_stats: Callable[[], Sequence[CameraStats]]
    pipeline_stats: StatsSource
    results_stats: StatsSource
    mqtt_stats: StatsSource
    model: StatsSource
