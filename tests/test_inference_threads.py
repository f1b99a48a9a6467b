"""Several inference threads: a pool of LiteRT interpreters, the batcher shared between threads,
per-camera result order, and the thread count following the serving classifier."""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from camera import Frame
from edge.inference.batcher import FrameBatcher
from edge.inference.pipeline import ClassifiedBatch, InferencePipeline
from edge.models.metadata import PreprocessSpec, VersionMetadata
from edge.serving.base import ClassifierBase, ClassifierInfo, ImageInput
from tests.fixtures.models import colour_litert_info


class EndlessCamera:
    """A slot that always holds a new frame (a camera far above capacity); frames numbered 1, 2, ..."""

    def __init__(self, name: str, colour: tuple[int, int, int]) -> None:
        self.name = name
        self.rois = ()
        self._image = np.zeros((64, 64, 3), np.uint8)
        self._image[...] = colour[::-1]  # BGR
        self._number = 0
        self._lock = threading.Lock()

    def set_transform(self, transform: object) -> None:
        """No preprocessing in this test slot: the pipeline preprocesses on its own thread."""

    def take(self, timeout_s: float = 0.0) -> Frame | None:
        with self._lock:
            self._number += 1
            return Frame(self.name, self._number, self._image, time.time(), time.monotonic())


class OverlapProbe:
    """Wraps a classifier and records how many classify() calls ran at the same moment."""

    def __init__(self, inner, concurrency: int, delay_s: float = 0.002) -> None:
        self.inner = inner
        self.info = inner.info
        self.concurrency = concurrency
        self.preferred_batch_size = getattr(inner, "preferred_batch_size", None)
        self.delay_s = delay_s
        self._lock = threading.Lock()
        self.running = 0
        self.max_running = 0
        self.threads: set[str] = set()

    def classify(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.threads.add(threading.current_thread().name)
        try:
            time.sleep(self.delay_s)  # keep calls long enough to overlap on a loaded 2-core box
            return self.inner.classify(batch)
        finally:
            with self._lock:
                self.running -= 1

    def close(self) -> None:
        self.inner.close()

colour_info = colour_litert_info


def test_pool_shape_fills_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.serving import litert

    for cores, asked, expected in [
        (2, (0, 0), (2, 1)), (4, (0, 0), (4, 1)), (8, (0, 0), (4, 2)), (1, (0, 0), (1, 1)),
        (8, (0, 2), (4, 2)), (8, (0, 4), (2, 4)), (2, (0, 4), (1, 4)), (4, (2, 0), (2, 2)), (2, (3, 1), (3, 1)),
    ]:
        monkeypatch.setattr(litert, "default_threads", lambda threads=0, cores=cores: threads or cores)
        assert litert.pool_shape(*asked) == expected, (cores, asked)


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


def test_batcher_skips_a_camera_until_its_items_are_done() -> None:
    a, b = EndlessCamera("a", (255, 0, 0)), EndlessCamera("b", (0, 255, 0))
    batcher = FrameBatcher([a, b], threading.Event(), max_batch_size=1, max_wait_s=0.0)
    stop = threading.Event()
    first = batcher.next_batch(stop)
    second = batcher.next_batch(stop)
    assert {first[0].frame.camera, second[0].frame.camera} == {"a", "b"}
    # both cameras busy: nothing to hand out although both slots hold frames
    assert batcher.next_batch(stop, idle_timeout_s=0.05) == []
    batcher.done(first)
    again = batcher.next_batch(stop, idle_timeout_s=1.0)
    assert [i.frame.camera for i in again] == [first[0].frame.camera]
    assert again[0].frame.number == first[0].frame.number + 1


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


class FixedClassifier(ClassifierBase):
    """A model stand-in with a chosen concurrency (the thread count is what is tested here)."""

    def __init__(self, concurrency: int) -> None:
        self.info = ClassifierInfo("m", concurrency, ImageInput("image", "uint8", 8, 8), "out",
                                   VersionMetadata(PreprocessSpec(), None, "none", ("x", "y")), "test")
        self.concurrency = concurrency
        self.calls = 0

    def classify(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.tile(np.array([[0.25, 0.75]], dtype=np.float32), (len(batch), 1))

    def close(self) -> None:
        pass


def test_thread_count_follows_the_serving_classifier() -> None:
    delivered: list[ClassifiedBatch] = []
    cameras = [EndlessCamera(n, (9, 9, 9)) for n in "abc"]
    pipeline = InferencePipeline(FrameBatcher(cameras, threading.Event(), 1, 0.0), FixedClassifier(1),
                                 delivered.append)
    pipeline.start()
    try:
        for concurrency in (1, 3, 1, 2):
            classifier = FixedClassifier(concurrency)
            pipeline.set_classifier(classifier)
            deadline = time.monotonic() + 10
            while (pipeline.workers != concurrency or classifier.calls < 20) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert pipeline.workers == concurrency and classifier.calls >= 20
            assert time.monotonic() - pipeline.last_progress_mono < 5.0
    finally:
        pipeline.stop()
    assert {b.model_version for b in delivered} >= {1, 2, 3}


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
