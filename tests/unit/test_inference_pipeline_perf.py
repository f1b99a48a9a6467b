"""Structural performance guarantees of the inference loop (no timing is asserted anywhere).

The classifiers here are counting stand-ins: they record what the pipeline hands them so the tests
can count transform calls against classify calls and check shapes and memory sharing. They are
acceptable only for counting; the real models run in tests/e2e/test_gateway_results.py and the bench.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from camera import Roi, crop_regions
from edge.inference.batcher import FrameBatcher
from edge.inference.pipeline import ClassifiedBatch, InferencePipeline, _Worker
from edge.serving.preprocess import FramePreprocessor
from tests.support.fakes import CountingClassifier, TransformingSlot


def turn(pipeline: InferencePipeline, batcher: FrameBatcher) -> list:
    """One loop turn of the inference thread, run on the test's thread: sync, batch, classify."""
    pipeline._sync_model()
    items = batcher.next_batch(threading.Event(), idle_timeout_s=0.0)
    if items:
        pipeline._classify(TURN_WORKER, items)
        batcher.done(items)
    return items


TURN_WORKER = _Worker(0)


def test_capture_pixels_are_used_as_they_are_and_batches_of_one_are_not_copied() -> None:
    cam = TransformingSlot("a")
    classifier = CountingClassifier(preferred_batch_size=1)
    batcher = FrameBatcher([cam], threading.Event(), 8, 0.0)
    delivered: list[ClassifiedBatch] = []
    pipeline = InferencePipeline(batcher, classifier, delivered.append)
    pipeline._sync_model()
    assert cam.transform is not None and len(cam.installs) == 1  # installed before any frame
    for number in range(1, 6):
        frame = cam.put(number)
        turn(pipeline, batcher)
        # uint8 model, batch of one: the classifier reads the capture thread's pixels in place
        assert np.shares_memory(classifier.received[0], frame.pixels[0])
        assert delivered[-1].items[0].image is frame.image  # no crop/copy of the full frame either
    assert pipeline.pixels_reused == 5 and pipeline.pixels_redone == 0
    expected = FramePreprocessor(classifier.info.image_input, classifier.info.metadata.preprocess,
                                 fast_resize=True).to_model_pixels(frame.image)
    np.testing.assert_array_equal(classifier.batches[-1][0], expected)
    assert pipeline.stats()["preprocess"] == {"in_capture_threads": 5, "on_inference_thread": 0}


def test_pixels_are_assembled_into_one_reused_buffer_for_float_models() -> None:
    cams = [TransformingSlot(n) for n in "abc"]
    classifier = CountingClassifier(dtype="float32")
    batcher = FrameBatcher(cams, threading.Event(), 4, 0.0)
    pipeline = InferencePipeline(batcher, classifier, lambda batch: None)
    pipeline._sync_model()
    buffers = set()
    for number in range(1, 4):
        for cam in cams:
            cam.put(number)
        turn(pipeline, batcher)
        buffers.add(classifier.received[0].__array_interface__["data"][0])
    assert classifier.images == 9 and pipeline.pixels_redone == 0
    assert len(buffers) == 1  # the float input is written into the same buffer every batch
    pre = FramePreprocessor(classifier.info.image_input, classifier.info.metadata.preprocess, fast_resize=True)
    frame_pixels = pre.to_model_pixels(cams[0].put(99).image)
    np.testing.assert_allclose(pre.batch_to_input(frame_pixels[None])[0],
                               (frame_pixels.astype(np.float32) - 127.0) / 128.0, rtol=1e-6)


def test_model_input_change_redoes_stale_pixels_and_installs_the_new_transform() -> None:
    cam = TransformingSlot("a", rois=(Roi("left", 0, 0, 32, 48), Roi("right", 32, 0, 32, 48)))
    small = CountingClassifier(16, 16)
    batcher = FrameBatcher([cam], threading.Event(), 8, 0.0)
    pipeline = InferencePipeline(batcher, small, lambda batch: None)
    pipeline._sync_model()
    old_transform = cam.transform
    cam.put(1)
    turn(pipeline, batcher)
    assert pipeline.pixels_reused == 2 and pipeline.pixels_redone == 0  # two ROIs, both from the capture

    same_input = CountingClassifier(16, 16, version=2)  # a new version with the same input: nothing redone
    pipeline.set_classifier(same_input)
    cam.put(2, made_by=old_transform)
    turn(pipeline, batcher)
    assert pipeline.pixels_redone == 0 and len(cam.installs) == 1

    large = CountingClassifier(24, 20, color="BGR", version=3)
    pipeline.set_classifier(large)
    frame = cam.put(3, made_by=old_transform)  # captured before the swap: made for the old input
    turn(pipeline, batcher)
    assert pipeline.pixels_redone == 2 and large.batches[-1].shape == (2, 24, 20, 3)
    pre = FramePreprocessor(large.info.image_input, large.info.metadata.preprocess, fast_resize=True)
    for row, (_, region) in enumerate(crop_regions(frame.image, cam.rois)):
        np.testing.assert_array_equal(large.batches[-1][row], pre.to_model_pixels(region))
    assert len(cam.installs) == 2 and cam.installs[-1] == pre.tag  # the cameras now make the new pixels
    cam.put(4)
    turn(pipeline, batcher)
    assert pipeline.pixels_redone == 2 and pipeline.pixels_reused == 6


@pytest.mark.parametrize("preferred, expected", [(None, 8), (1, 1), (4, 4), (32, 8)])
def test_batch_size_follows_the_classifiers_preference(preferred: int | None, expected: int) -> None:
    cams = [TransformingSlot(f"c{i}") for i in range(8)]
    classifier = CountingClassifier(preferred_batch_size=preferred)
    batcher = FrameBatcher(cams, threading.Event(), 8, 0.0)
    pipeline = InferencePipeline(batcher, classifier, lambda batch: None)
    pipeline._sync_model()
    for cam in cams:
        cam.put(1)
    sizes = []
    while items := turn(pipeline, batcher):
        sizes.append(len(items))
    assert pipeline.batch_size == expected
    assert max(sizes) == expected and sum(sizes) == 8


def test_swapping_to_a_classifier_with_another_preference_resizes_batches() -> None:
    cams = [TransformingSlot(f"c{i}") for i in range(4)]
    batcher = FrameBatcher(cams, threading.Event(), 8, 0.0)
    pipeline = InferencePipeline(batcher, CountingClassifier(), lambda batch: None)
    pipeline._sync_model()
    assert pipeline.batch_size == 8
    pipeline.set_classifier(CountingClassifier(preferred_batch_size=1, version=2))
    for cam in cams:
        cam.put(1)
    assert len(turn(pipeline, batcher)) == 1
    pipeline.set_classifier(CountingClassifier(version=3))
    assert len(turn(pipeline, batcher)) == 3  # back to the configured cap: the rest in one batch
