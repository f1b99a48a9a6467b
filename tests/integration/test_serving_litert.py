"""The LiteRT runtime on its own: a converted colour model, batches of any size, bad files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.models.metadata import read_version_metadata
from edge.serving.base import ClassifierInfo, ImageInput
from tests.support.models import colour_litert_info
from tests.support.paths import REPO

colour_info = colour_litert_info


def test_model_describes_its_signature(colour_tflite: Path) -> None:
    from edge.serving.litert import LiteRTModel, default_threads

    model = LiteRTModel(colour_tflite)
    assert model.image_input() == ImageInput("image", "uint8", 64, 64, 3)
    assert model.output_name == "logits" and model.classes == 3
    assert model.threads == default_threads(0) >= 1
    assert LiteRTModel(colour_tflite, threads=1).threads == 1


def test_any_batch_size_gives_per_image_results(colour_tflite: Path) -> None:
    from edge.serving.litert import LiteRTModel

    model = LiteRTModel(colour_tflite.read_bytes())
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (7, 64, 64, 3), dtype=np.uint8)
    whole = model.run(batch)
    assert whole.shape == (7, 3) and whole.dtype == np.float32
    one_by_one = np.concatenate([model.run(batch[i:i + 1]) for i in range(7)])
    assert np.array_equal(whole, one_by_one)
    means = batch.reshape(7, -1, 3).mean(axis=1)
    expected = 10.0 * (2 * means - means.sum(axis=1, keepdims=True)) / 255.0  # the colour model's definition
    assert np.allclose(whole, expected, atol=1e-3)
    assert model.run(batch[:0]).shape == (0, 3)


def test_classifier_applies_softmax_and_checks_shapes(colour_tflite: Path, colour_model_store: Path) -> None:
    from edge.errors import LiteRTError
    from edge.serving.litert import LiteRTClassifier

    classifier = LiteRTClassifier(colour_tflite, colour_info(colour_model_store))
    red = np.zeros((2, 64, 64, 3), np.uint8)
    red[..., 0] = 255
    probs = classifier.classify(red)
    assert probs.argmax(1).tolist() == [0, 0] and np.allclose(probs.sum(1), 1.0, atol=1e-6)
    with pytest.raises(LiteRTError, match=r"batch shape \[1, 32, 32, 3\] does not match"):
        classifier.classify(np.zeros((1, 32, 32, 3), np.uint8))
    wrong = ClassifierInfo("colour", 1, ImageInput("image", "uint8", 32, 32, 3), "logits",
                           read_version_metadata(colour_model_store / "colour" / "1"), "litert")
    with pytest.raises(LiteRTError, match="model input is"):
        LiteRTClassifier(colour_tflite, wrong)
    classifier.close()
    with pytest.raises(LiteRTError, match="closed"):
        classifier.classify(red)


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    from edge.errors import LiteRTError
    from edge.serving.litert import LiteRTModel

    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(LiteRTError, match="LiteRT cannot load the model"):
        LiteRTModel(bad)


def test_litert_module_does_not_import_tensorflow() -> None:
    import subprocess
    import sys

    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); import edge.serving.litert, edge.serving.embedded; "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
