"""Pieces bench/pipeline.py runs side by side: raw runtimes, the gateway as a subprocess counted on
MQTT, a TF Serving tutorial-style naive client, and edge-model-server. Nothing here asserts a time."""
from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import psutil

from tools.loopback import stop_pid

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

logger = logging.getLogger(__name__)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def raw_rates(classifier, sizes: tuple[int, ...], seconds: float, rounds: int = 2) -> dict[int, float]:
    """Median img/s of classifier.classify on preprocessed random batches, rows interleaved per round."""
    from edge.serving.preprocess import FramePreprocessor

    info = classifier.info.image_input
    pre = FramePreprocessor(info, classifier.info.metadata.preprocess)
    rng = np.random.default_rng(0)
    batches = {n: pre.batch_to_input(rng.integers(0, 255, (n, info.height, info.width, info.channels), dtype=np.uint8))
               for n in sizes}
    samples: dict[int, list[float]] = {n: [] for n in sizes}
    for n in sizes:
        classifier.classify(batches[n])
    for _ in range(rounds):
        for n in sizes:
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                classifier.classify(batches[n])
                done += n
            samples[n].append(done / (time.perf_counter() - started))
    return {n: statistics.median(v) for n, v in samples.items()}


def jpeg_packets(video: Path, count: int = 30) -> tuple[list[np.ndarray], tuple[int, int]]:
    """The first `count` undecoded JPEG packets of an MJPEG video and its (width, height)."""
    capture = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    try:
        if not capture.set(cv2.CAP_PROP_FORMAT, -1):
            raise RuntimeError(f"{video}: packets cannot be read undecoded (not MJPEG?)")
        packets = []
        while len(packets) < count:
            ok, packet = capture.read()
            if not ok:
                break
            packets.append(packet.reshape(-1))
    finally:
        capture.release()
    first = cv2.imdecode(packets[0], cv2.IMREAD_COLOR)
    return packets, (int(first.shape[1]), int(first.shape[0]))


def raw_parallel_rate(classifier, seconds: float, rounds: int = 2, video: Path | None = None) -> float:
    """Median img/s of `classifier.concurrency` threads each classifying single images, the way the
    gateway's inference threads drive a pool of interpreters: preprocessed random images, or with
    `video` (MJPEG) each image decoded from the video's JPEG packets (at the reduced scale the
    gateway would use) and preprocessed first, the least work a camera frame needs on this CPU."""
    from camera.decode import decode_packet
    from edge.serving.preprocess import FramePreprocessor

    info = classifier.info.image_input
    pre = FramePreprocessor(info, classifier.info.metadata.preprocess, fast_resize=True)  # as the pipeline's
    rng = np.random.default_rng(0)
    threads = max(1, int(getattr(classifier, "concurrency", 1)))
    images = [pre.batch_to_input(rng.integers(0, 255, (1, info.height, info.width, info.channels), dtype=np.uint8))
              for _ in range(threads)]
    packets, native = jpeg_packets(video) if video is not None else ([], (0, 0))

    def one_image(index: int, turn: int) -> np.ndarray:
        if not packets:
            return images[index]
        decoded = decode_packet(packets[turn % len(packets)], native, pre.min_source_size)
        assert decoded is not None, "an unreadable packet in the bench video"
        return pre.batch_to_input(pre.to_model_pixels(decoded[0])[None])

    for index in range(threads):
        classifier.classify(one_image(index, 0))
    samples: list[float] = []
    for _ in range(rounds):
        counts = [0] * threads
        deadline = time.perf_counter() + seconds

        def loop(index: int) -> None:
            while time.perf_counter() < deadline:
                classifier.classify(one_image(index, counts[index]))
                counts[index] += 1

        started = time.perf_counter()
        workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        samples.append(sum(counts) / (time.perf_counter() - started))
    return statistics.median(samples)


