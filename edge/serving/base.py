"""The one protocol every classifier backend implements, and the facts it exposes.

A backend turns a batch of model-ready pixels into class probabilities. Which backend runs is
chosen by config (`serving.backend`); the pipeline only sees :class:`Classifier`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edge.models.metadata import VersionMetadata

logger = logging.getLogger(__name__)

MAX_INFERENCE_THREADS = 16  # the pipeline never runs more inference threads than this
DEFAULT_MAX_BATCH_SIZE = 8  # serving.max_batch_size's default


def serving_shape(preferred_batch_size: int | None, concurrency: int, max_batch_size: int) -> tuple[int, int]:
    """(inference threads, images per classify() call): how the pipeline drives a classifier that
    prefers ``preferred_batch_size`` (None: as configured) and runs ``concurrency`` calls at once,
    with ``serving.max_batch_size``. Runtime selection times every candidate in this same shape."""
    batch = max_batch_size if not preferred_batch_size else max(1, min(max_batch_size, int(preferred_batch_size)))
    return max(1, min(MAX_INFERENCE_THREADS, int(concurrency or 1))), batch


@dataclass(frozen=True)
class ImageInput:
    """The image tensor a model's serving signature takes."""

    name: str
    dtype: str  # numpy dtype name: "uint8", "float32", ...
    height: int
    width: int
    channels: int = 3


@dataclass(frozen=True)
class ClassifierInfo:
    model_name: str
    version: int
    image_input: ImageInput
    output_name: str
    metadata: VersionMetadata
    runtime: str  # "tensorflow", later "litert", "tfserving", ...


@runtime_checkable
class Classifier(Protocol):
    """Batch in (N x H x W x C in the model's input dtype), probabilities out (N x classes).

    Besides classify() and close(), every backend states what the pipeline needs to size its work
    (no capability probing): ``preferred_batch_size`` (None: use serving.max_batch_size; LiteRT
    says 1), ``concurrency`` (how many classify() calls may run at once: one inference thread
    each) and ``health()`` (the ``model.backend`` document of health).
    """

    @property
    def info(self) -> ClassifierInfo: ...

    @property
    def preferred_batch_size(self) -> int | None: ...

    @property
    def concurrency(self) -> int: ...

    def classify(self, batch: np.ndarray) -> np.ndarray: ...

    def health(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class ClassifierBase:
    """Defaults for the optional parts of :class:`Classifier`: batches as configured, one call at a
    time, health ``{"backend": <backend>, "state": "ok"}``. Backends and test doubles derive from it."""

    backend = "embedded"

    @property
    def preferred_batch_size(self) -> int | None:
        return None

    @property
    def concurrency(self) -> int:
        return 1

    def health(self) -> dict[str, Any]:
        return {"backend": self.backend, "state": "ok"}

    def close(self) -> None:
        return None


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return result
