"""The FFmpeg capture through PyAV (``av``, the ``ffmpeg`` extra): RTSP, HTTP, UDP/TCP and files.

What it does that OpenCV's FFmpeg capture cannot:
- **keyframe-only decoding**: a classifier wanting 1-5 fps from a 15-30 fps H.264/H.265 camera does
  not need the frames between keyframes, and an inter frame cannot be decoded without its
  predecessors. With ``keyframes = "on"``, or ``"auto"`` when the camera's ``fps`` is at or below the
  keyframe rate measured from the stream (``packet.is_keyframe``), only keyframes are decoded: ~25x
  less decode work for a 1080p camera with a 2 s GOP. Leaving that mode waits for the next keyframe
  (frames decoded from the middle of a GOP would be corrupt).
- **decoding at the size needed**: frames are converted (libswscale) straight to 1/2, 1/4 or 1/8 of
  the source's size when the model needs no more (as JPEG DCT scaling does for MJPEG), and MJPEG
  streams are read as undecoded packets and decoded by TurboJPEG, exactly like camera.sources does.
- **hardware decoders when FFmpeg finds them**: ``hwaccel = "auto"`` tries the device types this
  FFmpeg was built with whose device node exists here (VAAPI/QSV/DRM: /dev/dri, CUDA: /dev/nvidia0),
  or a named one (``vaapi``, ``cuda``, ``qsv``, ``drm``, or the wrapper decoders ``v4l2m2m`` and
  ``cuvid``). A device that fails to open, or decodes nothing, falls back to software decoding,
  said once in the log and in ``decoder``. Only software decoding is tested here (no GPU, no M2M device).
- **FFmpeg's own threads**: ``decode_threads`` (1: none, the capture thread decodes, which already
  runs beside the other cameras with the GIL released; 0: FFmpeg's frame+slice threading, lower
  latency when cores are idle, no less CPU).

Timeouts: the open and every read are bounded by PyAV's interrupt callback (``timeout=(open, read)``);
a stalled stream raises after about twice the read bound, so half of it is passed.
"""
from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from camera.decode import JpegDecoder, choose_scale, jpeg_thumbnail, scaled_size
from camera.settings import CaptureSettings
from camera.uri import SourceOpenError, SourceSpec, mask_uri_password

logger = logging.getLogger(__name__)

HW_DEVICE_NODES = {"vaapi": "/dev/dri", "qsv": "/dev/dri", "drm": "/dev/dri", "cuda": "/dev/nvidia0"}
WRAPPER_DECODERS = {"v4l2m2m": "_v4l2m2m", "cuvid": "_cuvid"}  # h264 -> h264_v4l2m2m, h264_cuvid
_KEYFRAME_INTERVALS = 4  # keyframe intervals averaged to measure the keyframe rate
_hw_failed: dict[tuple[str, str], str] = {}  # (source, hwaccel) -> why it failed: software from then on
_hw_lock = threading.Lock()


def pyav_available() -> bool:
    try:
        import av  # optional: extra `ffmpeg`  # noqa: F401
    except ImportError:
        return False
    return True


def _hw_candidates(setting: str) -> list[str]:
    """The hardware decoders to try for ``setting``, in order."""
    if setting == "off":
        return []
    if setting != "auto":
        return [setting]
    try:
        from av.codec.hwaccel import hwdevices_available  # optional: extra `ffmpeg`
        built = list(hwdevices_available())
    except (ImportError, AttributeError):
        return []
    return [d for d in ("vaapi", "qsv", "cuda", "drm") if d in built and os.path.exists(HW_DEVICE_NODES[d])]


