"""In-process runtime benchmark: raw img/s per runtime, side by side in one run, same inputs.

    python bench/runtimes.py [--seconds 2] [--rounds 3] [--threads 0] [--models mobilenet_v2,efficientnet_lite0]

Models: MobileNetV2 (keras.applications, random weights, exported as a SavedModel with input
"image") and the demo EfficientNet-Lite0 (build/demo/models/efficientnet_lite0/1; built if missing).
Rows: TensorFlow batch 1 and batch 8; LiteRT (XNNPACK, N threads) one image per invoke with batches
of 1 and of 8 (what edge.serving.litert does) and with the input resized to batch 8; ONNX Runtime
batch 1 / 8 when ``tf2onnx`` and ``onnxruntime`` are importable (they are not a dependency).
Each row runs ``--seconds`` per round, rounds interleaved across rows, median reported; ratios are to
TensorFlow batch 1 of the same model. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

Run = Callable[[np.ndarray], object]


def mobilenet_v2(store: Path) -> Path:
    import keras

    from tools.savedmodel_export import export_serving

    version = store / "mobilenet_v2" / "1"
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    export_serving(model, version, "image", [None, 224, 224, 3], "float32", "probabilities")
    (version / "assets.extra").mkdir()
    (version / "assets.extra" / "edge.json").write_text(json.dumps(
        {"format": 1, "preprocess": {"color": "RGB", "mean": [127.5] * 3, "std": [127.5] * 3},
         "output": {"name": "probabilities", "activation": "none"}}))
    return version


def demo_model(store: Path) -> Path:
    from tools.build_demo_model import MODEL_NAME, build_demo_model, is_complete

    prebuilt = REPO / "build" / "demo" / "models"
    if not is_complete(prebuilt / MODEL_NAME / "1"):
        build_demo_model(prebuilt, version=1)
    version = store / MODEL_NAME / "1"
    shutil.copytree(prebuilt / MODEL_NAME / "1", version)
    return version


def onnx_runner(version: Path, threads: int, work: Path) -> tuple[Run | None, str]:
    try:
        import onnxruntime as ort
        import tf2onnx  # noqa: F401
    except ImportError as exc:
        return None, f"not installed ({exc.name})"
    target = work / f"{version.parent.name}.onnx"
    proc = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(version), "--output",
                           str(target), "--opset", "17"], capture_output=True, text=True)
    if proc.returncode != 0:
        return None, "tf2onnx failed: " + proc.stderr.strip().splitlines()[-1]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return (lambda batch: session.run(None, {name: batch})), f"onnxruntime {ort.__version__}"


def runners_for(version: Path, threads: int, work: Path) -> tuple[dict[str, tuple[Run, int]], list[str]]:
    """{row label: (run, batch size)} for one model, and notes."""
    import tensorflow as tf

    from edge.serving.litert import LiteRTModel, default_threads, interpreter_class
    from edge.serving.savedmodel import SavedModelRunner
    from edge.serving.selection import convert_saved_model

    notes = []
    runner = SavedModelRunner(version)
    sig = runner.signature()
    (input_name,) = sig.inputs
    output_name = sorted(sig.outputs)[0]

    def tf_run(batch: np.ndarray) -> object:
        return runner.run({input_name: batch}, output_filter=[output_name])

    started = time.perf_counter()
    flatbuffer = convert_saved_model(version)
    notes.append(f"LiteRT conversion {time.perf_counter() - started:.1f}s, {len(flatbuffer) / 1e6:.1f} MB")
    n = default_threads(threads)
    lite = LiteRTModel(flatbuffer, threads=n)
    resized = interpreter_class()(model_content=flatbuffer, num_threads=n)
    detail = resized.get_input_details()[0]
    resized.resize_tensor_input(detail["index"], [8, *detail["shape"][1:]])
    resized.allocate_tensors()
    out_index = resized.get_output_details()[0]["index"]

    def lite_resized(batch: np.ndarray) -> object:
        resized.set_tensor(detail["index"], batch)
        resized.invoke()
        return resized.get_tensor(out_index)

    rows: dict[str, tuple[Run, int]] = {
        "TensorFlow, batch 1": (tf_run, 1),
        "TensorFlow, batch 8": (tf_run, 8),
        f"LiteRT XNNPACK {n} thr, per image, batch 1": (lite.run, 1),
        f"LiteRT XNNPACK {n} thr, per image, batch 8": (lite.run, 8),
        f"LiteRT XNNPACK {n} thr, input resized to 8": (lite_resized, 8),
    }
    onnx, note = onnx_runner(version, n, work)
    notes.append(f"ONNX Runtime: {note}")
    if onnx is not None:
        rows[f"ONNX Runtime {n} thr, batch 1"] = (onnx, 1)
        rows[f"ONNX Runtime {n} thr, batch 8"] = (onnx, 8)
    del tf
    return rows, notes


def measure(rows: dict[str, tuple[Run, int]], inputs: np.ndarray, seconds: float, rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in rows}
    for run, size in rows.values():
        run(inputs[:size])  # warm-up
    for _ in range(rounds):
        for label, (run, size) in rows.items():
            batch = inputs[:size]
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                run(batch)
                done += size
            samples[label].append(done / (time.perf_counter() - started))
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per row per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="LiteRT/ONNX threads (0 = all cores)")
    parser.add_argument("--models", default="mobilenet_v2,efficientnet_lite0")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edge-bench-runtimes-"))
    builders = {"mobilenet_v2": mobilenet_v2, "efficientnet_lite0": demo_model}
    tables = []
    try:
        for name in args.models.split(","):
            version = builders[name](work / "store")
            rows, notes = runners_for(version, args.threads, work)
            inputs = np.random.default_rng(0).uniform(-1, 1, (8, 224, 224, 3)).astype(np.float32)
            tables.append((name, measure(rows, inputs, args.seconds, args.rounds), notes))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    print(f"\nedge in-process runtimes — commit {commit}, {args.rounds} rounds x {args.seconds:g}s per row, "
          "median img/s, ratio to TensorFlow batch 1 of the same model")
    for name, figures, notes in tables:
        base = figures["TensorFlow, batch 1"]
        print(f"\n{name}  ({'; '.join(notes)})")
        print(f"  {'runtime':48s} {'img/s':>8s} {'ratio':>7s}")
        for label, value in figures.items():
            print(f"  {label:48s} {value:8.1f} {value / base:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
