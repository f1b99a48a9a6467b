"""Decode on demand above capacity: frames a slow consumer never takes are never decoded.

Real MJPEG .avi files read by real capture threads; the consumer is the test itself. No timing is
asserted: the tests count decodes (CameraStats.frames_decoded / decoded_on_take) against frames
read and taken, and check that what take() returns is the newest frame with the right pixels.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from camera import CameraCapture, CaptureSettings
from camera.decode import DecodeDeferral, DeferredFrame, decode_deferred
from tests.support.frames import HD, make_marked_frame, photo_frame, preprocessor, read_frame_marker
from tests.support.waits import wait_until

COUNT = 40  # frames in the looping test file: frame number n shows index (n - 1) % COUNT


def test_the_policy_defers_while_the_consumer_is_behind_and_stops_after_hold_empty_publishes() -> None:
    policy = DecodeDeferral(hold=3)
    assert not policy.active  # a new connection decodes in the capture thread
    policy.published(slot_was_full=False)
    assert not policy.active
    policy.published(slot_was_full=True)  # the consumer had not taken the previous frame
    assert policy.active
    for _ in range(2):
        policy.published(slot_was_full=False)
        assert policy.active
    policy.published(slot_was_full=False)  # third publish in a row into an empty slot
    assert not policy.active
    policy.published(slot_was_full=True)
    policy.disable()
    policy.published(slot_was_full=True)
    assert not policy.active  # disabled for the rest of the connection ...
    policy.reset()
    policy.published(slot_was_full=True)
    assert policy.active  # ... and a new connection starts over


def test_a_slow_consumer_gets_the_newest_frame_and_only_taken_frames_are_decoded(
        video_file_factory, capture_factory) -> None:
    video = video_file_factory(size=(320, 240), fps=30.0, count=COUNT)
    capture: CameraCapture = capture_factory(CaptureSettings(name="slow", uri=str(video), realtime=False))
    wait_until(lambda: capture.stats().frames_read > 50, 20, message="more than 50 frames read")
    taken = []
    for _ in range(12):  # a consumer far slower than the file is read
        time.sleep(0.05)
        read_before = capture.stats().frames_read
        frame = capture.take()
        assert frame is not None
        taken.append((frame, read_before))
    stats = capture.stats()
    capture.stop()
    for frame, read_before in taken:
        # the newest frame, not one waiting since the last take; the capture thread counts a frame read
        # just before it puts it in the slot, so the slot may be one behind the count at that instant
        assert frame.number >= read_before - 1
        expected = make_marked_frame((frame.number - 1) % COUNT)
        assert read_frame_marker(frame.image) == (frame.number - 1) % COUNT
        assert np.abs(frame.image.astype(int) - expected).mean() < 6  # only JPEG loss
    assert stats.decoded_on_take >= 10  # decoded in take(), for the frames taken
    # every other decode is one the capture thread made before it noticed the consumer was behind
    # (or while it believed the consumer had caught up): a few, against thousands of frames read
    assert stats.frames_read > 500
    assert stats.frames_decoded - stats.decoded_on_take < 40
    assert stats.frames_read - stats.frames_processed - stats.frames_skipped in (0, 1)  # at most the slot's frame


def test_a_consumer_that_keeps_up_gets_frames_decoded_in_the_capture_thread(
        video_file_factory, capture_factory) -> None:
    video = video_file_factory(size=(320, 240), fps=30.0, count=COUNT)
    capture: CameraCapture = capture_factory(CaptureSettings(name="prompt", uri=str(video)))  # real time
    numbers = []
    while len(numbers) < 30:
        frame = capture.take(timeout_s=5.0)
        assert frame is not None
        numbers.append(frame.number)
    stats = capture.stats()
    assert stats.decoded_on_take == 0  # always waiting in take(): the slot never stayed full
    assert stats.frames_decoded >= stats.frames_processed >= 30
    assert numbers == sorted(numbers)


def test_deferred_frames_are_decoded_small_and_transformed_for_the_transform_current_at_take(
        hd_photo_video, capture_factory) -> None:
    settings = CaptureSettings(name="hd", uri=str(hd_photo_video), realtime=False, transform=preprocessor(224, 224))
    capture: CameraCapture = capture_factory(settings)
    wait_until(lambda: capture.stats().frames_read > 30, 20, message="more than 30 frames read")
    capture.set_transform(preprocessor(300, 300))  # swapped while frames wait undecoded
    frame = None
    for _ in range(20):
        time.sleep(0.02)
        frame = capture.take()
        if frame is not None and capture.stats().decoded_on_take and frame.pixels_tag == capture.transform.tag:
            break
    assert frame is not None and capture.stats().decoded_on_take > 0
    stats = capture.stats()
    assert frame.image.shape == (360, 640, 3) and stats.decode_scale == 2  # 640x360 still covers 300x300
    assert stats.resolution == HD and stats.decoded_resolution == (640, 360)
    assert frame.pixels is not None and frame.pixels[0].shape == (300, 300, 3)
    assert frame.pixels_tag == capture.transform.tag
    reference = preprocessor(300, 300)(photo_frame())  # the same frame decoded in full by hand
    assert np.abs(frame.pixels[0].astype(int) - reference).mean() < 3


def test_a_deferred_packet_that_does_not_decode_is_skipped_and_the_camera_goes_on(
        video_file_factory, capture_factory, caplog: pytest.LogCaptureFixture) -> None:
    video = video_file_factory(size=(320, 240), fps=30.0, count=COUNT)
    capture: CameraCapture = capture_factory(CaptureSettings(name="bad", uri=str(video)), start=False)
    garbage = DeferredFrame(number=7, packet=np.frombuffer(b"\xff\xd8 not a jpeg", dtype=np.uint8),
                            native=(320, 240), captured_wall=time.time(), captured_mono=time.monotonic())
    with pytest.raises(ValueError, match="could not be decoded"):
        decode_deferred(garbage, capture.settings, None)
    capture._slot = garbage  # as the capture thread leaves it while the consumer is behind
    with caplog.at_level(logging.WARNING, logger="camera.capture"):
        assert capture.take() is None
    assert "frame 7 skipped" in caplog.text and "could not be decoded" in caplog.text
    stats = capture.stats()
    assert stats.frames_skipped == 1 and stats.frames_processed == 0 and stats.frames_decoded == 0
    capture.start()  # the camera itself is unaffected
    frame = capture.take(timeout_s=10.0)
    assert frame is not None and read_frame_marker(frame.image) == (frame.number - 1) % COUNT
