"""Frame sources: one small class per kind of input behind the `FrameSource` protocol.

`open_source` picks the backend from a `SourceSpec`:
- v4l2      -> cv2.CAP_V4L2 (USB/UVC cameras; no device exists in CI, so only the failure path is tested)
- file      -> cv2.CAP_FFMPEG, with optional looping and real-time pacing at the file's fps
- ffmpeg    -> cv2.CAP_FFMPEG with open/read timeouts, so no call blocks forever
- gstreamer -> cv2.CAP_GSTREAMER (needs an OpenCV built with GStreamer: Debian's python3-opencv or
               JetPack's, not the pip wheels; tests/integration/test_camera_gstreamer.py runs Debian's)
- PyAV      -> camera.pyav for network URLs (``reader = "auto"`` when PyAV is installed, or
               ``"ffmpeg"``, which also reads files): keyframe-only decoding, hardware decoders

Reading is split in two, `grab()` (take the next frame off the source) and `retrieve()` (decode it
into BGR pixels), so a capture decimating to a lower fps never decodes the frames it drops. For
MJPEG sources (files, MJPEG over HTTP, V4L2 MJPG) the capture asks OpenCV for the undecoded JPEG
packets (`CAP_PROP_FORMAT = -1`): `grab()` is then only demuxing (~0.02 ms for a 720p frame against
~1-1.5 ms for a decode) and `retrieve()` decodes with libjpeg-turbo (camera.decode). Other codecs decode
in `grab()` (FFmpeg must, to keep its reference frames) and skip only the colour conversion.

JPEG packets may be decoded smaller than the source (camera.decode): before `retrieve()` the
capture calls `decode_at_least((w, h) | None)`, and the source decodes at the smallest of 1/1, 1/2,
1/4, 1/8 that still gives at least that size. `native_size` is the source's own (width, height)
once a frame was decoded at full size (None for other codecs), `decode_scale` the scale of the
last decode (1, 2, 4 or 8). These three are optional extras of a source; the capture reads them
with getattr, so a source without them is simply decoded at full size.

RTSP over TCP instead of UDP is chosen process-wide with the environment variable
OPENCV_FFMPEG_CAPTURE_OPTIONS="rtsp_transport;tcp" (an OpenCV convention, read at open).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from camera.decode import JpegDecoder, jpeg_thumbnail
from camera.pyav import open_pyav, pyav_available
from camera.settings import CaptureSettings
from camera.uri import SourceOpenError, SourceSpec, gstreamer_available, mask_uri_password, parse_source_uri

logger = logging.getLogger(__name__)

_PACING_FPS_RANGE = (1.0, 240.0)  # files claiming an fps outside this are paced at the default
_DEFAULT_FILE_FPS = 25.0


@runtime_checkable
class FrameSource(Protocol):
    """What a capture thread reads from. Implementations are used from one thread at a time."""

    @property
    def fps(self) -> float | None:
        """The source's own frame rate when it reports a plausible one, else None."""
        ...

    @property
    def ended(self) -> bool:
        """True once the source has definitely finished (a file at its end with loop off)."""
        ...

    def read(self) -> np.ndarray | None:
        """The next HxWx3 uint8 BGR image, or None on failure or end (see `ended`)."""
        ...

    def close(self) -> None: ...

    def describe(self) -> str: ...


_MJPEG_FOURCCS = {b"MJPG", b"mjpg", b"JPEG", b"jpeg", b"AVRn", b"LJPG", b"dmb1"}
_raw_refused: set[str] = set()  # sources whose JPEG packets imdecode could not read: decode via FFmpeg
_raw_refused_lock = threading.Lock()


def _plausible_fps(value: float) -> float | None:
    if value is None or math.isnan(value) or value <= 0 or value > 1000:
        return None
    return float(value)


