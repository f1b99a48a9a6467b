"""Builders that turn the validated config into the parts' own settings and objects."""
from __future__ import annotations

import logging

from camera import CaptureSettings, Roi
from edge.config.schema import GatewayConfig
from edge.models.metadata import PreprocessSpec
from edge.models.store import ModelStore, ModelVersion
from edge.serving.base import Classifier
from edge.transport.mqtt import MqttSettings

logger = logging.getLogger(__name__)


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
            decode=cam.decode,
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


def preprocess_override(config: GatewayConfig) -> PreprocessSpec | None:
    """`[model.preprocess]` from the config, which overrides the version's edge.json."""
    p = config.model.preprocess
    if p is None:
        return None
    return PreprocessSpec(color=p.color, resize=p.resize, mean=p.mean, std=p.std)


def load_classifier(config: GatewayConfig, version: ModelVersion | None = None) -> Classifier:
    """Load `version` (default: the configured one, resolved in the store) with the configured backend."""
    override = preprocess_override(config)
    if config.serving.backend == "tfserving":
        from edge.serving.tfserving import (
            TFServingClassifier,  # no TensorFlow import on this path
        )

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
    from edge.serving.embedded import (
        EmbeddedClassifier,  # TensorFlow only if TF ends up serving
    )

    if version is None:
        version = ModelStore(config.model.store).resolve(config.model.name, config.model.version)
    return EmbeddedClassifier(version, preprocess_override=override, threads=config.serving.threads,
                              runtime=config.serving.runtime, interpreters=config.serving.interpreters)
