"""The runtime candidates runtime selection builds for a version: what they are and how each is made.

Every candidate is a (runtime, precision) pair with a way to build a classifier for it:

| candidate | runtime | precision | made from |
| --- | --- | --- | --- |
| ``litert`` | LiteRT (XNNPACK) | fp32 | the SavedModel, converted with ``tf.lite.TFLiteConverter`` (needs TensorFlow) |
| ``litert_shipped`` | LiteRT | as shipped | ``model.tflite`` in the version folder (a ``litert`` variant) |
| ``openvino`` | OpenVINO CPU | fp32 | ``model.xml``/``model.bin`` in the version folder (an ``openvino`` variant), else the SavedModel or ``model.tflite`` converted by OpenVINO (no TensorFlow) |
| ``litert_int8`` | LiteRT | int8 | the SavedModel, full-integer quantized (float in/out) and calibrated on the golden images plus camera frames the gateway sampled (``.edge-cache/calibration/``) |

Converted files go to the version's cache folder (``<store>/<model>/.edge-cache/<version>/``), never
into the version folder. int8 is built only when the version's edge.json declares an int8 acceptance
rule (``acceptance.int8``) and ``serving.precision`` allows it; the rule it is then checked with is
that declaration (:func:`edge.models.golden.compare_scores`). Hardware runtimes (ONNX Runtime
CUDA/TensorRT, LiteRT delegates for Coral/Hailo, OpenVINO GPU/NPU) would be added here the same way;
none of them is built, because none can be tested on the machines this project runs its tests on.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.models.golden import IMAGE_SUFFIXES, read_image
from edge.serving.base import ClassifierInfo
from edge.serving.litert import LiteRTClassifier, litert_available
from edge.serving.openvino import SHIPPED_XML, OpenVINOClassifier, convert_to_ir, openvino_available
from edge.serving.preprocess import FramePreprocessor
from edge.util.fsutil import atomic_write_bytes

logger = logging.getLogger(__name__)

CACHE_DIR = ".edge-cache"
CALIBRATION_DIR = "calibration"  # <store>/<model>/.edge-cache/calibration/*.jpg: sampled camera frames
CONVERTED_FILE = "litert.tflite"
INT8_FILE = "litert-int8.tflite"
OPENVINO_FILE = "openvino.xml"
SHIPPED_FILE = "model.tflite"
MAX_CALIBRATION_FRAMES = 200

Served = Any  # LiteRTClassifier | OpenVINOClassifier: classify, close, warm_up, concurrency, threads, preferred_batch_size


@dataclass
class Candidate:
    name: str
    runtime: str  # "litert" | "openvino"
    precision: str  # "fp32" | "int8" | "shipped"
    source: str  # "converted" | "shipped" | "calibrated"
    build: Callable[[], tuple[Served, Path | None]]  # (classifier in its serving shape, the file it serves)


def cache_dir(version_dir: Path) -> Path:
    """``<store>/<model>/.edge-cache/<version>``: beside the version folder, never inside it."""
    version_dir = Path(version_dir)
    return version_dir.parent / CACHE_DIR / version_dir.name


def calibration_dir(version_dir: Path) -> Path:
    """Where the gateway keeps camera frames for int8 calibration (per model, not per version)."""
    return Path(version_dir).parent / CACHE_DIR / CALIBRATION_DIR


# ----------------------------------------------------------------------------- conversion (TensorFlow)
def convert_saved_model(version_dir: Path) -> bytes:
    """The SavedModel's serving_default as a float32 LiteRT flatbuffer (builtin ops only, input dtype kept).

    No quantization (outputs must match TensorFlow's); builtin ops only, because the Flex delegate
    needs TensorFlow at run time, which is what LiteRT is here to avoid. Tests replace this function.
    """
    import tensorflow as tf  # heavy (~550 MB, 2.5 s): only when TensorFlow runs a model

    converter = tf.lite.TFLiteConverter.from_saved_model(str(version_dir), signature_keys=["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = []
    flatbuffer: bytes = converter.convert()
    return flatbuffer


def convert_int8(version_dir: Path, input_name: str, calibration: np.ndarray) -> bytes:
    """Full-integer int8 LiteRT flatbuffer (float input and output kept), calibrated on ``calibration``
    ([N, H, W, C] model inputs). Fails when an op has no int8 kernel (no silent float fallback)."""
    import tensorflow as tf  # heavy (~550 MB, 2.5 s): only when TensorFlow runs a model

    converter = tf.lite.TFLiteConverter.from_saved_model(str(version_dir), signature_keys=["serving_default"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.representative_dataset = lambda: ({input_name: x[None]} for x in calibration)
    flatbuffer: bytes = converter.convert()
    return flatbuffer


def _store(version_dir: Path, name: str, data: bytes) -> bytes | Path:
    target = cache_dir(version_dir) / name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data, mode=0o644)
        return target
    except OSError as exc:
        logger.warning("cannot cache the converted model in %s: %s (kept in memory)", target.parent, exc)
        return data


def calibration_inputs(version_dir: Path, info: ClassifierInfo, preprocess: Any, golden: np.ndarray) -> \
        tuple[np.ndarray, int]:
    """Model inputs to calibrate int8 on: the golden images' inputs (and their mirror images) plus the
    camera frames sampled into :func:`calibration_dir`; and how many camera frames there were."""
    pre = FramePreprocessor(info.image_input, preprocess)
    frames: list[np.ndarray] = []
    folder = calibration_dir(version_dir)
    if folder.is_dir():
        for path in sorted(folder.iterdir())[-MAX_CALIBRATION_FRAMES:]:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                try:
                    frames.append(pre.to_model_pixels(read_image(path)))
                except Exception as exc:  # a damaged sample costs one image, not the candidate
                    logger.debug("calibration frame %s unreadable: %s", path, exc)
    parts = [golden, np.ascontiguousarray(golden[:, :, ::-1])]
    if frames:
        parts.append(pre.batch_to_input(np.stack(frames)))
    return np.concatenate(parts), len(frames)


# ----------------------------------------------------------------------------- candidates
def _litert(model: bytes | Path, info: ClassifierInfo, threads: int, interpreters: int) -> tuple[Served, Path | None]:
    return (LiteRTClassifier(model, info, threads=threads, interpreters=interpreters),
            model if isinstance(model, Path) else None)


def candidates(version_dir: Path, info: ClassifierInfo, *, has_savedmodel: bool, threads: int,
               int8_inputs: Callable[[], np.ndarray] | None, interpreters: int = 1) -> list[Candidate]:
    """Every candidate this version and this installation can try, in a fixed order, each built in the
    serving shape: ``interpreters`` LiteRT interpreters (OpenVINO streams) of ``threads`` threads each.

    ``int8_inputs`` gives the calibration inputs (None: int8 is not allowed for this version)."""
    version_dir = Path(version_dir)
    found: list[Candidate] = []
    if litert_available():
        if has_savedmodel:
            def converted() -> tuple[Served, Path | None]:
                started = time.perf_counter()
                data = convert_saved_model(version_dir)
                logger.info("%s: converted to LiteRT in %.1fs (%.1f MB)", version_dir,
                            time.perf_counter() - started, len(data) / 1e6)
                return _litert(_store(version_dir, CONVERTED_FILE, data), info, threads, interpreters)
            found.append(Candidate("litert", "litert", "fp32", "converted", converted))
        shipped = version_dir / SHIPPED_FILE
        if shipped.is_file():
            found.append(Candidate("litert_shipped", "litert", "shipped", "shipped",
                                   lambda: _litert(shipped, info, threads, interpreters)))
        if has_savedmodel and int8_inputs is not None:
            def calibrated() -> tuple[Served, Path | None]:
                started = time.perf_counter()
                inputs = int8_inputs()
                data = convert_int8(version_dir, info.image_input.name, inputs)
                logger.info("%s: quantized to int8 on %d calibration images in %.1fs (%.1f MB)", version_dir,
                            len(inputs), time.perf_counter() - started, len(data) / 1e6)
                return _litert(_store(version_dir, INT8_FILE, data), info, threads, interpreters)
            found.append(Candidate("litert_int8", "litert", "int8", "calibrated", calibrated))
    if openvino_available():
        shipped_ir = version_dir / SHIPPED_XML
        source = "shipped" if shipped_ir.is_file() else "converted"
        origin = version_dir if has_savedmodel else version_dir / SHIPPED_FILE

        def ir() -> tuple[Served, Path | None]:
            xml = shipped_ir if shipped_ir.is_file() else convert_to_ir(origin, cache_dir(version_dir) / OPENVINO_FILE)
            return OpenVINOClassifier(xml, info, threads=threads, interpreters=interpreters), xml
        if shipped_ir.is_file() or has_savedmodel or origin.is_file():
            found.append(Candidate("openvino", "openvino", "fp32", source, ir))
    return found


def load_served(runtime: str, model_file: Path, info: ClassifierInfo, threads: int, interpreters: int) -> Served:
    """A cached decision's classifier, built in its serving shape (no TensorFlow import)."""
    if runtime == "openvino":
        return OpenVINOClassifier(model_file, info, threads=threads, interpreters=interpreters)
    return LiteRTClassifier(model_file, info, threads=threads, interpreters=interpreters)
