"""The wheel as a device gets it: installed into a fresh venv (not editable, not this checkout), offline
from a wheelhouse of the built wheel and its pinned stack (no TensorFlow), then `edgectl install --root R`
and the installed `edge-gateway` classifying the demo camera with LiteRT onto a real Mosquitto."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edge.serving.candidates import convert_saved_model
from tests.support.config import CameraSpec, render_config
from tests.support.mqtt import payloads
from tests.support.paths import REPO
from tests.support.waits import wait_until
from tools.build_demo_model import MODEL_NAME as DEMO_MODEL


def device_env(**extra: str) -> dict[str, str]:
    """The environment of a device's shell: no PYTHONPATH pointing into a checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return {**env, **extra}


CONSTRAINTS = REPO / "packaging" / "constraints" / f"{platform.machine()}-py{sys.version_info[0]}{sys.version_info[1]}.txt"


def test_the_wheel_carries_units_config_man_pages_completions_and_the_descriptor_set(built_wheel: Path) -> None:
    names = set(zipfile.ZipFile(built_wheel).namelist())
    for expected in ("edge/_data/systemd/edge-gateway.service", "edge/_data/systemd/edge-model-server.service",
                     "edge/_data/examples/gateway.toml", "edge/_data/man/edge-gateway.1",
                     "edge/_data/man/edgectl.1", "edge/_data/man/edge-model-server.1",
                     "edge/_data/completion/edgectl.bash", "edge/_data/completion/_edgectl",
                     "edge/serving/protos/descriptors.binpb", "edge/serving/protos/descriptors.sha256"):
        assert expected in names, expected
    metadata = zipfile.ZipFile(built_wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Name: edge-gateway" in metadata
    assert "grpcio-tools" not in [line.split()[1] for line in metadata.splitlines() if line.startswith("Requires-Dist:")
                                  and "extra ==" not in line], "grpcio-tools must not be a runtime dependency"


EXTRAS = "opencv,litert"  # what a device without TensorFlow installs (the .deb's extras too)


@pytest.fixture(scope="module")
def fresh_venv(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with the wheel and its pinned stack installed offline: `pip download` fills a wheelhouse
    (PyPI, or pip's cache), then `pip install --no-index` from it alone, with this machine's pip
    configuration ignored, as on a device without network access."""
    base = tmp_path_factory.mktemp("fresh")
    wheelhouse = base / "wheelhouse"
    pip_env = device_env(PIP_CONFIG_FILE="/dev/null", PIP_FIND_LINKS="", PIP_DISABLE_PIP_VERSION_CHECK="1")
    download = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", wheelhouse,
                               "-c", CONSTRAINTS, f"{built_wheel}[{EXTRAS}]"],
                              capture_output=True, text=True, timeout=1200, env=pip_env)
    assert download.returncode == 0, download.stdout[-2000:] + download.stderr[-2000:]
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    install = subprocess.run([venv / "bin" / "pip", "install", "--no-index", "--find-links", wheelhouse,
                              "-c", CONSTRAINTS, f"edge-gateway[{EXTRAS}]"],
                             capture_output=True, text=True, timeout=900, env={**pip_env, "PIP_NO_INDEX": "1"})
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    assert "Successfully installed" in install.stdout and "edge-gateway-" in install.stdout
    frozen = subprocess.run([venv / "bin" / "pip", "freeze"], capture_output=True, text=True, timeout=120,
                            env=pip_env).stdout
    assert "tensorflow" not in frozen.lower() and "grpcio-tools" not in frozen, frozen
    return venv


@pytest.fixture(scope="module")
def demo_litert_store(demo_model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo version as a device without TensorFlow serves it: its assets.extra (labels, golden images)
    and a model.tflite converted here, where TensorFlow is; no SavedModel."""
    source = demo_model_store / DEMO_MODEL / "1"
    version = tmp_path_factory.mktemp("litert-store") / DEMO_MODEL / "1"
    shutil.copytree(source / "assets.extra", version / "assets.extra")
    (version / "model.tflite").write_bytes(convert_saved_model(source))
    return version.parent.parent


def test_installed_programs_answer_version_and_come_from_the_wheel(fresh_venv: Path) -> None:
    for program in ("edge-gateway", "edgectl", "edge-model-server"):
        out = subprocess.run([fresh_venv / "bin" / program, "--version"], capture_output=True, text=True, timeout=120,
                             env=device_env())
        assert out.returncode == 0 and "0." in out.stdout, (program, out.stdout, out.stderr)
    where = subprocess.run([fresh_venv / "bin" / "python", "-c", "import edge, edge.serving.protos._compile as c; "
                            "print(edge.__file__); print(c.packaged_set(c.source_digest()) is not None)"],
                           capture_output=True, text=True, timeout=120, cwd="/", env=device_env())
    path, packaged = where.stdout.split()
    assert path.startswith(str(fresh_venv)) and packaged == "True", where.stdout + where.stderr


def test_edgectl_install_from_the_wheel_then_the_installed_gateway_classifies(
        fresh_venv: Path, tmp_path: Path, mosquitto, mqtt_recorder, demo_litert_store, demo_video) -> None:
    root = tmp_path / "root"
    done = subprocess.run([fresh_venv / "bin" / "edgectl", "install", "--root", root, "--no-enable"],
                          capture_output=True, text=True, timeout=300, cwd="/", env=device_env())
    assert done.returncode == 0, done.stdout + done.stderr
    unit = (root / "etc/systemd/system/edge-gateway.service").read_text()
    assert f"ExecStart={fresh_venv / 'bin' / 'edge-gateway'} run --config /etc/edge/gateway.toml" in unit
    assert "RestartPreventExitStatus=2" in unit
    for path in ("usr/local/share/man/man1/edgectl.1", "usr/local/share/bash-completion/completions/edgectl",
                 "etc/edge/gateway.toml.example", "var/lib/edge/models"):
        assert (root / path).exists(), path
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", root / "etc/systemd/system/edge-gateway.service"],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stderr

    video, _sidecar = demo_video
    config = tmp_path / "gateway.toml"
    config.write_text(render_config("wheel-gw", [CameraSpec("demo", str(video), fps=5)], demo_litert_store,
                                    DEMO_MODEL, mosquitto.url, tmp_path / "spool.db", max_batch_size=2))
    recorder = mqtt_recorder(mosquitto, "edge/wheel-gw/#")
    log = open(tmp_path / "gateway.log", "wb")
    gateway = subprocess.Popen([fresh_venv / "bin" / "edge-gateway", "run", "--config", config], stdout=log,
                               stderr=log, cwd="/", env=device_env(TF_CPP_MIN_LOG_LEVEL="2"))
    try:
        wait_until(lambda: len(payloads(recorder, "edge/wheel-gw/results/demo")) >= 5 or gateway.poll() is not None,
                   300, message="results from the gateway installed from the wheel")
        assert gateway.poll() is None, (tmp_path / "gateway.log").read_text()[-3000:]
        labels = {d["top_k"][0]["label"] for d in payloads(recorder, "edge/wheel-gw/results/demo")}
        assert labels, "results without labels"
        started = [d for d in payloads(recorder, "edge/wheel-gw/events") if d["event"] == "gateway_started"]
        assert started and started[0]["model"]["version"] == 1 and started[0]["model"]["runtime"] == "litert", started
    finally:
        gateway.terminate()
        try:
            gateway.wait(30)
        except subprocess.TimeoutExpired:
            gateway.kill()
        log.close()
