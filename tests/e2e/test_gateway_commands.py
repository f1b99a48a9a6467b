"""Device commands against the real gateway subprocess over a real Mosquitto (MQTT 5 request/response;
the gateway is the `command_gateway` fixture).

ping, live config patches (a camera's fps and size, results.publish), refused patches (nothing
changes), a patch that needs a restart (persisted + .bak + exit status 75 + retained `restarting`),
snapshot (a JPEG of the camera's size), restart-camera, and malformed/unknown/oversized requests.
"""
from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.errors import EXIT_RESTART
from tests.fixtures.gateway import COMMAND_DEVICE
from tests.support.mqtt import latest_retained, payloads
from tests.support.waits import wait_until

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.slow

DEVICE = COMMAND_DEVICE
HEALTH = f"edge/{DEVICE}/health"


def camera(ping: dict, name: str) -> dict:
    return next(c for c in ping["cameras"] if c["name"] == name)


def health_camera(recorder, name: str) -> dict:
    doc = latest_retained(recorder, HEALTH)
    return next(c for c in doc["cameras"] if c["name"] == name)


def test_ping_live_patches_snapshot_restart_camera_and_bad_requests(command_gateway) -> None:
    gw, req, recorder = command_gateway
    ping = req.request("ping", b"")
    assert ping["ok"] and ping["command"] == "ping", ping
    result = ping["result"]
    assert result["device"] == DEVICE and result["model"] == {"name": "colour", "version": 2}
    assert result["uptime_s"] > 0 and result["state"] in ("ok", "degraded")
    assert camera(result, "red-cam")["fps"] == 10 and camera(result, "green-cam")["size"] == [128, 96]
    assert set(result["commands"]) == {"ping", "config", "snapshot", "restart-camera", "trust"}
    assert result["command_sensitivity"]["trust"] == "sensitive" and result["trust"]["root"] is None

    # snapshot: a JPEG of the camera's (configured) size with the top label drawn and reported
    snap = req.request("snapshot", b'{"camera": "green-cam"}')
    assert snap["ok"], snap
    import cv2

    image = cv2.imdecode(np.frombuffer(base64.b64decode(snap["result"]["jpeg_base64"]), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (96, 128, 3)
    assert (snap["result"]["width"], snap["result"]["height"]) == (128, 96)
    assert snap["result"]["labels"][0]["top"][0]["label"] == "green"

    # live: one camera's fps and size (that camera restarts with new CaptureSettings)
    config_before = gw.config_path.read_text()
    reply = req.request("config", json.dumps({"patch": {"cameras": {"red-cam": {"fps": 4.0, "size": [64, 48]}}}}).encode())
    assert reply["ok"], reply
    assert reply["result"]["applied"] == "live" and reply["result"]["restart_keys"] == []
    assert reply["result"]["changed"] == ["cameras.red-cam.fps", "cameras.red-cam.size"]
    ping = req.request("ping", b"")["result"]
    assert camera(ping, "red-cam")["fps"] == 4.0 and camera(ping, "red-cam")["size"] == [64, 48]
    assert camera(ping, "green-cam")["fps"] == 10
    saved = tomllib.loads(gw.config_path.read_text())
    assert saved["cameras"][0]["fps"] == 4.0 and saved["cameras"][0]["size"] == [64, 48]
    assert Path(str(gw.config_path) + ".bak").read_text() == config_before

    def red_snapshot_small() -> bool:
        r = req.request("snapshot", b'{"camera": "red-cam"}')
        return r["ok"] and (r["result"]["width"], r["result"]["height"]) == (64, 48)

    wait_until(red_snapshot_small, 60, interval_s=0.5, message="red-cam frames at the new size")
    wait_until(lambda: health_camera(recorder, "red-cam")["state"] == "online", 60)
    assert gw.alive()

    # live: results.publish = on_change -> identical top-1s are suppressed (counted in health)
    reply = req.request("config", b'{"patch": {"results": {"publish": "on_change"}}}')
    assert reply["ok"] and reply["result"]["applied"] == "live", reply
    assert req.request("ping", b"")["result"]["results"]["publish"] == "on_change"
    wait_until(lambda: latest_retained(recorder, HEALTH)["results"]["suppressed_unchanged"] > 10, 60,
               message="unchanged results suppressed")
    # the same patch again changes nothing
    assert req.request("config", b'{"patch": {"results": {"publish": "on_change"}}}')["result"] == {
        "applied": "none", "changed": [], "restart_keys": []}

    # restart-camera: reconnects go up, offline/online events
    reconnects = health_camera(recorder, "green-cam")["reconnects"]
    reply = req.request("restart-camera", b'{"camera": "green-cam"}')
    assert reply["ok"] and reply["result"]["camera"] == "green-cam", reply
    wait_until(lambda: health_camera(recorder, "green-cam")["reconnects"] > reconnects, 60, message="reconnect")
    events = payloads(recorder, f"edge/{DEVICE}/events")
    assert any(e["event"] == "camera_offline" and e["camera"] == "green-cam" and e["reason"] == "restart requested"
               for e in events)
    wait_until(lambda: sum(e["event"] == "camera_online" and e["camera"] == "green-cam"
                           for e in payloads(recorder, f"edge/{DEVICE}/events")) >= 2, 60)

    # bad requests: error replies, nothing changes
    config_now = gw.config_path.read_text()
    bad = {
        ("nosuch", b"{}"): "unknown command 'nosuch'",
        ("ping", b"{not json"): "payload is not valid JSON",
        ("ping", b'{"x": 1}'): "unknown key(s) ['x'] for ping",
        ("snapshot", b'{"camera": "back-door"}'): "unknown camera 'back-door'",
        ("snapshot", b'{"camera": 3}'): "camera: must be string, got integer",
        ("snapshot", b"{}"): "snapshot needs key(s) ['camera']",
        ("restart-camera", b'{"camera": "nope"}'): "unknown camera 'nope'",
        ("config", b'{"patch": [1]}'): "patch: must be object, got array",
        ("config", b'{"patch": {"cameras": {"red-cam": {"fps": -1}}}}'): "cameras[0].fps: Input should be greater",
        ("config", b'{"patch": {"cameras": {"red-cam": {"fps": "fast"}}}}'): "cameras[0].fps",
        ("config", b'{"patch": {"results": {"publsh": "always"}}}'): "results.publsh: unknown key",
        ("config", b'{"patch": {"cameras": {"attic": {"fps": 1}}}}'): "unknown camera(s) ['attic']",
        ("config", b'{"patch": {"model": {"top_k": 0}}}'): "model.top_k",
        ("config", b'{"patch": {"x": "' + b"a" * 70_000 + b'"}}'): "the limit is 65536",
    }
    for (name, payload), message in bad.items():
        reply = req.request(name, payload)
        assert reply["ok"] is False and reply["command"] == name and message in reply["error"], (name, reply)
    assert gw.config_path.read_text() == config_now
    ping = req.request("ping", b"")["result"]
    assert camera(ping, "red-cam")["fps"] == 4.0 and ping["results"]["top_k"] == 5

    # no Response Topic: still carried out (and logged)
    reconnects = health_camera(recorder, "red-cam")["reconnects"]
    req.client.publish(f"edge/{DEVICE}/cmd/restart-camera", b'{"camera": "red-cam"}', qos=1).wait_for_publish(10)
    wait_until(lambda: health_camera(recorder, "red-cam")["reconnects"] > reconnects, 60)
    assert gw.terminate() == 0
    assert latest_retained(recorder, f"edge/{DEVICE}/status") == "stopped"


def test_refused_patch_changes_nothing_and_restart_patch_persists_and_exits_75(command_gateway) -> None:
    gw, req, recorder = command_gateway
    original = gw.config_path.read_text()
    reply = req.request("config", b'{"patch": {"serving": {"max_batch_size": 0}}}')
    assert reply == {"ok": False, "command": "config", "error": reply["error"]}
    assert reply["error"].startswith("patch: serving.max_batch_size: Input should be greater than or equal to 1")
    assert gw.config_path.read_text() == original and not Path(str(gw.config_path) + ".bak").exists()
    assert gw.alive()

    reply = req.request("config", b'{"patch": {"serving": {"max_batch_size": 2}, "results": {"min_score": 0.2}}}')
    assert reply["ok"], reply
    result = reply["result"]
    assert result["applied"] == "restart" and result["exit_status"] == EXIT_RESTART
    assert result["restart_keys"] == ["serving.max_batch_size"]
    assert sorted(result["changed"]) == ["results.min_score", "serving.max_batch_size"]
    assert gw.proc.wait(60) == EXIT_RESTART
    saved = tomllib.loads(gw.config_path.read_text())
    assert saved["serving"]["max_batch_size"] == 2 and saved["results"]["min_score"] == 0.2
    assert Path(str(gw.config_path) + ".bak").read_text() == original
    wait_until(lambda: latest_retained(recorder, f"edge/{DEVICE}/status") == "restarting", 20)
    # started again (what systemd does on status 75): it runs with the persisted config
    gw.start()
    wait_until(lambda: gw.alive() and req.request("ping", b"", 60)["result"]["results"]["min_score"] == 0.2, 180,
               interval_s=1.0, message="restarted gateway with the new config")
