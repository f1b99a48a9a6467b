"""What the gateway hands its console: settings from `[console]`, and read-only sources.

The sources are callables over the gateway's parts (passed in as getters, since the pipeline and
the publisher exist only once a model version serves); a part that is not there yet raises, and
the console leaves its figures out.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from camera import CameraStats
from camera.live import LiveCamera
from edge.config.schema import GatewayConfig
from edge.device.console.settings import ConsoleSettings, ConsoleSources
from edge.inference.pipeline import InferencePipeline
from edge.inference.results import ResultPublisher
from edge.inference.snapshots import SnapshotTap
from edge.util.derive import settings_from

logger = logging.getLogger(__name__)


class NotServing(RuntimeError):
    """The pipeline or publisher does not exist yet (no model version serving)."""


def console_settings(config: GatewayConfig) -> ConsoleSettings:
    return settings_from(ConsoleSettings, config.console)


def console_sources(config: GatewayConfig, cameras: Sequence[LiveCamera], snapshots: SnapshotTap, *,
                    health: Callable[[], dict[str, Any]], status_state: Callable[[], str],
                    pipeline: Callable[[], InferencePipeline | None], publisher: Callable[[], ResultPublisher | None],
                    mqtt_stats: Callable[[], dict[str, Any]], model: Callable[[], dict[str, Any]]) -> ConsoleSources:
    def pipeline_stats() -> dict[str, Any]:
        running = pipeline()
        if running is None:
            raise NotServing("no model version serving yet")
        return running.stats()

    def results_stats() -> dict[str, Any]:
        running = publisher()
        if running is None:
            raise NotServing("no model version serving yet")
        return running.stats()

    def camera_stats() -> list[CameraStats]:
        return [camera.stats() for camera in cameras]

    return ConsoleSources(device_id=config.device_id, cameras=tuple(cam.name for cam in config.cameras),
                          snapshots=snapshots, health=health, status_state=status_state, camera_stats=camera_stats,
                          pipeline_stats=pipeline_stats, results_stats=results_stats, mqtt_stats=mqtt_stats,
                          model=model)
