"""Model store, version metadata, the SavedModel loader and the embedded classifier on real models."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ModelMetadataError, ModelStoreError
from edge.inference.results import top_k
from edge.models.metadata import PreprocessSpec, parse_edge_json, read_version_metadata
from edge.models.store import ModelStore
from edge.serving.base import ImageInput
from edge.serving.preprocess import FramePreprocessor

TFSERVING_TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "tfserving"


def test_store_resolves_numeric_versions(tmp_path: Path) -> None:
    for name in ("00000123", "7", ".staging-9", "124.partial", "notes"):
        (tmp_path / "m" / name).mkdir(parents=True)
        (tmp_path / "m" / name / "saved_model.pb").write_bytes(b"x")
    (tmp_path / "m" / "200").mkdir()  # numeric but empty: not servable
    store = ModelStore(tmp_path)
    assert [v.version for v in store.versions("m")] == [7, 123]
    assert store.resolve("m").version == 123
    assert store.resolve("m", 7).path.name == "7"
    with pytest.raises(ModelStoreError, match=r"version 8 not found.*\[7, 123\]"):
        store.resolve("m", 8)


def test_store_explains_savedmodel_in_base_path(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "saved_model.pb").write_bytes(b"x")
    with pytest.raises(ModelStoreError, match=r"numeric version folder.*m/1/"):
        ModelStore(tmp_path).resolve("m")
    with pytest.raises(ModelStoreError, match="does not exist"):
        ModelStore(tmp_path).resolve("absent")


@pytest.mark.parametrize(
    "doc, message",
    [
        ([], "top level must be an object"),
        ({"preprocess": {"color": "YUV"}}, "preprocess.color"),
        ({"preprocess": {"std": [1, 0, 1]}}, "std must not contain 0"),
        ({"preprocess": {"mean": [1, 2]}}, "preprocess.mean"),
        ({"output": {"activation": "sigmoid"}}, "output.activation"),
        ({"bogus": 1}, "unknown key"),
    ],
)
def test_edge_json_errors(doc, message: str) -> None:
    with pytest.raises(ModelMetadataError, match=message):
        parse_edge_json(doc)


def test_metadata_override_and_labels(tmp_path: Path) -> None:
    extra = tmp_path / "assets.extra"
    extra.mkdir()
    (extra / "edge.json").write_text(json.dumps({"preprocess": {"mean": 127, "std": 128},
                                                 "output": {"name": "p", "activation": "softmax"}}))
    (extra / "labels.txt").write_text("cat\ndog\n\n")
    meta = read_version_metadata(tmp_path, PreprocessSpec(color="BGR"))
    assert meta.labels == ("cat", "dog")
    assert meta.preprocess.color == "BGR" and meta.preprocess.mean == (127.0,) * 3
    assert meta.output_name == "p" and meta.activation == "softmax"
    (extra / "edge.json").write_text("{not json")
    with pytest.raises(ModelMetadataError, match="not valid JSON"):
        read_version_metadata(tmp_path)


def test_preprocess_resizes_reorders_and_scales() -> None:
    frame = np.zeros((120, 160, 3), dtype=np.uint8)
    frame[:, :] = (10, 20, 200)  # BGR
    spec = ImageInput("image", "float32", 32, 48, 3)
    pre = FramePreprocessor(spec, PreprocessSpec(color="RGB", mean=(100.0, 100.0, 100.0), std=(2.0, 2.0, 2.0)))
    pixels = pre.to_model_pixels(frame)
    assert pixels.shape == (32, 48, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[0, 0]) == (200, 20, 10)
    batch = pre.batch_to_input(pixels[None])
    assert batch.dtype == np.float32
    assert np.allclose(batch[0, 0, 0], [50.0, -40.0, -45.0])
    uint8_pre = FramePreprocessor(ImageInput("image", "uint8", 32, 48, 3), PreprocessSpec(color="BGR"))
    out = np.empty((1, 32, 48, 3), dtype=np.uint8)
    uint8_pre.to_model_pixels(frame, out=out[0])
    assert tuple(out[0, 5, 5]) == (10, 20, 200)
    assert uint8_pre.batch_to_input(out) is out


def test_top_k_orders_best_first() -> None:
    scores = np.array([[0.1, 0.5, 0.2, 0.2], [0.7, 0.1, 0.15, 0.05]], dtype=np.float32)
    idx, vals = top_k(scores, 2)
    assert idx.tolist() == [[1, 2], [0, 2]] or idx.tolist() == [[1, 3], [0, 2]]
    assert np.allclose(vals[:, 0], [0.5, 0.7])
    assert top_k(scores, 10)[0].shape == (2, 4)


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
