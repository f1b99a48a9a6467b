"""Helpers for the embedded backend's runtime selection tests: model versions copied into a store,
pure-colour images, golden images with a TensorFlow reference, and the rule a selection must follow."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.models.golden import read_image, write_reference
from edge.models.store import ModelVersion
from edge.serving.embedded import EmbeddedClassifier
from edge.serving.preprocess import FramePreprocessor

RED, GREEN, BLUE = (0, 0, 255), (0, 255, 0), (255, 0, 0)  # BGR, pure (the frames in tests.support.frames are 230)


def copy_version(src: Path, store: Path, name: str, version: int = 1) -> ModelVersion:
    dst = store / name / str(version)
    shutil.copytree(src, dst)
    return ModelVersion(name, version, dst)


def solid(bgr: tuple[int, int, int], size: tuple[int, int] = (90, 120)) -> np.ndarray:
    img = np.zeros((*size, 3), dtype=np.uint8)
    img[:] = bgr
    return img


def classify_images(classifier: Any, images: list[np.ndarray]) -> np.ndarray:
    pre = FramePreprocessor(classifier.info.image_input, classifier.info.metadata.preprocess)
    return classifier.classify(pre.batch_to_input(np.stack([pre.to_model_pixels(i) for i in images])))


def assert_fastest_passing(selection: dict[str, Any]) -> None:
    """The decision follows the measured figures: the chosen candidate passed and no passing one was faster."""
    cands = selection["candidates"]
    chosen = cands[selection["candidate"]]
    assert chosen["ok"], selection
    passing = {k: v["img_per_s"] for k, v in cands.items() if v["ok"]}
    assert chosen["img_per_s"] == max(passing.values()), selection
    assert selection["runtime"] == chosen["runtime"] and selection["precision"] == chosen["precision"]


def add_golden(version: ModelVersion, images: dict[str, np.ndarray]) -> None:
    """Golden images + reference.json computed by TensorFlow, as `edgectl model package` does."""
    folder = version.path / "assets.extra" / "golden"
    folder.mkdir(parents=True)
    for name, img in images.items():
        cv2.imwrite(str(folder / name), img)
    tf_classifier = EmbeddedClassifier(version, runtime="tensorflow")
    scores = classify_images(tf_classifier, [read_image(folder / n) for n in images])
    write_reference(version.path, dict(zip(images, scores)), output=tf_classifier.info.output_name)
    tf_classifier.close()
