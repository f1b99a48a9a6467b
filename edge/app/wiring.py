"""Builders that turn the validated config into the parts' own settings and objects.

Settings objects are derived field by name (:func:`edge.util.derive.settings_from`), so a key
added to a config section and to the settings it feeds needs no copy here.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from camera import CaptureSettings, GateSettings, Roi
from edge.config.schema import CameraConfig, GatewayConfig, RegistryConfig
from edge.errors import CandidateLoadError
from edge.models.artifact.pull import Target
from edge.models.metadata import PreprocessSpec
from edge.models.store import ModelStore, ModelVersion
from edge.rollout.policy import RolloutSettings
from edge.serving.base import Classifier
from edge.serving.embedded import EmbeddedClassifier
from edge.serving.tfserving import TFServingClassifier, wait_tfserving_available
from edge.transport import dockerconfig
from edge.transport.homeassistant import DiscoverySettings
from edge.transport.mqtt import MqttSettings
from edge.transport.oci import RegistryClient
from edge.util.derive import settings_from
from edge.util.ociref import Reference
from edge.util.platforms import host_platform, parse_platform

logger = logging.getLogger(__name__)


def camera_settings(cam: CameraConfig) -> CaptureSettings:
    return settings_from(CaptureSettings, cam, renames={"uri": "source", "target_fps": "fps"},
                         rois=tuple(Roi(r.name, r.x, r.y, r.w, r.h) for r in cam.rois),
                         gate=settings_from(GateSettings, cam.gate) if cam.gate is not None else None)


def capture_settings(config: GatewayConfig) -> list[CaptureSettings]:
    return [camera_settings(cam) for cam in config.cameras]


def mqtt_settings(config: GatewayConfig) -> MqttSettings:
    return settings_from(MqttSettings, config.mqtt)


def rollout_settings(config: GatewayConfig) -> RolloutSettings:
    poll = config.registry.poll_interval_s if config.registry is not None else RolloutSettings.poll_interval_s
    return settings_from(RolloutSettings, config.rollout, poll_interval_s=poll,
                         backoff_max_s=min(300.0, max(2.0, poll)))


def discovery_settings(config: GatewayConfig) -> DiscoverySettings:
    ha = config.homeassistant
    return DiscoverySettings(config.device_id, config.mqtt.topic_prefix, ha.discovery_prefix,
                             tuple(cam.name for cam in config.cameras), model_name=config.model.name,
                             registry=config.registry is not None, desired_state=config.fleet.desired_state,
                             score_interval_s=ha.score_interval_s, snapshot_interval_s=ha.snapshot_interval_s)


def registry_client(registry: RegistryConfig) -> RegistryClient:
    """The OCI client for `[registry]`: its username/password, else the docker config it names (if any)."""
    ref = Reference.parse(registry.ref)
    docker_config = registry.docker_config
    lookup = (lambda: dockerconfig.lookup(ref.registry, docker_config)) if docker_config is not None else None
    return RegistryClient(ref.registry, username=registry.username, password=registry.password,
                          insecure=registry.insecure, ca_file=registry.ca_file, timeout_s=registry.timeout_s,
                          credentials=lookup)


def device_target(config: GatewayConfig) -> Target:
    """What variants of a multi-platform version this device takes: `registry.platform` (default: this
    machine) and `registry.accelerators` (default: `litert` when the embedded backend has LiteRT)."""
    reg = config.registry
    platform = parse_platform(reg.platform) if reg is not None and reg.platform else host_platform()
    if reg is not None and reg.accelerators is not None:
        accelerators = tuple(reg.accelerators)
    else:
        litert = config.serving.backend == "embedded" and importlib.util.find_spec("ai_edge_litert") is not None
        accelerators = ("litert",) if litert else ()
    return Target(platform, accelerators)


def preprocess_override(config: GatewayConfig) -> PreprocessSpec | None:
    """`[model.preprocess]` from the config, which overrides the version's edge.json."""
    p = config.model.preprocess
    return None if p is None else settings_from(PreprocessSpec, p)


def model_base(config: GatewayConfig) -> Path:
    return config.model.store / config.model.name


def load_classifier(config: GatewayConfig, version: ModelVersion | None = None) -> Classifier:
    """Load `version` (default: the configured one, resolved in the store) with the configured backend."""
    override = preprocess_override(config)
    if config.serving.backend == "tfserving":
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
    # the embedded backend imports TensorFlow or LiteRT on load, never at import time

    if version is None:
        version = ModelStore(config.model.store).resolve(config.model.name, config.model.version)
    return EmbeddedClassifier(version, preprocess_override=override, threads=config.serving.threads,
                              runtime=config.serving.runtime, interpreters=config.serving.interpreters,
                              precision=config.serving.precision, max_batch_size=config.serving.max_batch_size)


def load_candidate(config: GatewayConfig, version: ModelVersion) -> Classifier:
    """A classifier for a candidate `version` with the configured backend; CandidateLoadError when it cannot load.

    ``tfserving``: waits until the server reports the version AVAILABLE (it loads it from the shared
    store) and pins a new client to it. TF Serving / edge-model-server must then run with a policy
    that keeps at least two versions (``latest { num_versions: 2 }``), so the old version stays
    loaded for the frames still in flight and for rollback.
    """
    try:
        if config.serving.backend == "tfserving":
            wait_tfserving_available(config.serving.target, config.model.name, version.version)
        return load_classifier(config, version)
    except CandidateLoadError:
        raise
    except Exception as exc:  # a broken SavedModel, bad edge.json, wrong signature...
        raise CandidateLoadError(f"version {version.version} cannot be loaded: {exc}") from None