class PyAVSource:
    """One PyAV connection: grab()/retrieve() like camera.sources' OpenCV sources, plus thumbnails."""

    def __init__(self, spec: SourceSpec, settings: CaptureSettings) -> None:
        import av  # optional: extra `ffmpeg`

        self._av = av
        self._spec = spec
        self._settings = settings
        self._is_file = spec.kind == "file"
        self._key = mask_uri_password(spec.uri)
        self._ended = False
        self.decoder = "software"
        self.keyframes_only = settings.keyframes == "on"
        self._await_key = False
        self._key_times: deque[float] = deque(maxlen=_KEYFRAME_INTERVALS + 1)
        self._packet: bytes | None = None
        self._frame: Any = None
        self._min_size: tuple[int, int] | None = None
        self._scale = 1
        self.jpeg = JpegDecoder()
        self._container: Any = None
        self._decoder_cc: Any = None  # a wrapper hardware decoder, else the stream's own
        self._replay = False  # grab() returns the frame a hardware probe decoded first
        self._next_due: float | None = None
        self._native: tuple[int, int] | None = None
        self._open_with_hardware(_hw_candidates(settings.hwaccel))

    # ------------------------------------------------------------------ open
    def _open(self, hwaccel: Any = None) -> None:
        options = {}
        if self._spec.uri.lower().startswith(("rtsp://", "rtsps://")):
            options = {"rtsp_transport": "tcp", "analyzeduration": "1000000", "probesize": "500000"}
        read_s = max(0.5, min(self._settings.read_timeout_s, self._settings.watchdog_s) / 2)
        try:
            self._container = self._av.open(str(self._spec.target), options=options, hwaccel=hwaccel,
                                            timeout=(self._settings.open_timeout_s, read_s))
        except Exception as exc:
            raise SourceOpenError(f"could not open {self._spec.describe()}: {exc}") from exc
        if not self._container.streams.video:
            self._container.close()
            raise SourceOpenError(f"{self._spec.describe()} has no video stream")
        self._stream = self._container.streams.video[0]
        cc = self._stream.codec_context
        self.codec = str(cc.name)
        if self._settings.decode_threads != 1:
            cc.thread_type = "AUTO"
            cc.thread_count = max(0, self._settings.decode_threads)
        else:
            cc.thread_type = "NONE"
        rate = self._stream.average_rate or self._stream.guessed_rate
        fps = float(rate) if rate else 0.0
        self._fps = fps if 0 < fps <= 1000 else None
        self._raw_jpeg = self.codec == "mjpeg"
        self._demux = self._container.demux(self._stream)
        self._decoder_cc = cc

    def _open_with_hardware(self, candidates: list[str]) -> None:
        for device in candidates:
            with _hw_lock:
                failed = _hw_failed.get((self._key, device))
            if failed is None:
                try:
                    self._try_hardware(device)
                    return
                except Exception as exc:  # no device, no driver, no compatible stream, decodes nothing
                    failed = f"{type(exc).__name__}: {exc}"[:160]
                    with _hw_lock:
                        _hw_failed[(self._key, device)] = failed
                    logger.warning("%s: hardware decoder %s unusable (%s); decoding in software", self._key,
                                   device, failed)
                    self.close()
            self.decoder = f"software ({device} failed: {failed})"
        self._open()

    def _try_hardware(self, device: str) -> None:
        """Open with ``device`` and decode the first frame with it; raises when it is not really used."""
        if device in WRAPPER_DECODERS:
            self._open()
            name = self.codec + WRAPPER_DECODERS[device]
            cc = self._av.CodecContext.create(name, "r")
            cc.extradata = self._stream.codec_context.extradata
            self._decoder_cc = cc
        else:
            from av.codec.hwaccel import HWAccel  # optional: extra `ffmpeg`
            self._open(HWAccel(device_type=device, allow_software_fallback=False))
        if self._raw_jpeg:
            raise RuntimeError("MJPEG is decoded by TurboJPEG")
        deadline = time.monotonic() + self._settings.open_timeout_s
        while not self._grab_decoded():
            if time.monotonic() > deadline:
                raise RuntimeError("no frame decoded")
        if device not in WRAPPER_DECODERS and not self._decoder_cc.is_hwaccel:
            raise RuntimeError("FFmpeg decoded in software")
        self.decoder = f"hardware ({device})"
        self._replay = True
        logger.info("%s: decoding %s with %s", self._key, self.codec, device)

    # ------------------------------------------------------------------ FrameSource
    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def ended(self) -> bool:
        return self._ended

    def describe(self) -> str:
        return f"{self._spec.describe()} (PyAV)"

    def close(self) -> None:
        container, self._container = self._container, None
        self._frame = None
        if container is not None:
            container.close()  # never touch streams after this (PyAV segfaults)

    def read(self) -> np.ndarray | None:
        return self.retrieve() if self.grab() else None

    @property
    def keyframe_rate(self) -> float | None:
        """Keyframes per second measured on this connection (None until two keyframes were seen)."""
        times = list(self._key_times)
        if len(times) < 2:
            return None
        interval = statistics.median(b - a for a, b in zip(times, times[1:]))
        return 1.0 / interval if interval > 0 else None

    def _note_keyframe(self, packet: Any) -> None:
        if packet.pts is not None and packet.time_base is not None:
            self._key_times.append(float(packet.pts * packet.time_base))
        if self._settings.keyframes != "auto" or self._settings.target_fps <= 0:
            return
        rate = self.keyframe_rate
        want = rate is not None and self._settings.target_fps <= rate * 1.01
        if want != self.keyframes_only:
            logger.info("%s: %s keyframe-only decoding (fps %g, keyframes %.2f/s)", self._key,
                        "starting" if want else "leaving", self._settings.target_fps, rate or 0.0)
            self.keyframes_only = want

    def grab(self) -> bool:
        if self._replay:  # the frame a hardware probe decoded
            self._replay = False
            return True
        try:
            got = self._grab_decoded()
            while not got:
                got = self._grab_decoded()
            return True
        except StopIteration:
            if self._is_file and self._settings.loop:
                self._container.seek(0)
                self._demux = self._container.demux(self._stream)
                return self._grab_decoded() or self._grab_decoded()
            self._ended = self._is_file
            return False

    def _grab_decoded(self) -> bool:
        """Take one packet: True when it gave a frame (or, MJPEG, a JPEG packet); StopIteration at the end."""
        packet = next(self._demux)
        if self._is_file and self._settings.realtime:
            self._pace()  # per packet: keyframe-only decoding still plays a file in real time
        if packet.size == 0:
            if packet.dts is None and packet.pts is None:
                raise StopIteration
            return False
        key = bool(packet.is_keyframe)
        if key:
            self._note_keyframe(packet)
            self._await_key = False
        if self._raw_jpeg:
            self._packet = bytes(packet)
            return True
        if self.keyframes_only and not key:
            self._await_key = True  # when this mode ends, decoding starts at a keyframe again
            return False
        if self._await_key:
            return False
        frames = self._decoder_cc.decode(packet)
        if not frames:
            return False
        self._frame = frames[-1]
        return True

    def _pace(self) -> None:
        interval = 1.0 / (self._fps if self._fps and 1 <= self._fps <= 240 else 25.0)
        now = time.monotonic()
        due = now if self._next_due is None else self._next_due
        if due > now:
            time.sleep(due - now)
        self._next_due = max(due + interval, time.monotonic() - interval)

    def decode_at_least(self, size: tuple[int, int] | None) -> None:
        self._min_size = size
        self.jpeg.min_size = size

    def take_jpeg_packet(self) -> tuple[np.ndarray, tuple[int, int]] | None:
        native = self.jpeg.native_size
        if not self._raw_jpeg or native is None or self._packet is None:
            return None
        packet, self._packet = self._packet, None
        return np.frombuffer(packet, np.uint8), native

    def retrieve(self) -> np.ndarray | None:
        if self._raw_jpeg:
            packet, self._packet = self._packet, None
            return None if packet is None else self.jpeg.decode(np.frombuffer(packet, np.uint8))
        frame, self._frame = self._frame, None
        if frame is None:
            return None
        native = (int(frame.width), int(frame.height))
        self._native = native
        self._scale = choose_scale(native, self._min_size)
        if self._scale == 1:
            image: np.ndarray = frame.to_ndarray(format="bgr24")
        else:
            width, height = scaled_size(native, self._scale)
            image = frame.to_ndarray(format="bgr24", width=width, height=height, interpolation="AREA")
        return image

    def thumbnail(self) -> np.ndarray | None:
        """A grey image at 1/8 of the last grabbed frame's size, before retrieve(); None if there is none."""
        if self._raw_jpeg:
            return None if self._packet is None else jpeg_thumbnail(np.frombuffer(self._packet, np.uint8))
        frame = self._frame
        if frame is None:
            return None
        plane = frame.planes[0]  # luma of a YUV frame; other formats: convert
        if frame.format.name.startswith(("yuv", "yuvj", "nv12", "nv21")):
            luma = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width]
            return np.ascontiguousarray(luma[::8, ::8])
        grey: np.ndarray = frame.to_ndarray(format="gray", width=max(1, frame.width // 8),
                                            height=max(1, frame.height // 8))
        return grey

    @property
    def native_size(self) -> tuple[int, int] | None:
        if self._raw_jpeg:
            return self.jpeg.native_size
        return self._native

    @property
    def decode_scale(self) -> int:
        return self.jpeg.scale if self._raw_jpeg else self._scale


def open_pyav(spec: SourceSpec, settings: CaptureSettings) -> PyAVSource:
    if spec.kind == "file" and not Path(str(spec.target)).is_file():
        raise SourceOpenError(f"no such video file {spec.target}")
    return PyAVSource(spec, settings)
