"""Model swap benchmark: what a rollout costs the frames flowing through, measured in one run.

    python bench/swap.py [--swaps 20] [--fps 30] [--cameras 2]

The real pipeline (batcher -> the embedded backend, runtime as selected -> ResultPublisher) classifies
solid-colour frames from in-process camera slots while the RolloutManager swaps the colour test model
back and forth between two installed versions (load -> golden-image validation -> set_classifier ->
probation), `--swaps` times; each swap back to version 1 is allowed first as a verified signed
rollback document would allow it (rollback protection refuses older versions otherwise). Prints
ratios only:

1. p99 capture -> publish latency (results' latency_ms.total) in the windows around each swap
   (from the deploy request to 1 s after the switch) / the p99 of steady state before any swap;
2. process RSS after the last swap / after the first (a leak shows as a ratio well above 1).
Nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from edge.app.wiring import load_candidate
from edge.config.loader import parse_config
from edge.inference.batcher import FrameBatcher
from edge.inference.pipeline import InferencePipeline
from edge.inference.results import ResultPublisher
from edge.models.state import ModelState, RolloutState, StateStore
from edge.rollout.installer import ModelInstaller
from edge.rollout.manager import RolloutManager, RolloutSettings
from edge.util.ociref import Reference
from tests.support.fakes import SolidCamera, start_ticker
from tests.support.frames import BLUE, GREEN, RED
from tests.support.packages import package_colour

DIGESTS = {1: "sha256:" + "1" * 64, 2: "sha256:" + "2" * 64}


class Sink:
    """Stands in for the MQTT reporter: keeps (monotonic time, latency_ms.total) per result."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def publish_results(self, items):
        now = time.monotonic()
        with self._lock:
            self.samples.extend((now, payload["latency_ms"]["total"]) for _, payload in items)
        return list(range(len(items)))

    def between(self, start: float, end: float) -> list[float]:
        with self._lock:
            return [ms for t, ms in self.samples if start <= t <= end]


ENDS = ("model_probation_passed", "model_rolled_back", "model_install_failed", "model_validation_failed")


def outcome(events: list[tuple[float, str, dict]], asked: float, version: int) -> tuple[float, str, dict] | None:
    """The event that ended the swap to `version` asked at `asked` (None: still running)."""
    for t, name, payload in events:
        if t >= asked and name in ENDS and (name != "model_probation_passed" or payload.get("version") == version):
            return t, name, payload
    return None


def p99(values: list[float]) -> float:
    return float(np.percentile(np.asarray(values), 99)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--fps", type=float, default=30.0, help="per camera")
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--steady", type=float, default=5.0, help="seconds of steady state before the swaps")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-swap-") as tmp:
        store = Path(tmp) / "store"
        base = store / "colour"
        for version in (1, 2):
            package_colour(base / str(version), version)
        state_store = StateStore(base)
        state = ModelState(state=RolloutState.SERVING, serving_version=1, serving_digest=DIGESTS[1], installed=dict(DIGESTS),
                           validated=list(DIGESTS.values()))
        state_store.save(state)
        config = parse_config({"device_id": "bench", "cameras": [{"name": "c", "source": "rtsp://127.0.0.1:1/unused"}],
                               "model": {"name": "colour", "store": str(store)}, "serving": {"max_batch_size": 4}})
        loader = lambda version: load_candidate(config, version)  # noqa: E731
        # Installed versions are addressed by digest: no registry traffic (resolve() returns the digest).
        installer = ModelInstaller(base, client=None, state_store=state_store, puller=lambda *a, **k: None)
        events: list[tuple[float, str, dict]] = []
        switched = threading.Condition()

        def emit(name: str, payload: dict) -> None:
            with switched:
                events.append((time.monotonic(), name, payload))
                switched.notify_all()

        manager = RolloutManager(
            ref=Reference.parse("127.0.0.1:1/models/colour:stable"), installer=installer, state_store=state_store,
            state=state, loader=loader,
            settings=RolloutSettings(poll_interval_s=86_400, probation_s=0.5, keep_versions=2), emit=emit)
        colours = [RED, GREEN, BLUE]
        cameras = [SolidCamera(f"cam{i}", colours[i % 3], 1.0 / args.fps) for i in range(args.cameras)]
        sink = Sink()
        publisher = ResultPublisher(sink, "bench", k=3)
        from edge.models.store import ModelVersion

        first = loader(ModelVersion("colour", 1, base / "1"))
        frame_ready, stop_ticker = threading.Event(), threading.Event()
        start_ticker(frame_ready, 1.0 / args.fps, stop_ticker)
        pipeline = InferencePipeline(FrameBatcher(cameras, frame_ready, 4, 0.005), first, publisher.submit)
        manager.pipeline = pipeline
        manager.watcher._next_poll = float("inf")  # only explicit deploys in this benchmark (no registry)
        publisher.start()
        pipeline.start()
        manager.start()
        process = psutil.Process()
        try:
            time.sleep(1.0)  # warm-up
            steady_start = time.monotonic()
            time.sleep(args.steady)
            steady = sink.between(steady_start, time.monotonic())
            windows: list[float] = []
            rss_first = rss_last = 0
            for swap in range(args.swaps):
                target = 2 if swap % 2 == 0 else 1
                if target == 1:  # back to the older version: what a verified signed rollback document records
                    manager.allow_rollback(1, DIGESTS[1], time.time() + 3600, counter=swap)
                asked = time.monotonic()
                manager.deploy(f"127.0.0.1:1/models/colour@{DIGESTS[target]}")
                with switched:  # this swap's own end: the previous one's probation may end after `asked`
                    switched.wait_for(lambda: outcome(events, asked, target) is not None, timeout=120)
                    ended = outcome(events, asked, target)
                    since = [(n, p) for t, n, p in events if t >= asked]
                if ended is None or ended[1] != "model_probation_passed":
                    raise SystemExit(f"swap {swap + 1} to version {target} did not pass its probation "
                                     f"({'no outcome in 120 s' if ended is None else ended[1]}): {since}")
                at = [t for t, n, p in events if n == "model_switched" and p["version"] == target and t >= asked][0]
                time.sleep(max(0.0, at + 1.0 - time.monotonic()))
                windows += sink.between(asked, at + 1.0)
                rss = process.memory_info().rss
                rss_first = rss_first or rss
                rss_last = rss
            failed = pipeline.frames_failed
        finally:
            stop_ticker.set()
            manager.stop()
            pipeline.stop()
            publisher.stop()
        print(f"p99 capture->publish during swaps / steady p99: {p99(windows) / p99(steady):.2f} "
              f"({len(windows)} vs {len(steady)} results)")
        print(f"RSS after {args.swaps} swaps / after the first: {rss_last / rss_first:.3f}")
        print(f"frames failed during the swaps: {failed}; "
              f"rollbacks: {sum(1 for _, n, _ in events if n == 'model_rolled_back')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
