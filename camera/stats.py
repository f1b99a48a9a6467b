"""Per-camera statistics (Frigate-style camera/process/skipped fps) and the rolling rate meter."""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

RATE_WINDOW_S = 5.0


class FpsLimiter:
    """Lets through at most `target_fps` frames per second on average, without bursts after stalls."""

    def __init__(self, target_fps: float) -> None:
        self._interval_s = 1.0 / target_fps if target_fps > 0 else 0.0
        self._next_due: float | None = None

    def allow(self, now: float) -> bool:
        if self._interval_s == 0.0:
            return True
        if self._next_due is not None and now < self._next_due:
            return False
        # Keep the long-run rate exact when frames arrive a little early or late, but never
        # schedule the next frame in the past (which would let a burst through after a stall).
        due = now if self._next_due is None else self._next_due
        self._next_due = max(due + self._interval_s, now)
        return True


class RateMeter:
    """Events per second over the last `window_s` seconds. Not thread-safe: guard with a lock."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self._window_s = window_s
        self._times: deque[float] = deque()
        self._started: float | None = None

    def start(self, now: float) -> None:
        """Begin measuring at `now`; the window is shorter than window_s until that much time passed."""
        self._started = now

    def add(self, now: float, count: int = 1) -> None:
        if self._started is None:
            self._started = now
        self._times.extend([now] * count)
        self._prune(now)

    def rate(self, now: float) -> float:
        if self._started is None:
            return 0.0
        self._prune(now)
        span = min(self._window_s, now - self._started)
        if span <= 0:
            return 0.0
        return len(self._times) / span

    def _prune(self, now: float) -> None:
        horizon = now - self._window_s
        while self._times and self._times[0] < horizon:
            self._times.popleft()


@dataclass
class CameraStats:
    """A snapshot of one camera's health.

    - camera_fps: frames read from the source per second (rolling ~5 s window)
    - process_fps: frames taken by the consumer per second
    - skipped_fps: frames read but never taken (overwritten in the slot, or decimated by target_fps)
    - reconnects: how many times the camera went offline and a reconnect was started (equals the
      number of camera_offline events that announced a reconnect; failed retries during one outage
      and the end of a non-looping file do not count)
    - last_frame_age_s: seconds since the last frame was read, None before the first
    - frames_read = frames_processed + frames_skipped + (1 if a frame is waiting in the slot)
    - resolution: (width, height) of the published frames at full decode: `size` when the camera
      has one, else the source's native resolution (also when frames are decoded smaller)
    - decoded_resolution: (width, height) the last kept frame was decoded at, before any resize
      (smaller than the source's when an MJPEG source is decoded at a reduced JPEG scale)
    - decode_scale: 1, 2, 4 or 8: the last kept frame was decoded at 1/decode_scale of the source's size
    - frames_decoded: kept frames decoded (by the capture thread, or by take() for frames left
      undecoded while the consumer was behind); decoded_on_take: how many of those take() decoded
    - frames_gated: kept frames scene-change gating left unclassified (also counted in frames_skipped)
    - decoder (PyAV sources): "software", "hardware (<device>)" or "software (<device> failed: …)";
      keyframes_only: whether only keyframes are decoded right now (None: not a PyAV source)
    - uri: the configured URI with any password shown as ***
    """

    name: str
    state: str
    uri: str
    camera_fps: float
    process_fps: float
    skipped_fps: float
    reconnects: int
    last_frame_age_s: float | None
    frames_read: int
    frames_processed: int
    frames_skipped: int
    resolution: tuple[int, int] | None
    last_error: str | None
    decoded_resolution: tuple[int, int] | None = None
    decode_scale: int | None = None
    frames_decoded: int = 0
    decoded_on_take: int = 0
    frames_gated: int = 0
    decoder: str | None = None
    keyframes_only: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (resolution as [w, h], rates rounded to 0.01)."""
        return {
            "name": self.name,
            "state": self.state,
            "uri": self.uri,
            "camera_fps": round(self.camera_fps, 2),
            "process_fps": round(self.process_fps, 2),
            "skipped_fps": round(self.skipped_fps, 2),
            "reconnects": self.reconnects,
            "last_frame_age_s": None if self.last_frame_age_s is None else round(self.last_frame_age_s, 3),
            "frames_read": self.frames_read,
            "frames_processed": self.frames_processed,
            "frames_skipped": self.frames_skipped,
            "resolution": None if self.resolution is None else [int(v) for v in self.resolution],
            "last_error": self.last_error,
            "decoded_resolution": None if self.decoded_resolution is None else list(self.decoded_resolution),
            "decode_scale": self.decode_scale,
            "frames_decoded": self.frames_decoded,
            "decoded_on_take": self.decoded_on_take,
            "frames_gated": self.frames_gated,
            "decoder": self.decoder,
            "keyframes_only": self.keyframes_only,
        }


class CaptureCounters:
    """One capture's counters and rates; the capture guards every call with its own lock.

    frames_read = frames_processed + frames_skipped + (1 while a frame waits in the slot)."""

    def __init__(self) -> None:
        self.frames_read = 0
        self.frames_processed = 0
        self.frames_skipped = 0
        self.frames_decoded = 0
        self.decoded_on_take = 0
        self.frames_gated = 0
        self.decoder: str | None = None
        self.keyframes_only: bool | None = None
        self.reconnects = 0
        self.last_frame_mono: float | None = None
        self.resolution: tuple[int, int] | None = None
        self.decoded_resolution: tuple[int, int] | None = None
        self.decode_scale: int | None = None
        self.last_error: str | None = None
        self._read = RateMeter()
        self._processed = RateMeter()
        self._skipped = RateMeter()

    def start(self, now: float) -> None:
        for meter in (self._read, self._processed, self._skipped):
            meter.start(now)

    def read(self, now: float) -> int:
        """A frame came off the source; its number."""
        self.frames_read += 1
        self._read.add(now)
        self.last_frame_mono = now
        return self.frames_read

    def processed(self, now: float) -> None:
        self.frames_processed += 1
        self._processed.add(now)

    def skipped(self, now: float) -> None:
        self.frames_skipped += 1
        self._skipped.add(now)

    def decoded(self, kept: Any) -> None:
        """A kept frame (camera.decode.KeptFrame) was decoded: the resolution it is published at, what it
        was decoded at, the scale."""
        self.resolution, self.decoded_resolution, self.decode_scale = kept.resolution, kept.decoded, kept.scale
        self.frames_decoded += 1

    def describe_source(self, source: Any) -> None:
        """What the source says about its decoding (camera.pyav's optional attributes)."""
        self.decoder = getattr(source, "decoder", None)
        keyframes = getattr(source, "keyframes_only", None)
        self.keyframes_only = keyframes if isinstance(keyframes, bool) else None

    def snapshot(self, name: str, state: str, uri: str, now: float) -> CameraStats:
        return CameraStats(
            name=name, state=state, uri=uri,
            camera_fps=self._read.rate(now), process_fps=self._processed.rate(now),
            skipped_fps=self._skipped.rate(now), reconnects=self.reconnects,
            last_frame_age_s=None if self.last_frame_mono is None else now - self.last_frame_mono,
            frames_read=self.frames_read, frames_processed=self.frames_processed,
            frames_skipped=self.frames_skipped, resolution=self.resolution, last_error=self.last_error,
            decoded_resolution=self.decoded_resolution, decode_scale=self.decode_scale,
            frames_decoded=self.frames_decoded, decoded_on_take=self.decoded_on_take,
            frames_gated=self.frames_gated, decoder=self.decoder, keyframes_only=self.keyframes_only)
