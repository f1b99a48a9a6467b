"""Runtime candidates beyond LiteRT fp32: OpenVINO fp32 and calibrated int8 LiteRT, verified before use.

Real models and runtimes only: the colour test model (uint8 input, logits + softmax) and the demo
EfficientNet-Lite0 (float32 input) with real photos as golden images; OpenVINO and LiteRT run on
this CPU. Nothing here checks a speed: which candidate is fastest is only checked to follow the
figures the selection itself measured.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import edge.serving.candidates as cands
import edge.serving.selection as rs
from edge.models.store import ModelVersion
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

INT8_RULE = {"tolerance": 0.3, "top1_margin": 0.1, "min_top1_agreement": 0.75}


def declare(version: ModelVersion, acceptance: dict) -> None:
    path = version.path / "assets.extra" / "edge.json"
    doc = json.loads(path.read_text()) if path.is_file() else {"format": 1}
    doc["acceptance"] = acceptance
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def colour_openvino(colour_model_store: Path, tmp_path_factory: pytest.TempPathFactory):
    from edge.serving.embedded import EmbeddedClassifier

    version = copy_version(colour_model_store / "colour" / "1", tmp_path_factory.mktemp("ov-colour"), "colour")
    add_golden(version, {"red.png": solid(RED), "green.png": solid(GREEN), "blue.png": solid(BLUE)})
    return version, EmbeddedClassifier(version, runtime="openvino", isolate_selection=False)


def test_openvino_fp32_verified_and_serving(colour_openvino) -> None:
    from edge.serving.embedded import EmbeddedClassifier

    version, classifier = colour_openvino
    sel = classifier.selection
    ov = sel["candidates"]["openvino"]
    assert ov["ok"] and ov["runtime"] == "openvino" and ov["precision"] == "fp32" and ov["source"] == "converted"
    assert ov["max_abs_diff"] <= rs.DEFAULT_TOLERANCE and ov["top1_agreement"] == 1.0
    assert "litert" not in sel["candidates"]  # runtime = openvino builds OpenVINO candidates only
    assert sel["runtime"] == "openvino" and classifier.info.runtime == "openvino"
    health = classifier.health()
    assert (health["runtime"], health["precision"]) == ("openvino", "fp32")
    assert health["interpreters"] == classifier.concurrency >= 1
    assert (rs.cache_dir(version.path) / "openvino.xml").is_file() and (rs.cache_dir(version.path) / "openvino.bin").is_file()
    tf_classifier = EmbeddedClassifier(version, runtime="tensorflow")
    images = [solid(RED), solid(GREEN), solid(BLUE), solid((30, 200, 90))]
    got, want = classify_images(classifier, images), classify_images(tf_classifier, images)
    assert got.argmax(1).tolist()[:3] == [0, 1, 2] and got.argmax(1).tolist() == want.argmax(1).tolist()
    assert np.max(np.abs(got - want)) < 1e-4


def test_cached_openvino_loads_without_tensorflow(colour_openvino) -> None:
    version, _ = colour_openvino
    script = f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
import numpy as np
from pathlib import Path
from edge.models.store import ModelVersion
from edge.serving.embedded import EmbeddedClassifier
c = EmbeddedClassifier(ModelVersion("colour", 1, Path({str(version.path)!r})), runtime="openvino")
blue = np.zeros((1, 64, 64, 3), np.uint8); blue[..., 2] = 255
print(json.dumps({{"tf": "tensorflow" in sys.modules, "cached": c.selection["cached"], "runtime": c.info.runtime,
                  "top1": int(c.classify(blue).argmax())}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"tf": False, "cached": True, "runtime": "openvino",
                                                               "top1": 2}


def test_shipped_openvino_ir_is_used_instead_of_converting(colour_openvino, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An `openvino` variant (model.xml + model.bin in the version folder) is verified, not converted."""
    from edge.serving.embedded import EmbeddedClassifier

    version = copy_version(colour_openvino[0].path, tmp_path, "colour")
    cache = rs.cache_dir(colour_openvino[0].path)
    shutil.copyfile(cache / "openvino.xml", version.path / "model.xml")
    shutil.copyfile(cache / "openvino.bin", version.path / "model.bin")
    monkeypatch.setattr(cands, "convert_to_ir", lambda *a: pytest.fail("converted although the version ships an IR"))
    classifier = EmbeddedClassifier(version, runtime="openvino", isolate_selection=False)
    ov = classifier.selection["candidates"]["openvino"]
    assert ov["ok"] and ov["source"] == "shipped"
    assert classifier.selection["model_file"] == str(version.path / "model.xml")


