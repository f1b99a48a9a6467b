"""Test models built with Keras (fixtures that build them once: tests/fixtures/models.py, model_server.py).

The colour model: a tiny Keras model with known answers.

Input `image` uint8 [None,64,64,3] RGB; output `logits` float32 [None,3] = a fixed linear map of the
three channel means, so a solid red / green / blue image gives class 0 "red" / 1 "green" / 2 "blue"
(logit margin 20 for pure colours). Its edge.json asks for softmax. `build_colour_model(dir)`
writes one version folder; Keras and TensorFlow are imported only when it is called.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge.models.metadata import read_version_metadata
from edge.serving.base import ClassifierInfo, ImageInput

COLOUR_LABELS = ("red", "green", "blue")
COLOUR_SIZE = 64
# logits = COLOUR_GAIN * (2 * mean_c - sum(means)) / 255: pure red -> (10, -10, -10).
COLOUR_GAIN = 10.0


def colour_edge_metadata() -> dict[str, Any]:
    return {"format": 1, "preprocess": {"color": "RGB", "resize": "stretch"},
            "output": {"name": "logits", "activation": "softmax"}}


def colour_kernel(variant: str = "good") -> np.ndarray:
    """The Dense kernel of the colour model (`good`), or of a wrong-answer variant: `permuted`
    (red scores as "green", green as "blue", blue as "red") or `nan` (every output NaN)."""
    kernel = (COLOUR_GAIN / 255.0) * (2.0 * np.eye(3) - np.ones((3, 3)))
    if variant == "good":
        return kernel
    if variant == "permuted":
        return kernel[:, [2, 0, 1]]
    if variant == "nan":
        return np.full((3, 3), np.nan)
    raise ValueError(variant)


def build_colour_model(version_dir: Path) -> Path:
    """Write the colour model as a complete version folder at ``version_dir`` (atomically)."""
    import keras  # heavy (TensorFlow): only when a model is built

    from tools.savedmodel_export import export_serving

    version_dir = Path(version_dir)
    image = keras.Input(shape=(COLOUR_SIZE, COLOUR_SIZE, 3), dtype="uint8", name="image")
    pixels = keras.ops.cast(image, "float32")
    means = keras.layers.GlobalAveragePooling2D(name="channel_means")(pixels)
    dense = keras.layers.Dense(3, name="colour_logits")
    logits = dense(means)
    model = keras.Model(image, logits, name="colour")
    dense.set_weights([colour_kernel().astype(np.float32), np.zeros(3, dtype=np.float32)])

    version_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version_dir.name}.partial-",
                                    dir=version_dir.parent))
    try:
        saved = staging / "saved"
        export_serving(model, saved, "image", [None, COLOUR_SIZE, COLOUR_SIZE, 3], "uint8",
                       "logits")
        extra = saved / "assets.extra"
        extra.mkdir()
        (extra / "labels.txt").write_text("\n".join(COLOUR_LABELS) + "\n", encoding="utf-8")
        (extra / "edge.json").write_text(json.dumps(colour_edge_metadata(), indent=1) + "\n",
                                         encoding="utf-8")
        if version_dir.exists():
            shutil.rmtree(version_dir)
        os.replace(saved, version_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return version_dir


def colour_litert_info(colour_model_store: Path) -> ClassifierInfo:
    """How the colour model's .tflite describes itself to a LiteRTClassifier."""
    return ClassifierInfo("colour", 1, ImageInput("image", "uint8", 64, 64, 3), "logits",
                          read_version_metadata(colour_model_store / "colour" / "1"), "litert")


IMAGE_SIZE = 224
IMAGE_CLASSES = 5


def build_image_classifier(base: Path) -> Path:
    """A small Keras image classifier exported like TF Serving's tutorial model into `base/1`:
    signature ``serving_default`` with input ``input`` float32 [None,224,224,3] and output
    ``output`` [None,5]; `base/probe.npy` holds two inputs and `base/expected.npy` their outputs."""
    import keras  # heavy (TensorFlow): only when a model is built

    from tools.savedmodel_export import export_serving

    keras.utils.set_random_seed(7)
    inp = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype="float32", name="input")
    x = keras.layers.Conv2D(4, 8, strides=8, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(IMAGE_CLASSES, activation="softmax", name="output")(x)
    model = keras.Model(inp, out, name="image_classifier")
    export_serving(model, base / "1", "input", [None, IMAGE_SIZE, IMAGE_SIZE, 3], "float32", "output")
    np.save(base / "probe.npy", np.random.default_rng(1).random((2, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32))
    np.save(base / "expected.npy", np.asarray(model(np.load(base / "probe.npy"))))
    return base
