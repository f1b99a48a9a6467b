"""Chaos parts, the gateway: `edge-gateway` with a real NOTIFY_SOCKET (READY=1 is what a restart waits
for), its config, and its status file (see tests/chaos/__init__.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.chaos.broker import DEVICE
from tests.fixtures.gateway import GATEWAY_BIN
from tests.support.config import CameraSpec, render_config
from tests.support.notify import NotifyListener
from tests.support.waits import wait_until

GRPC_BACKOFF_CAP_S = 5.0  # edge.serving.tfserving: grpc.max_reconnect_backoff_ms


class Gateway:
    """`edge-gateway run --config …` with NOTIFY_SOCKET set; stopped by PID."""

    def __init__(self, work: Path, config_text: str, notify: NotifyListener, name: str = "gw") -> None:
        self.config = work / f"{name}.toml"
        self.config.write_text(config_text)
        self.log_path = work / f"{name}.log"
        self.notify = notify
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.starts = 0
        self.ready_times: list[float] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Gateway:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", NOTIFY_SOCKET=self.notify.address)
        with open(self.log_path, "ab") as log:
            self.started_at = time.time()
            self.proc = subprocess.Popen([str(GATEWAY_BIN), "run", "--config", str(self.config)],
                                         stdout=log, stderr=log, env=env, stdin=subprocess.DEVNULL)
        self.starts += 1
        return self

    def wait_ready(self, timeout_s: float = 240.0) -> float:
        """Seconds from start to READY=1 on the notify socket."""
        def ready() -> float | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode} before READY:\n{self.tail()}")
            return self.notify.ready_after(self.started_at)
        at = wait_until(ready, timeout_s, interval_s=0.1, message="READY=1 from the gateway")
        self.ready_times.append(at - self.started_at)
        return at - self.started_at

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(15)

    def terminate(self, timeout_s: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def gateway_config(work: Path, cameras: list[CameraSpec], broker_url: str, store: Path, spool: Path,
                   status: Path, serving: dict | None = None, registry_ref: str | None = None,
                   extra: str = "") -> str:
    sections = extra
    if registry_ref:
        sections += "\n".join(["", "[registry]", f'ref = "{registry_ref}"', "poll_interval_s = 2.0",
                               "insecure = true", "", "[rollout]", "probation_s = 3.0", ""])
    return render_config(DEVICE, cameras, store, "colour", broker_url, spool, health_interval_s=0.5,
                         keepalive_s=3, extra_sections=sections, serving=serving, status_file=status)


def read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
