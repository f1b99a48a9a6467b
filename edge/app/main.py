"""`edge-gateway`: argv, signals and exit codes around :class:`edge.app.gateway.Gateway`.

A config change that arrived over MQTT and needs a restart is pending until the gateway has started
with it (edge.config.pending): a start that fails with it puts the previous file back and starts
again, so a remote patch can make a device restart but never keep it from starting.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import cv2

from edge.app.gateway import Gateway
from edge.app.parser import build_parser
from edge.config import pending
from edge.config.loader import load_config
from edge.errors import EXIT_CONFIG, EXIT_STARTUP, ConfigError, StartupError
from edge.util.logsetup import setup_logging
from edge.util.paths import DEFAULT_CONFIG_PATH

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartFailure:
    exit_status: int
    message: str  # the line for stderr
    reason: str  # why, for the revert record


def start_gateway(config_path: Path, args: argparse.Namespace) -> Gateway | StartFailure:
    """Load the config and start the gateway on it (signals installed), or say why it cannot start."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        return StartFailure(EXIT_CONFIG, f"edge-gateway: config error: {exc}", f"config error: {exc}")
    setup_logging(args.log_level or config.log_level)
    # The capture and inference threads are the parallelism; OpenCV's own pool would only add
    # hand-offs between threads on a busy box (at capacity on 2 cores: 2-8% more frames/s without it).
    cv2.setNumThreads(1)
    try:
        gateway = Gateway(config, config_path)
    except StartupError as exc:
        return StartFailure(EXIT_STARTUP, f"edge-gateway: cannot start: {exc}", f"cannot start: {exc}")

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s", signal.Signals(signum).name)
        gateway.stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        gateway.start()
    except StartupError as exc:
        logger.error("cannot start: %s", exc)
        gateway.spool.close()
        return StartFailure(EXIT_STARTUP, f"edge-gateway: cannot start: {exc}", f"cannot start: {exc}")
    return gateway


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config_path = Path(args.config or DEFAULT_CONFIG_PATH)
    change = pending.begin_attempt(config_path)
    if change is not None and change.attempts > pending.MAX_ATTEMPTS:
        pending.revert(config_path, change, f"the gateway did not finish starting with it "
                                            f"({change.attempts - 1} attempts)")
        change = None
    started = start_gateway(config_path, args)
    if isinstance(started, StartFailure) and change is not None:
        print(f"{started.message} (reverting the config change to {', '.join(change.changed)})", file=sys.stderr)
        pending.revert(config_path, change, started.reason)
        started = start_gateway(config_path, args)
    if isinstance(started, StartFailure):
        print(started.message, file=sys.stderr)
        return started.exit_status
    gateway = started
    try:
        if gateway.pipeline is not None:  # really started (not stopped while waiting for a first model)
            pending.confirm(config_path)
            reverted = pending.take_reverted(config_path)
            if reverted is not None:
                gateway.emit("config_reverted", reverted)
        gateway.run_until_stopped()
    finally:
        gateway.shutdown()
    return gateway.exit_status


if __name__ == "__main__":
    sys.exit(main())
