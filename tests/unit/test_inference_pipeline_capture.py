"""Structural guarantees with real capture threads on real video files (no timing is asserted).

- the model's preprocessing runs through the capture's transform, once per decoded frame (in the
  capture thread, or in take() for a frame left undecoded while the pipeline is behind), and the
  pipeline redoes none of it;
- frames the fps limiter drops are grabbed but never decoded;
- above capacity nothing queues: the slots drop frames (counted as skipped), fairly across cameras,
  every queue stays within its bound, and most dropped frames are never decoded.
The classifier is a counting stand-in (tests/unit/test_inference_pipeline_perf.py says why); the real
models run in tests/e2e/test_gateway_results.py.
"""
from __future__ import annotations

import threading

import pytest

import camera.capture
from camera import CameraCapture, CaptureSettings, FrameTransform
from edge.inference.batcher import FrameBatcher
from edge.inference.pipeline import InferencePipeline
from edge.inference.results import ResultPublisher
from tests.support.fakes import CountingClassifier, ListSink, TwoCallClassifier
from tests.support.waits import wait_until


class CountingTransform:
    """Wraps the pipeline's transform (same tag) and counts its calls from the capture thread."""

    def __init__(self, inner: FrameTransform) -> None:
        self.inner = inner
        self.calls = 0
        self._lock = threading.Lock()

    @property
    def tag(self):
        return self.inner.tag

    def __call__(self, image):
        with self._lock:
            self.calls += 1
        return self.inner(image)


class CountingCapture(CameraCapture):
    def set_transform(self, transform: FrameTransform | None) -> None:
        self.counting = None if transform is None else CountingTransform(transform)
        super().set_transform(self.counting)


