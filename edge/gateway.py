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

from camera import CameraCapture, CaptureSettings, Roi
from edge.batcher import FrameBatcher
from edge.config import DEFAULT_CONFIG_PATH, ConfigError, GatewayConfig, load_config
from edge.health import HealthMonitor
from edge.logsetup import setup_logging
from edge.models.metadata import ModelMetadataError, PreprocessSpec
from edge.models.store import ModelStore, ModelStoreError, ModelVersion
from edge.mqtt import MqttReporter, MqttSettings
from edge.pipeline import InferencePipeline
from edge.results import ResultPublisher
from edge.serving.base import Classifier, ClassifierError
from edge.serving.savedmodel import SavedModelError
from edge.spool import Spool, SpoolError

logger = logging.getLogger(__name__)

EXIT_CONFIG = 2
EXIT_STARTUP = 1


class StartupError(Exception):
    """The gateway cannot start (model missing, spool unwritable...); one line for the user."""


def capture_settings(config: GatewayConfig) -> list[CaptureSettings]:
    return [
        CaptureSettings(
            name=cam.name,
            uri=cam.source,
            target_fps=cam.fps,
            size=cam.size,
            rois=tuple(Roi(r.name, r.x, r.y, r.w, r.h) for r in cam.rois),
            loop=cam.loop,
            realtime=cam.realtime,
            watchdog_s=cam.watchdog_s,
            backoff_initial_s=cam.backoff_initial_s,
            backoff_max_s=cam.backoff_max_s,
            open_timeout_s=cam.open_timeout_s,
            read_timeout_s=cam.read_timeout_s,
        )
        for cam in config.cameras
    ]


def mqtt_settings(config: GatewayConfig) -> MqttSettings:
    m = config.mqtt
    return MqttSettings(
        url=m.url,
        client_id=m.client_id,
        username=m.username,
        password=m.password,
        ca_file=m.ca_file,
        cert_file=m.cert_file,
        key_file=m.key_file,
        topic_prefix=m.topic_prefix,
        keepalive_s=m.keepalive_s,
    )


def load_classifier(config: GatewayConfig, version: ModelVersion | None = None) -> Classifier:
    """Load `version` (default: the configured version, resolved in the store) with the configured backend."""
    override = None
    if config.model.preprocess is not None:
        p = config.model.preprocess
        override = PreprocessSpec(color=p.color, resize=p.resize, mean=p.mean, std=p.std)
    if config.serving.backend == "tfserving":
        from edge.serving.tfserving import TFServingClassifier  # no TensorFlow import on this path

        return TFServingClassifier(
            config.serving.target,
            config.model.name,
            version=version.version if version is not None else config.model.version,
            store=config.model.store,
            preprocess_override=override,
            timeout_s=config.serving.timeout_ms / 1000.0,
            send=config.serving.send,
            jpeg_quality=config.serving.jpeg_quality,
        )
    from edge.serving.embedded import EmbeddedClassifier  # imports TensorFlow

    if version is None:
        version = ModelStore(config.model.store).resolve(config.model.name, config.model.version)
    return EmbeddedClassifier(version, preprocess_override=override, threads=config.serving.threads)


