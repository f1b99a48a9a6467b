"""The container image (packaging/container/Containerfile), built with podman from the Debian package on a
base made by debootstrap (no image registry is reachable here), then run: edge-model-server answering
the official TF Serving client, and the gateway classifying a camera onto a real Mosquitto, healthy."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.fixtures.packaging import Podman, run
from tests.support.config import CameraSpec, render_config
from tests.support.mqtt import payloads
from tests.support.net import free_port
from tests.support.paths import REPO, TFSERVING_TESTDATA
from tests.support.waits import wait_until

IMAGE = "localhost/edge-gateway:test"


@pytest.fixture(scope="module")
def image(podman: Podman, debian_root: Path, built_deb: Path) -> str:
    """What `make dist` runs (packaging/container/build-image.sh), on the debootstrap root as the base."""
    proc = run([REPO / "packaging" / "container" / "build-image.sh", "--deb", built_deb, "--rootfs", debian_root,
                "--tag", IMAGE, "--no-save"], timeout_s=1800, env=podman.env)
    assert proc.stdout.strip().splitlines()[-1] == IMAGE
    return IMAGE


def test_model_server_in_the_container_answers_the_official_client(podman: Podman, image: str) -> None:
    import tensorflow as tf  # the official client's tensor helper
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    port = free_port()
    model = TFSERVING_TESTDATA / "saved_model_half_plus_two_tflite_with_sigdef"
    cid = podman("run", "-d", "--network=host", "-v", f"{model}:/models/half:ro", "--entrypoint",
                 "/usr/bin/edge-model-server", image, f"--port={port}", "--model_name=half",
                 "--model_base_path=/models/half", "--prefer_tflite_model").stdout.strip()
    try:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "half"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32)))

        def answer() -> list[float] | None:
            try:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                    return list(stub.Predict(request, timeout=10).outputs["y"].float_val)
            except grpc.RpcError:
                return None

        assert wait_until(answer, 120, interval_s=1.0, message="edge-model-server in the container") == [3.0]
    finally:
        podman("rm", "-f", cid, timeout_s=120)


def litert_only_store(colour_model_store: Path, colour_tflite: Path, store: Path) -> Path:
    """The colour model as a LiteRT-only version (the image carries LiteRT, not TensorFlow)."""
    version = store / "colour" / "1"
    shutil.copytree(colour_model_store / "colour" / "1" / "assets.extra", version / "assets.extra")
    shutil.copy(colour_tflite, version / "model.tflite")
    return store


@pytest.mark.timeout(480)  # the image's first start under a loaded CI machine, then up to 2 min of health checks
def test_gateway_in_the_container_classifies_and_is_healthy(
        podman: Podman, image: str, tmp_path: Path, mosquitto, mqtt_recorder, colour_model_store, colour_tflite,
        colour_cameras) -> None:
    state = tmp_path / "state"
    litert_only_store(colour_model_store, colour_tflite, state / "models")
    etc = tmp_path / "etc"
    etc.mkdir()
    camera = colour_cameras[0]
    shutil.copy(camera.source, tmp_path / "camera.avi")
    config = render_config("container-gw", [CameraSpec(camera.name, "/camera/camera.avi", fps=5)], Path("/var/lib/edge/models"),
                           "colour", mosquitto.url, Path("/var/lib/edge/spool.db"),
                           status_file=Path("/run/edge/status.json"))
    (etc / "gateway.toml").write_text(config)
    for folder in (state, etc, tmp_path):
        folder.chmod(0o777)
    subprocess.run(["chmod", "-R", "a+rwX", state], check=True, timeout=60)
    recorder = mqtt_recorder(mosquitto, "edge/container-gw/#")
    cid = podman("run", "-d", "--network=host", "-v", f"{etc}:/etc/edge:ro", "-v", f"{state}:/var/lib/edge",
                 "-v", f"{tmp_path}:/camera:ro", image).stdout.strip()
    try:
        wait_until(lambda: len(payloads(recorder, f"edge/container-gw/results/{camera.name}")) >= 3, 240,
                   message="results from the gateway in the container")
        labels = {d["top_k"][0]["label"] for d in payloads(recorder, f"edge/container-gw/results/{camera.name}")}
        assert labels == {"red"}, labels
        wait_until(lambda: subprocess.run([*podman.base, "healthcheck", "run", cid], capture_output=True,
                                          timeout=60, env=podman.env).returncode == 0, 120, interval_s=2.0,
                   message="the container's health check passing")
    finally:
        logs = subprocess.run([*podman.base, "logs", cid], capture_output=True, text=True, timeout=60, env=podman.env)
        print("container log:\n" + (logs.stdout + logs.stderr)[-6000:])  # shown when the test fails
        podman("rm", "-f", cid, timeout_s=120)
    assert "Traceback" not in logs.stdout + logs.stderr, (logs.stdout + logs.stderr)[-3000:]
