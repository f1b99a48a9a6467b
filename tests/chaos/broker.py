"""Chaos parts, the broker side: Mosquitto in its own network namespace, whose link to the gateway
faults cut, and the observer that records everything the gateway delivers (see tests/chaos/__init__.py)."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from tests.fixtures.mosquitto import MosquittoBroker, MqttRecorder, RecordedMessage
from tests.support.net import wait_for_port

DEVICE = "gw-chaos"
MQTT_BACKOFF_CAP_S = 30.0  # edge.transport.mqtt.MqttSettings.reconnect_max_s (not configurable)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


class NetnsBroker(MosquittoBroker):
    """Mosquitto inside its own network namespace, reached over two veth pairs:

    - the *gateway link* (`gw_ip`), which faults take down (`ip link set … down`) or blackhole
      with a tc qdisc that drops every packet (`tbf` with a 1-byte bucket on both ends; `netem`
      is not built into every kernel): packets vanish, nobody gets a reset;
    - the *observer link* (`obs_ip`), never faulted, so the recorder stays subscribed through
      network faults and only the gateway's path is cut.
    """

    _counter = 0

    def __init__(self, workdir: Path) -> None:
        NetnsBroker._counter += 1
        used = sh("ip", "-o", "-4", "addr", "show").stdout
        n = next(k for k in [(os.getpid() + NetnsBroker._counter + i) % 200 + 20 for i in range(200)]
                 if f"10.213.{k}." not in used and f"10.214.{k}." not in used)  # a subnet nobody uses now
        self.ns = f"edgechaos-{os.getpid()}-{NetnsBroker._counter}"
        self.tag = f"{os.getpid() % 10000}{NetnsBroker._counter}"[-6:]
        self.gw_host_if, self.gw_ns_if = f"ecg{self.tag}h", f"ecg{self.tag}n"
        self.obs_host_if, self.obs_ns_if = f"eco{self.tag}h", f"eco{self.tag}n"
        self.gw_ip, self.gw_host_ip = f"10.213.{n}.2", f"10.213.{n}.1"
        self.obs_ip, self.obs_host_ip = f"10.214.{n}.2", f"10.214.{n}.1"
        super().__init__(workdir, 18830 + NetnsBroker._counter)
        self.host = self.gw_ip
        self._ns_created = False
        self.fault: str | None = None

    def create_namespace(self) -> None:
        sh("ip", "netns", "add", self.ns)
        self._ns_created = True
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        for host_if, ns_if, host_ip, ns_ip in ((self.gw_host_if, self.gw_ns_if, self.gw_host_ip, self.gw_ip),
                                               (self.obs_host_if, self.obs_ns_if, self.obs_host_ip, self.obs_ip)):
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", self.ns)
            sh("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
            sh("ip", "link", "set", host_if, "up")
            sh("ip", "-n", self.ns, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
            sh("ip", "-n", self.ns, "link", "set", ns_if, "up")

    def delete_namespace(self) -> None:
        if self._ns_created:
            sh("ip", "netns", "del", self.ns, check=False)  # removes both veth pairs with it
            sh("ip", "link", "del", self.gw_host_if, check=False)
            sh("ip", "link", "del", self.obs_host_if, check=False)
            self._ns_created = False

    def _write_conf(self) -> None:
        super()._write_conf()
        text = self.conf_path.read_text().replace(f"listener {self.port} {self.host}\n", f"listener {self.port}\n")
        self.conf_path.write_text(text)

    def start(self) -> NetnsBroker:
        self._write_conf()
        self._proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists()
             else "mosquitto", "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.workdir / "stderr.log", "ab"))
        self.starts += 1
        wait_for_port(self.port, self.obs_ip, timeout_s=20.0)
        return self

    # network faults on the gateway link only
    def cut(self, mode: str) -> None:
        if mode == "link-down":
            sh("ip", "link", "set", self.gw_host_if, "down")
        elif mode == "tc-drop":
            drop = ("root", "tbf", "rate", "8bit", "burst", "1", "latency", "1ms")
            sh("tc", "qdisc", "add", "dev", self.gw_host_if, *drop)
            sh("ip", "netns", "exec", self.ns, "tc", "qdisc", "add", "dev", self.gw_ns_if, *drop)
        else:
            raise ValueError(mode)
        self.fault = mode

    def restore(self) -> None:
        if self.fault == "link-down":
            sh("ip", "link", "set", self.gw_host_if, "up")
        elif self.fault == "tc-drop":
            sh("tc", "qdisc", "del", "dev", self.gw_host_if, "root", check=False)
            sh("ip", "netns", "exec", self.ns, "tc", "qdisc", "del", "dev", self.gw_ns_if, "root", check=False)
        self.fault = None


class Observer(MqttRecorder):
    """The recorder (persistent MQTT 5 session, QoS 1), keeping the arrival time of each message."""

    def __init__(self, host: str, port: int, topic_filter: str) -> None:
        self.arrivals: list[float] = []
        super().__init__(host, port, topic_filter, client_id=f"chaos-observer-{os.getpid()}")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self._messages.append(RecordedMessage(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos))
            self.arrivals.append(time.time())

    def docs(self, sub: str) -> list[tuple[float, dict]]:
        """(arrival time, payload) for `edge/<device>/<sub>` messages with a JSON object payload."""
        with self._lock:
            pairs = list(zip(self.arrivals, self._messages))
        out = []
        for at, m in pairs:
            if paho.topic_matches_sub(f"edge/{DEVICE}/{sub}", m.topic):
                try:
                    doc = json.loads(m.payload)
                except ValueError:
                    continue
                if isinstance(doc, dict):
                    out.append((at, doc))
        return out

    def seq_docs(self) -> list[tuple[float, dict]]:
        return [p for p in self.docs("results/+") + self.docs("events") if "seq" in p[1]]

    def first_arrival_after(self, t: float, sub: str = "results/+", camera: str | None = None) -> float | None:
        for at, doc in self.docs(sub):
            if at > t and (camera is None or doc.get("camera") == camera):
                return at
        return None

    def first_result_spooled_after(self, t: float, camera: str | None = None) -> float | None:
        """Arrival time of the first result produced (spool `ts`) after `t`."""
        for at, doc in self.docs("results/+"):
            if doc.get("ts", 0) > t and (camera is None or doc.get("camera") == camera):
                return at
        return None
