"""Pipeline benchmark: ratios measured side by side in one run on the same model and machine.

    python bench/pipeline.py [--assets build/demo] [--window 20]

1. raw in-process runtime throughput on the demo model (batch 1 and batch 8), preprocessed input, with
   TensorFlow and with LiteRT (ratios to TensorFlow batch 1; bench/runtimes.py has the full runtime table);
2. the gateway end to end (subprocess, real Mosquitto, file cameras at 720p / 30 fps, results counted
   on MQTT) with 1 and 4 cameras, and its ratio to the best raw figure;
3. a naive pipeline written the way the TF Serving tutorial client does it (read frame -> float32 ->
   one model call per frame -> publish and wait for the ack), and the gateway's ratio to it.
Nothing here asserts a time: it prints what it measured.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.models.store import ModelStore  # noqa: E402
from edge.preprocess import FramePreprocessor  # noqa: E402
from tools.loopback import free_port, start_mosquitto  # noqa: E402

MODEL = "efficientnet_lite0"


def raw_throughput(classifier, batch_size: int, seconds: float) -> float:
    info = classifier.info.image_input
    pre = FramePreprocessor(info, classifier.info.metadata.preprocess)
    pixels = np.random.default_rng(0).integers(0, 255, (batch_size, info.height, info.width, 3), dtype=np.uint8)
    batch = pre.batch_to_input(pixels)
    classifier.classify(batch)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        classifier.classify(batch)
        done += batch_size
    return done / (time.perf_counter() - started)


class ResultCounter:
    def __init__(self, port: int) -> None:
        self.count = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("edge/+/results/#", qos=1)
        self.client.loop_start()

    def _on_message(self, *_args: object) -> None:
        with self.lock:
            self.count += 1

    def value(self) -> int:
        with self.lock:
            return self.count

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def gateway_throughput(cameras: int, video: Path, store: Path, port: int, work: Path, window_s: float) -> dict:
    spool = work / f"spool-{cameras}.db"
    config = work / f"gw-{cameras}.toml"
    cams = "\n".join(
        f'[[cameras]]\nname = "cam{i}"\nsource = "{video}"\nfps = 0\n' for i in range(cameras)
    )
    config.write_text(
        f'device_id = "bench"\n{cams}\n[model]\nname = "{MODEL}"\nstore = "{store}"\n'
        f'[serving]\nmax_batch_size = 8\nmax_wait_ms = 5\n[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\n'
        f'[spool]\npath = "{spool}"\nsync = "normal"\n[health]\ninterval_s = 5\n'
    )
    counter = ResultCounter(port)
    log = open(work / f"gw-{cameras}.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("edge-gateway")), "run", "--config", str(config)],
                            stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 180
        while counter.value() == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway produced no results; see {work}/gw-{cameras}.log")
            time.sleep(0.2)
        time.sleep(5)  # warm-up
        start_count, started = counter.value(), time.monotonic()
        time.sleep(window_s)
        fps = (counter.value() - start_count) / (time.monotonic() - started)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        counter.close()
    return {"cameras": cameras, "classified_fps": fps}


def naive_throughput(video: Path, version_dir: Path, port: int, seconds: float) -> float:
    """TF Serving tutorial style: one frame at a time, float32, one call, publish and wait for the ack."""
    import tensorflow as tf

    model = tf.saved_model.load(str(version_dir))
    predict = model.signatures["serving_default"]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    capture = cv2.VideoCapture(str(video))
    labels = (version_dir / "assets.extra" / "labels.txt").read_text().splitlines()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        ok, frame = capture.read()
        if not ok:
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        image = cv2.cvtColor(cv2.resize(frame, (224, 224)), cv2.COLOR_BGR2RGB).astype(np.float32)
        image = (image - 127.0) / 128.0
        scores = predict(image=tf.constant(image[None]))["probabilities"].numpy()[0]
        best = int(scores.argmax())
        info = client.publish("naive/results", json.dumps({"label": labels[best], "score": float(scores[best])}), qos=1)
        info.wait_for_publish(10)
        done += 1
    client.loop_stop()
    client.disconnect()
    return done / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=Path, default=REPO / "build" / "demo")
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured per gateway run")
    args = parser.parse_args()
    video = (args.assets / "camera.avi").resolve()
    store = (args.assets / "models").resolve()
    version = ModelStore(store).resolve(MODEL)
    from edge.serving.embedded import EmbeddedClassifier

    raw: dict[str, float] = {}
    classifier = EmbeddedClassifier(version, runtime="tensorflow")
    for bs in (1, 8):
        raw[f"raw TensorFlow, in-process, batch {bs}"] = raw_throughput(classifier, bs, 10.0)
    classifier.close()
    classifier = EmbeddedClassifier(version, runtime="litert")  # verified against TensorFlow, cached beside the version
    if classifier.info.runtime == "litert":
        for bs in (1, 8):
            raw[f"raw LiteRT (XNNPACK), in-process, batch {bs}"] = raw_throughput(classifier, bs, 10.0)
    classifier.close()
    best_raw = max(raw.values())
    del classifier

    work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    port = free_port()
    broker = start_mosquitto(work, port)
    try:
        naive = naive_throughput(video, version.path, port, 15.0)
        gateway = [gateway_throughput(n, video, store, port, work, args.window) for n in (1, 4)]
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(10)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    print(f"\nedge pipeline benchmark — model {MODEL} v{version.version}, commit {commit}, "
          f"video {video.name} 720p 30 fps per camera")
    print(f"{'measurement':58s} {'frames/s':>9s} {'ratio':>8s}")
    tf1 = raw["raw TensorFlow, in-process, batch 1"]
    for label, value in raw.items():
        print(f"{label:58s} {value:9.1f} {value / tf1:8.2f}")
    print(f"{'naive (tutorial style: float32, 1 call/frame, publish+ack)':58s} {naive:9.1f}")
    for g in gateway:
        fps = g["classified_fps"]
        offered = 30.0 * g["cameras"]
        print(f"{'gateway end to end, ' + str(g['cameras']) + ' camera(s) (offered ' + str(int(offered)) + ' fps)':58s} "
              f"{fps:9.1f}")
    for g in gateway:
        fps = g["classified_fps"]
        print(f"  ratio gateway({g['cameras']} cam) / best raw runtime: {fps / best_raw:6.2f}   "
              f"/ naive pipeline: {fps / naive:6.2f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
