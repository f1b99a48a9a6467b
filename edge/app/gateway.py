"""The daemon's parts and their lifecycle: config -> cameras -> pipeline -> spool -> MQTT, and a clean stop.

The gateway owns the parts and wires them; each part gets what it needs passed in (the device
commands a :class:`~edge.device.commands.DeviceContext`, model updates the reporter and health,
Home Assistant its :class:`~edge.transport.homeassistant.DiscoverySettings`). Nothing reaches
back into this object.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from camera.live import LiveCamera
from edge.app.console_sources import console_settings, console_sources
from edge.app.fleet_state import desired_agent, start_desired
from edge.app.model_updates import ModelUpdates
from edge.app.wiring import camera_settings, discovery_settings, load_classifier, model_base, mqtt_settings
from edge.config.patch import LiveConfig, PatchOutcome
from edge.config.schema import GatewayConfig
from edge.device.commands import DeviceCommands, DeviceContext, DeviceStatus
from edge.device.console.service import Console
from edge.device.desired import DesiredStateAgent
from edge.device.health import HealthInputs, HealthMonitor
from edge.device.status_file import write_status
from edge.device.systemd import Supervisor, SystemdNotifier, pipeline_progress
from edge.errors import (
    EXIT_RESTART,
    ClassifierError,
    ModelMetadataError,
    ModelStoreError,
    SavedModelError,
    SignedDocumentError,
    SpoolError,
    StartupError,
)
from edge.inference.batcher import FrameBatcher
from edge.inference.calibration import CalibrationSampler
from edge.inference.pipeline import ClassifiedBatch, InferencePipeline
from edge.inference.results import ResultPublisher
from edge.inference.snapshots import SnapshotTap
from edge.models.state import RolloutState
from edge.serving.base import Classifier
from edge.serving.candidates import CACHE_DIR, CALIBRATION_DIR
from edge.transport.commands import CommandRouter
from edge.transport.homeassistant import HomeAssistantDiscovery
from edge.transport.mqtt import Availability
from edge.transport.outbox import MqttReporter
from edge.transport.spool import Spool
from edge.util.trustroot import TrustRoot

logger = logging.getLogger(__name__)


class Gateway:
    """The running daemon's parts and their lifecycle."""

    def __init__(self, config: GatewayConfig, config_path: Path | None = None) -> None:
        self.live_config = LiveConfig(config, config_path)  # cmd/config patches go through it
        self.exit_status = 0
        self.stop_requested = threading.Event()
        self.health = HealthMonitor(config.device_id)
        self.console: Console | None = None  # emit() feeds it: set before any part can emit
        try:
            config.spool.path.parent.mkdir(parents=True, exist_ok=True)
            self.spool = Spool(config.spool.path, max_bytes=int(config.spool.max_mb * 1048576), sync=config.spool.sync)
        except (SpoolError, OSError) as exc:
            raise StartupError(f"spool.path {config.spool.path}: {exc}") from None
        self.reporter = MqttReporter(mqtt_settings(config), config.device_id, self.spool, on_event=self.emit)
        try:  # the fleet root (out of band) and the counters of the signed documents accepted so far
            self.trust = TrustRoot(config.device_id, config.trust.root_key, config.trust_state_file)
        except SignedDocumentError as exc:
            raise StartupError(str(exc)) from None
        self.frame_ready = threading.Event()
        self.cameras = [LiveCamera(camera_settings(cam), on_event=self.emit, frame_ready=self.frame_ready)
                        for cam in config.cameras]
        self.classifier: Classifier | None = None
        self.pipeline: InferencePipeline | None = None
        self.publisher: ResultPublisher | None = None
        self.snapshots = SnapshotTap()
        # camera frames for int8 calibration (edge.serving.candidates), embedded backend only
        self.calibration = CalibrationSampler(model_base(config) / CACHE_DIR / CALIBRATION_DIR) \
            if config.serving.backend == "embedded" else None
        self.commands = CommandRouter(self.reporter)
        self.updates: ModelUpdates | None = None
        if config.registry is not None:
            self.updates = ModelUpdates(config, self.reporter, self.health, self.emit, self.stop_requested,
                                        self.trust)
            self.updates.register(self.commands)
        DeviceCommands(DeviceContext(
            config=self.live_config, cameras=self.cameras, snapshots=self.snapshots, status=self.device_status,
            apply_live=self._apply_live, request_restart=self.request_restart, emit=self.emit,
            started_mono=self.health.started_mono, trust=self.trust)).register(self.commands)
        self.homeassistant: HomeAssistantDiscovery | None = None
        if config.homeassistant.enabled:
            self.homeassistant = HomeAssistantDiscovery(discovery_settings(config), self.reporter, self.snapshots)
        self.desired: DesiredStateAgent | None = desired_agent(self.live_config, self.reporter, self.updates,
                                                               self.emit, self.request_restart, self._apply_live)
        if config.console.enabled:
            self.console = Console(console_settings(config), console_sources(
                config, self.cameras, self.snapshots, health=self.health_snapshot,
                status_state=lambda: self.device_status().state, pipeline=lambda: self.pipeline,
                publisher=lambda: self.publisher, mqtt_stats=self.reporter.stats, model=self._model_health))
        self.notifier = SystemdNotifier()  # a no-op unless started by systemd (NOTIFY_SOCKET)
        self.supervisor: Supervisor | None = None
        self._status_file_error: str | None = None

    @property
    def config(self) -> GatewayConfig:
        return self.live_config.current

    def request_restart(self, reason: str) -> None:
        """Stop cleanly soon (after the command's reply is out) and exit with EXIT_RESTART."""
        logger.warning("restart requested: %s", reason)
        self.exit_status = EXIT_RESTART
        timer = threading.Timer(0.5, self.stop_requested.set)
        timer.daemon = True
        timer.start()

    def emit(self, kind: str, payload: dict[str, Any]) -> None:
        """An event: logged, and spooled for `events` (a full disk must not take the caller's thread down)."""
        logger.info("event %s %s", kind, payload)
        if self.console is not None:
            self.console.record_event(kind, payload)
        try:
            self.reporter.publish_event(kind, dict(payload))
        except Exception as exc:
            logger.error("could not spool event %s: %s", kind, exc)

    def start(self) -> None:
        if self.console is not None:  # first: an address that cannot be had stops the start cleanly
            self.console.start()
        self.reporter.start()
        if self.homeassistant is not None:
            self.homeassistant.start()
        self.commands.start()  # commands queue up while a first version installs
        if self.desired is not None:  # so does the desired state's model step
            start_desired(self.desired, self.reporter)
        try:
            if self.updates is not None:
                self.classifier = self.updates.initial_classifier()
                if self.classifier is None:  # stopped while waiting for the first version
                    return
            else:
                self.classifier = load_classifier(self.config)
        except (ModelStoreError, ModelMetadataError, ClassifierError, SavedModelError) as exc:
            self.commands.stop(1.0)
            if self.desired is not None:
                self.desired.stop(1.0)
            if self.homeassistant is not None:
                self.homeassistant.stop(1.0)
            if self.console is not None:
                self.console.stop()
            self.reporter.stop(flush_timeout_s=1.0)
            raise StartupError(str(exc)) from None
        config = self.config
        sink = self.reporter if self.console is None else self.console.wrap_sink(self.reporter)
        if self.homeassistant is not None:  # top-1 per camera for Home Assistant, throttled
            sink = self.homeassistant.wrap_sink(sink)
        self.publisher = ResultPublisher(sink, config.device_id, k=config.model.top_k,
                                         on_change_only=config.results.publish == "on_change",
                                         min_score=config.results.min_score)
        batcher = FrameBatcher(self.cameras, self.frame_ready, config.serving.max_batch_size,
                               config.serving.max_wait_ms / 1000.0)
        self.pipeline = InferencePipeline(batcher, self.classifier, self._deliver)
        self.publisher.start()
        self.pipeline.start()
        if self.updates is not None:
            self.updates.start(self.pipeline)
        for cam in self.cameras:
            cam.start()
        self.emit("gateway_started", {"model": self._model_health(), "cameras": [c.name for c in self.cameras]})
        # READY: model loaded, cameras started, MQTT connected or spooling. From now on the watchdog
        # is fed only while the inference loop turns (frames classified, or idle without frames).
        self.notifier.ready(self.status_text())
        self.supervisor = Supervisor(self.notifier, pipeline_progress(self.pipeline, max_stall_s=10.0),
                                     self.status_text).start()

    def _deliver(self, batch: ClassifiedBatch) -> None:
        """The pipeline's output: remembered for snapshots, then handed to the publisher."""
        self.snapshots.record(batch)
        if self.console is not None:
            self.console.observe_batch(len(batch.items), batch.inference_ms)
        assert self.publisher is not None
        self.publisher.submit(batch)

    def _apply_live(self, outcome: PatchOutcome) -> None:
        """A validated, persisted patch whose every change applies to the running gateway."""
        new = outcome.new
        for index in sorted({int(p[1]) for p in outcome.paths if p[0] == "cameras"}):
            self.cameras[index].reconfigure(camera_settings(new.cameras[index]))
        if self.publisher is not None:  # not serving yet: it is built from the current config when it starts
            self.publisher.reconfigure(k=new.model.top_k, on_change_only=new.results.publish == "on_change",
                                       min_score=new.results.min_score)
        if ("log_level",) in outcome.paths:
            logging.getLogger().setLevel(new.log_level.upper())

    def _serving_version(self) -> int | None:
        try:
            return self.pipeline.classifier.info.version if self.pipeline is not None else None
        except ClassifierError:
            return None

    def status_text(self) -> str:
        """The one-line STATUS= systemd shows: fps, model version, broker state, spool depth."""
        mqtt = self.reporter.stats()
        fps = sum(c.stats().process_fps for c in self.cameras)
        return (f"{fps:.1f} fps classified, model {self.config.model.name} v{self._serving_version()}, "
                f"broker {mqtt['state']}, spool {mqtt['spool'].get('depth')}")

    def device_status(self) -> DeviceStatus:
        """For `ping`: the health state (or starting / waiting-for-model), the serving version, the rollout state."""
        state = "starting"
        if self.pipeline is not None and self.publisher is not None:
            try:
                state = str(self.health_snapshot()["state"])
            except Exception as exc:
                state = f"unknown ({exc})"
        elif self.health.waiting_for_model:
            state = "waiting-for-model"
        model_state = str(self.updates.summary().get("state")) if self.updates is not None else None
        return DeviceStatus(state, self._serving_version(), model_state)

    def _model_health(self) -> dict[str, Any]:
        classifier = self.pipeline.classifier if self.pipeline is not None else self.classifier
        assert classifier is not None
        doc: dict[str, Any] = {"name": self.config.model.name, "backend": classifier.health()}
        try:
            info = classifier.info
        except ClassifierError as exc:  # a remote backend that is not reachable yet
            doc.update(version=None, runtime=self.config.serving.backend, error=str(exc))
        else:
            doc.update(version=info.version, runtime=info.runtime,
                       input={"name": info.image_input.name, "dtype": info.image_input.dtype,
                              "shape": [info.image_input.height, info.image_input.width, info.image_input.channels]})
        if self.updates is not None:
            doc["rollout"] = self.updates.summary()
        return doc

    def health_snapshot(self) -> dict[str, Any]:
        assert self.classifier is not None and self.pipeline is not None and self.publisher is not None
        pipeline, publisher = self.pipeline, self.publisher
        inference = pipeline.stats()
        inference["errors_recent"] = errors_recent = bool(
            pipeline.errors
            and (pipeline.last_classified_mono is None
                 or pipeline.last_classified_mono < time.monotonic() - self.config.health.interval_s)
        )
        model = self._model_health()
        backend = model["backend"]
        rollout = model.get("rollout")
        mqtt = self.reporter.stats()
        results = publisher.stats()
        return self.health.snapshot(HealthInputs(
            cameras=[c.stats() for c in self.cameras],
            model=model,
            backend_state=str(backend.get("state", "ok")),
            backend_error=backend.get("last_error"),
            rollout_state=RolloutState.parse(rollout["state"]) if rollout else None,
            rollout_error=rollout.get("last_error") if rollout else None,
            model_problems=tuple(rollout.get("problems") or ()) if rollout else (),
            inference=inference,
            inference_errors_recent=errors_recent,
            inference_error=pipeline.last_error,
            results=results,
            results_errors_recent=bool(results["errors_recent"]),
            results_error=publisher.last_error,
            mqtt=mqtt,
            mqtt_connected=bool(mqtt["connected"]),
            spool_error=mqtt["spool"].get("last_error"),
        ))

    def run_until_stopped(self) -> None:
        next_health = time.monotonic()
        while not self.stop_requested.is_set():
            interval = self.config.health.interval_s  # cmd/config may change it
            if time.monotonic() >= next_health:
                try:
                    snapshot = self.health_snapshot()
                    self.reporter.publish_health(snapshot)
                    self._write_status_file(snapshot)
                    if self.calibration is not None:
                        self.calibration.tick(self.snapshots, [camera.name for camera in self.cameras])
                    if self.updates is not None:  # retained; re-sent so a broker restart cannot lose it
                        self.reporter.publish_retained("model", self.updates.summary())
                    if self.desired is not None:  # re-publishes `reported` if the broker has not taken it
                        self.desired.poke()
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
        if self.console is not None:
            self.console.stop()
        if self.supervisor is not None:
            self.supervisor.stop()
        stoppers = [threading.Thread(target=c.stop, args=(3.0,), daemon=True) for c in self.cameras]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(4.0)
        self.commands.stop(2.0)
        if self.desired is not None:
            self.desired.stop(2.0)
        if self.homeassistant is not None:
            self.homeassistant.stop(2.0)
        if self.updates is not None:
            self.updates.stop()
        if self.pipeline is not None:
            self.pipeline.stop(5.0)
        if self.publisher is not None:
            self.publisher.stop(5.0)
        self.reporter.stop(flush_timeout_s=3.0,
                           final_status=Availability.RESTARTING if self.exit_status == EXIT_RESTART
                           else Availability.STOPPED)
        self.spool.close()
        if self.pipeline is not None:
            self.pipeline.classifier.close()
        elif self.classifier is not None:
            self.classifier.close()
        logger.info("stopped")