class _Grabber:
    """grab()/retrieve() over one cv2.VideoCapture, with undecoded JPEG packets for MJPEG sources."""

    def __init__(self, capture: cv2.VideoCapture, key: str) -> None:
        self._capture = capture
        self._key = key
        self._packet: np.ndarray | None = None
        self.raw = False
        self.jpeg = JpegDecoder()
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC) or 0) & 0xFFFFFFFF
        with _raw_refused_lock:
            refused = key in _raw_refused
        if fourcc.to_bytes(4, "little") in _MJPEG_FOURCCS and not refused:
            try:
                self.raw = bool(capture.set(cv2.CAP_PROP_FORMAT, -1)) and capture.get(cv2.CAP_PROP_FORMAT) == -1
            except cv2.error:
                self.raw = False

    def grab(self) -> bool:
        if self.raw:
            ok, packet = self._capture.read()
            self._packet = packet if ok and packet is not None and packet.size else None
            return self._packet is not None
        return bool(self._capture.grab())

    def take_jpeg_packet(self) -> tuple[np.ndarray, tuple[int, int]] | None:
        """The last grabbed frame as its undecoded JPEG packet and the source's native size, instead of
        retrieve(); None (the frame stays for retrieve) unless packets are read raw and a full decode
        has already given the native size."""
        native = self.jpeg.native_size
        if not self.raw or native is None or self._packet is None:
            return None
        packet, self._packet = self._packet, None
        return packet.reshape(-1), native

    def peek_packet(self) -> np.ndarray | None:
        return self._packet if self.raw else None

    def retrieve(self) -> np.ndarray | None:
        if self.raw:
            packet, self._packet = self._packet, None
            if packet is None:
                return None
            image = self.jpeg.decode(packet.reshape(-1))
            if image is None:  # e.g. an MJPEG without Huffman tables: let FFmpeg decode after a reconnect
                with _raw_refused_lock:
                    _raw_refused.add(self._key)
                logger.warning("%s: JPEG packets not decodable by libjpeg; decoding with FFmpeg from the next "
                               "connection on", self._key)
            return image
        ok, image = self._capture.retrieve()
        return image if ok and image is not None else None


class _GrabbingSource:
    """What OpenCvSource and VideoFileSource share: grab()/retrieve() and the decode-size extras."""

    _grabber: _Grabber

    def grab(self) -> bool:
        """Take the next frame off the source without decoding it when the codec allows; False on failure."""
        return self._grabber.grab()

    def retrieve(self) -> np.ndarray | None:
        """Decode the frame the last successful grab() took; None on failure."""
        return self._grabber.retrieve()

    def read(self) -> np.ndarray | None:
        return self.retrieve() if self.grab() else None

    def take_jpeg_packet(self) -> tuple[np.ndarray, tuple[int, int]] | None:
        """The last grabbed frame undecoded (JPEG packet, native size) when the codec allows, else None."""
        return self._grabber.take_jpeg_packet()

    def thumbnail(self) -> np.ndarray | None:
        """The last grabbed JPEG packet as a 1/8 grey image (camera.gate), None for other codecs."""
        packet = self._grabber.peek_packet()
        return None if packet is None else jpeg_thumbnail(packet.reshape(-1))

    def decode_at_least(self, size: tuple[int, int] | None) -> None:
        """Let retrieve() decode JPEG frames down to `size` (width, height); None: full size."""
        self._grabber.jpeg.min_size = size

    @property
    def native_size(self) -> tuple[int, int] | None:
        """The source's (width, height) as a full JPEG decode gave it; None for other codecs."""
        return self._grabber.jpeg.native_size if self._grabber.raw else None

    @property
    def decode_scale(self) -> int:
        """1, 2, 4 or 8: the last frame was decoded at 1/decode_scale of the source's size."""
        return self._grabber.jpeg.scale if self._grabber.raw else 1


class OpenCvSource(_GrabbingSource):
    """A cv2.VideoCapture opened with one backend (V4L2, FFMPEG or GStreamer)."""

    def __init__(self, spec: SourceSpec, api_preference: int, params: list[int] | None = None) -> None:
        self._spec = spec
        self._capture = cv2.VideoCapture(spec.target, api_preference, params or [])
        if not self._capture.isOpened():
            self._capture.release()
            raise SourceOpenError(f"could not open {spec.describe()}")
        self._fps = _plausible_fps(self._capture.get(cv2.CAP_PROP_FPS))
        self._grabber = _Grabber(self._capture, mask_uri_password(spec.uri))

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def ended(self) -> bool:
        return False

    def close(self) -> None:
        self._capture.release()

    def describe(self) -> str:
        return self._spec.describe()


class VideoFileSource(_GrabbingSource):
    """A video file read like a camera: optionally looping, optionally paced at the file's fps."""

    def __init__(self, spec: SourceSpec, loop: bool, realtime: bool) -> None:
        self._spec = spec
        self._loop = loop
        self._realtime = realtime
        self._ended = False
        self._next_due: float | None = None
        self._capture = cv2.VideoCapture(str(spec.target), cv2.CAP_FFMPEG)
        if not self._capture.isOpened():
            self._capture.release()
            raise SourceOpenError(f"could not open video file {spec.target} (not a video OpenCV can decode?)")
        self._fps = _plausible_fps(self._capture.get(cv2.CAP_PROP_FPS))
        self._grabber = _Grabber(self._capture, str(spec.target))
        low, high = _PACING_FPS_RANGE
        pacing_fps = self._fps if self._fps is not None and low <= self._fps <= high else _DEFAULT_FILE_FPS
        self._frame_interval_s = 1.0 / pacing_fps

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def ended(self) -> bool:
        return self._ended

    def grab(self) -> bool:
        """Wait until the next frame is due (realtime) and take it off the file without decoding it."""
        if self._ended:
            return False
        if self._realtime:
            self._wait_until_due()
        if self._grabber.grab():
            return True
        if not self._loop:
            self._ended = True
            return False
        # End of file: rewind; if rewinding does not give a frame, report a failure (capture reopens).
        self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        if self._grabber.grab():
            logger.debug("%s: looped to the start", self.describe())
            return True
        return False

    def _wait_until_due(self) -> None:
        now = time.monotonic()
        if self._next_due is None:
            self._next_due = now
        delay = self._next_due - now
        if delay > 0:
            time.sleep(delay)  # at most one frame interval (<= 1 s), so stop() stays responsive
        # Fall behind by at most one frame: after a stall, do not burst to catch up.
        self._next_due = max(self._next_due + self._frame_interval_s, time.monotonic() - self._frame_interval_s)

    def close(self) -> None:
        self._capture.release()

    def describe(self) -> str:
        return self._spec.describe()


