"""The one protocol every classifier backend implements, and the facts it exposes.

A backend turns a batch of model-ready pixels into class probabilities. Which backend runs is
chosen by config (`serving.backend`); the pipeline only sees :class:`Classifier`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from edge.models.metadata import VersionMetadata

logger = logging.getLogger(__name__)



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
    """Batch in (N x H x W x C in the model's input dtype), probabilities out (N x classes)."""

    info: ClassifierInfo

    def classify(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
