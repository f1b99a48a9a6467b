"""Result messages: top-k with labels, on-change filtering, min score, spool errors counted; `top_k` itself."""
from __future__ import annotations

import time

import numpy as np

from camera import Frame
from edge.inference.batcher import WorkItem
from edge.inference.pipeline import ClassifiedBatch
from edge.inference.results import ResultPublisher, top_k
from tests.support.fakes import ListSink


def batch(camera: str, rows: list[list[float]], roi: str | None = None, start: int = 1,
          labels: tuple[str, ...] = ("a", "b")) -> ClassifiedBatch:
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    items = [WorkItem(Frame(camera, start + i, image, time.time(), time.monotonic()), roi, image)
             for i in range(len(rows))]
    return ClassifiedBatch(items, np.array(rows, dtype=np.float32), "m", 7, labels, 12.5, time.monotonic())


def run(publisher: ResultPublisher, *batches: ClassifiedBatch) -> None:
    publisher.start()
    for b in batches:
        publisher.submit(b)
    publisher.stop()


def test_payload_fields_and_labels() -> None:
    sink = ListSink()
    run(ResultPublisher(sink, "dev", k=2), batch("front", [[0.1, 0.7, 0.2]], roi="door", labels=("cat", "dog", "car")))
    (camera, payload), = sink.items
    assert camera == "front"
    assert payload["top_k"] == [{"label": "dog", "index": 1, "score": 0.7}, {"label": "car", "index": 2, "score": 0.2}]
    assert payload["model"] == {"name": "m", "version": 7} and payload["roi"] == "door"
    assert payload["frame"] == 1 and payload["device"] == "dev" and payload["batch_size"] == 1
    assert payload["reason"] == "sampled"  # no scene-change gate: every frame the fps limit keeps
    assert payload["latency_ms"]["inference"] == 12.5


def test_on_change_only_publishes_when_top1_changes() -> None:
    sink = ListSink()
    publisher = ResultPublisher(sink, "dev", on_change_only=True)
    run(publisher,
        batch("c1", [[0.9, 0.1], [0.8, 0.2], [0.1, 0.9]]),
        batch("c2", [[0.9, 0.1]]),
        batch("c1", [[0.2, 0.8], [0.7, 0.3]], start=4))
    tops = [(c, p["top_k"][0]["label"], p["frame"]) for c, p in sink.items]
    assert tops == [("c1", "a", 1), ("c1", "b", 3), ("c2", "a", 1), ("c1", "a", 5)]
    assert publisher.stats()["suppressed_unchanged"] == 2


def test_min_score_and_unknown_label_index() -> None:
    sink = ListSink()
    run(ResultPublisher(sink, "dev", k=3, min_score=0.15), batch("c", [[0.1, 0.2, 0.7]], labels=("only",)))
    assert [p["label"] for p in sink.items[0][1]["top_k"]] == ["2", "1"]


def test_spool_failure_is_counted_not_fatal() -> None:
    publisher = ResultPublisher(ListSink(fail=True), "dev")
    run(publisher, batch("c", [[0.5, 0.5]]), batch("c", [[0.5, 0.5], [0.1, 0.9]]))
    stats = publisher.stats()
    assert stats["errors"] == 2 and stats["frames_lost"] == 3
    assert "disk is full" in stats["last_error"]


def test_top_k_orders_best_first() -> None:
    scores = np.array([[0.1, 0.5, 0.2, 0.2], [0.7, 0.1, 0.15, 0.05]], dtype=np.float32)
    idx, vals = top_k(scores, 2)
    assert idx.tolist() == [[1, 2], [0, 2]] or idx.tolist() == [[1, 3], [0, 2]]
    assert np.allclose(vals[:, 0], [0.5, 0.7])
    assert top_k(scores, 10)[0].shape == (2, 4)