def ffmpeg_timeout_params(settings: CaptureSettings) -> list[int]:
    """VideoCapture params that bound FFMPEG's open and each read (the read bound is also <= watchdog)."""
    read_timeout_s = min(settings.read_timeout_s, settings.watchdog_s)
    return [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, max(1, int(settings.open_timeout_s * 1000)),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, max(1, int(read_timeout_s * 1000)),
    ]


# OpenCV's numeric log levels (cv::utils::logging::LogLevel), the same in every 4.x/5.x build.
_OPENCV_LOG_ERROR, _OPENCV_LOG_WARNING = 2, 3


def quiet_opencv() -> None:
    """OpenCV and its FFmpeg/GStreamer backends print their own warnings to stderr, outside logging:
    keep them to errors, warnings too when this process logs at debug (the capture code logs what
    matters). OpenCV's level is process-wide; it follows a live change of the log level at the next
    open."""
    level = _OPENCV_LOG_WARNING if logger.isEnabledFor(logging.DEBUG) else _OPENCV_LOG_ERROR
    try:
        set_opencv_log_level(level)
    except (AttributeError, cv2.error) as exc:  # an OpenCV build without either API: keep its own level
        logger.debug("cannot set OpenCV's log level: %s", exc)


def _opencv_logging() -> Any:
    """Where this OpenCV build keeps setLogLevel/getLogLevel: cv2.utils.logging, else top-level cv2."""
    return getattr(getattr(cv2, "utils", None), "logging", None) or cv2


def set_opencv_log_level(level: int) -> None:
    """Set OpenCV's process-wide log level. Builds differ in where the binding lives: pip's
    opencv-python 4.8+/5.x has `cv2.utils.logging.setLogLevel`, Debian's and JetPack's 4.x only the
    older top-level `cv2.setLogLevel`."""
    _opencv_logging().setLogLevel(level)


def opencv_log_level() -> int:
    """OpenCV's current process-wide log level (see set_opencv_log_level)."""
    return int(_opencv_logging().getLogLevel())


def open_source(spec_or_uri: SourceSpec | str, settings: CaptureSettings) -> FrameSource:
    """Open the source described by a SourceSpec or URI string.

    Raises ValueError for a bad URI and SourceOpenError when the source cannot be opened.
    May block up to settings.open_timeout_s for network sources; V4L2 and GStreamer opens are
    bounded only by their drivers.
    """
    quiet_opencv()
    spec = parse_source_uri(spec_or_uri) if isinstance(spec_or_uri, str) else spec_or_uri
    logger.debug("opening %s", spec.describe())
    if settings.reader == "ffmpeg" or (settings.reader == "auto" and spec.kind == "ffmpeg" and pyav_available()):
        if spec.kind not in ("ffmpeg", "file"):
            raise SourceOpenError(f"reader = \"ffmpeg\" reads network URLs and files, not {spec.kind} sources")
        if not pyav_available():
            raise SourceOpenError("reader = \"ffmpeg\" needs PyAV: pip install 'edge-gateway[ffmpeg]'")
        return open_pyav(spec, settings)
    if spec.kind == "file":
        return VideoFileSource(spec, loop=settings.loop, realtime=settings.realtime)
    if spec.kind == "ffmpeg":
        return OpenCvSource(spec, cv2.CAP_FFMPEG, ffmpeg_timeout_params(settings))
    if spec.kind == "v4l2":
        return OpenCvSource(spec, cv2.CAP_V4L2)
    if spec.kind == "gstreamer":
        # Not testable here: needs OpenCV with GStreamer and (for CSI) a Jetson's nvarguscamerasrc.
        if not gstreamer_available():
            raise SourceOpenError(
                f"cannot open {mask_uri_password(spec.uri)!r}: this OpenCV ({cv2.__version__}) was built "
                "without GStreamer"
            )
        return OpenCvSource(spec, cv2.CAP_GSTREAMER)
    raise ValueError(f"unknown source kind {spec.kind!r}")
