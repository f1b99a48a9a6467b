"""Runtime candidates side by side for bench/pipeline.py: every runtime x precision runtime selection built.

The bench's model versions get golden images (the demo photos, mirrored and centre-cropped: 12
images, reference outputs from TensorFlow, as `edgectl model package` writes them) and declare an
int8 acceptance rule holding the issue's goal (top-1 agreement >= 99% on the golden set), so
selection builds, verifies and times LiteRT fp32, OpenVINO fp32 and calibrated int8 LiteRT, each in
the gateway's serving shape (edge.serving.selection_checks: one single-threaded interpreter or stream
per core, one thread each; its figure is `selection_img_s`). Each candidate's cached model is then
loaded in that same shape again and driven like the gateway drives it for longer, the candidates
interleaved round by round; ratios are to LiteRT fp32 measured in the same rounds.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import cv2
import numpy as np

from bench.harness import raw_parallel_rate
from edge.models.golden import write_reference
from edge.models.store import ModelStore
from edge.serving.candidates import cache_dir, load_served
from edge.serving.litert import pool_shape
from edge.serving.preprocess import FramePreprocessor

INT8_RULE = {"tolerance": 0.3, "top1_margin": 0.1, "min_top1_agreement": 0.99}  # the goal: >= 99%


def golden_images() -> dict[str, np.ndarray]:
    from tools.demo_photos import DEMO_PHOTOS, load_photo

    images: dict[str, np.ndarray] = {}
    for name in DEMO_PHOTOS:
        bgr = cv2.cvtColor(load_photo(name), cv2.COLOR_RGB2BGR)
        height, width = bgr.shape[:2]
        images[f"{name}.png"] = bgr
        images[f"{name}-mirrored.png"] = np.ascontiguousarray(bgr[:, ::-1])
        images[f"{name}-centre.png"] = np.ascontiguousarray(bgr[height // 6: -height // 6, width // 6: -width // 6])
    return images


def prepare(store: Path, model: str) -> None:
    """Golden images with TensorFlow's outputs, and the declared int8 rule, in the version's folder."""
    from edge.serving.embedded import EmbeddedClassifier

    version = ModelStore(store).resolve(model)
    folder = version.path / "assets.extra" / "golden"
    folder.mkdir(parents=True, exist_ok=True)
    images = golden_images()
    for name, image in images.items():
        cv2.imwrite(str(folder / name), image)
    tf = EmbeddedClassifier(version, runtime="tensorflow")
    pre = FramePreprocessor(tf.info.image_input, tf.info.metadata.preprocess)
    scores = tf.classify(pre.batch_to_input(np.stack([pre.to_model_pixels(i) for i in images.values()])))
    write_reference(version.path, dict(zip(images, scores)), output=tf.info.output_name)
    tf.close()
    edge_json = version.path / "assets.extra" / "edge.json"
    doc = json.loads(edge_json.read_text())
    doc["acceptance"] = {"int8": INT8_RULE}
    edge_json.write_text(json.dumps(doc, indent=1))


def candidate_rows(store: Path, model: str, seconds: float, rounds: int = 3) -> tuple[list[dict], object, dict]:
    """One row per candidate (runtime, precision, verdict, agreement, img/s in the serving shape, ratio to
    LiteRT fp32), the selected serving classifier (kept open for the gateway ceiling) and the selection."""
    from edge.serving.embedded import EmbeddedClassifier

    version = ModelStore(store).resolve(model)
    selected = EmbeddedClassifier(version, isolate_selection=False)  # what the gateway (runtime = auto) serves
    selection = selected.selection
    count, each = pool_shape()
    files = {"litert": "litert.tflite", "litert_int8": "litert-int8.tflite", "openvino": "openvino.xml"}
    pools = {}
    for name, file in files.items():
        result = selection["candidates"].get(name)
        path = cache_dir(version.path) / file
        if result is not None and path.is_file():
            pools[name] = load_served(result["runtime"], path, selected.info, each, count)
    samples: dict[str, list[float]] = {name: [] for name in pools}
    for _ in range(rounds):  # interleaved: load drifts on a shared box
        for name, pool in pools.items():
            samples[name].append(raw_parallel_rate(pool, seconds, rounds=1))
    rates = {name: statistics.median(v) for name, v in samples.items()}
    base = rates.get("litert")
    rows = []
    for name, result in selection["candidates"].items():
        rate = rates.get(name)
        rows.append({"name": name, "runtime": result["runtime"], "precision": result["precision"],
                     "ok": result["ok"], "agreement": result.get("top1_agreement"),
                     "max_abs_diff": result.get("max_abs_diff"), "img_s": rate,
                     "selection_img_s": result.get("img_per_s"), "timed_shape": result.get("timed_shape"),
                     "ratio": rate / base if rate and base else None,
                     "selected": name == selection["candidate"], "error": result.get("error")})
    for pool in pools.values():
        pool.close()
    return rows, selected, selection


def describe(row: dict) -> str:
    verdict = "SELECTED" if row["selected"] else ("passed" if row["ok"] else "refused")
    agreement = "-" if row["agreement"] is None else f"{row['agreement']:.0%}"
    diff = "-" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.2g}"
    note = f"{verdict}; top-1 agreement {agreement}, max|diff| {diff}"
    shape = row.get("timed_shape")
    if row.get("selection_img_s") and shape:
        note += (f"; selection timed {row['selection_img_s']:.1f} img/s as {shape['concurrency']} thread(s) x "
                 f"batch {shape['batch']}")
    if row["error"] and not row["ok"]:
        note += f" ({row['error'][:70]})"
    return note
