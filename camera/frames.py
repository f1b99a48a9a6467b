"""The `Frame` a capture publishes, resizing, and cropping regions of interest out of it."""
from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from camera.settings import Roi, is_frame_transform

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy images with == is meaningless
class Frame:
    """One image read from a camera.

    number counts every frame read from the source since start (1, 2, 3, ...), across
    reconnects and including frames that were never published (decimated or overwritten),
    so gaps in the numbers a consumer sees are the frames it skipped.
    image is HxWx3 uint8 BGR, already resized to settings.size when that is set. Without size, an
    MJPEG source may be decoded at 1/2, 1/4 or 1/8 of its resolution (settings.decode="auto" and a
    transform with `min_source_size`, no ROIs; see camera.decode): image is then that reduced
    image of the source frame, still at least min_source_size; the camera's stats keep reporting
    the source's native resolution and add the decoded one.
    pixels, when the capture has a transform, holds the transform's output for each region
    `crop_regions(image, rois)` yields (one entry without ROIs), made in the capture thread;
    pixels_tag is the transform's `tag`, so a consumer can tell whether they suit it.
    """

    camera: str
    number: int
    image: np.ndarray
    captured_wall: float
    captured_mono: float
    pixels: tuple[np.ndarray, ...] | None = None
    pixels_tag: Hashable | None = None
    reason: str = "sampled"  # why it is classified: "sampled" (no gating), "first", "change", "max_interval"


@runtime_checkable
class FrameTransform(Protocol):
    """Work a consumer wants done on each kept frame in the capture thread (e.g. resize + colour).

    Called with each region of a frame (HxWx3 uint8 BGR; a view, do not write to it) and returns
    the array the consumer wants. `tag` names what it produces: equal tags mean equal outputs,
    so frames made by an earlier transform with the same tag are still good. The camera package
    never looks inside; it only calls it and copies the tag onto the frame.

    Optional attribute `min_source_size: tuple[int, int] | None`, (width, height): the smallest
    image the transform needs to do its best work. When a camera has no `size` and no ROIs, an
    MJPEG source is then decoded at a reduced JPEG scale that still gives at least this (read with
    getattr, re-read for every frame: a transform without it, or None, means full resolution).
    It is deliberately not a protocol member, so transforms without it still satisfy isinstance.
    """

    @property
    def tag(self) -> Hashable: ...

    def __call__(self, image: np.ndarray, /) -> np.ndarray: ...


def resize_to(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Return `image` resized to size=(width, height), or unchanged when it already has that size."""
    if size is None:
        return image
    width, height = size
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrinking = width * height < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Return an HxWx3 uint8 BGR image (grey and BGRA inputs are converted)."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {image.shape}")


def crop_regions(image: np.ndarray, rois: Sequence[Roi]) -> list[tuple[str | None, np.ndarray]]:
    """Cut each ROI out of `image`: [(roi.name, crop), ...], or [(None, image)] when there are no ROIs.

    ROIs that stick out of the frame are clamped to it; an ROI entirely outside raises ValueError.
    Crops are views into `image` (no copy): copy before writing to them.
    """
    if not rois:
        return [(None, image)]
    height, width = image.shape[:2]
    crops: list[tuple[str | None, np.ndarray]] = []
    for roi in rois:
        left, top = max(0, roi.x), max(0, roi.y)
        right, bottom = min(width, roi.x + roi.w), min(height, roi.y + roi.h)
        if right <= left or bottom <= top:
            raise ValueError(
                f"roi {roi.name!r} ({roi.x},{roi.y} {roi.w}x{roi.h}) lies entirely outside the "
                f"{width}x{height} frame"
            )
        crops.append((roi.name, image[top:bottom, left:right]))
    return crops


class RegionTransform:
    """A camera's current consumer transform, run on each region of a frame.

    A failing transform is logged once (until it works again or is replaced) and gives no pixels,
    so the consumer does the work itself.
    """

    def __init__(self, camera: str, rois: Sequence[Roi], transform: FrameTransform | None) -> None:
        self._camera = camera
        self._rois = rois
        self.current: FrameTransform | None = None
        self._failing = False
        self.set(transform)

    def set(self, transform: FrameTransform | None) -> None:
        if transform is not None and not is_frame_transform(transform):
            raise TypeError("transform must be callable and have a `tag` (see camera.FrameTransform)")
        self.current = transform
        self._failing = False

    def apply(self, image: np.ndarray) -> tuple[tuple[np.ndarray, ...] | None, Hashable | None]:
        """(the transform's output per region, its tag), or (None, None) without one or on error."""
        transform = self.current
        if transform is None:
            return None, None
        try:
            pixels = tuple(transform(region) for _, region in crop_regions(image, self._rois))
        except Exception as exc:
            if not self._failing:
                self._failing = True
                logger.warning("camera %s: frame transform failed (%s); publishing frames without pixels",
                               self._camera, exc)
            return None, None
        self._failing = False
        return pixels, transform.tag
