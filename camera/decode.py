"""Decoding JPEG frames at a reduced DCT scale when the capture does not need full resolution.

libjpeg-turbo can decode a JPEG at 1/2, 1/4 or 1/8 of its size while decoding (it skips the
high-frequency DCT work), which is much cheaper than a full decode followed by a resize: for a
1280x720 frame about 1.1 ms at 1/2 against 1.8 ms at full size. The decoded size at scale 1/s is
(ceil(w/s), ceil(h/s)).

`decode_kept` is the capture thread's decode step for a frame the fps limiter kept;
`needed_size(settings, transform)` says how large a camera's frames must be decoded (None: full);
`choose_scale` picks the smallest scale that still gives at least that; `decode_packet` decodes
one JPEG packet that way, falling back to a full decode whenever a reduced one fails or surprises
it; `JpegDecoder` does so for one connection, learning the source's native size from its first
(full) decode.

Above capacity most kept frames are overwritten in the camera's slot before anyone takes them, so
decoding them is wasted work. `DecodeDeferral` notices that (a publish found the slot still full)
and then has the capture publish undecoded packets (`DeferredFrame`), which `decode_deferred`
decodes for whoever takes them: only the frames that are classified get decoded.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from camera.frames import as_bgr, resize_to
from camera.gate import thumbnail_of
from camera.settings import CaptureSettings

try:  # libjpeg-turbo's TurboJPEG API: the same pixels as cv2.imdecode, a full 720p decode 3x faster here
    import simplejpeg
except ImportError:  # no wheel for this platform: OpenCV's libjpeg-turbo gives the same pixels, slower
    simplejpeg = None

logger = logging.getLogger(__name__)

SCALES: tuple[int, ...] = (8, 4, 2)  # tried smallest image first; 1 (full) is the fallback
_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def scaled_size(native: tuple[int, int], scale: int) -> tuple[int, int]:
    """(width, height) libjpeg produces for a `native`-sized JPEG decoded at 1/scale."""
    return math.ceil(native[0] / scale), math.ceil(native[1] / scale)


def choose_scale(native: tuple[int, int] | None, needed: tuple[int, int] | None) -> int:
    """The largest s in 8, 4, 2 whose decoded size is >= `needed` in both dimensions, else 1."""
    if native is None or needed is None:
        return 1
    for scale in SCALES:
        width, height = scaled_size(native, scale)
        if width >= needed[0] and height >= needed[1]:
            return scale
    return 1


def _size_or_none(value: Any) -> tuple[int, int] | None:
    try:
        width, height = value
    except (TypeError, ValueError):
        return None
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        return width, height
    return None


def needed_size(settings: CaptureSettings, transform: Any) -> tuple[int, int] | None:
    """The (width, height) a camera's frames must at least be decoded at; None means full size.

    decode="full" -> None. With `size` -> size (frames are then resized to it, ROIs are in its
    coordinates). Without size: ROIs -> None (they are in native pixels); otherwise the
    transform's optional `min_source_size` (see camera.FrameTransform), None without one.
    """
    if settings.decode == "full":
        return None
    if settings.size is not None:
        return settings.size
    if settings.rois or transform is None:
        return None
    return _size_or_none(getattr(transform, "min_source_size", None))


class JpegDecoder:
    """Decodes one connection's JPEG packets, at 1/2, 1/4 or 1/8 when that still gives `min_size`.

    Not thread-safe (one capture thread). `native_size` is None until a full decode succeeded;
    the first packet of a connection is therefore always decoded at full size.
    """

    def __init__(self) -> None:
        self.min_size: tuple[int, int] | None = None  # set by the capture before each decode
        self.native_size: tuple[int, int] | None = None
        self.scale = 1  # of the last decode
        self.reduced_decodes = 0
        self.full_decodes = 0

    def decode(self, packet: np.ndarray) -> np.ndarray | None:
        """BGR pixels of one JPEG packet (1-D uint8), or None when libjpeg cannot read it."""
        native = self.native_size
        decoded = decode_packet(packet, native, self.min_size)
        if decoded is None:
            return None
        image, self.scale = decoded
        if self.scale > 1:
            self.reduced_decodes += 1
            return image
        size = (int(image.shape[1]), int(image.shape[0]))
        if native is not None and size != native:
            logger.info("JPEG stream changed from %dx%d to %dx%d", *native, *size)
        self.native_size = size
        self.full_decodes += 1
        return image


def decode_packet(packet: np.ndarray, native: tuple[int, int] | None,
                  needed: tuple[int, int] | None) -> tuple[np.ndarray, int] | None:
    """(BGR image, scale) of one JPEG packet (1-D uint8) decoded at the smallest scale that still
    gives `needed` from a `native`-sized source; a full decode (scale 1) when no reduced one does,
    when the reduced decode fails or when its size shows the source is no longer `native`-sized.
    None when libjpeg cannot read the packet at all."""
    scale = choose_scale(native, needed)
    if scale > 1 and native is not None:
        size = scaled_size(native, scale)
        image = _decode(packet, scale, size)
        if image is not None and (image.shape[1], image.shape[0]) == size:
            return image, scale
        # unreadable at this scale, or the source changed its resolution: a full decode tells
    image = _decode(packet, 1, None)
    return None if image is None else (image, 1)


def jpeg_thumbnail(packet: np.ndarray) -> np.ndarray | None:
    """A grey image at 1/8 of a JPEG packet's size (TurboJPEG's cheapest decode); None when unreadable."""
    if simplejpeg is not None:
        try:
            width, height, _, _ = simplejpeg.decode_jpeg_header(packet)
            thumb: np.ndarray = simplejpeg.decode_jpeg(packet, colorspace="GRAY", min_width=max(1, width // 8),
                                                       min_height=max(1, height // 8), strict=False)
            return thumb[..., 0] if thumb.ndim == 3 else thumb
        except ValueError:
            pass
    image = cv2.imdecode(packet, cv2.IMREAD_REDUCED_GRAYSCALE_8)
    return image if image is not None else None


def _decode(packet: np.ndarray, scale: int, size: tuple[int, int] | None) -> np.ndarray | None:
    """BGR pixels of a JPEG packet at 1/scale, whose expected `size` is scaled_size(native, scale)
    (None at scale 1); None when unreadable. TurboJPEG picks the smallest of its M/8 scales giving
    at least `size`, which is 1/scale."""
    if simplejpeg is not None:
        try:
            pixels: np.ndarray
            if size is None:
                pixels = simplejpeg.decode_jpeg(packet, colorspace="BGR", strict=False)
            else:
                pixels = simplejpeg.decode_jpeg(packet, colorspace="BGR", min_width=size[0], min_height=size[1],
                                                strict=False)
            return pixels
        except ValueError:
            pass  # e.g. a CMYK JPEG, which TurboJPEG cannot turn into BGR: OpenCV may still read it
    return cv2.imdecode(packet, _FLAGS[scale])


@dataclass(frozen=True, eq=False)
class KeptFrame:
    """A kept frame after decoding and resizing, with the sizes the camera's stats report."""

    image: np.ndarray  # HxWx3 uint8 BGR: resized to settings.size when set, else as decoded
    resolution: tuple[int, int]  # settings.size when set, else the source's native (width, height)
    decoded: tuple[int, int]  # (width, height) the decoder produced, before any resize
    scale: int  # 1, 2, 4 or 8: decoded at 1/scale of the source's size


