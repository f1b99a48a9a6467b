"""A fleet of one, built the way an operator builds it, for the trust end-to-end tests.

`TrustFleet.build(workdir, colour_packages)`:
- keys: an offline fleet root (`edgectl trust init`), a second one for rotation, a stranger's, and
  a model-signing key (`edgectl keys gen`);
- PKI and broker: a fleet CA, the device's key/CSR/certificate (`edgectl init --tls --trust-root`,
  `ca sign`, `cert install`), an operator certificate, and a real Mosquitto whose TLS listener and
  ACL are `edgectl broker config` / `broker device-acl` output;
- a real docker-registry;
- the device's gateway.toml (TLS client certificate, `[registry]` with the model-signing key,
  `[trust] root_key`), two looping video cameras (red and blue).

Then `start_gateway()` runs the real `edge-gateway`; `op` is the operator's `FleetClient` (the one
`edgectl fleet` uses, over TLS, under the ACL) and `observer` a TLS client recording every message
of the device. Everything is stopped by `close()`.
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.config.patch import to_toml
from provisioning.cli import main as edgectl_main
from provisioning.fleet.client import BrokerOptions, FleetClient
from tests.fixtures.gateway import GatewayProcess
from tests.fixtures.mosquitto import TlsMosquittoBroker
from tests.fixtures.registry import LocalRegistry
from tests.support.frames import BLUE, RED, solid_frames, write_video
from tests.support.mqtt import TlsClient
from tests.support.net import free_port
from tests.support.packages import push
from tests.support.waits import wait_until

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

OPERATOR = "fleet-operator"


def edgectl(*args: object) -> str:
    """Run edgectl in this process (the provisioning steps; the CLI has its own tests); its stdout."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = edgectl_main([str(a) for a in args])
    assert code == 0, f"edgectl {' '.join(map(str, args))}: {err.getvalue()}"
    return out.getvalue()


