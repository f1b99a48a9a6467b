"""Model versions from the OCI registry, wired into the daemon: state, installer, rollout, commands.

Only used when the config has a `[registry]` section. The gateway asks this for the classifier to
start with (the recorded serving version, or the first install, waiting for it), hands it the
pipeline once running, and stops it on shutdown.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from edge.app.wiring import load_classifier
from edge.config.schema import GatewayConfig
from edge.device.health import HealthMonitor
from edge.errors import (
    ClassifierError,
    ModelMetadataError,
    ModelStoreError,
    SavedModelError,
    StartupError,
)
from edge.inference.pipeline import InferencePipeline
from edge.serving.base import Classifier
from edge.transport.outbox import MqttReporter

logger = logging.getLogger(__name__)



class ModelUpdates:
    """The registry side of a running gateway."""

    def __init__(
        self,
        config: GatewayConfig,
        reporter: MqttReporter,
        health: HealthMonitor,
        emit: Callable[[str, dict[str, Any]], None],
        stop_requested: threading.Event,
    ) -> None:
        self.config = config
        self.reporter = reporter
        self.health = health
        self._event = emit
        self.stop_requested = stop_requested
        self.rollout: Any = None  # edge.models.rollout.RolloutManager
        self.commands: Any = None  # edge.fleet.CommandRouter
        self._setup_registry()

    def start_commands(self) -> None:
        """Commands queue up while the first version installs."""
        self.commands.start()

    def start(self, pipeline: InferencePipeline) -> None:
        self.rollout.pipeline = pipeline
        self.rollout.start()

    def summary(self) -> dict[str, Any]:
        return self.rollout.summary()

    def stop(self) -> None:
        self.commands.stop(2.0)
        self.rollout.stop(10.0)

    def _setup_registry(self) -> None:
        """Model updates from the registry: state, installer, rollout manager, fleet commands."""
        from edge.models.state import StateStore, recover
        from edge.rollout.installer import ModelInstaller
        from edge.rollout.manager import RolloutManager, RolloutSettings
        from edge.transport.commands import CommandRouter
        from edge.transport.oci import RegistryClient
        from edge.util.ociref import Reference

        reg, roll = self.config.registry, self.config.rollout
        assert reg is not None
        public_key = None
        if reg.public_key is not None:
            from edge.errors import ArtifactError
            from edge.models.artifact import load_public_key

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
        from edge.rollout.validation import load_candidate

        self.rollout = RolloutManager(
            ref=ref, installer=installer, state_store=state_store, state=state,
            loader=lambda version: load_candidate(self.config, version), settings=settings,
            emit=self._event, publish_state=lambda doc: self.reporter.publish_retained("model", doc))
        self.commands = CommandRouter(self.reporter)
        self.commands.register("deploy", self._cmd_deploy, {"ref": str})
        self.commands.register("rollback", self._cmd_rollback, {})

    def _cmd_deploy(self, payload: dict[str, Any]) -> dict[str, Any]:
        from edge.errors import CommandError, RolloutError

        try:
            return self.rollout.deploy(payload.get("ref"))
        except RolloutError as exc:
            raise CommandError(str(exc)) from None

    def _cmd_rollback(self, payload: dict[str, Any]) -> dict[str, Any]:
        from edge.errors import CommandError, RolloutError

        try:
            return self.rollout.rollback()
        except RolloutError as exc:
            raise CommandError(str(exc)) from None

    def initial_classifier(self) -> Classifier | None:
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
                return self.initial_classifier()
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
