"""`CameraCapture`: one daemon thread per camera that keeps only the newest frame and reconnects forever.

Life of the capture thread:

    connecting --first frame--> online --read fails / no frame for watchdog_s / restart()--> offline
        ^                                                                                      |
        +----------------------------- wait backoff (0.5, 1, 2, ... <= backoff_max_s) ---------+

A failed open also leads to offline. A non-looping file at its end goes offline ("end of file")
and stays there until restart() plays it again. stop() makes the state "stopped" from anywhere.

The thread itself runs the (possibly blocking) source calls. Backends that honour timeouts (FFMPEG
gets open/read timeouts) return in bounded time; if one does not, `state`/`stats()` still report
offline as soon as the last frame is older than watchdog_s, and stop() gives up on the thread after
its timeout (the daemon thread is abandoned and releases its source when the blocked call returns).

Per frame, the thread grabs (takes the frame off the source), asks the fps limiter whether to keep
it, with gating (camera.gate) whether the scene changed, and only then decodes it (MJPEG at a reduced
scale when the size needed allows, camera.decode), resizes it to `settings.size` and runs the
consumer's transform on each ROI crop (`set_transform`): the per-frame work runs here, in parallel
across cameras, never for dropped frames. While the consumer is behind, an MJPEG frame is published
undecoded and take() decodes the frames it returns (camera.decode.DecodeDeferral).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from camera.decode import DecodeDeferral, DeferredFrame, KeptFrame, decode_deferred, decode_kept, gate_thumbnail
from camera.frames import Frame, FrameTransform, RegionTransform
from camera.gate import SceneGate
from camera.settings import CaptureSettings, Roi
from camera.sources import FrameSource, open_source
from camera.stats import CameraStats, CaptureCounters, FpsLimiter
from camera.uri import mask_uri_password, parse_source_uri

logger = logging.getLogger(__name__)

EventCallback = Callable[[str, dict[str, Any]], None]


@dataclass
class _ConnectionEnd:
    """Why one connection (open + reads) ended."""

    reason: str
    had_frames: bool = False
    end_of_file: bool = False
    restart_requested: bool = False
    stopped: bool = False


class CameraCapture:
    """Reads one camera in a daemon thread and holds only its newest frame for `take()`.

    on_event(name, payload) is called from the capture thread, never while holding a lock:
    - "camera_online":  {"camera", "resolution": [w, h] (as in stats()), "source_fps": float | None}
    - "camera_offline": {"camera", "reason", "reconnect_in_s": float | None (None = not reconnecting)}
    camera_offline is sent once per outage (not for every failed retry). frame_ready is set every
    time a new frame lands in the slot; it may be shared by several cameras.
    """

    def __init__(
        self,
        settings: CaptureSettings,
        on_event: EventCallback | None = None,
        frame_ready: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self._spec = parse_source_uri(settings.uri)  # raises ValueError for a bad URI, before any thread
        self._on_event = on_event
        self._frame_ready = frame_ready
        self._lock = threading.Lock()
        self._slot_changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._wakeup = threading.Event()  # cuts a backoff wait short (stop/restart)
        self._restart_requested = threading.Event()
        self._thread: threading.Thread | None = None
        self._limiter = FpsLimiter(settings.target_fps)
        self._transform = RegionTransform(settings.name, settings.rois, settings.transform)
        self._deferral = DecodeDeferral()
        self._gate = SceneGate(settings.gate) if settings.gate is not None else None
        # Guarded by _lock:
        self._state = "stopped"
        self._slot: Frame | DeferredFrame | None = None
        self._counters = CaptureCounters()

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def rois(self) -> tuple[Roi, ...]:
        return self.settings.rois

    # ----------------------------------------------------------------- public API (any thread)

    def start(self) -> None:
        """Start the capture thread. A CameraCapture can be started once."""
        if self._thread is not None:
            raise RuntimeError(f"camera {self.name!r} was already started")
        now = time.monotonic()
        with self._lock:
            self._state = "connecting"
            self._counters.start(now)
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and release the source; returns within about `timeout_s` even if the
        source is stuck in open/read (then the daemon thread is abandoned and logged)."""
        self._stopping.set()
        self._wakeup.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
            if thread.is_alive():
                logger.warning(
                    "camera %s: capture thread still blocked in %s after %.1fs; abandoning it (daemon "
                    "thread, it releases the source when the blocked call returns)",
                    self.name, self._spec.describe(), timeout_s,
                )
        with self._lock:
            self._state = "stopped"
            self._slot_changed.notify_all()

    def restart(self) -> None:
        """Drop the current connection and reconnect now (also cuts a backoff wait short).

        A connection blocked in read() is dropped when that read returns (bounded by the read
        timeout for FFMPEG sources). A non-looping file that has ended is played again."""
        logger.info("camera %s: restart requested", self.name)
        self._restart_requested.set()
        self._wakeup.set()

    def set_transform(self, transform: FrameTransform | None) -> None:
        """Run `transform` on every frame kept from now on (None: no transform). Frames already in
        the slot keep the pixels and tag of the transform that made them."""
        self._transform.set(transform)

    @property
    def transform(self) -> FrameTransform | None:
        return self._transform.current

    def take(self, timeout_s: float = 0.0) -> Frame | None:
        """Return the newest frame not yet taken, waiting up to `timeout_s` for one; None if none.
        A frame left undecoded (the consumer was behind) is decoded and transformed here, in the
        caller's thread; if that fails it is counted as skipped and None is returned."""
        with self._slot_changed:
            if timeout_s > 0:
                self._slot_changed.wait_for(
                    lambda: self._slot is not None or self._state == "stopped", timeout=timeout_s
                )
            item, self._slot = self._slot, None
            if not isinstance(item, DeferredFrame):
                if item is not None:
                    self._counters.processed(time.monotonic())
                return item
        return self._decode_taken(item)

    def _decode_taken(self, deferred: DeferredFrame) -> Frame | None:
        try:
            kept = decode_deferred(deferred, self.settings, self._transform.current)
        except Exception as exc:  # the capture thread's decoder takes over and handles such packets
            self._deferral.disable()
            logger.warning("camera %s: frame %d skipped: %s", self.name, deferred.number, exc)
            self._count_skipped(time.monotonic())
            return None
        if kept.scale == 1 and kept.decoded != deferred.native:
            self._deferral.disable()  # the source changed its resolution: let the capture's decoder relearn it
        pixels, tag = self._transform.apply(kept.image)
        with self._lock:
            self._counters.decoded(kept)
            self._counters.decoded_on_take += 1
            self._counters.processed(time.monotonic())
        return Frame(self.name, deferred.number, kept.image, deferred.captured_wall, deferred.captured_mono,
                     pixels, tag, deferred.reason)

    @property
    def state(self) -> str:
        """"connecting" | "online" | "offline" | "stopped" (online turns offline once the last
        frame is older than watchdog_s, even while the thread is blocked in a read)."""
        with self._lock:
            return self._current_state(time.monotonic())

    def stats(self) -> CameraStats:
        now = time.monotonic()
        with self._lock:
            return self._counters.snapshot(self.name, self._current_state(now), mask_uri_password(self.settings.uri),
                                           now)

    # ----------------------------------------------------------------- capture thread

    def _current_state(self, now: float) -> str:
        if (
            self._state == "online"
            and self._counters.last_frame_mono is not None
            and now - self._counters.last_frame_mono > self.settings.watchdog_s
        ):
            return "offline"
        return self._state

    def _run(self) -> None:
        settings = self.settings
        backoff_s = settings.backoff_initial_s
        outage_announced = False
        try:
            while not self._stopping.is_set():
                self._set_state("connecting")
                self._restart_requested.clear()  # a connect attempt starting now satisfies any restart
                ended = self._run_connection()
                if ended.stopped or self._stopping.is_set():
                    break
                if ended.had_frames:
                    backoff_s = settings.backoff_initial_s
                    outage_announced = False
                if ended.end_of_file:
                    self._go_offline(ended.reason, reconnect_in_s=None, announce=True)
                    self._wait_for_stop_or_restart()  # restart() plays a finished file again
                    continue
                delay_s = 0.0 if ended.restart_requested else backoff_s
                if not ended.restart_requested:
                    backoff_s = min(backoff_s * 2, settings.backoff_max_s)
                self._go_offline(ended.reason, reconnect_in_s=delay_s, announce=not outage_announced)
                outage_announced = True
                self._wakeup.clear()
                if self._stopping.is_set():
                    break
                if delay_s > 0 and not self._restart_requested.is_set():
                    self._wakeup.wait(delay_s)
        except Exception:  # a bug here must not kill the camera silently
            logger.exception("camera %s: capture thread crashed", self.name)
            with self._lock:
                self._counters.last_error = "capture thread crashed (see log)"
                if not self._stopping.is_set():
                    self._state = "offline"
        finally:
            logger.debug("camera %s: capture thread exits", self.name)

    def _wait_for_stop_or_restart(self) -> None:
        while not (self._stopping.is_set() or self._restart_requested.is_set()):
            self._wakeup.wait(1.0)
            self._wakeup.clear()

    def _run_connection(self) -> _ConnectionEnd:
        """Open the source and read until it fails, stalls, ends, or we are told to stop/restart."""
        try:
            source = open_source(self._spec, self.settings)
        except Exception as exc:  # SourceOpenError, cv2.error, anything a backend throws
            return _ConnectionEnd(reason=f"open failed: {exc}")
        try:
            return self._read_frames(source)
        finally:
            try:
                source.close()
            except Exception:
                logger.exception("camera %s: error closing %s", self.name, source.describe())

    def _read_frames(self, source: FrameSource) -> _ConnectionEnd:
        watchdog_s = self.settings.watchdog_s
        had_frames = False
        last_good = time.monotonic()
        grab, retrieve = getattr(source, "grab", None), getattr(source, "retrieve", None)
        split = callable(grab) and callable(retrieve)  # decode only the frames the limiter keeps
        take_packet = getattr(source, "take_jpeg_packet", None) if split else None
        self._deferral.reset()
        if self._gate is not None:
            self._gate.reset()
        while True:
            if self._stopping.is_set():
                return _ConnectionEnd(reason="stopped", had_frames=had_frames, stopped=True)
            if self._restart_requested.is_set():
                self._restart_requested.clear()
                return _ConnectionEnd(reason="restart requested", had_frames=had_frames, restart_requested=True)
            image: np.ndarray | None = None
            try:
                if split:
                    got = bool(grab())  # type: ignore[misc]
                else:
                    image = source.read()
                    got = image is not None
            except Exception as exc:
                return _ConnectionEnd(reason=f"read error: {exc}", had_frames=had_frames)
            now = time.monotonic()
            if self._stopping.is_set():
                return _ConnectionEnd(reason="stopped", had_frames=had_frames, stopped=True)
            if not got:
                if source.ended:
                    return _ConnectionEnd(reason="end of file", had_frames=had_frames, end_of_file=True)
                return _ConnectionEnd(
                    reason=f"read failed {now - last_good:.1f}s after the last frame (stream closed, error or "
                    "read timeout)",
                    had_frames=had_frames,
                )
            if now - last_good > watchdog_s:
                return _ConnectionEnd(
                    reason=f"no frame for {now - last_good:.1f}s (watchdog {watchdog_s:g}s)", had_frames=had_frames
                )
            last_good = now
            number = self._admit(now)
            if number is None:
                continue  # decimated by target_fps: counted as skipped, never decoded
            reason, kept = "sampled", None
            try:
                if self._gate is not None:
                    thumb, kept = gate_thumbnail(source, None if split else image, self.settings, self._transform.current)
                    reason = self._gate.decide(thumb, now)  # type: ignore[assignment]
                    if reason is None:
                        self._count_skipped(now, gated=True)
                        continue  # the scene did not change and the frame is not due: never classified
                if kept is None and self._deferral.active and callable(take_packet) and \
                        (taken := take_packet()) is not None:
                    self._publish(DeferredFrame(number, taken[0], taken[1], time.time(), now, reason))
                    continue  # the consumer is behind: whoever takes this frame decodes it
                if kept is None:  # decode now (at a reduced scale when that suffices); then resize to size
                    kept = decode_kept(source, None if split else image, self.settings, self._transform.current)
            except Exception as exc:
                self._count_skipped(now)
                return _ConnectionEnd(reason=f"unusable frame: {exc}", had_frames=had_frames)
            pixels, tag = self._transform.apply(kept.image)
            self._publish(Frame(self.name, number, kept.image, time.time(), now, pixels, tag, reason), kept, source)
            if not had_frames:
                had_frames = True
                self._go_online(kept.resolution, source.fps)

    def _admit(self, now_mono: float) -> int | None:
        """Count a frame read; its number if the fps limiter keeps it, None (counted skipped) if not."""
        with self._lock:
            number = self._counters.read(now_mono)
            if not self._limiter.allow(now_mono):
                self._counters.skipped(now_mono)
                return None
            return number

    def _count_skipped(self, now_mono: float, gated: bool = False) -> None:
        with self._lock:
            self._counters.skipped(now_mono)
            self._counters.frames_gated += gated

    def _publish(self, item: Frame | DeferredFrame, kept: KeptFrame | None = None, source: Any = None) -> None:
        with self._lock:
            if kept is not None:
                self._counters.decoded(kept)
            if source is not None:
                self._counters.describe_source(source)
            slot_was_full = self._slot is not None
            if slot_was_full:  # the consumer never took it: newest frame wins
                self._counters.skipped(item.captured_mono)
            self._slot = item
            self._slot_changed.notify_all()
        self._deferral.published(slot_was_full)
        if self._frame_ready is not None:
            self._frame_ready.set()

    def _go_online(self, size: tuple[int, int], source_fps: float | None) -> None:
        resolution = [int(size[0]), int(size[1])]
        with self._lock:
            if self._stopping.is_set():
                return
            self._state = "online"
            self._counters.last_error = None
        logger.info("camera %s: online (%dx%d, source fps %s)", self.name, *resolution, source_fps)
        self._emit("camera_online", {"camera": self.name, "resolution": resolution, "source_fps": source_fps})

    def _go_offline(self, reason: str, reconnect_in_s: float | None, announce: bool) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            self._state = "offline"
            self._counters.last_error = reason
            if announce and reconnect_in_s is not None:
                self._counters.reconnects += 1
        if not announce:
            logger.debug("camera %s: still offline (%s); retry in %.1fs", self.name, reason, reconnect_in_s or 0)
            return
        if reconnect_in_s is None:
            logger.warning("camera %s: offline (%s); not reconnecting", self.name, reason)
        else:
            logger.warning("camera %s: offline (%s); reconnecting in %.1fs", self.name, reason, reconnect_in_s)
        self._emit("camera_offline", {"camera": self.name, "reason": reason, "reconnect_in_s": reconnect_in_s})

    def _set_state(self, state: str) -> None:
        with self._lock:
            if not self._stopping.is_set():
                self._state = state

    def _emit(self, name: str, payload: dict[str, Any]) -> None:
        if self._on_event is None or self._stopping.is_set():
            return
        try:
            self._on_event(name, payload)
        except Exception:
            logger.exception("camera %s: on_event(%r) callback raised; continuing", self.name, name)
