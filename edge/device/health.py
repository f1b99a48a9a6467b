"""The health snapshot: one JSON document with everything an operator looks at first.

`state` is ``degraded`` with the reasons in ``problems`` when a camera is not online, the serving
backend is not ok, inference or the spool failed recently, a model rollout reported an error, or
the broker is disconnected. The reasons are computed from typed values (:class:`HealthInputs`);
the document keeps the parts' own ``stats()`` sections as they are.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from camera import CameraStats
from edge.models.state import RolloutState

logger = logging.getLogger(__name__)

# in-process inference runtimes (tens to hundreds of MB each): which ones this process has loaded
INFERENCE_RUNTIMES = ("tensorflow", "openvino", "ai_edge_litert")


@dataclass(frozen=True)
class HealthInputs:
    """What one health snapshot is made of: the typed facts problems are judged on, and the JSON sections."""

    cameras: Sequence[CameraStats] = ()
    model: dict[str, Any] = field(default_factory=dict)  # the `model` section (name, version, runtime, backend, rollout)
    backend_state: str = "ok"  # "ok" | "connecting" | "degraded"
    backend_error: str | None = None
    rollout_state: RolloutState | None = None  # None without a registry
    rollout_error: str | None = None
    model_problems: Sequence[str] = ()  # e.g. a followed channel whose signed statement expired
    inference: dict[str, Any] = field(default_factory=dict)
    inference_errors_recent: bool = False
    inference_error: str | None = None
    results: dict[str, Any] = field(default_factory=dict)
    results_errors_recent: bool = False
    results_error: str | None = None
    mqtt: dict[str, Any] = field(default_factory=dict)  # MqttReporter.stats(), including its `spool` section
    mqtt_connected: bool = False
    spool_error: str | None = None


def problems(inputs: HealthInputs, waiting_for_model: str | None = None) -> list[str]:
    """Why the gateway is degraded, one line each; [] when it is ok."""
    found: list[str] = []
    if waiting_for_model:
        found.append(waiting_for_model)
    if inputs.rollout_error and inputs.rollout_state is not RolloutState.ROLLED_BACK:
        found.append(f"model rollout: {inputs.rollout_error}")
    found += [f"model: {problem}" for problem in inputs.model_problems]
    found += [f"camera {cam.name} {cam.state}" for cam in inputs.cameras if cam.state != "online"]
    if inputs.backend_state != "ok":
        found.append(f"serving backend {inputs.backend_state}: {inputs.backend_error}")
    if inputs.inference_errors_recent:
        found.append(f"inference errors: {inputs.inference_error}")
    if inputs.results_errors_recent:
        found.append(f"spool errors: {inputs.results_error}")
    if inputs.spool_error:
        found.append(f"spool: {inputs.spool_error}")
    if not inputs.mqtt_connected:
        found.append("broker disconnected")
    return found


class HealthMonitor:
    """Builds health snapshots; decides `ok` or `degraded`."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.started_wall = time.time()
        self.started_mono = time.monotonic()
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # first call primes the counter
        self.waiting_for_model: str | None = None  # set while a first model version is being installed

    def snapshot(self, inputs: HealthInputs) -> dict[str, Any]:
        found = problems(inputs, self.waiting_for_model)
        memory = self._process.memory_info()
        return {
            "ts": round(time.time(), 3),
            "device": self.device_id,
            "state": "degraded" if found else "ok",
            "problems": found,
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "started_at": round(self.started_wall, 3),
            "model": inputs.model,
            "cameras": [cam.as_dict() for cam in inputs.cameras],
            "inference": inputs.inference,
            "results": inputs.results,
            "mqtt": {k: v for k, v in inputs.mqtt.items() if k != "spool"},
            "spool": inputs.mqtt.get("spool", {}),
            "process": {
                "cpu_percent": round(self._process.cpu_percent(None), 1),
                "rss_mb": round(memory.rss / 1048576, 1),
                "threads": self._process.num_threads(),
                "system_cpu_percent": psutil.cpu_percent(None),
                "system_memory_percent": psutil.virtual_memory().percent,
                "tensorflow_imported": "tensorflow" in sys.modules,
                "runtimes_imported": [name for name in INFERENCE_RUNTIMES if name in sys.modules],
            },
        }