def test_auto_tries_every_runtime_and_serves_the_fastest(colour_openvino, tmp_path: Path) -> None:
    from edge.serving.embedded import EmbeddedClassifier

    version = copy_version(colour_openvino[0].path, tmp_path, "colour")
    classifier = EmbeddedClassifier(version, isolate_selection=False)
    sel = classifier.selection
    assert {"tensorflow", "litert", "openvino"} <= set(sel["candidates"])
    assert all(sel["candidates"][k]["ok"] for k in ("tensorflow", "litert", "openvino"))
    assert_fastest_passing(sel)
    # no int8 rule declared by the colour model: int8 is not tried, and the reason says why
    assert "litert_int8" not in sel["candidates"]
    assert "int8 not tried: the version declares no int8 acceptance rule" in sel["reason"]


# ----------------------------------------------------------------------------- int8
@pytest.fixture(scope="module")
def demo_golden(demo_model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model with the demo photos as golden images (TensorFlow's outputs as reference)."""
    from tools.demo_photos import DEMO_PHOTOS, load_photo

    version = copy_version(demo_model_store / "efficientnet_lite0" / "1", tmp_path_factory.mktemp("int8"),
                           "efficientnet_lite0")
    add_golden(version, {f"{p}.png": cv2.cvtColor(load_photo(p), cv2.COLOR_RGB2BGR) for p in DEMO_PHOTOS})
    return version.path


@pytest.mark.slow
def test_int8_calibrated_on_golden_and_camera_frames(demo_golden: Path, demo_video, tmp_path: Path) -> None:
    """Declared int8 rule: the candidate is quantized on the golden images plus sampled camera frames,
    checked with the version's own rule, and its top-1 agreement recorded."""
    from edge.serving.embedded import EmbeddedClassifier
    from edge.serving.litert import LiteRTModel

    version = copy_version(demo_golden, tmp_path, "efficientnet_lite0")
    declare(version, {"int8": INT8_RULE})
    frames = cands.calibration_dir(version.path)
    frames.mkdir(parents=True)
    capture = cv2.VideoCapture(str(demo_video[0]))
    for i in range(6):
        ok, image = capture.read()
        assert ok
        cv2.imwrite(str(frames / f"cam-{i}.jpg"), image)
    capture.release()
    classifier = EmbeddedClassifier(version, runtime="litert", isolate_selection=False)
    sel = classifier.selection
    int8 = sel["candidates"]["litert_int8"]
    assert int8["precision"] == "int8" and int8["source"] == "calibrated" and "declared int8" in int8["rule"]
    golden = len(json.loads((version.path / "assets.extra/golden/reference.json").read_text())["images"])
    assert int8["top1_agreement"] is not None and 0.0 <= int8["top1_agreement"] <= 1.0
    assert int8["max_abs_diff"] is not None and int8["max_abs_diff"] > rs.DEFAULT_TOLERANCE  # not bit-exact
    # pass or refuse, the verdict is the declared rule's
    assert int8["ok"] == (int8["max_abs_diff"] <= INT8_RULE["tolerance"]
                          and int8["top1_agreement"] >= INT8_RULE["min_top1_agreement"]
                          and int8["error"] is None)
    assert_fastest_passing(sel)
    quantized = LiteRTModel(rs.cache_dir(version.path) / cands.INT8_FILE)
    assert quantized.input_dtype == np.float32  # float in and out, integer inside
    if sel["candidate"] == "litert_int8":
        assert sel["precision"] == "int8" and classifier.health()["precision"] == "int8"
        assert sel["calibration"] == f"{golden} golden images, mirrored, and 6 camera frames"


@pytest.mark.slow
def test_int8_forbidden_by_the_version_or_by_config(demo_golden: Path, tmp_path: Path) -> None:
    from edge.serving.embedded import EmbeddedClassifier

    forbidden = copy_version(demo_golden, tmp_path / "a", "efficientnet_lite0")
    declare(forbidden, {"int8": False})
    sel = EmbeddedClassifier(forbidden, runtime="litert", isolate_selection=False).selection
    assert "litert_int8" not in sel["candidates"] and sel["precision"] == "fp32"
    assert "int8 not tried: the version declares no int8 acceptance rule" in sel["reason"]
    fp32_only = copy_version(demo_golden, tmp_path / "b", "efficientnet_lite0")
    declare(fp32_only, {"int8": INT8_RULE})
    sel = EmbeddedClassifier(fp32_only, runtime="litert", precision="fp32", isolate_selection=False).selection
    assert "litert_int8" not in sel["candidates"] and "int8 not tried: serving.precision = fp32" in sel["reason"]
