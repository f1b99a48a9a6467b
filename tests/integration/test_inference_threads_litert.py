"""Several inference threads on real LiteRT interpreters: a pool of them, two threads classifying side
by side with per-camera result order, and the embedded backend serving from a pool."""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from edge.inference.batcher import FrameBatcher
from edge.inference.pipeline import ClassifiedBatch, InferencePipeline
from tests.support.fakes import EndlessCamera, OverlapProbe
from tests.support.models import colour_litert_info as colour_info


def test_interpreter_pool_gives_the_same_answers_from_many_threads(colour_tflite: Path,
                                                                   colour_model_store: Path) -> None:
    from edge.serving.litert import LiteRTClassifier

    single = LiteRTClassifier(colour_tflite, colour_info(colour_model_store), threads=1)
    pool = single.pooled(3, 1)
    assert (pool.concurrency, pool.threads, single.concurrency) == (3, 1, 1)
    rng = np.random.default_rng(1)
    batches = [rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8) for _ in range(8)]
    expected = [single.classify(b) for b in batches]
    errors: list[str] = []

    def hammer(offset: int) -> None:
        for turn in range(40):
            index = (turn + offset) % len(batches)
            if not np.array_equal(pool.classify(batches[index]), expected[index]):
                errors.append(f"thread {offset} turn {turn}: scores differ")

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert pool.model.content is not None and len({id(m) for m in pool.models}) == 3
    pool.close()
    single.close()


def test_two_threads_classify_side_by_side_and_keep_camera_order(colour_tflite: Path,
                                                                 colour_model_store: Path) -> None:
    from edge.serving.litert import LiteRTClassifier

    pool = LiteRTClassifier(colour_tflite, colour_info(colour_model_store), threads=1, interpreters=2)
    probe = OverlapProbe(pool, concurrency=2)
    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "red2": (255, 0, 0)}
    cameras = [EndlessCamera(name, colour) for name, colour in colours.items()]
    order: dict[str, list[int]] = defaultdict(list)
    wrong: list[str] = []
    lock = threading.Lock()

    def deliver(batch: ClassifiedBatch) -> None:
        with lock:
            for row, item in enumerate(batch.items):
                order[item.frame.camera].append(item.frame.number)
                want = {"red": 0, "red2": 0, "green": 1, "blue": 2}[item.frame.camera]
                if int(np.argmax(batch.scores[row])) != want:
                    wrong.append(f"{item.frame.camera} #{item.frame.number}")

    pipeline = InferencePipeline(FrameBatcher(cameras, threading.Event(), 4, 0.0), probe, deliver)
    pipeline.start()
    try:
        deadline = time.monotonic() + 30
        while sum(len(v) for v in order.values()) < 400 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pipeline.stop()
    stats = pipeline.stats()
    assert stats["threads"] == 2 and pipeline.workers == 2
    assert probe.max_running == 2 and len(probe.threads) == 2  # two calls really ran at once
    assert wrong == []
    for name, numbers in order.items():
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), name
    counts = [len(order[c.name]) for c in cameras]
    assert min(counts) >= 0.8 * max(counts), counts  # fair share above capacity
    assert stats["frames_classified"] == sum(counts)
    pool.close()


def test_embedded_litert_serves_from_a_pool_and_says_so(colour_model_store: Path) -> None:
    from edge.models.store import ModelStore
    from edge.serving.embedded import EmbeddedClassifier

    version = ModelStore(colour_model_store).resolve("colour")
    classifier = EmbeddedClassifier(version, runtime="litert", interpreters=2, threads=1, isolate_selection=False)
    try:
        health = classifier.health()
        assert health["runtime"] == "litert"
        assert (health["interpreters"], health["threads_per_interpreter"], classifier.concurrency) == (2, 1, 2)
        red = np.zeros((1, 64, 64, 3), np.uint8)
        red[..., 0] = 255
        assert int(classifier.classify(red).argmax()) == 0
    finally:
        classifier.close()