@dataclass
class TrustFleet:
    workdir: Path
    device: str
    broker: TlsMosquittoBroker
    registry: LocalRegistry
    config_path: Path
    keys: dict[str, Path]
    tls: dict[str, Path]
    packages: dict[str, Path]
    op: FleetClient
    observer: TlsClient
    gateway: GatewayProcess | None = None
    logs: list[Path] = field(default_factory=list)

    # -- building ----------------------------------------------------------------------------------

    @classmethod
    def build(cls, workdir: Path, packages: dict[str, Path], device: str, *, probation_s: float = 2.0) -> TrustFleet:
        keys = {}
        for name in ("root", "root2", "stranger"):
            edgectl("trust", "init", "--out", workdir / name)
            keys[name] = workdir / name / "fleet-root.key"
            keys[name + ".pub"] = workdir / name / "fleet-root.pub"
        edgectl("keys", "gen", "--out", workdir / "model-keys")
        keys["model"], keys["model.pub"] = workdir / "model-keys/signing.key", workdir / "model-keys/signing.pub"

        ca, etc = workdir / "ca", workdir / "device/etc/edge"
        port = free_port()
        edgectl("ca", "init", "--out", ca, "--server-name", "127.0.0.1")
        edgectl("init", "--root", workdir / "device", "--device-id", device, "--broker", f"mqtts://127.0.0.1:{port}",
                "--camera", "front=rtsp://192.0.2.10/s", "--model", "colour", "--tls", "--no-input",
                "--trust-root", keys["root.pub"])
        edgectl("ca", "sign", etc / "device.csr", "--ca", ca, "--out", workdir / "device.crt")
        edgectl("cert", "install", workdir / "device.crt", "--ca-cert", ca / "ca.crt", "--root", workdir / "device")
        from cryptography.hazmat.primitives import serialization

        from provisioning.pki.ca import key_pem, make_csr, new_private_key
        op_key = new_private_key()
        (workdir / "op.key").write_bytes(key_pem(op_key))
        (workdir / "op.key").chmod(0o600)
        (workdir / "op.csr").write_bytes(make_csr(op_key, OPERATOR).public_bytes(serialization.Encoding.PEM))
        edgectl("ca", "sign", workdir / "op.csr", "--ca", ca, "--out", workdir / "op.crt", "--role", "operator")
        (workdir / "edge.acl").write_text(edgectl("broker", "device-acl", "--prefix", "edge"))
        listener = edgectl("broker", "config", "--ca-dir", ca, "--acl-file", workdir / "edge.acl",
                           "--port", port, "--bind", "127.0.0.1")
        (workdir / "broker").mkdir()
        broker = TlsMosquittoBroker(workdir / "broker", port, listener).start()
        (workdir / "registry").mkdir()
        registry = LocalRegistry(workdir / "registry", free_port()).start()
        tls = {"ca": ca / "ca.crt", "cert": etc / "device.crt", "key": etc / "device.key",
               "op_cert": workdir / "op.crt", "op_key": workdir / "op.key"}

        cameras = []
        for name, colour in (("red-cam", RED), ("blue-cam", BLUE)):
            video = write_video(workdir / f"{name}.avi", solid_frames(colour), 10.0)
            cameras.append({"name": name, "source": str(video), "fps": 10.0})
        write_video(workdir / "red-cam-2.avi", solid_frames(RED), 10.0)  # a second source for signed changes
        doc = {
            "device_id": device, "log_level": "info", "cameras": cameras,
            "model": {"name": "colour", "store": str(workdir / "store")},
            "serving": {"max_batch_size": 4, "max_wait_ms": 5.0, "runtime": "tensorflow"},
            "mqtt": {"url": broker.url, "keepalive_s": 3, "ca_file": str(tls["ca"]), "cert_file": str(tls["cert"]),
                     "key_file": str(tls["key"])},
            "spool": {"path": str(workdir / "spool.db"), "sync": "normal"},
            "health": {"interval_s": 1.0, "status_file": str(workdir / "status.json")},
            "registry": {"ref": f"{registry.address}/models/colour:stable", "poll_interval_s": 1.0, "insecure": True,
                         "public_key": str(keys["model.pub"]), "max_mb": 64.0, "timeout_s": 10.0},
            # probation judges error rates only: latency on a shared 2-core test box is noise, not a regression
            "rollout": {"probation_s": probation_s, "probation_latency_factor": 1000.0},
            "trust": {"root_key": str(etc / "fleet-root.pub"), "state_file": str(workdir / "trust-state.json")},
        }
        config_path = workdir / "gateway.toml"
        config_path.write_text("# the device's config, as provisioned\n" + to_toml(doc))
        op = FleetClient(BrokerOptions(url=broker.url, ca_file=tls["ca"], cert_file=tls["op_cert"],
                                       key_file=tls["op_key"])).connect(20)
        observer = TlsClient(broker, tls["ca"], tls["op_cert"], tls["op_key"], f"observer-{device}").connected()
        assert observer.subscribe(f"edge/{device}/#") == 1
        return cls(workdir, device, broker, registry, config_path, keys, tls, packages, op, observer)

    def close(self) -> None:
        if self.gateway is not None and self.gateway.alive():
            self.gateway.kill()
        self.op.close()
        self.observer.close()
        self.broker.stop()
        self.registry.stop()

    # -- the device ----------------------------------------------------------------------------------

    def push(self, tag: str, package: str) -> str:
        return push(self.registry, tag, self.packages[package], self.keys["model"])

    def start_gateway(self) -> GatewayProcess:
        log = self.workdir / f"gateway-{len(self.logs)}.log"
        self.logs.append(log)
        self.gateway = GatewayProcess(self.config_path, log).start()
        return self.gateway

    def config_doc(self) -> dict[str, Any]:
        return tomllib.loads(self.config_path.read_text())

    def request(self, command: str, payload: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
        return self.op.request(self.device, command, json.dumps(payload).encode(), timeout_s=timeout_s)

    # -- what the device published -------------------------------------------------------------------

    def docs(self, suffix: str) -> list[dict[str, Any]]:
        topic = f"edge/{self.device}/{suffix}"
        out = []
        for t, payload in list(self.observer.messages):
            if t == topic or (suffix.endswith("#") and t.startswith(topic[:-1])):
                try:
                    out.append(json.loads(payload))
                except ValueError:
                    pass
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.docs("events") if e.get("event") == name]

    def last_seq(self) -> int:
        return max((d["seq"] for d in self.docs("results/#")), default=0)

    def results_flow(self, version: int, after_seq: int | None = None, count: int = 3, timeout_s: float = 60.0) -> None:
        """`count` new results (seq above `after_seq`) from each camera made by model `version`, and
        once a camera's results come from `version`, none from another version follow."""
        start = self.last_seq() if after_seq is None else after_seq

        def new_by_camera() -> dict[str, list[int]]:
            out: dict[str, list[int]] = {"red-cam": [], "blue-cam": []}
            for d in sorted(self.docs("results/#"), key=lambda d: d["seq"]):
                if d["seq"] > start:
                    out.setdefault(d["camera"], []).append(d["model"]["version"])
            return out

        wait_until(lambda: all(v.count(version) >= count for v in new_by_camera().values()), timeout_s,
                   interval_s=0.1, message=f"{count} results per camera from model version {version} after seq {start}")
        for camera, versions in new_by_camera().items():
            tail = versions[versions.index(version):]
            assert set(tail) == {version}, (camera, versions[-20:])

    def serving(self) -> int | None:
        models = self.docs("model")
        return models[-1]["serving"]["version"] if models else None

    def wait_serving(self, version: int, timeout_s: float = 180.0) -> None:
        wait_until(lambda: self.serving() == version and self.docs("results/#"), timeout_s, interval_s=0.2,
                   message=f"serving version {version} with results")

    def wait_event(self, name: str, timeout_s: float = 60.0, since: int = 0, **match: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for event in self.events(name)[since:]:
                if all(str(v) in str(event.get(k)) for k, v in match.items()):
                    return event
            return None

        return wait_until(found, timeout_s, interval_s=0.1, message=f"event {name} {match}")

    def trust_state(self) -> dict[str, Any]:
        path = self.workdir / "trust-state.json"
        return json.loads(path.read_text()) if path.exists() else {"counter": 0}

