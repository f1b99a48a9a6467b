"""/metrics of the real gateway: promtool accepts it, its values agree with health, live-view JPEGs
are encoded only while someone asks for them, at most `live_fps` per camera, and the annotated view
draws a camera's ROI where the ROI is."""
from __future__ import annotations

import socket
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.support.config import render_config
from tests.support.console import console_section, get, metric_values
from tests.support.mqtt import payloads
from tests.support.net import free_port, wait_for_port
from tests.support.promtool import check_metrics
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow

DEVICE = "gw-metrics"
ROI = {"name": "door", "x": 20, "y": 16, "w": 100, "h": 80}  # inside green-cam's 160x120 frames


def value(metrics: dict, metric: str, **labels: str) -> float:
    return metrics[(metric, tuple(sorted(labels.items())))]


def between(low: float, got: float, high: float) -> bool:
    return low <= got <= high


def test_metrics_pass_promtool_and_agree_with_health(mosquitto, mqtt_recorder, gateway_factory, colour_model_store,
                                                     colour_cameras, promtool: Path, tmp_path: Path) -> None:
    port = free_port()
    red, green = colour_cameras
    cameras = [red, replace(green, extra={**green.extra, "rois": [ROI]})]
    text = render_config(DEVICE, cameras, colour_model_store, "colour", mosquitto.url, tmp_path / "spool.db",
                         extra_sections=console_section(port, live_fps=2))
    recorder = mqtt_recorder(mosquitto, f"edge/{DEVICE}/results/#")
    gw = gateway_factory("metrics", text).start()
    wait_for_port(port, timeout_s=120)
    wait_until(lambda: len(payloads(recorder, f"edge/{DEVICE}/results/+")) >= 20, 180, message="results")
    base = f"http://127.0.0.1:{port}"

    exposition = get(base + "/metrics")
    assert exposition.status_code == 200
    assert exposition.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    status, said = check_metrics(promtool, exposition.content)
    assert status == 0 and said.strip() == "", said

    # health before, metrics, health after (the status cache lasts 1 s): every counter in between
    before = get(base + "/api/status").json()["health"]
    metrics = metric_values(get(base + "/metrics").text)
    time.sleep(1.2)
    after = get(base + "/api/status").json()["health"]
    for cam_before, cam_after in zip(before["cameras"], after["cameras"]):
        name = cam_before["name"]
        for key in ("frames_read", "frames_processed", "frames_skipped", "reconnects"):
            got = value(metrics, f"edge_camera_{key}_total", camera=name)
            assert between(cam_before[key], got, cam_after[key]), (name, key, cam_before[key], got, cam_after[key])
        assert value(metrics, "edge_camera_up", camera=name) == 1.0 and cam_after["state"] == "online"
    assert between(before["inference"]["frames_classified"], value(metrics, "edge_inference_frames_total"),
                   after["inference"]["frames_classified"])
    assert between(before["inference"]["batches"], value(metrics, "edge_inference_duration_seconds_count"),
                   after["inference"]["batches"])
    assert between(before["inference"]["batches"], value(metrics, "edge_inference_batch_size_count"),
                   after["inference"]["batches"])
    assert between(before["results"]["published"], value(metrics, "edge_results_published_total"),
                   after["results"]["published"])
    assert between(before["results"]["published"], value(metrics, "edge_capture_to_publish_seconds_count"),
                   after["results"]["published"])
    assert value(metrics, "edge_mqtt_connected") == 1.0 and after["mqtt"]["connected"] is True
    assert value(metrics, "edge_spool_dropped_total") == after["spool"]["dropped"] == 0
    assert value(metrics, "edge_spool_max_bytes") == after["spool"]["max_bytes"]
    model = after["model"]
    assert value(metrics, "edge_model_info", name="colour", version=str(model["version"]),
                 runtime=str(model["runtime"])) == 1.0
    assert value(metrics, "edge_model_version", name="colour") == model["version"]
    assert value(metrics, "process_resident_memory_bytes") > 10 * 1048576

    # nobody watching: nothing encoded
    encodes = value(metric_values(get(base + "/metrics").text), "edge_console_jpeg_encodes_total")
    time.sleep(2.0)
    assert value(metric_values(get(base + "/metrics").text), "edge_console_jpeg_encodes_total") == encodes
    # many requests within ~1 s: at most live_fps (2) encodes per camera and kind, plus the first
    started = time.monotonic()
    for _ in range(40):
        for camera in ("red-cam", "green-cam"):
            assert get(f"{base}/api/{camera}/latest.jpg?annotated=1").status_code == 200
    elapsed = time.monotonic() - started
    grown = value(metric_values(get(base + "/metrics").text), "edge_console_jpeg_encodes_total") - encodes
    assert 2 <= grown <= 2 * (2 * elapsed + 1), (grown, elapsed)

    # the ROI's box on the annotated view (and only there), at the ROI's place
    annotated = get(f"{base}/api/green-cam/latest.jpg?annotated=1")
    assert "%22roi%22%3A%22door%22" in annotated.headers["X-Edge-Labels"]  # the labels drawn name the ROI
    drawn, plain = (jpeg_image(get(f"{base}/api/green-cam/latest.jpg{q}").content) for q in ("?annotated=1", ""))
    assert drawn.shape == plain.shape == (120, 160, 3)
    assert box_edges(drawn) == {"left": True, "right": True, "top": True, "bottom": True}, red_channel(drawn)
    assert box_edges(plain) == {"left": False, "right": False, "top": False, "bottom": False}
    x, y, w, h = ROI["x"], ROI["y"], ROI["w"], ROI["h"]
    for px, py in ((x + w // 2, y + h - 10), (x + w + 12, y + h // 2), (x - 12, y + h // 2), (x + w // 2, y + h + 12)):
        assert drawn[py, px, 2] < 80, (px, py, drawn[py, px])  # inside and around the box: the green frame
    assert gw.terminate() == 0


def jpeg_image(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def box_edges(image: np.ndarray) -> dict[str, bool]:
    """Is there a yellow line (BGR 0,255,255 on a green frame: the red channel) across the middle of
    each side of the ROI, below the labels drawn inside it? 3 px across each line (thickness 2)."""
    x, y, w, h = ROI["x"], ROI["y"], ROI["w"], ROI["h"]
    low = y + h - 12  # below the label text, above the bottom edge
    red = image[:, :, 2].astype(int)
    return {"left": red[low, x - 1:x + 2].max() > 150, "right": red[low, x + w - 2:x + w + 1].max() > 150,
            "top": red[y - 1:y + 2, x + w // 2].max() > 150, "bottom": red[y + h - 2:y + h + 1, x + w // 2].max() > 150}


def red_channel(image: np.ndarray) -> str:
    """The red channel around the ROI, for a failing assertion's message."""
    return np.array2string(image[::4, ::4, 2], max_line_width=200, threshold=10_000)


def test_a_console_port_already_taken_stops_the_start_with_one_line(
        mosquitto, gateway_factory, colour_model_store, colour_cameras, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        text = render_config(DEVICE, colour_cameras, colour_model_store, "colour", mosquitto.url,
                             tmp_path / "spool.db", extra_sections=console_section(port))
        gw = gateway_factory("taken", text).start()
        assert gw.proc is not None and gw.proc.wait(120) == 1
    said = [line for line in gw.log().splitlines() if line.startswith("edge-gateway: ")]
    assert said == [f"edge-gateway: cannot start: console cannot listen on 127.0.0.1:{port}: Address already in use "
                    "(set console.port to a free port, or console.enabled = false)"], gw.log()[-2000:]
