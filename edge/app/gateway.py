"""`edge-gateway`: the daemon. Wires config -> cameras -> pipeline -> spool -> MQTT, and stops cleanly."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from camera.live import LiveCamera
from edge.app.model_updates import ModelUpdates
from edge.app.wiring import capture_settings, load_classifier, mqtt_settings
from edge.config.schema import GatewayConfig
from edge.device.commands import DeviceCommands
from edge.device.health import HealthMonitor
from edge.device.status_file import write_status
from edge.device.systemd import Supervisor, SystemdNotifier, pipeline_progress
from edge.errors import (
    EXIT_RESTART,
    ClassifierError,
    ModelMetadataError,
    ModelStoreError,
    SavedModelError,
    SpoolError,
    StartupError,
)
from edge.inference.batcher import FrameBatcher
from edge.inference.pipeline import InferencePipeline
from edge.inference.results import ResultPublisher
from edge.inference.snapshots import SnapshotTap
from edge.serving.base import Classifier
from edge.transport.commands import CommandRouter
from edge.transport.homeassistant import HomeAssistantDiscovery
from edge.transport.outbox import MqttReporter
from edge.transport.spool import Spool

logger = logging.getLogger(__name__)


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
