"""The `[[cameras]]` config section: one table per camera, with its ROIs and optional scene-change gate.

Kept out of :mod:`edge.config.schema` (which includes it as ``GatewayConfig.cameras``) so each module
stays small; the wiring derives ``camera.CaptureSettings`` (and ``camera.GateSettings``) from it.
"""
from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field, field_validator, model_validator

from camera import parse_source_uri
from edge.config.fields import Strict, check_name, no_control

logger = logging.getLogger(__name__)


class GateConfig(Strict):
    """Scene-change gating: classify a frame only when the scene changed, or max_interval_s after the last."""

    threshold: float = Field(default=8.0, gt=0, le=255, description="grey levels of mean |difference| in one cell")
    max_interval_s: float = Field(default=10.0, gt=0, le=86_400)


class RoiConfig(Strict):
    name: str
    x: int = Field(ge=0)
    y: int = Field(ge=0)
    w: int = Field(gt=0)
    h: int = Field(gt=0)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "ROI name")


class CameraConfig(Strict):
    name: str
    source: str
    fps: float = Field(default=5.0, ge=0, le=240, description="0 = as fast as the source delivers")
    size: tuple[int, int] | None = None
    loop: bool = True
    realtime: bool = True
    watchdog_s: float = Field(default=10.0, gt=0, le=3600)
    backoff_initial_s: float = Field(default=0.5, gt=0, le=600)
    backoff_max_s: float = Field(default=30.0, gt=0, le=3600)
    open_timeout_s: float = Field(default=10.0, gt=0, le=600)
    read_timeout_s: float = Field(default=5.0, gt=0, le=600)
    # auto: MJPEG decoded at 1/2, 1/4 or 1/8 when that still gives the size needed; full: native size
    decode: Literal["auto", "full"] = "auto"
    # which library reads the source: auto = PyAV (FFmpeg) for network URLs when installed, else OpenCV
    reader: Literal["auto", "opencv", "ffmpeg"] = "auto"
    # PyAV: decode only keyframes while fps <= the stream's keyframe rate (auto), always (on) or never (off)
    keyframes: Literal["auto", "on", "off"] = "auto"
    # PyAV: hardware decoder, software when it fails
    hwaccel: Literal["auto", "off", "vaapi", "qsv", "drm", "cuda", "v4l2m2m", "cuvid"] = "auto"
    decode_threads: int = Field(default=1, ge=0, le=64, description="FFmpeg decoder threads; 1 = none, 0 = auto")
    gate: GateConfig | None = None
    rois: list[RoiConfig] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "camera name")

    @field_validator("size")
    @classmethod
    def _size(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not (16 <= v[0] <= 8192 and 16 <= v[1] <= 8192):
            raise ValueError(f"must be [width, height] between 16 and 8192, got {list(v)}")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        no_control(v)
        parse_source_uri(v)  # raises ValueError with a message naming the accepted forms
        return v

    @model_validator(mode="after")
    def _rois_unique(self) -> CameraConfig:
        if self.reader == "ffmpeg" and parse_source_uri(self.source).kind not in ("ffmpeg", "file"):
            raise ValueError("reader = \"ffmpeg\" reads network URLs and video files; use reader = \"opencv\" "
                             "(or \"auto\") for V4L2 devices and gst: pipelines")
        names = [r.name for r in self.rois]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate ROI name(s) {dupes}")
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError("backoff_initial_s must not exceed backoff_max_s")
        return self
