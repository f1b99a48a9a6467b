"""edge-model-server benchmark: gRPC Predict throughput ÷ in-process runtime throughput, same model.

    python bench/model_server.py [--assets build/demo] [--seconds 10]

Both sides run the demo EfficientNet-Lite0 SavedModel on the same float32 batches, one after the
other in this run: in-process through the shared SavedModel loader, then through a local
`edge-model-server` over gRPC on loopback (the request serialisation, transport and server-side
tensor conversion are what the ratio prices). The server runs twice: answering in the typed value
fields (TF Serving's default, `float_val`) and with `--enable_serialization_as_tensor_content`, so
the cost of the compatible encoding is a ratio in the same run. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.models.store import ModelStore
from edge.serving.protos import messages
from edge.serving.tensors import from_ndarray, to_ndarray
from tools.loopback import free_port, stop_pid

MODEL = "efficientnet_lite0"


def batch_of(size: int) -> np.ndarray:
    rng = np.random.default_rng(size)
    return ((rng.integers(0, 255, (size, 224, 224, 3)).astype(np.float32)) - 127.0) / 128.0


def in_process(version_dir: Path, size: int, seconds: float) -> float:
    from edge.serving.savedmodel import SavedModelRunner

    runner = SavedModelRunner(version_dir)
    batch = batch_of(size)
    runner.run({"image": batch})
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        runner.run({"image": batch})
        done += size
    return done / (time.perf_counter() - started)


def over_grpc(target: str, size: int, seconds: float) -> float:
    pb = messages()
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 1 << 28),
                                                     ("grpc.max_receive_message_length", 1 << 28)])
    predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                  request_serializer=pb.PredictRequest.SerializeToString,
                                  response_deserializer=pb.PredictResponse.FromString)
    batch = batch_of(size)

    def call() -> np.ndarray:
        request = pb.PredictRequest()
        request.model_spec.name = MODEL
        request.inputs["image"].CopyFrom(from_ndarray(batch))
        return to_ndarray(predict(request, timeout=60).outputs["probabilities"])

    assert call().shape == (size, 1000)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        call()
        done += size
    channel.close()
    return done / (time.perf_counter() - started)


ENCODINGS = {"typed fields": [], "tensor_content": ["--enable_serialization_as_tensor_content"]}


def serve_and_measure(store: Path, flags: list[str], seconds: float) -> dict[int, float]:
    """Start edge-model-server with `flags`, measure batch 1 and 8 over gRPC, stop it."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("edge-model-server")), f"--port={port}", f"--model_name={MODEL}",
         f"--model_base_path={store / MODEL}", *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                return {size: over_grpc(f"127.0.0.1:{port}", size, seconds) for size in (1, 8)}
            except grpc.RpcError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
    finally:
        stop_pid(server, 30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=Path, default=REPO / "build" / "demo")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    store = (args.assets / "models").resolve()
    version = ModelStore(store).resolve(MODEL)
    local = {size: in_process(version.path, size, args.seconds) for size in (1, 8)}
    remote = {name: serve_and_measure(store, flags, args.seconds) for name, flags in ENCODINGS.items()}
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    print(f"\nedge-model-server benchmark — {MODEL} v{version.version}, float32 224x224x3, commit {commit}")
    print(f"{'batch':>5s} {'in-process img/s':>17s} {'encoding':>15s} {'gRPC Predict img/s':>19s} {'ratio':>7s}")
    for size in (1, 8):
        for name in ENCODINGS:
            print(f"{size:5d} {local[size]:17.1f} {name:>15s} {remote[name][size]:19.1f} "
                  f"{remote[name][size] / local[size]:7.2f}")
        print(f"{size:5d} {'':17s} {'typed ÷ content':>15s} {'':19s} "
              f"{remote['typed fields'][size] / remote['tensor_content'][size]:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
