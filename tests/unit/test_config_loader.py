"""Config validation: every bad value is refused with one line naming the key, exit status 2."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.app import main as gateway
from edge.app.wiring import capture_settings
from edge.config.loader import load_config
from edge.errors import ConfigError
from provisioning import cli

BIN = Path(sys.executable).parent

VALID = """\
device_id = "box-1"

[[cameras]]
name = "front"
source = "rtsp://127.0.0.1:8554/front"
fps = 5
size = [640, 360]
  [[cameras.rois]]
  name = "door"
  x = 0
  y = 0
  w = 100
  h = 100

[[cameras]]
name = "back"
source = "http://127.0.0.1:8080/stream.mjpg"

[model]
name = "classifier"
store = "/var/lib/edge/models"
version = "latest"

[mqtt]
url = "mqtts://broker.example:8883"
topic_prefix = "fleet/site-a"
keepalive_s = 20

[spool]
path = "/var/lib/edge/spool.db"
max_mb = 64

[health]
interval_s = 10
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_config_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    assert config.device_id == "box-1"
    assert [c.name for c in config.cameras] == ["front", "back"]
    assert config.cameras[0].size == (640, 360)
    assert config.cameras[0].rois[0].name == "door"
    assert config.cameras[1].fps == 5.0  # default
    assert config.cameras[1].watchdog_s == 10.0  # default no-frame watchdog
    assert config.cameras[1].decode == "auto"  # default: MJPEG decoded at a reduced scale when it suffices
    full = load_config(write(tmp_path, VALID.replace('name = "back"', 'name = "back"\ndecode = "full"')))
    assert [s.decode for s in capture_settings(full)] == ["auto", "full"]
    assert config.model.version == "latest"
    assert config.mqtt.topic_prefix == "fleet/site-a"
    assert config.serving.backend == "embedded"


def test_edgectl_config_check_accepts_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "check", str(write(tmp_path, VALID))]) == 0
    assert "OK" in capsys.readouterr().out


BAD_CASES = [
    # (description, change applied to VALID, key expected in the message, words expected)
    ("unknown top-level key", lambda t: t + "\ncolour = 1\n", "colour", "unknown key"),
    ("unknown camera key", lambda t: t.replace("fps = 5", "fpz = 5"), "cameras[0].fpz", "unknown key"),
    ("wrong type device_id", lambda t: t.replace('device_id = "box-1"', "device_id = 5"), "device_id", "string"),
    ("fps as string", lambda t: t.replace("fps = 5", 'fps = "5"'), "cameras[0].fps", "number"),
    ("negative fps", lambda t: t.replace("fps = 5", "fps = -1"), "cameras[0].fps", "greater than or equal to 0"),
    ("duplicate camera name", lambda t: t.replace('name = "back"', 'name = "front"'), "cameras", "duplicate camera"),
    ("bad camera URI scheme", lambda t: t.replace("rtsp://127.0.0.1:8554/front", "ftp://host/x"),
     "cameras[0].source", "ftp"),
    ("missing video file", lambda t: t.replace("rtsp://127.0.0.1:8554/front", "/nonexistent/video.mp4"),
     "cameras[0].source", "/nonexistent/video.mp4"),
    ("camera name with slash", lambda t: t.replace('name = "back"', 'name = "a/b"'), "cameras[1].name", "letters"),
    ("missing model", lambda t: t.replace('[model]\nname = "classifier"', '[modell]\nname = "classifier"'),
     "model", "required"),
    ("no cameras", lambda t: t.replace("[[cameras]]", "[[camera]]"), "camera", ""),
    ("bad model version", lambda t: t.replace('version = "latest"', 'version = "newest"'), "model.version", ""),
    ("negative model version", lambda t: t.replace('version = "latest"', "version = -3"), "model.version", ""),
    ("bad mqtt url", lambda t: t.replace("mqtts://broker.example:8883", "http://broker"), "mqtt.url", "mqtt://"),
    ("mqtt port out of range", lambda t: t.replace("broker.example:8883", "broker.example:70000"),
     "mqtt.url", "port"),
    ("topic prefix wildcard", lambda t: t.replace('"fleet/site-a"', '"fleet/#"'), "mqtt.topic_prefix", "#"),
    ("cert without key", lambda t: t.replace("keepalive_s = 20", 'keepalive_s = 20\ncert_file = "/etc/hostname"'),
     "mqtt", "key_file"),
    ("missing CA file", lambda t: t.replace("keepalive_s = 20", 'keepalive_s = 20\nca_file = "/nonexistent/ca.pem"'),
     "mqtt", "ca_file"),
    ("zero spool cap", lambda t: t.replace("max_mb = 64", "max_mb = 0"), "spool.max_mb", "greater than 0"),
    ("zero health interval", lambda t: t.replace("interval_s = 10", "interval_s = 0"), "health.interval_s", ""),
    ("bad size", lambda t: t.replace("size = [640, 360]", "size = [0, 360]"), "cameras[0].size", "between"),
    ("size with 3 values", lambda t: t.replace("size = [640, 360]", "size = [640, 360, 3]"), "cameras[0].size", ""),
    ("bad decode", lambda t: t.replace('name = "back"', 'name = "back"\ndecode = "half"'), "cameras[1].decode",
     "'auto' or 'full'"),
    ("decode not a string", lambda t: t.replace('name = "back"', 'name = "back"\ndecode = 2'), "cameras[1].decode", ""),
    ("ROI zero width", lambda t: t.replace("w = 100", "w = 0"), "cameras[0].rois[0].w", ""),
    ("unknown backend", lambda t: t + '\n[serving]\nbackend = "onnx"\n', "serving.backend", "embedded"),
    ("negative interpreters", lambda t: t + '\n[serving]\ninterpreters = -1\n', "serving.interpreters",
     "greater than or equal to 0"),
    ("bool where number", lambda t: t.replace("keepalive_s = 20", "keepalive_s = true"), "mqtt.keepalive_s", ""),
    ("TOML syntax error", lambda t: t + "\n[mqtt\n", "gateway.toml", "TOML syntax error"),
]


@pytest.mark.parametrize("case", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_config_refused_with_key_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], case) -> None:
    _, change, key, words = case
    path = write(tmp_path, change(VALID))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert key in message, message
    assert words in message, message
    # both programs refuse it the same way: one line on stderr, exit status 2
    assert cli.main(["config", "check", str(path)]) == 2
    assert gateway.main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(key in line for line in err), err
    assert "Traceback" not in "".join(err)


@pytest.mark.parametrize("kind", ["missing", "directory", "not utf-8"])
def test_unreadable_files(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "gateway.toml"
    if kind == "directory":
        path.mkdir()
    elif kind == "not utf-8":
        path.write_bytes(b"device_id = \"\xff\xfe\"\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert cli.main(["config", "check", str(path)]) == 2


@pytest.mark.slow
def test_entry_points_exit_2_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("fps = 5", "fps = -5"))
    for argv in ([str(BIN / "edgectl"), "config", "check", str(path)],
                 [str(BIN / "edge-gateway"), "run", "--config", str(path)]):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().count("\n") == 0
        assert "cameras[0].fps" in proc.stderr


@pytest.mark.slow
def test_edgectl_help_lists_commands() -> None:
    proc = subprocess.run([str(BIN / "edgectl"), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "config" in proc.stdout
