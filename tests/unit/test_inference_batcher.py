"""Batcher and inference loop on in-memory frame slots (the cameras themselves are tested elsewhere)."""
from __future__ import annotations

import threading
import time

from camera import Roi
from edge.inference.batcher import FrameBatcher
from edge.inference.pipeline import ClassifiedBatch, InferencePipeline
from tests.support.fakes import FakeClassifier, SlotCamera


def test_batches_across_cameras_and_rois() -> None:
    a, b = SlotCamera("a"), SlotCamera("b", rois=(Roi("left", 0, 0, 10, 10), Roi("right", 10, 0, 10, 10)))
    batcher = FrameBatcher([a, b], threading.Event(), max_batch_size=2, max_wait_s=0.0)
    a.put(1)
    b.put(1)
    stop = threading.Event()
    first = batcher.next_batch(stop)
    batcher.done(first)
    second = batcher.next_batch(stop)
    got = [(i.frame.camera, i.roi) for i in first + second]
    assert sorted(got, key=str) == sorted([("a", None), ("b", "left"), ("b", "right")], key=str)
    assert len(first) == 2 and len(second) == 1  # the ROI that did not fit is carried, not lost
    assert first[0].image.shape[:2] in ((20, 30), (10, 10))


def test_idle_returns_empty_and_wakes_on_frame() -> None:
    cam = SlotCamera("a")
    ready = threading.Event()
    batcher = FrameBatcher([cam], ready, max_batch_size=4, max_wait_s=0.0)
    assert batcher.next_batch(threading.Event(), idle_timeout_s=0.05) == []

    def later() -> None:
        time.sleep(0.1)
        cam.put(7)
        ready.set()

    threading.Thread(target=later).start()
    items = batcher.next_batch(threading.Event(), idle_timeout_s=10.0)
    assert [i.frame.number for i in items] == [7]


def test_rotation_is_fair_above_capacity() -> None:
    cams = [SlotCamera(n) for n in "abcd"]
    batcher = FrameBatcher(cams, threading.Event(), max_batch_size=1, max_wait_s=0.0)
    counts = dict.fromkeys("abcd", 0)
    for turn in range(40):
        for cam in cams:
            cam.put(turn)  # every camera always has a fresh frame: 4x over capacity
        items = batcher.next_batch(threading.Event())
        for item in items:
            counts[item.frame.camera] += 1
        batcher.done(items)
    assert set(counts.values()) == {10}


def test_pipeline_survives_backend_errors_and_counts_them() -> None:
    cam = SlotCamera("a")
    ready = threading.Event()
    classifier = FakeClassifier(fail_first=2)
    delivered: list[ClassifiedBatch] = []
    pipeline = InferencePipeline(FrameBatcher([cam], ready, 4, 0.0), classifier, delivered.append)
    pipeline.start()
    try:
        for n in range(1, 40):
            cam.put(n)
            ready.set()
            time.sleep(0.01)
            if len(delivered) >= 3:
                break
        deadline = time.monotonic() + 10
        while len(delivered) < 3 and time.monotonic() < deadline:
            cam.put(100)
            ready.set()
            time.sleep(0.02)
    finally:
        pipeline.stop()
    stats = pipeline.stats()
    assert stats["errors"] == 2 and stats["frames_failed"] >= 2
    assert "backend unavailable" in stats["last_error"]
    assert len(delivered) >= 3
    assert delivered[0].model_version == 3 and delivered[0].scores.shape[1] == 2
    assert stats["frames_classified"] == sum(len(b.items) for b in delivered)
