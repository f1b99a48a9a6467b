"""What the console's live view costs (`make bench`): capacity with the page open ÷ without, one run.

    python bench/console.py [--assets build/demo] [--cameras 9] [--window 5] [--rounds 12]

One edge-gateway (EfficientNet-Lite0 on LiteRT, `--cameras` file cameras of the demo video, 720p
MJPEG at 30 fps, real time: more than the box can classify, so it runs at capacity) with
`[console]` enabled. After a warm-up, windows of `--window` seconds alternate: nobody watching,
then a viewer doing what the page does (each camera's annotated JPEG at `live_fps`, with
If-None-Match; /api/status every 2 s; /api/history every 5 s). Capacity = results counted on MQTT
per second; the ratio is the sum over the viewer's windows ÷ the sum over the others (goal >= 0.95;
`--rounds` 12 x 5 s = 60 s each: short alternating windows, so load from elsewhere on a shared box
falls on both sides alike; the median of the per-round ratios is printed beside it). The console's
own CPU time (edge_console_cpu_seconds_total) is the direct measure of its cost. The viewer is a
niced thread of this process: on a real deployment the browser runs elsewhere, so its own CPU is
not the console's cost.
Also printed: peak RSS of the same gateway without `[console]` (a short run first) and with it,
JPEG encodes per second while watched, and the page's load time in headless Chromium (Playwright,
/usr/bin/chromium) when those are installed. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.harness import BIN, MqttWatch
from bench.pipeline import commit
from bench.runtimes import demo_model
from tools.loopback import free_port, start_mosquitto, stop_pid, wait_port

LIVE_FPS = 2.0
CHROMIUM = Path("/usr/bin/chromium")


def write_config(work: Path, name: str, video: Path, store: Path, broker: int, cameras: int,
                 console_port: int | None) -> Path:
    cams = "".join(f'[[cameras]]\nname = "cam{i}"\nsource = "{video}"\nfps = 0\n' for i in range(cameras))
    console = f"[console]\nenabled = true\nport = {console_port}\nlive_fps = {LIVE_FPS}\n" if console_port else ""
    config = work / f"{name}.toml"
    config.write_text(f'device_id = "bench"\n{cams}[model]\nname = "efficientnet_lite0"\nstore = "{store}"\n'
                      '[serving]\nruntime = "litert"\nmax_batch_size = 8\nmax_wait_ms = 5\n'
                      f'[mqtt]\nurl = "mqtt://127.0.0.1:{broker}"\n[spool]\npath = "{work / (name + ".db")}"\n'
                      f'sync = "normal"\n[health]\ninterval_s = 2\nstatus_file = "{work / (name + ".json")}"\n'
                      f"{console}")
    return config


class Viewer:
    """What the page requests, while `watching` is set (a niced thread)."""

    def __init__(self, base: str, cameras: int) -> None:
        self.base = base
        self.cameras = [f"cam{i}" for i in range(cameras)]
        self.watching = threading.Event()
        self.stop = threading.Event()
        self.frames = 0
        self.fetch_ms: list[float] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        session = requests.Session()
        etags: dict[str, str] = {}
        next_status = next_history = 0.0
        while not self.stop.is_set():
            if not self.watching.wait(0.2):
                continue
            started = time.monotonic()
            for camera in self.cameras:
                t0 = time.perf_counter()
                reply = session.get(f"{self.base}/api/{camera}/latest.jpg?annotated=1", timeout=10,
                                    headers={"If-None-Match": etags.get(camera, "")})
                self.fetch_ms.append((time.perf_counter() - t0) * 1000)
                if reply.status_code == 200:
                    etags[camera] = reply.headers.get("ETag", "")
                    self.frames += 1
            if started >= next_status:
                session.get(f"{self.base}/api/status", timeout=10)
                next_status = started + 2.0
            if started >= next_history:
                session.get(f"{self.base}/api/history", timeout=10)
                next_history = started + 5.0
            self.stop.wait(max(0.0, 1.0 / LIVE_FPS - (time.monotonic() - started)))


def console_counters(base: str) -> tuple[float, float]:
    """(JPEG encodes, console CPU seconds) so far, from /metrics."""
    found = {}
    for line in requests.get(f"{base}/metrics", timeout=10).text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("edge_console_jpeg_encodes_total", "edge_console_cpu_seconds_total"):
            found[name] = float(value)
    return found["edge_console_jpeg_encodes_total"], found["edge_console_cpu_seconds_total"]


def run(work: Path, name: str, config: Path, watch: MqttWatch, body) -> float:
    """Start the gateway, wait for results, run `body(proc)`; returns the peak RSS in MB."""
    log = open(work / f"{name}.log", "wb")
    proc = subprocess.Popen([str(BIN / "edge-gateway"), "run", "--config", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 300
        while watch.mark()[0] == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway {name} produced no results; see {work / (name + '.log')}")
            time.sleep(0.2)
        return body(psutil.Process(proc.pid))
    finally:
        stop_pid(proc, 30)
        log.close()


def count(watch: MqttWatch, seconds: float, ps: psutil.Process, rss: list[float]) -> float:
    before, started = watch.mark()[0], time.monotonic()
    while time.monotonic() - started < seconds:
        rss.append(ps.memory_info().rss / 1048576)
        time.sleep(0.25)
    return (watch.mark()[0] - before) / (time.monotonic() - started)


def page_load_ms(url: str) -> tuple[float, float] | None:
    """(load event, first live frame) in ms for a fresh headless Chromium page, or None without one."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not CHROMIUM.is_file():
        return None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 800, "height": 900})
            started = time.perf_counter()
            page.goto(url, wait_until="load")
            loaded = (time.perf_counter() - started) * 1000
            page.wait_for_selector("figure.camera[data-frame]", timeout=30_000)
            return loaded, (time.perf_counter() - started) * 1000
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=Path, default=REPO / "build" / "demo")
    parser.add_argument("--cameras", type=int, default=9, help="30 fps cameras (9: ~1.8x what 2 cores classify)")
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--warmup", type=float, default=8.0)
    args = parser.parse_args()
    video = (args.assets / "camera.avi").resolve()
    if not video.is_file():
        raise SystemExit(f"{video} is missing: python -m tools.build_demo_video --out {video}")
    work = Path(tempfile.mkdtemp(prefix="edge-bench-console-"))
    store = work / "store"
    demo_model(store)
    broker_port = free_port()
    broker = start_mosquitto(work, broker_port)
    watch = MqttWatch(broker_port)
    try:
        plain_rss: list[float] = []
        run(work, "plain", write_config(work, "plain", video, store, broker_port, args.cameras, None), watch,
            lambda ps: count(watch, args.warmup + args.window, ps, plain_rss))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        viewer = Viewer(base, args.cameras)
        off: list[float] = []
        on: list[float] = []
        console_rss: list[float] = []
        rss_unwatched: list[float] = []
        loads: list[tuple[float, float] | None] = []
        encoded: list[float] = []
        cpu: dict[str, list[float]] = {"off": [], "on": []}

        def alternate(ps: psutil.Process) -> None:
            wait_port(port, 60)
            viewer.thread.start()
            count(watch, args.warmup, ps, console_rss)
            rss_unwatched.append(max(console_rss))
            for _ in range(args.rounds):
                first = console_counters(base)
                off.append(count(watch, args.window, ps, console_rss))
                second = console_counters(base)
                viewer.watching.set()
                on.append(count(watch, args.window, ps, console_rss))
                viewer.watching.clear()
                third = console_counters(base)
                cpu["off"].append((second[1] - first[1]) / args.window)
                cpu["on"].append((third[1] - second[1]) / args.window)
                encoded.append((third[0] - second[0]) / args.window)
            viewer.stop.set()
            loads.append(page_load_ms(base + "/"))

        run(work, "console", write_config(work, "console", video, store, broker_port, args.cameras, port), watch,
            alternate)
    finally:
        watch.close()
        stop_pid(broker, 10)
        shutil.rmtree(work, ignore_errors=True)
    ratio = sum(on) / sum(off)
    print(f"\nedge console benchmark — commit {commit()}; {os.cpu_count()} CPUs; EfficientNet-Lite0 on LiteRT, "
          f"{args.cameras} file cameras (720p MJPEG, 30 fps, {args.cameras * 30} fps offered: at capacity); "
          f"{args.rounds} x {args.window:g} s windows each side, alternating")
    print(f"{'measurement':66s} {'value':>12s} {'unit':6s} {'ratio':>6s}  goal / notes")
    print("-" * 120)
    print(f"{'gateway at capacity, console on, nobody watching':66s} {statistics.mean(off):12.1f} {'fps':6s}")
    print(f"{'... with the live view open (all cameras at 2 fps, status, plots)':66s} {statistics.mean(on):12.1f} "
          f"{'fps':6s} {ratio:6.3f}  >= 0.95 (windows off: {' '.join(f'{v:.0f}' for v in off)}; "
          f"on: {' '.join(f'{v:.0f}' for v in on)}; median of the per-round ratios "
          f"{statistics.median(b / a for a, b in zip(off, on)):.3f})")
    fetch = sorted(viewer.fetch_ms)
    p99 = fetch[int(0.99 * (len(fetch) - 1))] if fetch else float("nan")
    print(f"{'live-view JPEG encodes while watched; viewer fetch p50/p99':66s} "
          f"{statistics.mean(encoded):5.1f} {statistics.median(fetch) if fetch else float('nan'):3.0f}/{p99:.0f}"
          f" {'/s, ms':6s}")
    cores = os.cpu_count() or 1
    print(f"{'console CPU (its threads), nobody watching / watched, % of the box':66s} "
          f"{100 * statistics.mean(cpu['off']) / cores:5.2f} / {100 * statistics.mean(cpu['on']) / cores:4.2f} "
          f"{'%':6s}")
    print(f"{'peak RSS: without [console]; with it, before anyone watched / after':66s} "
          f"{max(plain_rss):4.0f}; {rss_unwatched[0]:4.0f} / {max(console_rss):4.0f} {'MB':6s}"
          f"  (without: a {args.warmup + args.window:g} s run; before: the console run's first {args.warmup:g} s)")
    load = loads[0] if loads else None
    if load is not None:
        print(f"{'page load in headless Chromium: load event / first live frame':66s} "
              f"{load[0]:5.0f} / {load[1]:4.0f} {'ms':6s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
