"""`edgectl doctor` against real components: a video-file camera and a dead HTTP camera, the colour model,
a real Mosquitto (and a port nobody listens on), a real docker-registry (and a dead one)."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.config import CameraSpec, render_config
from tests.support.net import free_port
from tests.support.processes import EDGECTL

pytestmark = pytest.mark.slow

REPO = "models/colour"


def doctor(config: Path, timeout_s: float = 5.0) -> tuple[int, dict[str, tuple[str, str]], str]:
    """Exit code, {check name: (PASS|FAIL, first line of detail)}, stderr."""
    proc = subprocess.run([*EDGECTL, "doctor", "--config", str(config), "--timeout", str(timeout_s), "--width", "400"],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    rows: dict[str, tuple[str, str]] = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if len(cells) >= 3 and cells[1] in ("PASS", "FAIL"):
            rows[cells[0]] = (cells[1], cells[2])
    return proc.returncode, rows, proc.stderr


def push_tag(registry, tag: str = "1") -> str:
    client = registry.client()
    config = client.push_blob(REPO, b"{}")
    layer = client.push_blob(REPO, b"model bytes")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.test.config+json", "digest": config, "size": 2},
                "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": 11}]}
    return client.push_manifest(REPO, tag, manifest)


def write_config(tmp_path: Path, name: str, cameras: list[CameraSpec], store: Path, broker_url: str,
                 registry_address: str) -> Path:
    registry = f'[registry]\nref = "{registry_address}/{REPO}:1"\ninsecure = true\ntimeout_s = 5.0\n'
    path = tmp_path / f"{name}.toml"
    path.write_text(render_config("doctor-dev", cameras, store, "colour", broker_url, tmp_path / "spool.db",
                                  extra_sections=registry))
    return path


def test_doctor_passes_when_everything_is_there(tmp_path: Path, colour_model_store: Path, mosquitto, registry,
                                                video_file_factory) -> None:
    digest = push_tag(registry)
    video = video_file_factory(size=(320, 240), fps=10.0)
    config = write_config(tmp_path, "ok", [CameraSpec("front", str(video))], colour_model_store, mosquitto.url,
                          registry.address)
    code, rows, stderr = doctor(config)
    assert code == 0, (rows, stderr)
    assert set(rows) == {"config", "camera front", "model colour (embedded)", f"broker {mosquitto.url}",
                         f"registry {registry.address}/{REPO}:1", "disk", "clock"}
    assert all(result == "PASS" for result, _ in rows.values()), rows
    assert rows["camera front"][1].startswith("320x240, 10.0 fps")
    assert rows["model colour (embedded)"][1].startswith("version 2 AVAILABLE")
    assert digest in rows[f"registry {registry.address}/{REPO}:1"][1]


def test_doctor_reports_each_missing_component(tmp_path: Path, colour_model_store: Path, video_file_factory) -> None:
    dead_camera = f"http://127.0.0.1:{free_port()}/stream.mjpg"
    dead_broker = f"mqtt://127.0.0.1:{free_port()}"
    dead_registry = f"127.0.0.1:{free_port()}"
    video = video_file_factory()
    config = write_config(tmp_path, "broken", [CameraSpec("front", str(video)), CameraSpec("door", dead_camera)],
                          colour_model_store, dead_broker, dead_registry)
    code, rows, stderr = doctor(config, timeout_s=3.0)
    assert code == 1
    assert rows["config"][0] == "PASS" and rows["camera front"][0] == "PASS"
    assert rows["camera door"][0] == "FAIL" and "cannot open" in rows["camera door"][1]
    assert rows[f"broker {dead_broker}"][0] == "FAIL" and "cannot connect" in rows[f"broker {dead_broker}"][1]
    assert rows[f"registry {dead_registry}/{REPO}:1"][0] == "FAIL"
    assert rows["model colour (embedded)"][0] == "PASS"
    assert stderr.strip().splitlines()[-1].startswith("edgectl: 3 check(s) failed: camera door, broker")


def test_doctor_reports_a_missing_tag_and_a_missing_model(tmp_path: Path, mosquitto, registry,
                                                          video_file_factory) -> None:
    video = video_file_factory()
    empty_store = tmp_path / "store"
    config = tmp_path / "c.toml"
    config.write_text(render_config("doctor-dev", [CameraSpec("front", str(video))], empty_store, "colour",
                                    mosquitto.url, tmp_path / "spool.db"))
    code, rows, _ = doctor(config)
    assert code == 1 and rows["model colour (embedded)"][0] == "FAIL"
    assert "no servable version" in rows["model colour (embedded)"][1]
    assert rows[f"broker {mosquitto.url}"] == ("PASS", "CONNACK Success as anonymous")
    config = write_config(tmp_path, "notag", [CameraSpec("front", str(video))], empty_store, mosquitto.url,
                          registry.address)
    code, rows, _ = doctor(config)
    assert code == 1 and rows[f"registry {registry.address}/{REPO}:1"][0] == "FAIL"
    # an empty store is fine when the registry will fill it, so only the registry fails
    assert rows["model colour (embedded)"][0] == "PASS"


def test_doctor_invalid_config_and_bad_arguments(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('device_id = "x"\n')
    code, rows, _stderr = doctor(bad)
    assert code == 1 and rows["config"][0] == "FAIL" and "cameras" in rows["config"][1]
    proc = subprocess.run([*EDGECTL, "doctor", "--config", str(bad), "--timeout", "0"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == "edgectl: --timeout must be > 0, got 0.0"
    json.dumps(rows)  # rows are plain data
