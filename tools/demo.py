"""`make demo`: a loopback Mosquitto, the gateway on the demo camera, and a live results table.

Everything it starts (broker, gateway) is stopped by PID at the end, after DEMO_SECONDS or Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import paho.mqtt.client as mqtt
from rich.console import Console
from rich.live import Live
from rich.table import Table

from tools.loopback import free_port, start_mosquitto, stop_pid

DEVICE = "demo-box"
DEFAULT_CONSOLE_PORT = 8080
PREFIX = "edge"


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def write_gateway_config(run_dir: Path, assets: Path, port: int, console_port: int) -> Path:
    config = run_dir / "gateway.toml"
    config.write_text(
        f"""device_id = "{DEVICE}"

[[cameras]]
name = "demo-cam"
source = "{(assets / 'camera.avi').resolve()}"
fps = 15
loop = true

[model]
name = "efficientnet_lite0"
store = "{(assets / 'models').resolve()}"
version = "latest"
top_k = 3

[serving]
backend = "embedded"
max_batch_size = 4
max_wait_ms = 5

[mqtt]
url = "mqtt://127.0.0.1:{port}"
topic_prefix = "{PREFIX}"

[spool]
path = "{(run_dir / 'spool.db').resolve()}"
max_mb = 64

[health]
interval_s = 2
status_file = "{(run_dir / 'status.json').resolve()}"

[console]
enabled = true
port = {console_port}
live_fps = 5
""",
        encoding="utf-8",
    )
    return config


class ResultsView:
    """Latest result and health per camera, fed from MQTT."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latest: dict[str, dict] = {}
        self.health: dict = {}
        self.count = 0
        self.labels: Counter[str] = Counter()
        self.status = "?"

    def on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            if msg.topic.endswith("/status"):
                self.status = msg.payload.decode(errors="replace")
                return
            try:
                doc = json.loads(msg.payload)
            except ValueError:
                return
            if "/results/" in msg.topic:
                self.latest[doc["camera"]] = doc
                self.count += 1
                if doc.get("top_k"):
                    self.labels[doc["top_k"][0]["label"]] += 1
            elif msg.topic.endswith("/health"):
                self.health = doc

    def table(self, remaining_s: float) -> Table:
        with self.lock:
            cams = {c["name"]: c for c in self.health.get("cameras", [])}
            table = Table(title=f"edge demo — device {DEVICE} ({self.status}), {self.count} results, "
                                f"{max(0, remaining_s):.0f}s left (Ctrl-C to stop)")
            for col in ("camera", "top label", "score", "2nd", "camera fps", "classified fps",
                        "latency ms", "inference ms", "model", "seq"):
                table.add_column(col)
            for name, doc in sorted(self.latest.items()):
                top = doc["top_k"]
                cam = cams.get(name, {})
                table.add_row(
                    name,
                    f"[bold]{top[0]['label']}[/bold]" if top else "-",
                    f"{top[0]['score']:.2f}" if top else "-",
                    f"{top[1]['label']} {top[1]['score']:.2f}" if len(top) > 1 else "-",
                    f"{cam.get('camera_fps', 0):.1f}",
                    f"{cam.get('process_fps', 0):.1f}",
                    f"{doc['latency_ms']['total']:.0f}",
                    f"{doc['latency_ms']['inference']:.0f}",
                    f"{doc['model']['name']} v{doc['model']['version']}",
                    str(doc["seq"]),
                )
            return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("DEMO_SECONDS", "60")))
    parser.add_argument("--assets", type=Path, default=Path("build/demo"))
    parser.add_argument("--console-port", type=int, default=DEFAULT_CONSOLE_PORT,
                        help=f"the console's port on 127.0.0.1 (default {DEFAULT_CONSOLE_PORT}; a free one if taken)")
    args = parser.parse_args()
    console = Console()
    run_dir = args.assets / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    port = free_port()
    broker = start_mosquitto(run_dir, port)
    gateway: subprocess.Popen | None = None
    view = ResultsView()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    try:
        client.on_message = view.on_message
        client.connect("127.0.0.1", port)
        client.subscribe(f"{PREFIX}/{DEVICE}/#", qos=1)
        client.loop_start()
        console_port = args.console_port if port_is_free(args.console_port) else free_port()
        config = write_gateway_config(run_dir, args.assets, port, console_port)
        gateway_bin = Path(sys.executable).with_name("edge-gateway")
        log = open(run_dir / "gateway.log", "wb")
        gateway = subprocess.Popen([str(gateway_bin), "run", "--config", str(config)], stdout=log, stderr=log)
        console.print(f"broker 127.0.0.1:{port} (pid {broker.pid}), gateway pid {gateway.pid}, "
                      f"log {run_dir / 'gateway.log'}; loading the model…")
        console.print(f"console: [bold]http://127.0.0.1:{console_port}/[/bold] (open it in a browser: live view, "
                      "status, plots; /metrics for Prometheus)", soft_wrap=True)
        deadline = time.monotonic() + args.seconds
        with Live(view.table(args.seconds), console=console, refresh_per_second=4) as live:
            while time.monotonic() < deadline:
                if gateway.poll() is not None:
                    console.print(f"[red]gateway exited with {gateway.returncode}; see {run_dir / 'gateway.log'}")
                    return 1
                live.update(view.table(deadline - time.monotonic()))
                time.sleep(0.25)
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        if gateway is not None:
            stop_pid(gateway)
        time.sleep(0.3)
        client.loop_stop()
        stop_pid(broker)
    console.print(f"{view.count} results; top-1 labels seen: "
                  + ", ".join(f"{label} ×{n}" for label, n in view.labels.most_common(8)))
    return 0 if view.count else 1


if __name__ == "__main__":
    sys.exit(main())