def test_overloaded_pipeline_preprocesses_in_capture_threads_drops_fairly_and_queues_nothing(
        video_file_factory) -> None:
    video = video_file_factory(size=(320, 240), fps=30.0, count=30)
    ready = threading.Event()
    cams = [CountingCapture(CaptureSettings(name=f"cam{i}", uri=str(video)), frame_ready=ready) for i in range(4)]
    classifier = CountingClassifier(32, 32, dtype="float32", preferred_batch_size=1, delay_s=0.03)  # ~33 img/s
    sink = ListSink()
    publisher = ResultPublisher(sink, "dev", k=1, queue_batches=4)
    batcher = FrameBatcher(cams, ready, 8, 0.005)
    pipeline = InferencePipeline(batcher, classifier, publisher.submit)
    publisher.start()
    pipeline.start()
    try:
        wait_until(lambda: all(getattr(c, "counting", None) is not None for c in cams), 20, interval_s=0.02,
                   message="the pipeline's transform installed in every camera")  # before any frame
        for cam in cams:
            cam.start()
        wait_until(lambda: pipeline.frames_classified >= 60 and all(c.stats().frames_skipped > 10 for c in cams), 20,
                   interval_s=0.02, message="60 frames classified and more than 10 skipped per camera")
        depth = publisher.stats()["queue_depth"]
    finally:
        pipeline.stop()
        for cam in cams:
            cam.stop()
        publisher.stop()
    # offered 4 x 30 fps to a ~33 img/s classifier: frames were dropped in the slots, counted as skipped
    stats = [c.stats() for c in cams]
    for s in stats:
        assert s.frames_read - s.frames_processed - s.frames_skipped in (0, 1)  # at most the slot's frame
        assert s.frames_skipped > 10
    assert depth <= 4 and len(batcher._carry) == 0  # every queue within its bound
    processed = [s.frames_processed for s in stats]
    assert max(processed) - min(processed) <= max(3, sum(processed) // 20), processed  # fair shares
    # the model's preprocessing ran in the capture threads, once per kept frame, never redone
    assert pipeline.pixels_redone == 0
    assert pipeline.pixels_reused == classifier.images == pipeline.frames_classified
    transform_calls = sum(c.counting.calls for c in cams)
    decoded = sum(s.frames_decoded for s in stats)
    assert classifier.images <= transform_calls == decoded
    assert sum(s.decoded_on_take for s in stats) > 0
    assert decoded * 2 < sum(s.frames_read for s in stats)  # frames overwritten undecoded in the slots
    assert all(len(batch) == 1 for batch in classifier.batches)  # the classifier's preferred batch size
    assert len(sink.items) == pipeline.frames_classified


class CountingSource:
    """Wraps the real source and counts grabs (demux) and retrieves (decodes)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.grabs = 0
        self.retrieves = 0

    fps = property(lambda self: self.inner.fps)
    ended = property(lambda self: self.inner.ended)

    def grab(self) -> bool:
        self.grabs += 1
        return self.inner.grab()

    def retrieve(self):
        self.retrieves += 1
        return self.inner.retrieve()

    def read(self):
        raise AssertionError("the capture should grab and retrieve, not read")

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> str:
        return self.inner.describe()


@pytest.mark.parametrize("target_fps", [5.0, 10.0])
def test_frames_dropped_by_the_fps_limit_are_never_decoded(video_file_factory, monkeypatch,
                                                           target_fps: float) -> None:
    video = video_file_factory(size=(320, 240), fps=30.0, count=30)
    sources: list[CountingSource] = []
    real_open = camera.capture.open_source

    def counting_open(spec, settings):
        sources.append(CountingSource(real_open(spec, settings)))
        return sources[-1]

    monkeypatch.setattr(camera.capture, "open_source", counting_open)
    cam = CameraCapture(CaptureSettings(name="c", uri=str(video), target_fps=target_fps))
    cam.start()
    try:
        wait_until(lambda: cam.stats().frames_read >= 45, 20, interval_s=0.02, message="45 frames read")
    finally:
        cam.stop()
    (source,) = sources
    stats = cam.stats()
    decimated = stats.frames_read - source.retrieves
    assert source.grabs >= stats.frames_read >= 45
    assert source.retrieves >= 1 and decimated > 0
    assert source.retrieves * 2 < source.grabs  # 30 fps source, <= 10 fps kept: most never decoded
    assert stats.frames_skipped >= decimated  # every undecoded frame is counted as skipped


def test_mjpeg_files_are_read_as_packets_and_decoded_only_on_retrieve(video_file_factory) -> None:
    from camera.sources import open_source

    video = video_file_factory(size=(320, 240), fps=30.0, count=5)
    source = open_source(str(video), CaptureSettings(name="c", uri=str(video), realtime=False, loop=False))
    try:
        assert source._grabber.raw  # undecoded JPEG packets: grab() only demuxes
        assert source.grab() and source.grab()
        image = source.retrieve()
        assert image is not None and image.shape == (240, 320, 3)
        frames = 2
        while source.read() is not None:
            frames += 1
        assert frames == 5 and source.ended
    finally:
        source.close()


@pytest.mark.parametrize("cameras", [1, 2])
def test_a_few_cameras_below_capacity_on_two_threads_have_every_frame_classified(video_file_factory,
                                                                                  cameras: int) -> None:
    """Two inference threads and fewer cameras than threads: an idle thread waiting for frames must
    never hold up the one taking a frame (a stall of the batcher's idle timeout per frame would
    classify a few frames per second out of 30)."""
    video = video_file_factory(size=(320, 240), fps=30.0, count=30)
    ready = threading.Event()
    cams = [CameraCapture(CaptureSettings(name=f"cam{i}", uri=str(video)), frame_ready=ready) for i in range(cameras)]
    classifier = TwoCallClassifier(preferred_batch_size=1)
    publisher = ResultPublisher(ListSink(), "dev", k=1, queue_batches=4)
    pipeline = InferencePipeline(FrameBatcher(cams, ready, 8, 0.005), classifier, publisher.submit)
    publisher.start()
    pipeline.start()
    try:
        for cam in cams:
            cam.start()
        wait_until(lambda: pipeline.workers == 2 and all(c.stats().frames_read >= 45 for c in cams), 20,
                   interval_s=0.02, message="two workers and 45 frames read per camera")
        stats = [c.stats() for c in cams]
    finally:
        pipeline.stop()
        for cam in cams:
            cam.stop()
        publisher.stop()
    for s in stats:  # a 30 fps camera and a classifier taking microseconds: frames are taken, not overwritten
        assert s.frames_processed >= 0.8 * s.frames_read, s