class Gateway:
    """The running daemon's parts and their lifecycle."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
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
            CameraCapture(s, on_event=self._event, frame_ready=self.frame_ready) for s in capture_settings(config)
        ]
        self.classifier: Classifier | None = None
        self.pipeline: InferencePipeline | None = None
        self.publisher: ResultPublisher | None = None
        self.rollout: Any = None  # edge.models.rollout.RolloutManager when [registry] is configured
        self.commands: Any = None  # edge.fleet.CommandRouter
        if config.registry is not None:
            self._setup_registry()

    def _setup_registry(self) -> None:
        """Model updates from the registry: state, installer, rollout manager, fleet commands."""
        from edge.fleet import CommandRouter
        from edge.models.installer import ModelInstaller
        from edge.models.rollout import RolloutManager, RolloutSettings
        from edge.models.state import StateStore, recover
        from edge.registry import Reference, RegistryClient

        reg, roll = self.config.registry, self.config.rollout
        assert reg is not None
        public_key = None
        if reg.public_key is not None:
            from edge.models.artifact import ArtifactError, load_public_key

            try:
                public_key = load_public_key(reg.public_key)
            except ArtifactError as exc:
                raise StartupError(f"registry.public_key: {exc}") from None
        ref = Reference.parse(reg.ref)
        client = RegistryClient(ref.registry, username=reg.username, password=reg.password,
                                insecure=reg.insecure, ca_file=reg.ca_file, timeout_s=reg.timeout_s)
        model_base = self.config.model.store / self.config.model.name
        try:
            model_base.mkdir(parents=True, exist_ok=True)
            state_store = StateStore(model_base)
            state = recover(state_store.load(), model_base)
            installer = ModelInstaller(model_base, client, state_store, public_key=public_key,
                                       max_bytes=int(reg.max_mb * 1048576))
            installer.cleanup()
            state_store.save(state)
        except OSError as exc:
            raise StartupError(f"model.store {model_base}: {exc}") from None
        settings = RolloutSettings(
            poll_interval_s=reg.poll_interval_s, keep_versions=roll.keep_versions, tolerance=roll.tolerance,
            latency_factor=roll.latency_factor, require_golden=roll.require_golden, probation_s=roll.probation_s,
            probation_max_error_rate=roll.probation_max_error_rate,
            probation_latency_factor=roll.probation_latency_factor,
            backoff_max_s=min(300.0, max(2.0, reg.poll_interval_s)))
        from edge.models.validation import load_candidate

        self.rollout = RolloutManager(
            ref=ref, installer=installer, state_store=state_store, state=state,
            loader=lambda version: load_candidate(self.config, version), settings=settings,
            emit=self._event, publish_state=lambda doc: self.reporter.publish_retained("model", doc))
        self.commands = CommandRouter(self.reporter)
        self.commands.register("deploy", self._cmd_deploy, {"ref": str})
        self.commands.register("rollback", self._cmd_rollback, {})

    def _cmd_deploy(self, payload: dict[str, Any]) -> dict[str, Any]:
        from edge.fleet import CommandError
        from edge.models.rollout import RolloutError

        try:
            return self.rollout.deploy(payload.get("ref"))
        except RolloutError as exc:
            raise CommandError(str(exc)) from None

    def _cmd_rollback(self, payload: dict[str, Any]) -> dict[str, Any]:
        from edge.fleet import CommandError
        from edge.models.rollout import RolloutError

        try:
            return self.rollout.rollback()
        except RolloutError as exc:
            raise CommandError(str(exc)) from None

    def _registry_classifier(self) -> Classifier | None:
        """The recorded serving version (or the newest trusted one); else the first install, waiting."""
        from edge.models.state import choose_serving

        rollout = self.rollout
        model_base = self.config.model.store / self.config.model.name
        chosen = choose_serving(rollout.state, model_base)
        if chosen is not None:
            try:
                classifier = load_classifier(self.config, chosen)
            except (ModelStoreError, ModelMetadataError, ClassifierError, SavedModelError) as exc:
                state = rollout.state
                if chosen.version not in state.installed:  # placed by hand: leave it, say so, use the registry
                    raise StartupError(f"model {self.config.model.name} version {chosen.version}: {exc}") from None
                logger.error("cannot load installed version %d (%s); removing it and installing from the "
                             "registry", chosen.version, exc)
                if state.serving_version == chosen.version:
                    state.serving_version = state.serving_digest = None
                rollout.installer.remove(chosen.version, state)
                return self._registry_classifier()
            else:
                state = rollout.state
                if state.serving_version != chosen.version:
                    state.previous_version = state.previous_digest = None
                state.serving_version = chosen.version
                state.serving_digest = state.installed.get(chosen.version)
                if state.state not in ("rolled-back",):
                    state.state = "serving"
                rollout.state_store.save(state)
                return classifier

        def waiting(message: str) -> None:
            self.health.waiting_for_model = message
            self.reporter.publish_health(self.health.snapshot(
                cameras=[], model={"name": self.config.model.name, "version": None,
                                   "rollout": rollout.summary()},
                inference={}, results={}, mqtt=self.reporter.stats()))
            self.reporter.publish_retained("model", rollout.summary())

        classifier = rollout.bootstrap(self.stop_requested, on_wait=waiting)
        self.health.waiting_for_model = None
        return classifier

    def _event(self, kind: str, payload: dict[str, Any]) -> None:
        logger.info("event %s %s", kind, payload)
        try:
            self.reporter.publish_event(kind, dict(payload))
        except Exception as exc:  # a full disk must not take the camera thread down
            logger.error("could not spool event %s: %s", kind, exc)

    def start(self) -> None:
        self.reporter.start()
        if self.commands is not None:
            self.commands.start()  # commands queue up while the first version installs
        try:
            if self.rollout is not None:
                self.classifier = self._registry_classifier()
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
        self.pipeline = InferencePipeline(batcher, self.classifier, self.publisher.submit)
        self.publisher.start()
        self.pipeline.start()
        if self.rollout is not None:
            self.rollout.pipeline = self.pipeline
            self.rollout.start()
        for cam in self.cameras:
            cam.start()
        self._event("gateway_started", {"model": self._model_health(), "cameras": [c.name for c in self.cameras]})

    def _model_health(self) -> dict[str, Any]:
        assert self.pipeline is not None or self.classifier is not None
        classifier = self.pipeline.classifier if self.pipeline is not None else self.classifier
        doc = self._classifier_health(classifier)
        if self.rollout is not None:
            doc["rollout"] = self.rollout.summary()
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
        interval = self.config.health.interval_s
        next_health = time.monotonic()
        while not self.stop_requested.is_set():
            if time.monotonic() >= next_health:
                try:
                    self.reporter.publish_health(self.health_snapshot())
                    if self.rollout is not None:  # retained; re-sent so a broker restart cannot lose it
                        self.reporter.publish_retained("model", self.rollout.summary())
                except Exception:  # health must never take the daemon down
                    logger.exception("health snapshot failed")
                next_health = time.monotonic() + interval
            self.stop_requested.wait(max(0.05, min(1.0, next_health - time.monotonic())))

    def shutdown(self) -> None:
        """Stop cameras, classify nothing more, spool what is queued, tell the broker `stopped`."""
        logger.info("shutting down")
        stoppers = [threading.Thread(target=c.stop, args=(3.0,), daemon=True) for c in self.cameras]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(4.0)
        if self.commands is not None:
            self.commands.stop(2.0)
        if self.rollout is not None:
            self.rollout.stop(10.0)
        if self.pipeline is not None:
            self.pipeline.stop(5.0)
        if self.publisher is not None:
            self.publisher.stop(5.0)
        self.reporter.stop(flush_timeout_s=3.0)
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
    try:
        gateway = Gateway(config)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
