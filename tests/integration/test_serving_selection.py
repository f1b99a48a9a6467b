"""Runtime selection of the embedded backend: LiteRT candidates verified, timed, chosen and cached.

Real models only: the colour test model (uint8 input, logits + softmax) and the demo
EfficientNet-Lite0 (float32 input, probabilities) with real photos as golden images.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

import edge.serving.candidates as cands
import edge.serving.selection as rs
from edge.errors import ClassifierError
from tests.support.paths import REPO
from tests.support.selection import (
    BLUE,
    GREEN,
    RED,
    add_golden,
    assert_fastest_passing,
    classify_images,
    copy_version,
    solid,
)


def nan_tflite(height: int, width: int, dtype: str, classes: int) -> bytes:
    """A well-formed LiteRT model with the right signature whose outputs are all NaN (a silent bad converter)."""
    import tensorflow as tf

    class Poisoned(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.as_dtype(dtype), name="image")])
        def serve(self, image):
            means = tf.reduce_mean(tf.cast(image, tf.float32), axis=[1, 2])
            logits = tf.tile(means[:, :1], [1, classes]) * float("nan")
            return {"logits": logits}

    module = Poisoned()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    return converter.convert()


# ----------------------------------------------------------------------------- colour model
@pytest.fixture(scope="module")
def colour_auto(colour_model_store: Path, tmp_path_factory: pytest.TempPathFactory):
    """The colour model loaded with runtime="litert" in a fresh store (no golden images): the LiteRT
    candidates only (OpenVINO and int8: tests/integration/test_serving_runtimes.py)."""
    from edge.serving.embedded import EmbeddedClassifier

    version = copy_version(colour_model_store / "colour" / "1", tmp_path_factory.mktemp("sel-colour"), "colour")
    return version, EmbeddedClassifier(version, isolate_selection=False, runtime="litert")


def test_colour_model_litert_selected_and_correct(colour_auto) -> None:
    from edge.serving.embedded import EmbeddedClassifier

    version, classifier = colour_auto
    sel = classifier.selection
    assert sel["verified_on"].startswith("synthetic: 8 images")
    assert sel["candidates"]["litert"]["ok"] and sel["candidates"]["tensorflow"]["ok"]
    assert sel["candidates"]["litert"]["max_abs_diff"] <= rs.DEFAULT_TOLERANCE
    assert_fastest_passing(sel)
    assert classifier.info.image_input.dtype == "uint8"
    assert classifier.health()["selection"] is sel
    # LiteRT candidate against TensorFlow on known answers (whichever won, compare both runtimes)
    from edge.serving.litert import LiteRTClassifier

    lite = LiteRTClassifier(rs.cache_dir(version.path) / rs.CONVERTED_FILE, classifier.info)
    tf_classifier = EmbeddedClassifier(version, runtime="tensorflow")
    images = [solid(RED), solid(GREEN), solid(BLUE), solid((30, 200, 90))]
    lite_scores, tf_scores = classify_images(lite, images), classify_images(tf_classifier, images)
    assert lite_scores.dtype == np.float32 and lite_scores.shape == (4, 3)
    assert lite_scores.argmax(1).tolist()[:3] == [0, 1, 2]
    assert lite_scores.argmax(1).tolist() == tf_scores.argmax(1).tolist()
    assert np.allclose(lite_scores.sum(1), 1.0, atol=1e-5)  # softmax applied, as in the TF path
    assert np.max(np.abs(lite_scores - tf_scores)) < 1e-4


def test_forced_tensorflow(colour_auto) -> None:
    from edge.serving.embedded import EmbeddedClassifier

    version, _ = colour_auto
    classifier = EmbeddedClassifier(version, runtime="tensorflow")
    assert classifier.info.runtime == "tensorflow" and classifier.runner is not None
    assert classifier.selection["reason"] == "serving.runtime = tensorflow"
    assert classify_images(classifier, [solid(BLUE)]).argmax(1).tolist() == [2]


def test_unknown_runtime_is_refused(colour_auto) -> None:
    from edge.serving.embedded import EmbeddedClassifier

    with pytest.raises(ClassifierError, match="serving.runtime must be one of auto, tensorflow, litert, openvino"):
        EmbeddedClassifier(colour_auto[0], runtime="onnx")


def test_cache_reused_without_converting(colour_auto, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.serving.embedded import EmbeddedClassifier

    version, first = colour_auto
    cache = rs.cache_dir(version.path)
    assert cache == version.path.parent / ".edge-cache" / "1"
    assert (cache / rs.SELECTION_FILE).is_file() and not any(p.name.startswith(".edge") for p in version.path.iterdir())

    def no_conversion(_path):
        raise AssertionError("converter called although the cache is valid")

    monkeypatch.setattr(cands, "convert_saved_model", no_conversion)
    monkeypatch.setattr(rs, "time_runtimes", lambda *a, **k: pytest.fail("timed again"))
    again = EmbeddedClassifier(version, isolate_selection=False, runtime="litert")
    assert again.selection["cached"] is True
    assert {k: v for k, v in again.selection.items() if k != "cached"} == \
        {k: v for k, v in first.selection.items() if k != "cached"} | {"fingerprint": again.selection["fingerprint"]}
    assert classify_images(again, [solid(RED)]).argmax(1).tolist() == [0]


def test_cached_litert_loads_without_tensorflow(colour_auto) -> None:
    """A restart (a fresh process) serves LiteRT from the cache: no converter, no `import tensorflow`."""
    version, first = colour_auto
    assert first.info.runtime == "litert"
    script = f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
import numpy as np
import edge.serving.candidates as cands
import edge.serving.candidates as cands
def boom(_path): raise AssertionError("converter called")
cands.convert_saved_model = boom
from edge.models.store import ModelVersion
from edge.serving.embedded import EmbeddedClassifier
c = EmbeddedClassifier(ModelVersion("colour", 1, __import__("pathlib").Path({str(version.path)!r})), runtime="litert")
red = np.zeros((1, 64, 64, 3), np.uint8); red[..., 0] = 255
print(json.dumps({{"tf": "tensorflow" in sys.modules, "cached": c.selection["cached"], "runtime": c.info.runtime,
                  "top1": int(c.classify(red).argmax())}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc == {"tf": False, "cached": True, "runtime": "litert", "top1": 0}


@pytest.mark.slow
def test_first_load_selects_in_a_subprocess(colour_auto, tmp_path: Path) -> None:
    """A process without TensorFlow converts and times in a child: it never imports TensorFlow itself."""
    version = copy_version(colour_auto[0].path, tmp_path, "colour")
    script = f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from edge.models.store import ModelVersion
from edge.serving.embedded import EmbeddedClassifier
c = EmbeddedClassifier(ModelVersion("colour", 1, Path({str(version.path)!r})), runtime="litert")
print(json.dumps({{"tf": "tensorflow" in sys.modules, "runtime": c.info.runtime, "cached": c.selection["cached"],
                  "isolated": c.selection["isolated"], "ok": c.selection["candidates"]["litert"]["ok"]}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc == {"tf": False, "runtime": "litert", "cached": False, "isolated": True, "ok": True}
    assert (rs.cache_dir(version.path) / rs.SELECTION_FILE).is_file()


def test_changed_version_content_selects_again(colour_auto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.serving.embedded import EmbeddedClassifier

    version = copy_version(colour_auto[0].path, tmp_path, "colour")
    shutil.copytree(rs.cache_dir(colour_auto[0].path), rs.cache_dir(version.path))
    calls = []
    real = cands.convert_saved_model
    monkeypatch.setattr(cands, "convert_saved_model", lambda p: calls.append(p) or real(p))
    assert EmbeddedClassifier(version, runtime="litert").selection["cached"] is True and calls == []  # copied cache
    (version.path / "assets.extra" / "labels.txt").write_text("rouge\nvert\nbleu\n")
    assert EmbeddedClassifier(version, isolate_selection=False, runtime="litert").selection["cached"] is False
    assert len(calls) == 1


def test_garbage_shipped_tflite_is_refused(colour_auto, tmp_path: Path) -> None:
    from edge.serving.embedded import EmbeddedClassifier

    version = copy_version(colour_auto[0].path, tmp_path, "colour")
    (version.path / "model.tflite").write_bytes(b"TFL3" + bytes(range(256)) * 8)
    classifier = EmbeddedClassifier(version, runtime="litert")
    shipped = classifier.selection["candidates"]["litert_shipped"]
    assert shipped["ok"] is False and "LiteRT cannot load the model" in shipped["error"]
    assert classifier.selection["candidate"] == "litert"  # the converted candidate serves
    assert "litert_shipped refused" in classifier.selection["reason"]
    assert_fastest_passing(classifier.selection)


def test_valid_shipped_tflite_is_a_candidate(colour_auto, tmp_path: Path) -> None:
    from edge.serving.embedded import EmbeddedClassifier

    version = copy_version(colour_auto[0].path, tmp_path, "colour")
    shutil.copyfile(rs.cache_dir(colour_auto[0].path) / rs.CONVERTED_FILE, version.path / "model.tflite")
    classifier = EmbeddedClassifier(version, runtime="litert")
    cands = classifier.selection["candidates"]
    assert set(cands) == {"tensorflow", "litert", "litert_shipped"} and all(c["ok"] for c in cands.values())
    assert_fastest_passing(classifier.selection)
    assert classify_images(classifier, [solid(GREEN)]).argmax(1).tolist() == [1]


def test_nan_converter_is_refused_and_tensorflow_serves(colour_auto, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.serving.embedded import EmbeddedClassifier

    poisoned = nan_tflite(64, 64, "uint8", 3)
    monkeypatch.setattr(cands, "convert_saved_model", lambda _p: poisoned)
    version = copy_version(colour_auto[0].path, tmp_path, "colour")
    classifier = EmbeddedClassifier(version, runtime="litert", isolate_selection=False)  # even when LiteRT is asked for
    sel = classifier.selection
    assert sel["candidates"]["litert"]["ok"] is False
    assert "output has NaN/Inf values" in sel["candidates"]["litert"]["error"]
    assert sel["runtime"] == "tensorflow" and classifier.info.runtime == "tensorflow"
    assert "no LiteRT candidate passed" in sel["reason"] and "litert refused: " in sel["reason"] and "NaN/Inf" in sel["reason"]
    assert classify_images(classifier, [solid(RED)]).argmax(1).tolist() == [0]


def test_wrong_answers_are_refused_on_golden(colour_auto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finite but wrong converted model (another model's weights) fails the golden check."""
    from edge.serving.embedded import EmbeddedClassifier

    version = copy_version(colour_auto[0].path, tmp_path, "colour")
    add_golden(version, {"red.png": solid(RED), "green.png": solid(GREEN), "blue.png": solid(BLUE)})
    import tensorflow as tf

    class Swapped(tf.Module):  # blue and red swapped: finite, confident, wrong
        @tf.function(input_signature=[tf.TensorSpec([None, 64, 64, 3], tf.uint8, name="image")])
        def serve(self, image):
            means = tf.reduce_mean(tf.cast(image, tf.float32), axis=[1, 2])[:, ::-1]
            return {"logits": (2.0 * means - tf.reduce_sum(means, axis=1, keepdims=True)) * (10.0 / 255.0)}

    module = Swapped()
    wrong = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module).convert()
    monkeypatch.setattr(cands, "convert_saved_model", lambda _p: wrong)
    classifier = EmbeddedClassifier(version, isolate_selection=False, runtime="litert")
    sel = classifier.selection
    assert sel["verified_on"] == "golden: 3 images"
    assert sel["candidates"]["tensorflow"]["ok"] and sel["candidates"]["tensorflow"]["max_abs_diff"] <= 1e-5
    assert sel["candidates"]["litert"]["ok"] is False and "blue.png: top-1 class 0 != reference 2" in sel["candidates"]["litert"]["error"]
    assert sel["runtime"] == "tensorflow"