class MqttWatch:
    """Subscribes to everything under edge/: counts results, keeps their latencies and the health docs
    published while it listens (not the retained one an earlier gateway left)."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.results = 0
        self.latency: list[tuple[float, float, float]] = []  # (total ms, inference ms, capture->inference ms)
        self.frames: dict[str, list[int]] = {}
        self.rss_mb: list[float] = []
        self.health: dict = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("edge/#", qos=1)
        self.client.loop_start()

    def _on_message(self, _client, _userdata, message) -> None:
        topic = message.topic
        if "/results/" in topic:
            payload = json.loads(message.payload)
            with self.lock:
                self.results += 1
                lat = payload["latency_ms"]
                self.latency.append((lat["total"], lat["inference"], lat.get("to_inference", float("nan"))))
                self.frames.setdefault(payload["camera"], []).append(int(payload["frame"]))
        elif topic.endswith("/health") and not message.retain:
            # a retained health document was left by the gateway the previous run started (same device
            # id, same broker): its rss_mb is that process's, not this one's
            doc = json.loads(message.payload)
            with self.lock:
                self.health = doc
                rss = (doc.get("process") or {}).get("rss_mb")
                if rss is not None:
                    self.rss_mb.append(float(rss))

    def mark(self) -> tuple[int, int]:
        with self.lock:
            return self.results, len(self.latency)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class GatewayRun:
    cameras: int
    fps: float  # classified frames/s counted on MQTT
    latency_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    to_inference_ms: list[float] = field(default_factory=list)
    rss_max_mb: float = 0.0
    health: dict = field(default_factory=dict)


def run_gateway(*, name: str, work: Path, port: int, video: Path, store: Path, model: str, cameras: int,
                camera_fps: float, window_s: float, serving: str, warmup_s: float = 4.0,
                sources: list[str] | None = None) -> GatewayRun:
    """Start edge-gateway with `cameras` file cameras (30 fps, real time), or the given camera
    `sources` (URIs), and count results for window_s."""
    uris = sources if sources is not None else [str(video)] * cameras
    cams = "\n".join(f'[[cameras]]\nname = "cam{i}"\nsource = "{uri}"\nfps = {camera_fps:.3f}\n'
                     for i, uri in enumerate(uris[:cameras]))
    config = work / f"{name}.toml"
    config.write_text(
        f'device_id = "bench"\n{cams}\n[model]\nname = "{model}"\nstore = "{store}"\n'
        f'[serving]\n{serving}\n[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\n'
        f'[spool]\npath = "{work / (name + ".db")}"\nsync = "normal"\n[health]\ninterval_s = 2\n'
        f'status_file = "{work / (name + ".status.json")}"\n')
    watch = MqttWatch(port)
    log = open(work / f"{name}.log", "wb")
    proc = subprocess.Popen([str(BIN / "edge-gateway"), "run", "--config", str(config)], stdout=log, stderr=log)
    rss_max = 0.0
    try:
        ps = psutil.Process(proc.pid)
        deadline = time.monotonic() + 240
        while watch.mark()[0] == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway {name} produced no results; see {work / (name + '.log')}")
            time.sleep(0.2)
        end_warmup = time.monotonic() + warmup_s
        while time.monotonic() < end_warmup:
            rss_max = max(rss_max, ps.memory_info().rss / 1048576)
            time.sleep(0.2)
        (count0, lat0), started = watch.mark(), time.monotonic()
        while time.monotonic() - started < window_s:
            rss_max = max(rss_max, ps.memory_info().rss / 1048576)
            time.sleep(0.2)
        (count1, lat1), elapsed = watch.mark(), time.monotonic() - started
        with watch.lock:
            window = watch.latency[lat0:lat1]
            health = dict(watch.health)
            rss_max = max([rss_max, *watch.rss_mb])
    finally:
        stop_pid(proc, 30)
        watch.close()
        log.close()
    return GatewayRun(cameras, (count1 - count0) / elapsed, [t for t, _, _ in window], [i for _, i, _ in window],
                      [w for _, _, w in window], rss_max, health)


def start_model_server(work: Path, store: Path, model: str, port: int) -> subprocess.Popen:
    log = open(work / f"model-server-{model}.log", "wb")
    return subprocess.Popen([str(BIN / "edge-model-server"), f"--port={port}", f"--model_name={model}",
                             f"--model_base_path={store / model}"], stdout=log, stderr=log)


def wait_model_server(port: int, model: str, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = model
            status = stub.GetModelStatus(request, timeout=5)
            if any(v.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE for v in status.model_version_status):
                channel.close()
                return
        except grpc.RpcError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"edge-model-server for {model} did not become available")
        time.sleep(0.5)


def naive_client(video: Path, version_dir: Path, model: str, server_port: int, broker_port: int,
                 seconds: float) -> float:
    """TF Serving's tutorial client, one frame at a time: read -> float32 -> tf.make_tensor_proto ->
    Predict over gRPC -> publish (QoS 1) and wait for the ack. Returns frames/s."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from edge.models.metadata import read_version_metadata
    from edge.serving.embedded import image_input_of
    from edge.serving.savedmodel import SavedModelRunner

    meta = read_version_metadata(version_dir)
    signature = SavedModelRunner(version_dir).signature()
    spec = image_input_of(signature)
    output = meta.output_name or sorted(signature.outputs)[0]
    mean = np.asarray(meta.preprocess.mean or (0.0, 0.0, 0.0), np.float32)
    std = np.asarray(meta.preprocess.std or (1.0, 1.0, 1.0), np.float32)
    channel = grpc.insecure_channel(f"127.0.0.1:{server_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker_port)
    client.loop_start()
    capture = cv2.VideoCapture(str(video))
    done, started = 0, time.perf_counter()
    try:
        while time.perf_counter() - started < seconds:
            ok, frame = capture.read()
            if not ok:
                capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            image = cv2.cvtColor(cv2.resize(frame, (spec.width, spec.height)), cv2.COLOR_BGR2RGB).astype(np.float32)
            image = (image - mean) / std
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model
            request.model_spec.signature_name = "serving_default"
            request.inputs[spec.name].CopyFrom(tf.make_tensor_proto(image[None], dtype=tf.float32))
            response = stub.Predict(request, timeout=30)
            scores = np.asarray(tf.make_ndarray(response.outputs[output])).reshape(-1)
            best = int(scores.argmax())
            info = client.publish("naive/results", json.dumps({"index": best, "score": float(scores[best])}), qos=1)
            info.wait_for_publish(10)
            done += 1
    finally:
        client.loop_stop()
        client.disconnect()
        channel.close()
    return done / (time.perf_counter() - started)


def run_swap_bench(swaps: int) -> dict[str, str]:
    """bench/swap.py in a subprocess (it loads TensorFlow models of its own); its printed lines."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "swap.py"), "--swaps", str(swaps), "--steady", "3"],
                          capture_output=True, text=True, timeout=400)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    out = {"raw": " | ".join(lines)}
    for line in lines:
        if line.startswith("p99 capture->publish during swaps"):
            out["p99_ratio"] = line.split(":", 1)[1].split()[0]
        if line.startswith("RSS after"):
            out["rss_ratio"] = line.split(":", 1)[1].split()[0]
        if line.startswith("frames failed during the swaps"):
            out["frames_failed"] = line.split(":", 1)[1].split(";")[0].strip()
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:]
        out["raw"] += f" | exit {proc.returncode}: {tail[0] if tail else ''}"
    return out
