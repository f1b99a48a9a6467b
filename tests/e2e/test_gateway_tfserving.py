"""The gateway in `tfserving` mode against a real edge-model-server process, over gRPC."""
from __future__ import annotations

import json
import time

import pytest

from tests.fixtures.model_server import ModelServerProcess
from tests.support.config import render_config
from tests.support.mqtt import latest_retained, payloads
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow

DEVICE = "gw-test"


def restart_same_ports(server: ModelServerProcess) -> ModelServerProcess:
    """Start the server again with exactly the same flags (same ports): the gateway must reconnect."""
    again = server.respawn()
    again.wait_available("colour")
    return again


def test_gateway_classifies_through_model_server_without_tensorflow(
    mosquitto, mqtt_recorder, gateway_factory, model_server_factory, colour_model_store, colour_cameras, tmp_path
) -> None:
    server = model_server_factory("--model_name=colour", f"--model_base_path={colour_model_store / 'colour'}")
    recorder = mqtt_recorder(mosquitto, f"edge/{DEVICE}/#")
    text = render_config(DEVICE, colour_cameras, colour_model_store, "colour", mosquitto.url,
                         tmp_path / "spool.db", health_interval_s=0.5,
                         serving={"backend": "tfserving", "target": server.grpc_target, "timeout_ms": 2000})
    gw = gateway_factory("gw-tfs", text).start()
    recorder.wait_for(lambda _: len(recorder.messages("edge/+/results/red-cam")) >= 5
                      and len(recorder.messages("edge/+/results/green-cam")) >= 5, timeout_s=120)
    for camera, label in (("red-cam", "red"), ("green-cam", "green")):
        docs = payloads(recorder, f"edge/{DEVICE}/results/{camera}")
        assert {d["top_k"][0]["label"] for d in docs} == {label}
        assert {d["model"]["version"] for d in docs} == {2}  # pinned to the server's AVAILABLE version

    def health() -> dict:
        doc = latest_retained(recorder, f"edge/{DEVICE}/health")
        return doc if isinstance(doc, dict) else {}

    wait_until(lambda: health().get("model", {}).get("backend", {}).get("state") == "ok", 60, message="backend ok")
    doc = health()
    assert doc["process"]["tensorflow_imported"] is False  # the gateway never imported TensorFlow
    assert doc["process"]["runtimes_imported"] == []  # nor OpenVINO or LiteRT: the server runs the model
    assert doc["model"]["runtime"] == "tfserving" and doc["model"]["backend"]["sent_as"] == "uint8"
    print(f"tfserving-mode gateway RSS with 2 cameras: {doc['process']['rss_mb']} MB")

    # The server dies: the backend is degraded, frames are dropped and counted, the gateway stays up.
    server.kill()
    wait_until(lambda: health().get("model", {}).get("backend", {}).get("state") == "degraded", 60,
               message="backend degraded in health")
    wait_until(lambda: health().get("inference", {}).get("frames_failed", 0) > 0, 60, message="dropped frames counted")
    assert health()["state"] == "degraded" and gw.alive()

    # It comes back on the same port: classification resumes by itself.
    restarted_at = time.time()
    server = restart_same_ports(server)
    try:
        recorder.wait_for(lambda _: any(d["ts"] > restarted_at for d in payloads(recorder, "edge/+/results/+")),
                          timeout_s=120)
        wait_until(lambda: health().get("model", {}).get("backend", {}).get("state") == "ok", 60,
                   message="backend ok again")
        assert gw.terminate() == 0
    finally:
        server.stop()
    events = [e["event"] for e in payloads(recorder, f"edge/{DEVICE}/events")]
    assert "gateway_started" in events
    json.dumps(doc)