def test_thread_safety_two_threads_two_instances(colour_auto) -> None:
    from edge.serving.embedded import EmbeddedClassifier

    version, first = colour_auto
    second = EmbeddedClassifier(version, runtime="litert")  # e.g. validation's instance beside the serving one
    assert first.info.runtime == second.info.runtime == "litert"
    rng = np.random.default_rng(3)
    batches = [rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8) for n in (1, 3, 8, 2, 5)]
    expected = [first.classify(b) for b in batches]
    errors: list[str] = []

    def worker(classifier, offset: int) -> None:
        for i in range(60):
            k = (i + offset) % len(batches)
            got = classifier.classify(batches[k])
            if got.shape != expected[k].shape or not np.allclose(got, expected[k], atol=1e-6):
                errors.append(f"batch {k} differs")

    threads = [threading.Thread(target=worker, args=(c, o)) for c, o in ((first, 0), (first, 2), (second, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors


# ----------------------------------------------------------------------------- demo model
@pytest.mark.slow
def test_demo_model_golden_photos(demo_model_store: Path, tmp_path: Path) -> None:
    """EfficientNet-Lite0 (float32 input, probabilities): LiteRT passes the golden photos with TF's top-1."""
    from edge.serving.embedded import EmbeddedClassifier
    from edge.serving.litert import LiteRTClassifier
    from tools.demo_photos import DEMO_PHOTOS, EXPECTED_CLASS_IDS, load_photo

    version = copy_version(demo_model_store / "efficientnet_lite0" / "1", tmp_path, "efficientnet_lite0")
    photos = {f"{p}.png": cv2.cvtColor(load_photo(p), cv2.COLOR_RGB2BGR) for p in DEMO_PHOTOS}
    add_golden(version, photos)
    classifier = EmbeddedClassifier(version)
    sel = classifier.selection
    assert classifier.info.image_input.dtype == "float32"
    assert sel["verified_on"] == f"golden: {len(DEMO_PHOTOS)} images"
    lite = sel["candidates"]["litert"]
    assert lite["ok"], sel
    assert lite["max_abs_diff"] <= rs.DEFAULT_TOLERANCE
    assert_fastest_passing(sel)
    converted = LiteRTClassifier(rs.cache_dir(version.path) / rs.CONVERTED_FILE, classifier.info)
    from edge.models.golden import load_golden

    golden = load_golden(version.path)
    scores = classify_images(converted, [g.image_bgr for g in golden])
    assert scores.argmax(1).tolist() == [g.top1 for g in golden]
    for g, top1 in zip(golden, scores.argmax(1).tolist()):
        assert top1 in EXPECTED_CLASS_IDS[g.file.removesuffix(".png")]
    assert np.allclose(scores.sum(1), 1.0, atol=1e-4)  # activation "none": probabilities as the model gives them
