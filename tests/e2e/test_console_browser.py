"""The console in a real browser (headless Chromium via Playwright) against a real gateway and Mosquitto.

The camera cycles red, green and blue (one second each), so the label changes all the time: the
live view's frame must carry the label the gateway published on MQTT for that very frame, drawn
and listed, and its pixels must be that colour. The plots must have data, the page no console
errors, and the screenshot must not be blank.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.config import CameraSpec, render_config
from tests.support.console import colour_cycle_frames, console_section, dominant_label, get, is_blank
from tests.support.mqtt import payloads
from tests.support.net import free_port, wait_for_port
from tests.support.paths import REPO
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow

DEVICE = "gw-console"
CAMERA = "rgb"

SHOWN = """() => {
  const fig = document.querySelector('figure.camera[data-camera="rgb"]');
  const img = fig && fig.querySelector('img');
  if (!fig || !fig.dataset.frame || !img.complete || !img.naturalWidth) return null;
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(Math.floor(canvas.width / 2), Math.floor(canvas.height * 0.85), 1, 1).data;
  const first = fig.querySelector('.labels li .label');
  return {frame: Number(fig.dataset.frame), top: fig.dataset.top, listed: first ? first.textContent : null,
          pixel: [px[0], px[1], px[2]], width: img.naturalWidth};
}"""

LINE_PIXELS = """([id, rgb]) => {
  const canvas = document.querySelector('#' + id + ' canvas');
  if (!canvas) return 0;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let near = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 128 && Math.abs(data[i] - rgb[0]) + Math.abs(data[i + 1] - rgb[1]) + Math.abs(data[i + 2] - rgb[2]) < 60) near++;
  }
  return near;
}"""
LINE_COLOURS = {"plot-fps": (31, 119, 180), "plot-inference": (31, 119, 180), "plot-latency": (214, 39, 40)}


def result_for(recorder, frame: int) -> dict | None:
    for doc in payloads(recorder, f"edge/{DEVICE}/results/{CAMERA}"):
        if doc["frame"] == frame:
            return doc
    return None


def newest_frame(recorder) -> int:
    return max((d["frame"] for d in payloads(recorder, f"edge/{DEVICE}/results/{CAMERA}")), default=-1)


def test_console_page_shows_the_labelled_live_view_plots_and_status(
        mosquitto, mqtt_recorder, gateway_factory, colour_model_store, video_file_factory, open_page,
        tmp_path: Path) -> None:
    video = video_file_factory(frames=colour_cycle_frames(10), fps=10.0)
    port = free_port()
    text = render_config(DEVICE, [CameraSpec(CAMERA, str(video), fps=10)], colour_model_store, "colour",
                         mosquitto.url, tmp_path / "spool.db", extra_sections=console_section(port, live_fps=5))
    recorder = mqtt_recorder(mosquitto, f"edge/{DEVICE}/results/#")
    gw = gateway_factory("console", text).start()
    wait_for_port(port, timeout_s=120)
    wait_until(lambda: newest_frame(recorder) >= 0, 180, message="first results")
    url = f"http://127.0.0.1:{port}/"

    console = open_page(url)
    page = console.page
    checked = 0
    labels_seen = set()
    while checked < 4:  # several frames, across colour changes
        shown = wait_until(lambda: page.evaluate(SHOWN), 30, message="a frame in the live view")
        newest = newest_frame(recorder)
        doc = wait_until(lambda: result_for(recorder, shown["frame"]), 30,
                         message=f"the MQTT result of frame {shown['frame']}")
        published = doc["top_k"][0]["label"]
        assert shown["top"] == published and shown["listed"] == published, (shown, doc["top_k"])
        assert dominant_label(shown["pixel"]) == published, (shown, published)
        assert shown["frame"] >= newest - 15, f"live view behind: frame {shown['frame']}, MQTT has {newest}"
        labels_seen.add(published)
        checked += 1
        page.wait_for_timeout(700)
    assert len(labels_seen) >= 2, labels_seen  # the label changed while we watched

    # plots: at least three samples each, drawn on their canvases
    for plot in ("plot-fps", "plot-inference", "plot-latency"):
        wait_until(lambda: int(page.get_attribute(f"#{plot}", "data-values") or 0) >= 3, 40,
                   message=f"{plot} with data")
        assert page.evaluate(LINE_PIXELS, [plot, LINE_COLOURS[plot]]) > 30, f"{plot}: no line drawn"
    history = get(url + "api/history").json()
    assert max(v for v in history["fps"][CAMERA] if v is not None) > 5, history["fps"]
    assert any(v is not None for v in history["inference_ms"])

    # status: the camera online, the model, the broker connected, events listed
    wait_until(lambda: page.text_content("#cameras tbody") and CAMERA in page.text_content("#cameras tbody"), 20,
               message="the cameras table")
    assert "online" in page.text_content("#cameras tbody")
    assert "colour" in page.text_content("#model") and "connected" in page.text_content("#broker")
    assert page.text_content("#state") in ("ok", "degraded")
    assert "gateway_started" in page.text_content("#events")

    shot = tmp_path / "console.png"
    page.screenshot(path=str(shot), full_page=True)
    assert not is_blank(shot), shot
    assert console.errors == [], console.errors
    assert gw.alive()
    assert gw.terminate() == 0


def test_demo_prints_the_console_url_and_its_page_shows_the_cat_labelled(
        demo_model_store, demo_video, open_page, tmp_path: Path) -> None:
    """`make demo` (tools/demo.py): the URL it prints serves the demo camera with the cat labelled.
    The screenshot taken here is docs/images/console.png (shown in the README) (written when missing, or
    replaced with EDGE_UPDATE_SCREENSHOTS=1, so a test run leaves the committed one alone)."""
    video, sidecar = demo_video
    cat_labels = set(next(s for s in json.loads(Path(sidecar).read_text())["segments"]
                          if s["photo"] == "chelsea")["expect_any_of"])
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "camera.avi").symlink_to(video)
    (assets / "models").symlink_to(demo_model_store)
    out = tmp_path / "demo.out"
    with open(out, "wb") as log:  # its own session: everything it started can be stopped by its group id
        demo = subprocess.Popen([sys.executable, "-m", "tools.demo", "--seconds", "300", "--assets", str(assets),
                                 "--console-port", str(free_port())], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def printed_url() -> str | None:
            for line in out.read_text(errors="replace").splitlines():
                if "console: http://" in line:
                    return line.split("console: ", 1)[1].split()[0]
            return None

        url = wait_until(printed_url, 60, message="the console URL printed by the demo")
        wait_for_port(int(url.rsplit(":", 1)[1].strip("/")), timeout_s=120)
        console = open_page(url)
        page = console.page
        for plot in ("plot-fps", "plot-inference", "plot-latency"):
            wait_until(lambda: int(page.get_attribute(f"#{plot}", "data-values") or 0) >= 3, 240,
                       message=f"{plot} with data")
        shot = tmp_path / "console.png"

        def cat_on_screen() -> bool:
            top = 'figure.camera[data-camera="demo-cam"]'
            if page.get_attribute(top, "data-top") not in cat_labels:
                return False
            page.screenshot(path=str(shot))
            return page.get_attribute(top, "data-top") in cat_labels  # still the cat after the shot

        wait_until(cat_on_screen, 120, interval_s=0.05,
                   message=f"the demo camera labelled as a cat ({sorted(cat_labels)})")
        assert not is_blank(shot)
        assert console.errors == [], console.errors
        readme_image = REPO / "docs" / "images" / "console.png"
        if os.environ.get("EDGE_UPDATE_SCREENSHOTS") == "1" or not readme_image.exists():  # a committed asset
            shutil.copyfile(shot, readme_image)
    finally:
        demo.send_signal(signal.SIGINT)  # the demo stops its gateway and broker on Ctrl-C
        try:
            demo.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)
