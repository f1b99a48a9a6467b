"""Per-camera capture settings and regions of interest (plain, validated, immutable data)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from camera.gate import GateSettings

logger = logging.getLogger(__name__)

DECODE_MODES = ("auto", "full")
READERS = ("auto", "opencv", "ffmpeg")  # auto: PyAV (FFmpeg) for network sources when installed, else OpenCV
KEYFRAME_MODES = ("auto", "on", "off")
HWACCELS = ("auto", "off", "vaapi", "qsv", "drm", "cuda", "v4l2m2m", "cuvid")  # camera.pyav


def is_frame_transform(value: Any) -> bool:
    """Whether `value` can serve as a camera.FrameTransform: callable, with a `tag`."""
    return callable(value) and hasattr(value, "tag")


@dataclass(frozen=True)
class Roi:
    """A named region of interest in pixel coordinates of the (resized) frame."""

    name: str
    x: int
    y: int
    w: int
    h: int

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("roi.name must be a non-empty string")
        for field_name in ("x", "y", "w", "h"):
            if not isinstance(getattr(self, field_name), int):
                raise ValueError(f"roi {self.name!r}: {field_name} must be an integer pixel coordinate")
        if self.w <= 0 or self.h <= 0:
            raise ValueError(f"roi {self.name!r}: w and h must be > 0 (got w={self.w}, h={self.h})")


@dataclass(frozen=True)
class CaptureSettings:
    """How one camera is captured.

    `uri` is validated by `camera.parse_source_uri` (CameraCapture calls it on construction);
    everything else is validated here. Times are seconds.

    - target_fps: 0 publishes every frame the source delivers; > 0 publishes at most this many
      frames per second to the slot (the source is still read at its own rate).
    - size: (width, height) every frame is resized to; None keeps the native size.
    - loop / realtime: only for video files (restart at the end / pace reads at the file's fps).
    - watchdog_s: no frame for this long means offline, and a reconnect.
    - backoff_initial_s / backoff_max_s: wait between reconnect attempts, doubling up to the cap,
      reset after a frame arrives.
    - open_timeout_s / read_timeout_s: passed to backends that honour them (FFMPEG); the read
      timeout given to FFMPEG is min(read_timeout_s, watchdog_s) so a stall is noticed in time.
    - transform: an optional `camera.FrameTransform` run in the capture thread on every kept frame
      (after `size`, on each ROI crop); its output rides on the frame as `Frame.pixels`. The
      consumer can swap it later with `CameraCapture.set_transform`.
    - decode: how MJPEG frames (decoded by libjpeg-turbo) are decoded. "auto" decodes at 1/2, 1/4
      or 1/8 of the source's size (JPEG DCT scaling, much cheaper than a full decode + resize) when
      that still gives at least what the frame is needed at: `size` when set; without size and
      ROIs, the transform's `min_source_size` (then `Frame.image` is that reduced image and
      snapshots show it); ROIs without size, no transform, or other codecs: full size.
      "full" always decodes at the source's native size.
    - reader: which library reads the source. "ffmpeg": PyAV (camera.pyav: keyframe-only decoding,
      hardware decoders, output at the size needed); "opencv": cv2.VideoCapture; "auto": PyAV for
      rtsp/http/udp/tcp sources when it is installed, OpenCV otherwise (and for files, V4L2, gst:).
    - keyframes (PyAV): "auto" decodes only keyframes while target_fps is at most the stream's
      measured keyframe rate; "on" always (the camera then delivers its keyframe rate); "off" never.
    - hwaccel (PyAV): "auto", "off" or a device (camera.pyav.HWACCELS); software when it fails.
    - decode_threads (PyAV): FFmpeg's decoder threads; 1 = none (the capture thread decodes), 0 = auto.
    - gate: scene-change gating (camera.gate.GateSettings), None = classify every kept frame.
    """

    name: str
    uri: str
    target_fps: float = 0.0
    size: tuple[int, int] | None = None
    rois: tuple[Roi, ...] = ()
    loop: bool = True
    realtime: bool = True
    watchdog_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    decode: str = "auto"  # "auto" | "full"
    reader: str = "auto"  # "auto" | "opencv" | "ffmpeg"
    keyframes: str = "auto"  # "auto" | "on" | "off"
    hwaccel: str = "auto"
    decode_threads: int = 1
    gate: Any = None  # camera.gate.GateSettings | None
    transform: Any = field(default=None, compare=False, repr=False)  # camera.FrameTransform | None

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ValueError("camera name must be a non-empty string")
        prefix = f"camera {self.name!r}"
        if self.target_fps < 0:
            raise ValueError(f"{prefix}: target_fps must be >= 0 (0 = as fast as the source delivers), got {self.target_fps}")
        if self.size is not None:
            if (
                len(self.size) != 2
                or not all(isinstance(v, int) for v in self.size)
                or self.size[0] <= 0
                or self.size[1] <= 0
            ):
                raise ValueError(f"{prefix}: size must be (width, height) with positive integers, got {self.size!r}")
        for field_name in ("watchdog_s", "backoff_initial_s", "backoff_max_s", "open_timeout_s", "read_timeout_s"):
            if getattr(self, field_name) <= 0:
                raise ValueError(f"{prefix}: {field_name} must be > 0, got {getattr(self, field_name)}")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"{prefix}: backoff_max_s ({self.backoff_max_s}) must be >= backoff_initial_s ({self.backoff_initial_s})"
            )
        if self.decode not in DECODE_MODES:
            raise ValueError(f"{prefix}: decode must be one of {', '.join(DECODE_MODES)}, got {self.decode!r}")
        for field_name, allowed in (("reader", READERS), ("keyframes", KEYFRAME_MODES), ("hwaccel", HWACCELS)):
            if getattr(self, field_name) not in allowed:
                raise ValueError(f"{prefix}: {field_name} must be one of {', '.join(allowed)}, "
                                 f"got {getattr(self, field_name)!r}")
        if not isinstance(self.decode_threads, int) or not 0 <= self.decode_threads <= 64:
            raise ValueError(f"{prefix}: decode_threads must be 0 (auto) .. 64, got {self.decode_threads!r}")
        if self.gate is not None and not isinstance(self.gate, GateSettings):
            raise ValueError(f"{prefix}: gate must be a camera.gate.GateSettings or None")
        if self.transform is not None and not is_frame_transform(self.transform):
            raise ValueError(f"{prefix}: transform must be callable and have a `tag` (see camera.FrameTransform)")
        if not isinstance(self.rois, tuple):
            raise ValueError(f"{prefix}: rois must be a tuple of Roi")
        seen: set[str] = set()
        for roi in self.rois:
            if not isinstance(roi, Roi):
                raise ValueError(f"{prefix}: rois must contain Roi objects, got {type(roi).__name__}")
            if roi.name in seen:
                raise ValueError(f"{prefix}: roi name {roi.name!r} is used twice; roi names must be unique")
            seen.add(roi.name)
            if self.size is not None:
                width, height = self.size
                if roi.x >= width or roi.y >= height or roi.x + roi.w <= 0 or roi.y + roi.h <= 0:
                    raise ValueError(
                        f"{prefix}: roi {roi.name!r} ({roi.x},{roi.y} {roi.w}x{roi.h}) lies entirely outside "
                        f"the {width}x{height} frame"
                    )
