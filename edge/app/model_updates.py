"""Model versions from the OCI registry, wired into the daemon: state, installer, rollout, commands.

Only used when the config has a `[registry]` section. The gateway asks this for the classifier to
start with (the recorded serving version, or the first install, waiting for it), hands it the
pipeline once running, and stops it on shutdown.

Commands (both operational, see :class:`edge.util.trustroot.Sensitivity`):

- ``deploy {"ref"?}``: check now; a `ref` must be on the configured registry.
- ``rollback {}``: back to the previous version on disk. ``rollback {"signed": <rollback
  document>}``: allow the older version and digest the document names (rollback protection refuses
  it otherwise), then check the ref it names (or the followed one) at once.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.app.wiring import (
    device_target,
    load_candidate,
    load_classifier,
    model_base,
    registry_client,
    rollout_settings,
)
from edge.config.schema import GatewayConfig
from edge.device.health import HealthInputs, HealthMonitor
from edge.errors import (
    ArtifactError,
    ClassifierError,
    CommandError,
    ModelMetadataError,
    ModelStoreError,
    RolloutError,
    SavedModelError,
    SignedDocumentError,
    StartupError,
)
from edge.inference.pipeline import InferencePipeline
from edge.models.artifact.legacy import DEPRECATION
from edge.models.artifact.signing import load_model_public_key
from edge.models.state import ModelState, RolloutState, StateStore, choose_serving, recover
from edge.rollout.installer import ModelInstaller
from edge.rollout.manager import RolloutManager
from edge.serving.base import Classifier
from edge.transport.commands import CommandRouter
from edge.transport.outbox import MqttReporter
from edge.util.ociref import Reference
from edge.util.signed import DocType
from edge.util.trustroot import Sensitivity, TrustRoot

logger = logging.getLogger(__name__)

LOAD_ERRORS = (ModelStoreError, ModelMetadataError, ClassifierError, SavedModelError)


class ModelUpdates:
    """The registry side of a running gateway: its rollout manager and the deploy/rollback commands."""

    def __init__(
        self,
        config: GatewayConfig,
        reporter: MqttReporter,
        health: HealthMonitor,
        emit: Callable[[str, dict[str, Any]], None],
        stop_requested: threading.Event,
        trust: TrustRoot,
    ) -> None:
        self.config = config
        self.reporter = reporter
        self.health = health
        self.stop_requested = stop_requested
        self.trust = trust
        self.emit = emit
        self._listeners: list[Callable[[], None]] = []
        self.rollout = self._build_rollout(emit)

    def register(self, router: CommandRouter) -> None:
        router.register("deploy", self._cmd_deploy, {"ref": str}, sensitivity=Sensitivity.OPERATIONAL)
        router.register("rollback", self._cmd_rollback, {"signed": dict}, sensitivity=Sensitivity.OPERATIONAL)

    def start(self, pipeline: InferencePipeline) -> None:
        self.rollout.pipeline = pipeline
        self.rollout.start()

    def summary(self) -> dict[str, Any]:
        return self.rollout.summary()

    # -- for desired state (edge.device.desired.ModelControl) ------------------------------------

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Called (quickly, on the rollout's thread) whenever the model state changes."""
        self._listeners.append(listener)

    def model_state(self) -> ModelState:
        return self.rollout.state_snapshot()

    def deploy(self, ref: str, retry: bool) -> None:
        target = self.rollout.watcher.parse_deploy_ref(ref)  # RolloutError: another registry, unreadable
        if retry and target.digest is not None:
            self.rollout.forget_bad(target.digest)
        self.rollout.deploy(ref)

    def rollback(self) -> None:
        self.rollout.rollback()

    def stop(self) -> None:
        self.rollout.stop(10.0)

    def _build_rollout(self, emit: Callable[[str, dict[str, Any]], None]) -> RolloutManager:
        """State (recovered after a power cut), installer and rollout manager for the configured model."""
        reg = self.config.registry
        assert reg is not None
        public_key = None
        if reg.public_key is not None:
            try:
                public_key = load_model_public_key(reg.public_key)
            except ArtifactError as exc:
                raise StartupError(f"registry.public_key: {exc}") from None
            if isinstance(public_key, Ed25519PublicKey):
                logger.warning("registry.public_key %s: %s", reg.public_key, DEPRECATION)
        base = model_base(self.config)
        try:
            base.mkdir(parents=True, exist_ok=True)
            state_store = StateStore(base)
            state = recover(state_store.load(), base)
            installer = ModelInstaller(base, registry_client(reg), state_store, public_key=public_key,
                                       max_bytes=int(reg.max_mb * 1048576), target=device_target(self.config))
            installer.cleanup()
            state_store.save(state)
        except OSError as exc:
            raise StartupError(f"model.store {base}: {exc}") from None
        return RolloutManager(
            ref=Reference.parse(reg.ref), installer=installer, state_store=state_store, state=state,
            loader=lambda version: load_candidate(self.config, version), settings=rollout_settings(self.config),
            emit=emit, publish_state=self._publish_model_state)

    def _publish_model_state(self, doc: dict[str, Any]) -> None:
        self.reporter.publish_retained("model", doc)
        for listener in self._listeners:
            listener()

    def _cmd_deploy(self, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.rollout.deploy(payload.get("ref"))
        except RolloutError as exc:
            raise CommandError(str(exc)) from None

    def _cmd_rollback(self, payload: dict[str, Any]) -> dict[str, Any]:
        if "signed" in payload:
            return self._signed_rollback(payload["signed"])
        try:
            return self.rollout.rollback()
        except RolloutError as exc:
            raise CommandError(str(exc)) from None

    def _signed_rollback(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """Allow the older version a signed rollback document names, then check for it now."""
        try:
            doc = self.trust.verify(envelope, DocType.ROLLBACK)
            content = doc.content
            if content["model"] != self.config.model.name:
                raise SignedDocumentError(f"payload.content.model: the document is for model {content['model']!r}, "
                                          f"this device serves {self.config.model.name!r}")
            target = str(self.rollout.active_ref())
            if "ref" in content:
                target = str(self.rollout.watcher.parse_deploy_ref(content["ref"]))  # same registry only
            self.trust.accept(doc)
        except (SignedDocumentError, RolloutError) as exc:
            self.emit("signed_document_refused", {"command": "rollback", "reason": str(exc)})
            raise CommandError(f"signed rollback refused: {exc}; nothing changed") from None
        self.rollout.allow_rollback(content["version"], content["digest"], doc.expires, doc.counter)
        self.emit("signed_document_accepted", {"command": "rollback", **doc.describe(),
                                               "version": content["version"], "digest": content["digest"]})
        try:
            queued = self.rollout.deploy(target)
        except RolloutError as exc:
            raise CommandError(f"rollback allowed, but the check could not be queued: {exc}") from None
        return {"allowed": {"version": content["version"], "digest": content["digest"]}, **queued}

    def initial_classifier(self) -> Classifier | None:
        """The recorded serving version (or the newest trusted one); else the first install, waiting."""
        rollout = self.rollout
        chosen = choose_serving(rollout.state, model_base(self.config))
        if chosen is not None:
            try:
                classifier = load_classifier(self.config, chosen)
            except LOAD_ERRORS as exc:
                state = rollout.state
                if chosen.version not in state.installed:  # placed by hand: leave it, say so, use the registry
                    raise StartupError(f"model {self.config.model.name} version {chosen.version}: {exc}") from None
                logger.error("cannot load installed version %d (%s); removing it and installing from the "
                             "registry", chosen.version, exc)
                if state.serving_version == chosen.version:
                    state.serving_version = state.serving_digest = None
                rollout.installer.remove(chosen.version, state)
                return self.initial_classifier()
            state = rollout.state
            if state.serving_version != chosen.version:
                state.previous_version = state.previous_digest = None
            state.serving_version = chosen.version
            state.serving_digest = state.installed.get(chosen.version)
            if state.state is not RolloutState.ROLLED_BACK:
                state.state = RolloutState.SERVING
            rollout.state_store.save(state)
            return classifier

        def waiting(message: str) -> None:
            self.health.waiting_for_model = message
            mqtt = self.reporter.stats()
            summary = rollout.summary()
            self.reporter.publish_health(self.health.snapshot(HealthInputs(
                model={"name": self.config.model.name, "version": None, "rollout": summary},
                rollout_state=RolloutState.parse(summary["state"]), rollout_error=summary.get("last_error"),
                model_problems=tuple(summary.get("problems") or ()),
                mqtt=mqtt, mqtt_connected=bool(mqtt["connected"]), spool_error=mqtt["spool"].get("last_error"))))
            self.reporter.publish_retained("model", rollout.summary())

        first = rollout.bootstrap(self.stop_requested, on_wait=waiting)
        self.health.waiting_for_model = None
        return first
