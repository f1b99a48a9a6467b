"""`edge-gateway`: the daemon. Wires config -> cameras -> pipeline -> spool -> MQTT, and stops cleanly."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Sequence

import cv2

from edge.batcher import FrameBatcher
from edge.config import DEFAULT_CONFIG_PATH, ConfigError, GatewayConfig, load_config
from edge.commands import DeviceCommands, SnapshotTap
from edge.factory import capture_settings, load_classifier, mqtt_settings
from edge.fleet import CommandRouter
from edge.health import HealthMonitor
from edge.homeassistant import HomeAssistantDiscovery
from edge.live_config import EXIT_RESTART, LiveCamera
from edge.logsetup import setup_logging
from edge.model_updates import ModelUpdates, StartupError
from edge.models.metadata import ModelMetadataError
from edge.models.store import ModelStoreError
from edge.mqtt import MqttReporter
from edge.pipeline import InferencePipeline
from edge.results import ResultPublisher
from edge.serving.base import Classifier, ClassifierError
from edge.serving.savedmodel import SavedModelError
from edge.spool import Spool, SpoolError
from edge.status_file import write_status
from edge.systemd import Supervisor, SystemdNotifier, pipeline_progress

logger = logging.getLogger(__name__)

EXIT_CONFIG = 2
EXIT_STARTUP = 1


class Gateway:
    """The running daemon's parts and their lifecycle."""

    def __init__(self, config: GatewayConfig, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path  # cmd/config persists patches here
        self.exit_status = 0
        self.stop_requested = threading.Event()
        self.health = HealthMonitor(config.device_id)
        try:
            config.spool.path.parent.mkdir(parents=True, exist_ok=True)
            self.spool = Spool(config.spool.path, max_bytes=int(config.spool.max_mb * 1048576), sync=config.spool.sync)
        except (SpoolError, OSError) as exc:
            raise StartupError(f"spool.path {config.spool.path}: {exc}") from None
        self.reporter = MqttReporter(mqtt_settings(config), config.device_id, self.spool, on_event=self._event)
        self.frame_ready = threading.Event()
        self.cameras = [
            LiveCamera(s, on_event=self._event, frame_ready=self.frame_ready) for s in capture_settings(config)
        ]
        self.classifier: Classifier | None = None
        self.pipeline: InferencePipeline | None = None
        self.publisher: ResultPublisher | None = None
        self.snapshots: SnapshotTap | None = None
        self.updates: ModelUpdates | None = None
        if config.registry is not None:
            self.updates = ModelUpdates(config, self.reporter, self.health, self._event, self.stop_requested)
        # One router for all commands: deploy/rollback (model_updates.py) + ping/config/snapshot/restart-camera.
        self.commands: CommandRouter = self.updates.commands if self.updates is not None else CommandRouter(self.reporter)
        DeviceCommands(self).register(self.commands)
        self.homeassistant: HomeAssistantDiscovery | None = None
        if config.homeassistant.enabled:
            self.homeassistant = HomeAssistantDiscovery(config, self.reporter)
        self.notifier = SystemdNotifier()  # a no-op unless started by systemd (NOTIFY_SOCKET)
        self.supervisor: Supervisor | None = None
        self._status_file_error: str | None = None

    def request_restart(self, reason: str) -> None:
        """Stop cleanly soon (after the command's reply is out) and exit with EXIT_RESTART."""
        logger.warning("restart requested: %s", reason)
        self.exit_status = EXIT_RESTART
        timer = threading.Timer(0.5, self.stop_requested.set)
        timer.daemon = True
        timer.start()

    def emit(self, kind: str, payload: dict[str, Any]) -> None:
        self._event(kind, payload)

    def _event(self, kind: str, payload: dict[str, Any]) -> None:
        logger.info("event %s %s", kind, payload)
        try:
            self.reporter.publish_event(kind, dict(payload))
        except Exception as exc:  # a full disk must not take the camera thread down
            logger.error("could not spool event %s: %s", kind, exc)

    def start(self) -> None:
        self.reporter.start()
        if self.homeassistant is not None:
            self.homeassistant.start()
        if self.updates is not None:
            self.updates.start_commands()
        else:
            self.commands.start()
        try:
            if self.updates is not None:
                self.classifier = self.updates.initial_classifier()
                if self.classifier is None:  # stopped while waiting for the first version
                    return
            else:
                self.classifier = load_classifier(self.config)
        except (ModelStoreError, ModelMetadataError, ClassifierError, SavedModelError) as exc:
            self.reporter.stop(flush_timeout_s=1.0)
            raise StartupError(str(exc)) from None
        self.publisher = ResultPublisher(
            self.reporter,
            self.config.device_id,
            k=self.config.model.top_k,
            on_change_only=self.config.results.publish == "on_change",
            min_score=self.config.results.min_score,
        )
        batcher = FrameBatcher(
            self.cameras, self.frame_ready, self.config.serving.max_batch_size, self.config.serving.max_wait_ms / 1000.0
        )
        self.snapshots = SnapshotTap(self.publisher.submit)  # remembers each camera's last frame for cmd/snapshot
        self.pipeline = InferencePipeline(batcher, self.classifier, self.snapshots)
        self.publisher.start()
        self.pipeline.start()
        if self.updates is not None:
            self.updates.start(self.pipeline)
        for cam in self.cameras:
            cam.start()
        self._event("gateway_started", {"model": self._model_health(), "cameras": [c.name for c in self.cameras]})
        # READY: model loaded, cameras started, MQTT connected or spooling. From now on the watchdog
        # is fed only while the inference loop turns (frames classified, or idle without frames).
        self.notifier.ready(self.status_text())
        self.supervisor = Supervisor(self.notifier, pipeline_progress(self.pipeline, max_stall_s=10.0),
                                     self.status_text).start()

    def status_text(self) -> str:
        """The one-line STATUS= systemd shows: fps, model version, broker state, spool depth."""
        mqtt = self.reporter.stats()
        fps = sum(c.stats().process_fps for c in self.cameras)
        try:
            version = self.pipeline.classifier.info.version if self.pipeline else None
        except ClassifierError:
            version = None
        return (f"{fps:.1f} fps classified, model {self.config.model.name} v{version}, "
                f"broker {mqtt['state']}, spool {mqtt['spool'].get('depth')}")

    def _model_health(self) -> dict[str, Any]:
        assert self.pipeline is not None or self.classifier is not None
        classifier = self.pipeline.classifier if self.pipeline is not None else self.classifier
        doc = self._classifier_health(classifier)
        if self.updates is not None:
            doc["rollout"] = self.updates.summary()
        return doc

    def _classifier_health(self, classifier: Classifier) -> dict[str, Any]:
        backend = getattr(classifier, "health", None)
        doc: dict[str, Any] = {"name": self.config.model.name, "backend": backend() if backend else
                               {"backend": self.config.serving.backend, "state": "ok"}}
        try:
            info = classifier.info
        except ClassifierError as exc:  # a remote backend that is not reachable yet
            doc.update(version=None, runtime=self.config.serving.backend, error=str(exc))
            return doc
        doc.update(version=info.version, runtime=info.runtime,
                   input={"name": info.image_input.name, "dtype": info.image_input.dtype,
                          "shape": [info.image_input.height, info.image_input.width, info.image_input.channels]})
        return doc

    def health_snapshot(self) -> dict[str, Any]:
        assert self.classifier is not None and self.pipeline is not None and self.publisher is not None
        inference = self.pipeline.stats()
        inference["errors_recent"] = bool(
            self.pipeline.errors
            and (self.pipeline.last_classified_mono is None
                 or self.pipeline.last_classified_mono < time.monotonic() - self.config.health.interval_s)
        )
        return self.health.snapshot(
            cameras=[c.stats().as_dict() for c in self.cameras],
            model=self._model_health(),
            inference=inference,
            results=self.publisher.stats(),
            mqtt=self.reporter.stats(),
        )

    def run_until_stopped(self) -> None:
        next_health = time.monotonic()
        while not self.stop_requested.is_set():
            interval = self.config.health.interval_s  # cmd/config may change it
            if time.monotonic() >= next_health:
                try:
                    snapshot = self.health_snapshot()
                    self.reporter.publish_health(snapshot)
                    self._write_status_file(snapshot)
                    if self.updates is not None:  # retained; re-sent so a broker restart cannot lose it
                        self.reporter.publish_retained("model", self.updates.summary())
                    if self.homeassistant is not None:
                        self.homeassistant.tick()
                except Exception:  # health must never take the daemon down
                    logger.exception("health snapshot failed")
                next_health = time.monotonic() + interval
            self.stop_requested.wait(max(0.05, min(1.0, next_health - time.monotonic())))

    def _write_status_file(self, snapshot: dict[str, Any]) -> None:
        """For `edgectl status`; a read-only or missing /run must not disturb anything else."""
        path = self.config.health.status_file
        if path is None:
            return
        try:
            write_status(path, snapshot, interval_s=self.config.health.interval_s)
            self._status_file_error = None
        except OSError as exc:
            if str(exc) != self._status_file_error:
                logger.warning("cannot write status file %s: %s (edgectl status will not see this gateway)", path, exc)
            self._status_file_error = str(exc)

    def shutdown(self) -> None:
        """Stop cameras, classify nothing more, spool what is queued, tell the broker `stopped`."""
        logger.info("shutting down")
        self.notifier.stopping()
        if self.supervisor is not None:
            self.supervisor.stop()
        stoppers = [threading.Thread(target=c.stop, args=(3.0,), daemon=True) for c in self.cameras]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(4.0)
        if self.updates is not None:
            self.updates.stop()  # its router is self.commands
        else:
            self.commands.stop(2.0)
        if self.pipeline is not None:
            self.pipeline.stop(5.0)
        if self.publisher is not None:
            self.publisher.stop(5.0)
        self.reporter.stop(flush_timeout_s=3.0,
                           final_status="restarting" if self.exit_status == EXIT_RESTART else "stopped")
        self.spool.close()
        if self.pipeline is not None:
            self.pipeline.classifier.close()
        elif self.classifier is not None:
            self.classifier.close()
        logger.info("stopped")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-gateway",
        description="Edge camera classification gateway: cameras -> model -> MQTT.",
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the gateway (the default)")
    for p in (parser, run):
        p.add_argument("--config", type=Path, default=None,
                       help=f"gateway TOML config (default {DEFAULT_CONFIG_PATH})")
        p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None,
                       help="override log_level from the config")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config_path = args.config or DEFAULT_CONFIG_PATH
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"edge-gateway: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(args.log_level or config.log_level)
    # The capture and inference threads are the parallelism; OpenCV's own pool would only add
    # hand-offs between threads on a busy box (at capacity on 2 cores: 2-8% more frames/s without it).
    cv2.setNumThreads(1)
    try:
        gateway = Gateway(config, config_path)
    except StartupError as exc:
        print(f"edge-gateway: cannot start: {exc}", file=sys.stderr)
        return EXIT_STARTUP

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s", signal.Signals(signum).name)
        gateway.stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        gateway.start()
    except StartupError as exc:
        logger.error("cannot start: %s", exc)
        print(f"edge-gateway: cannot start: {exc}", file=sys.stderr)
        gateway.spool.close()
        return EXIT_STARTUP
    try:
        gateway.run_until_stopped()
    finally:
        gateway.shutdown()
    return gateway.exit_status


if __name__ == "__main__":
    sys.exit(main())