def decode_kept(source: Any, image: np.ndarray | None, settings: CaptureSettings, transform: Any) -> KeptFrame:
    """Decode the frame `source` last grabbed (image=None; a source with grab()/retrieve()) or take
    the `image` its read() returned, then resize it to settings.size. Raises ValueError when the
    frame cannot be decoded or is not an image."""
    if image is None:
        decode_at_least = getattr(source, "decode_at_least", None)
        if callable(decode_at_least):
            decode_at_least(needed_size(settings, transform))
        image = source.retrieve()
        if image is None:
            raise ValueError("the frame could not be decoded")
    scale = getattr(source, "decode_scale", 1)
    return _kept(image, settings, getattr(source, "native_size", None), scale if isinstance(scale, int) else 1)


def _kept(image: np.ndarray, settings: CaptureSettings, native: tuple[int, int] | None, scale: int) -> KeptFrame:
    decoded = (int(image.shape[1]), int(image.shape[0]))
    resized = resize_to(as_bgr(image), settings.size)
    return KeptFrame(resized, settings.size or native or decoded, decoded, scale)


def gate_thumbnail(source: Any, image: np.ndarray | None, settings: CaptureSettings,
                   transform: Any) -> tuple[np.ndarray, KeptFrame | None]:
    """The 1/8 grey thumbnail scene-change gating compares (camera.gate), and the kept frame when
    the thumbnail had to come from decoding it (sources without a cheap ``thumbnail()``)."""
    thumbnail = getattr(source, "thumbnail", None)
    thumb = thumbnail() if image is None and callable(thumbnail) else None
    if thumb is not None:
        return thumb, None
    kept = decode_kept(source, image, settings, transform)
    return thumbnail_of(kept.image), kept


@dataclass(frozen=True, eq=False)
class DeferredFrame:
    """A kept frame published as its undecoded JPEG packet; decoded by whoever takes it."""

    number: int
    packet: np.ndarray  # 1-D uint8, owned (OpenCV returns a fresh array per read)
    native: tuple[int, int]  # the source's (width, height) when the packet was grabbed
    captured_wall: float
    captured_mono: float
    reason: str = "sampled"  # why it is classified (camera.gate)


def decode_deferred(frame: DeferredFrame, settings: CaptureSettings, transform: Any) -> KeptFrame:
    """Decode a deferred packet for the camera's current transform and resize it to settings.size
    (as `decode_kept` would have). Raises ValueError when libjpeg cannot read it."""
    decoded = decode_packet(frame.packet, frame.native, needed_size(settings, transform))
    if decoded is None:
        raise ValueError("the JPEG packet could not be decoded")
    image, scale = decoded
    native = frame.native if scale > 1 else (int(image.shape[1]), int(image.shape[0]))
    return _kept(image, settings, native, scale)


class DecodeDeferral:
    """Decides, for each kept frame, whether the capture thread decodes it now or defers the decode
    to whoever takes it. Used by the capture thread only.

    Deferral starts when a publish finds the slot still holding an untaken frame (the consumer is
    behind, so most frames will be overwritten undecoded) and stops after `hold` publishes in a
    row found the slot empty (the consumer keeps up again; decoding in the capture thread then
    takes the work off the consumer's path). `disable()` stops it for the rest of the connection
    (a deferred packet failed to decode, or showed a new resolution: the capture's own decoder
    then handles the next frames and relearns).
    """

    def __init__(self, hold: int = 8) -> None:
        self.hold = hold
        self._left = 0
        self._disabled = False

    def reset(self) -> None:
        """A new connection: decode in the capture thread until the consumer falls behind."""
        self._left = 0
        self._disabled = False

    def disable(self) -> None:
        self._left = 0
        self._disabled = True

    @property
    def active(self) -> bool:
        return self._left > 0 and not self._disabled

    def published(self, slot_was_full: bool) -> None:
        if slot_was_full and not self._disabled:
            self._left = self.hold
        elif self._left > 0:
            self._left -= 1
