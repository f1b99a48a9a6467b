"""Scene-change gating (camera.gate) and the camera config keys issue 17 added: values, refusals, wiring."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from camera import CaptureSettings, GateSettings
from camera.gate import SceneGate, max_cell_difference, thumbnail_of
from edge.app.wiring import capture_settings
from edge.config.loader import load_config
from edge.errors import ConfigError

RNG = np.random.default_rng(17)


def scene(noise: float = 0.0, box: int = 0) -> np.ndarray:
    """A 1280x720 BGR scene with a gradient, optional sensor noise and an optional box x box object."""
    base = np.tile(np.linspace(40, 200, 1280, dtype=np.float32), (720, 1))[..., None].repeat(3, axis=2)
    if box:
        base[300:300 + box, 600:600 + box] = 250.0
    if noise:
        base = base + RNG.normal(0, noise, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def test_small_objects_count_as_change_and_noise_does_not() -> None:
    reference = thumbnail_of(scene())
    assert thumbnail_of(scene()).shape == (90, 160)
    noisy = max_cell_difference(thumbnail_of(scene(noise=10)), reference)
    object_60 = max_cell_difference(thumbnail_of(scene(box=60)), reference)
    object_100 = max_cell_difference(thumbnail_of(scene(box=100)), reference)
    assert noisy < 2.0  # sensor noise averages out in the 1/8 thumbnail
    assert object_60 > 8.0 and object_100 > object_60  # the default threshold catches a 60x60 px object at 720p
    assert max_cell_difference(reference, reference[:, :80]) == float("inf")  # resolution changed: a change


def test_gate_decides_first_change_and_max_interval() -> None:
    gate = SceneGate(GateSettings(threshold=8.0, max_interval_s=5.0))
    still, moved = thumbnail_of(scene()), thumbnail_of(scene(box=120))
    assert gate.decide(still, 0.0) == "first"
    assert [gate.decide(still, t) for t in (1.0, 2.0, 4.9)] == [None, None, None]
    assert gate.decide(still, 5.0) == "max_interval"
    assert gate.decide(moved, 5.5) == "change"
    assert gate.decide(moved, 6.0) is None  # compared with the last classified frame: the moved scene
    assert gate.decide(still, 6.5) == "change"
    gate.reset()
    assert gate.decide(still, 7.0) == "first"


@pytest.mark.parametrize("kwargs, message", [
    ({"threshold": 0}, "gate threshold must be in (0, 255]"),
    ({"threshold": 300}, "gate threshold must be in (0, 255]"),
    ({"max_interval_s": 0}, "gate max_interval_s must be > 0"),
])
def test_gate_settings_refuse_bad_values(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("]", r"\]")):
        GateSettings(**kwargs)


@pytest.mark.parametrize("field, value, message", [
    ("keyframes", "sometimes", "keyframes must be one of auto, on, off"),
    ("reader", "gstreamer", "reader must be one of auto, opencv, ffmpeg"),
    ("hwaccel", "tpu", "hwaccel must be one of auto, off, vaapi"),
    ("decode_threads", -1, "decode_threads must be 0 (auto) .. 64"),
    ("gate", {"threshold": 8}, "gate must be a camera.gate.GateSettings or None"),
])
def test_capture_settings_refuse_bad_values(field, value, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CaptureSettings(name="cam", uri="rtsp://127.0.0.1/x", **{field: value})


CONFIG = """\
device_id = "box-1"

[[cameras]]
name = "front"
source = "rtsp://127.0.0.1:8554/front"
fps = 2
{camera}

[model]
name = "classifier"
"""


def load(tmp_path: Path, camera: str):
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG.format(camera=camera), encoding="utf-8")
    return load_config(path)


def test_new_camera_keys_reach_the_capture_settings(tmp_path: Path) -> None:
    config = load(tmp_path, 'reader = "ffmpeg"\nkeyframes = "on"\nhwaccel = "off"\ndecode_threads = 0\n'
                            '[cameras.gate]\nthreshold = 12.5\nmax_interval_s = 30')
    settings = capture_settings(config)[0]
    assert (settings.reader, settings.keyframes, settings.hwaccel, settings.decode_threads) == ("ffmpeg", "on", "off", 0)
    assert settings.gate == GateSettings(threshold=12.5, max_interval_s=30.0)
    defaults = capture_settings(load(tmp_path, ""))[0]
    assert (defaults.reader, defaults.keyframes, defaults.hwaccel, defaults.decode_threads, defaults.gate) == \
        ("auto", "auto", "auto", 1, None)


@pytest.mark.parametrize("camera, names", [
    ('keyframes = "sometimes"', "cameras[0].keyframes"),
    ('hwaccel = "tpu"', "cameras[0].hwaccel"),
    ("decode_threads = 65", "cameras[0].decode_threads"),
    ("[cameras.gate]\nthreshold = 0", "cameras[0].gate.threshold"),
    ("[cameras.gate]\nmax_interval_s = -1", "cameras[0].gate.max_interval_s"),
    ("[cameras.gate]\nthreshhold = 8", "cameras[0].gate.threshhold"),
])
def test_bad_camera_keys_are_refused_naming_the_key(tmp_path: Path, camera: str, names: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, camera)
    message = str(raised.value)
    assert names in message and "\n" not in message.strip()


def test_ffmpeg_reader_refuses_v4l2_sources(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG.format(camera='reader = "ffmpeg"').replace("rtsp://127.0.0.1:8554/front", "/dev/video0"))
    with pytest.raises(ConfigError, match='reader = "ffmpeg" reads network URLs and video files'):
        load_config(path)
