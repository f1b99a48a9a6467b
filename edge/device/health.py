"""The health snapshot: one JSON document with everything an operator looks at first."""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import psutil

logger = logging.getLogger(__name__)


class HealthMonitor:
    """Builds health snapshots from the parts' own stats(); decides `ok` or `degraded`."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.started_wall = time.time()
        self.started_mono = time.monotonic()
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # first call primes the counter
        self.waiting_for_model: str | None = None  # set while a first model version is being installed

    def snapshot(
        self,
        cameras: Sequence[dict[str, Any]],
        model: dict[str, Any],
        inference: dict[str, Any],
        results: dict[str, Any],
        mqtt: dict[str, Any],
    ) -> dict[str, Any]:
        problems: list[str] = []
        if self.waiting_for_model:
            problems.append(self.waiting_for_model)
        rollout = model.get("rollout") or {}
        if rollout.get("state") == "failed" or (rollout.get("last_error") and rollout.get("state") != "rolled-back"):
            problems.append(f"model rollout: {rollout.get('last_error')}")
        for cam in cameras:
            if cam.get("state") != "online":
                problems.append(f"camera {cam.get('name')} {cam.get('state')}")
        backend = model.get("backend", {})
        if backend.get("state") not in (None, "ok"):
            problems.append(f"serving backend {backend.get('state')}: {backend.get('last_error')}")
        if inference.get("errors_recent"):
            problems.append(f"inference errors: {inference.get('last_error')}")
        if results.get("errors_recent"):
            problems.append(f"spool errors: {results.get('last_error')}")
        spool = mqtt.get("spool", {})
        if spool.get("last_error"):
            problems.append(f"spool: {spool['last_error']}")
        if not mqtt.get("connected"):
            problems.append("broker disconnected")
        memory = self._process.memory_info()
        return {
            "ts": round(time.time(), 3),
            "device": self.device_id,
            "state": "degraded" if problems else "ok",
            "problems": problems,
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "started_at": round(self.started_wall, 3),
            "model": model,
            "cameras": list(cameras),
            "inference": inference,
            "results": results,
            "mqtt": {k: v for k, v in mqtt.items() if k != "spool"},
            "spool": spool,
            "process": {
                "cpu_percent": round(self._process.cpu_percent(None), 1),
                "rss_mb": round(memory.rss / 1048576, 1),
                "threads": self._process.num_threads(),
                "system_cpu_percent": psutil.cpu_percent(None),
                "system_memory_percent": psutil.virtual_memory().percent,
                "tensorflow_imported": "tensorflow" in sys.modules,
            },
        }
