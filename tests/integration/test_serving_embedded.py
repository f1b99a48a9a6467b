"""The SavedModel loader and the embedded classifier on real models (TensorFlow)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.models.store import ModelStore
from edge.serving.preprocess import FramePreprocessor
from tests.support.paths import TFSERVING_TESTDATA


def test_embedded_classifier_known_answers(colour_model_store: Path) -> None:
    from edge.serving.embedded import EmbeddedClassifier

    version = ModelStore(colour_model_store).resolve("colour", 1)
    classifier = EmbeddedClassifier(version)
    info = classifier.info
    assert (info.image_input.name, info.image_input.dtype) == ("image", "uint8")
    assert (info.image_input.height, info.image_input.width) == (64, 64)
    assert info.output_name == "logits" and info.metadata.labels == ("red", "green", "blue")
    pre = FramePreprocessor(info.image_input, info.metadata.preprocess)
    frames = []
    for bgr in ((0, 0, 255), (0, 255, 0), (255, 0, 0)):
        img = np.zeros((90, 120, 3), dtype=np.uint8)
        img[:, :] = bgr
        frames.append(pre.to_model_pixels(img))
    probs = classifier.classify(pre.batch_to_input(np.stack(frames)))
    assert probs.shape == (3, 3)
    assert probs.argmax(axis=1).tolist() == [0, 1, 2]
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)  # softmax applied to logits


def test_savedmodel_runner_on_tfserving_testdata() -> None:
    """The shared loader gives TF Serving's known answer on its own test model (y = 0.5x + 2)."""
    from edge.errors import SavedModelError
    from edge.serving.savedmodel import SavedModelRunner

    runner = SavedModelRunner(TFSERVING_TESTDATA / "saved_model_half_plus_two_cpu" / "00000123")
    sig = runner.signature()
    assert list(sig.inputs) == ["x"] and list(sig.outputs) == ["y"]
    out = runner.run({"x": np.array([[2.0], [3.0], [4.0]], dtype=np.float32)})
    assert out["y"].ravel().tolist() == [3.0, 3.5, 4.0]
    with pytest.raises(SavedModelError, match="input tensor alias not found"):
        runner.run({"z": np.array([[1.0]], dtype=np.float32)})
    with pytest.raises(SavedModelError, match="not found in signature def"):
        runner.signature("nope")


def test_embedded_classifier_refuses_non_image_model(tmp_path: Path) -> None:
    from edge.errors import ClassifierError
    from edge.models.store import ModelVersion
    from edge.serving.embedded import EmbeddedClassifier

    src = TFSERVING_TESTDATA / "saved_model_half_plus_two_cpu" / "00000123"
    dst = tmp_path / "half" / "1"
    shutil.copytree(src, dst)
    with pytest.raises(ClassifierError, match="exactly one image tensor"):
        EmbeddedClassifier(ModelVersion("half", 1, dst))


def test_labels_count_mismatch_is_refused(colour_model_store: Path, tmp_path: Path) -> None:
    from edge.errors import ClassifierError
    from edge.serving.embedded import EmbeddedClassifier

    dst = tmp_path / "colour" / "1"
    shutil.copytree(colour_model_store / "colour" / "1", dst)
    (dst / "assets.extra" / "labels.txt").write_text("red\ngreen\n")
    with pytest.raises(ClassifierError, match="3 classes but labels.txt has 2"):
        EmbeddedClassifier(ModelStore(tmp_path).resolve("colour", 1))
