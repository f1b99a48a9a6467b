"""Runtime selection times every candidate in the shape it will serve in, and serves it as timed.

The gateway serves LiteRT and OpenVINO as a pool (``serving.interpreters`` x ``serving.threads``, one
inference thread per interpreter or infer request, one image per call) and TensorFlow from one thread
with ``serving.max_batch_size`` images per call; a candidate timed any other way can win the
selection and lose in service (EfficientNet-Lite0: OpenVINO on one interpreter over both cores,
0.94x LiteRT as a pool). Real runtimes only; nothing here checks a speed.
"""
from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import edge.serving.candidates as cands
import edge.serving.selection as rs
from edge.serving.base import serving_shape
from edge.serving.litert import LiteRTClassifier
from edge.serving.selection_checks import Timed, time_runtimes
from tests.support.models import colour_litert_info
from tests.support.selection import RED, assert_fastest_passing, classify_images, copy_version, solid

SHAPE = {"interpreters": 2, "threads": 1, "max_batch_size": 4}  # the serving settings of these tests


class CallRecorder:
    """Wraps a real classify(): the batch sizes it was called with, from which threads, and how many
    calls were in flight at once. A thread's first call waits (at most 30 s) until ``parties`` calls
    are in flight together, so a harness that calls from fewer threads, or one after the other,
    breaks the barrier instead of passing by luck."""

    def __init__(self, classify: Callable[[np.ndarray], np.ndarray], parties: int) -> None:
        self.classify = classify
        self.barrier = threading.Barrier(parties, timeout=30)
        self.lock = threading.Lock()
        self.sizes: set[int] = set()
        self.threads: list[threading.Thread] = []  # kept alive: no identity is reused
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        thread = threading.current_thread()
        with self.lock:
            first = all(t is not thread for t in self.threads)
            if first:
                self.threads.append(thread)
            self.calls += 1
            self.sizes.add(len(batch))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if first:
                self.barrier.wait()
            return self.classify(batch)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_the_harness_drives_a_litert_pool_from_one_thread_per_interpreter(colour_tflite: Path,
                                                                          colour_model_store: Path) -> None:
    info = colour_litert_info(colour_model_store)
    pool = LiteRTClassifier(colour_tflite, info, threads=1, interpreters=2)
    single = LiteRTClassifier(colour_tflite, info, threads=2)
    try:
        pooled = CallRecorder(pool.classify, parties=pool.concurrency)
        batched = CallRecorder(single.classify, parties=1)  # TensorFlow's shape: one thread, full batches
        runners = {
            "pool": Timed(pooled, *serving_shape(pool.preferred_batch_size, pool.concurrency, 4), threads=1,
                          warm_up=pool.warm_up),
            "batched": Timed(batched, *serving_shape(None, 1, 4), threads=2),
        }
        inputs = np.random.default_rng(7).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
        timed = time_runtimes(runners, inputs, rounds=3, images=12)
    finally:
        pool.close()
        single.close()
    assert pooled.max_in_flight == 2  # both interpreters busy at once, as the two inference threads keep them
    assert pooled.sizes == {1} and batched.sizes == {4}
    assert threading.main_thread() not in pooled.threads + batched.threads
    assert pooled.calls >= 3 * 12 and batched.calls >= 3 * 3  # every round classified at least `images`
    img_s, shape = timed["pool"]
    assert img_s > 0 and shape == {"concurrency": 2, "threads": 1, "batch": 1, "images": 12, "rounds": 3}
    assert timed["batched"][1] == {"concurrency": 1, "threads": 2, "batch": 4, "images": 12, "rounds": 3}


@pytest.fixture(scope="module")
def colour_shaped(colour_model_store: Path, tmp_path_factory: pytest.TempPathFactory):
    """The colour model selected with runtime = auto in the serving shape SHAPE (every installed runtime)."""
    from edge.serving.embedded import EmbeddedClassifier

    version = copy_version(colour_model_store / "colour" / "1", tmp_path_factory.mktemp("sel-shape"), "colour")
    return version, EmbeddedClassifier(version, isolate_selection=False, **SHAPE)


def test_every_candidate_is_timed_and_served_in_its_serving_shape(colour_shaped) -> None:
    _, classifier = colour_shaped
    sel = classifier.selection
    assert {"tensorflow", "litert"} <= set(sel["candidates"])
    for name, cand in sel["candidates"].items():
        if not cand["ok"]:
            continue
        shape = cand["timed_shape"]
        if cand["runtime"] == "tensorflow":
            assert (shape["concurrency"], shape["batch"]) == (1, SHAPE["max_batch_size"]), name
        else:
            assert (shape["concurrency"], shape["threads"], shape["batch"]) == (2, 1, 1), name
        assert shape["images"] >= 12 and shape["rounds"] >= 3 and cand["img_per_s"] > 0, name
    assert_fastest_passing(sel)
    assert "timed as they serve: LiteRT/OpenVINO 2 interpreter(s) x 1 thread(s)" in sel["reason"]
    chosen = sel["candidates"][sel["candidate"]]["timed_shape"]
    if sel["runtime"] != "tensorflow":  # the pool that serves is the pool that was timed
        health = classifier.health()
        assert (health["interpreters"], health["threads_per_interpreter"]) == (chosen["concurrency"], chosen["threads"])
        assert classifier.concurrency == chosen["concurrency"] and classifier.preferred_batch_size == chosen["batch"]
    assert classify_images(classifier, [solid(RED)]).argmax(1).tolist() == [0]


def test_a_decision_cached_with_the_old_timing_or_another_shape_is_not_reused(
        colour_shaped, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.serving.embedded import EmbeddedClassifier

    source, _ = colour_shaped
    version = copy_version(source.path, tmp_path, "colour")
    shutil.copytree(rs.cache_dir(source.path), rs.cache_dir(version.path))
    assert EmbeddedClassifier(version, **SHAPE).selection["cached"] is True  # the copied cache, as it is
    key = rs.cache_key(version.path, "auto", SHAPE["threads"], rs.DEFAULT_TOLERANCE, "auto",
                       SHAPE["interpreters"], SHAPE["max_batch_size"])
    assert key["format"] == rs.FORMAT == 3
    for other in ({"interpreters": 1}, {"threads": 2}, {"max_batch_size": 8}):
        settings = SHAPE | other
        assert rs.cache_key(version.path, "auto", settings["threads"], rs.DEFAULT_TOLERANCE, "auto",
                            settings["interpreters"], settings["max_batch_size"]) != key, other
    # the same decision as format 2 wrote it: one interpreter on all cores, timed one call at a time
    cached = rs.cache_dir(version.path) / rs.SELECTION_FILE
    doc = json.loads(cached.read_text())
    doc["key"] = {k: v for k, v in doc["key"].items() if k not in ("shape", "tf_threads")} | {"format": 2, "threads": 2}
    for cand in doc["selection"]["candidates"].values():
        cand["img_per_s_batch1"] = cand.pop("timed_shape")
    cached.write_text(json.dumps(doc))
    conversions: list[Path] = []
    real = cands.convert_saved_model
    monkeypatch.setattr(cands, "convert_saved_model", lambda p: conversions.append(p) or real(p))
    again = EmbeddedClassifier(version, isolate_selection=False, **SHAPE)
    assert again.selection["cached"] is False and len(conversions) == 1  # selected again, in the serving shape
    assert all(c["timed_shape"] for c in again.selection["candidates"].values() if c["ok"])
    assert json.loads(cached.read_text())["key"] == key
