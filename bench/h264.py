"""Cameras per box for RTSP H.264 1080p30 cameras classified at 2 fps each (for bench/pipeline.py's table).

Cameras: GStreamer's RTSP server on loopback (tools/rtsp_server.py) serving a 1080p30 H.264 file
(libx264, no B-frames, a keyframe every 15 frames = 2/s, as an IP camera set to an I-frame interval
of 0.5 s) to each client from its own start, so cameras run on free clocks. A worker process reads N
such cameras with the capture under test, at fps = 2, and classifies every frame it takes with the
selected runtime (one single-threaded interpreter: the cost per classified frame); its process CPU
time over the window, divided by N cameras and the window, is one camera's share of a core, and
cameras per box = cores / that share. The modes run one after another in the same run:

- OpenCV (today's path): cv2.VideoCapture (FFmpeg), every frame decoded in grab();
- PyAV, all frames: keyframes = "off";
- PyAV, keyframe-only: keyframes = "auto" (2 fps <= 2 keyframes/s);
- on a mostly-static camera set (a still scene with sensor noise and an object appearing every 12 s),
  PyAV keyframe-only without and with scene-change gating ([cameras.gate] defaults).

The RTSP server's own CPU (the cameras') is not counted. Nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2
import numpy as np

from tools.loopback import free_port, h264_video, start_rtsp_server, stop_pid

MODES = {
    "OpenCV (today: every frame decoded)": {"reader": "opencv"},
    "PyAV, all frames decoded": {"reader": "ffmpeg", "keyframes": "off"},
    "PyAV, keyframe-only": {"reader": "ffmpeg", "keyframes": "auto"},
}
STATIC_MODES = {
    "static scenes, PyAV keyframe-only, no gating": {"reader": "ffmpeg", "keyframes": "auto"},
    "static scenes, PyAV keyframe-only + gating": {"reader": "ffmpeg", "keyframes": "auto", "gate": True},
}


def static_scene(path: Path, seconds: int = 30) -> Path:
    """A still 720p MJPEG scene with sensor noise; a 160x160 object appears for 2 s every 12 s."""
    if path.is_file():
        return path
    from tools.demo_photos import load_photo

    base = cv2.resize(cv2.cvtColor(load_photo("coffee"), cv2.COLOR_RGB2BGR), (1280, 720)).astype(np.float32)
    rng = np.random.default_rng(7)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (1280, 720))
    for i in range(seconds * 30):
        image = base.copy()
        if (i // 30) % 12 in (6, 7):
            image[280:440, 560:720] = (40.0, 200.0, 240.0)
        writer.write(np.clip(image + rng.normal(0, 2.5, image.shape), 0, 255).astype(np.uint8))
    writer.release()
    return path


def run_worker(uris: list[str], mode: dict, store: Path, model: str, warmup_s: float, window_s: float) -> dict:
    """In this process: capture + classify N cameras; CPU seconds over the window."""
    import threading

    from camera import CameraCapture, CaptureSettings, GateSettings
    from edge.models.store import ModelStore
    from edge.serving.candidates import load_served
    from edge.serving.embedded import EmbeddedClassifier
    from edge.serving.preprocess import FramePreprocessor

    cv2.setNumThreads(1)
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp"
    selected = EmbeddedClassifier(ModelStore(store).resolve(model))  # the cached selection (runtime = auto)
    runtime, model_file = selected.selection["runtime"], selected.selection["model_file"]
    classifier = load_served(runtime, Path(model_file), selected.info, 1, 1) if model_file else selected
    pre = FramePreprocessor(selected.info.image_input, selected.info.metadata.preprocess, fast_resize=True)
    extra = {k: v for k, v in mode.items() if k not in ("gate", "classify")}
    gate = GateSettings() if mode.get("gate") else None
    captures = [CameraCapture(CaptureSettings(name=f"cam{i}", uri=uri, target_fps=2.0, gate=gate,
                                              transform=pre, **extra))
                for i, uri in enumerate(uris)]
    counted = {"frames": 0}
    stop = threading.Event()

    def classify() -> None:  # mode "classify": false only takes the frames (a capture-only profile)
        while not stop.is_set():
            took = False
            for capture in captures:
                frame = capture.take(0.0)
                if frame is not None:
                    took = True
                    pixels = frame.pixels[0] if frame.pixels else pre.to_model_pixels(frame.image)
                    if mode.get("classify", True):
                        classifier.classify(pre.batch_to_input(pixels[None]))
                    counted["frames"] += 1
            if not took:
                time.sleep(0.005)

    for capture in captures:
        capture.start()
    worker = threading.Thread(target=classify, daemon=True)
    worker.start()
    time.sleep(warmup_s)
    frames0, cpu0, wall0 = counted["frames"], time.process_time(), time.monotonic()
    time.sleep(window_s)
    frames1, cpu1, wall1 = counted["frames"], time.process_time(), time.monotonic()
    stats = [c.stats() for c in captures]
    stop.set()
    for capture in captures:
        capture.stop(5.0)
    wall = wall1 - wall0
    return {"cpu_share": (cpu1 - cpu0) / wall / len(uris), "classified_fps": (frames1 - frames0) / wall / len(uris),
            "online": sum(s.state == "online" for s in stats), "keyframes_only": [s.keyframes_only for s in stats],
            "gated": sum(s.frames_gated for s in stats)}


def measure(work: Path, camera_video: Path, store: Path, model: str, cameras: int = 3, window_s: float = 12.0) -> dict:
    """{mode: worker result} for every mode, the moving and the static camera sets served side by side."""
    moving = h264_video(work / "moving-1080p30-gop15.mp4", (1920, 1080), 30, 30, 15, source=camera_video)
    still = h264_video(work / "static-1080p30-gop15.mp4", (1920, 1080), 30, 30, 15,
                       source=static_scene(work / "static.avi"))
    results: dict[str, dict] = {}
    for video, modes in ((moving, MODES), (still, STATIC_MODES)):
        port = free_port()
        server = start_rtsp_server(work, port, video=video, mounts=cameras)
        try:
            for label, mode in modes.items():
                uris = [f"rtsp://127.0.0.1:{port}/cam{i}" for i in range(cameras)]
                out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(uris),
                                      json.dumps(mode), str(store), model, str(window_s)],
                                     capture_output=True, text=True, timeout=300)
                if out.returncode != 0:
                    raise RuntimeError(f"h264 bench worker ({label}) failed: {out.stderr[-2000:]}")
                results[label] = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            stop_pid(server)
    return results


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--worker":
    args = argparse.Namespace(uris=json.loads(sys.argv[2]), mode=json.loads(sys.argv[3]), store=Path(sys.argv[4]),
                              model=sys.argv[5], window=float(sys.argv[6]))
    print(json.dumps(run_worker(args.uris, args.mode, args.store, args.model, 5.0, args.window)))
