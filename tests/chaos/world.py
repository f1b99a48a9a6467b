"""What a chaos scenario runs in: the fault budget, the packaged model versions, and `World`, which
starts the broker (in a network namespace), the observer, the cameras, the notify socket and
optionally a registry, and tears all of it down (see tests/chaos/__init__.py)."""
from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from edge.util.ociref import Reference
from provisioning.publish import push_version
from tests.chaos.broker import DEVICE, NetnsBroker, Observer
from tests.chaos.cameras import Cameras
from tests.chaos.gateway import Gateway, read_status
from tests.chaos.ledger import Row, account, drain, spool_record
from tests.fixtures.registry import LocalRegistry
from tests.support.net import free_port
from tests.support.notify import NotifyListener
from tests.support.packages import package_colour
from tests.support.waits import wait_until


@dataclass
class Budget:
    """How much chaos: counts are hard bounds, seconds are the random ranges faults are drawn from."""

    broker_faults: int = 3
    broker_gap_s: tuple[float, float] = (2.0, 5.0)  # healthy time between two broker faults
    broker_outage_s: tuple[float, float] = (2.0, 5.0)
    camera_faults: int = 3
    camera_gap_s: tuple[float, float] = (2.0, 4.0)
    camera_outage_s: tuple[float, float] = (3.0, 6.0)
    serving_faults: int = 1
    serving_outage_s: tuple[float, float] = (3.0, 5.0)
    gateway_kills: int = 3
    kill_after_ready_s: tuple[float, float] = (0.0, 4.0)
    disk_hold_s: float = 6.0
    settle_s: float = 4.0  # healthy time after warm-up before faults start / before the end sample
    seed: int = 1

    @classmethod
    def for_minutes(cls, minutes: float, seed: int = 1) -> Budget:
        """The full run: `minutes` in all (15 gives the table in docs/reliability.md)."""
        f = max(0.2, minutes / 15.0)
        return cls(
            broker_faults=max(2, round(8 * f)), broker_gap_s=(5.0, 40.0 if f >= 1 else 15.0),
            broker_outage_s=(3.0, 12.0),
            camera_faults=max(3, round(10 * f)), camera_gap_s=(3.0, 10.0), camera_outage_s=(3.0, 10.0),
            serving_faults=max(1, round(3 * f)), serving_outage_s=(4.0, 12.0),
            gateway_kills=max(3, round(20 * f)), kill_after_ready_s=(0.0, 6.0),
            disk_hold_s=max(8.0, 20.0 * f), settle_s=8.0, seed=seed)


class Packages:
    """Packaged colour model versions 1-3 (golden images included), built once per run."""

    def __init__(self, work: Path) -> None:
        self.root = work / "packages"
        self.versions: dict[int, Path] = {}
        for v in (1, 2, 3):
            out = self.root / str(v)
            if not (out / "saved_model.pb").exists():
                package_colour(out, v)
            self.versions[v] = out

    def store_with(self, store: Path, *versions: int) -> Path:
        for v in versions:
            shutil.copytree(self.versions[v], store / "colour" / str(v), dirs_exist_ok=True)
        return store


class World(contextlib.ExitStack):
    """Broker in a namespace + observer + 4 cameras + notify socket (+ registry), all torn down on exit."""

    def __init__(self, work: Path, registry: bool = False) -> None:
        super().__init__()
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.broker = NetnsBroker(work / "broker")
        self.broker.workdir.mkdir(parents=True, exist_ok=True)
        self.want_registry = registry
        self.registry: LocalRegistry | None = None
        self.observer: Observer | None = None
        self.gateway: Gateway | None = None
        self.broker_kills: list[float] = []

    def __enter__(self) -> World:
        super().__enter__()
        try:
            self.callback(self.broker.delete_namespace)
            self.broker.create_namespace()
            self.callback(self._stop_broker)
            self.broker.start()
            self.observer = Observer(self.broker.obs_ip, self.broker.port, f"edge/{DEVICE}/#")
            self.callback(self.observer.stop)
            self.observer.start()
            self.broker.wait_persisted()
            self.cameras = Cameras(self.work)
            self.callback(self.cameras.stop)
            self.cameras.start()
            self.notify = NotifyListener(str(self.work / "notify.sock"))
            self.callback(self.notify.close)
            if self.want_registry:
                (self.work / "registry").mkdir(exist_ok=True)
                self.registry = LocalRegistry(self.work / "registry", free_port())
                self.callback(self.registry.stop)
                self.registry.start()
        except BaseException:
            self.close()
            raise
        return self

    def _stop_broker(self) -> None:
        with contextlib.suppress(Exception):
            self.broker.restore()
        self.broker.stop()

    def start_gateway(self, text: str) -> Gateway:
        gw = Gateway(self.work, text, self.notify)
        self.gateway = gw
        self.callback(gw.kill)
        return gw.start()

    def push(self, packages: Packages, version: int, tag: str = "stable") -> str:
        assert self.registry is not None
        ref = Reference.parse(f"{self.registry.address}/models/colour:{tag}")
        return push_version(self.registry.client(), ref, packages.versions[version])[0]

    @property
    def registry_ref(self) -> str:
        assert self.registry is not None
        return f"{self.registry.address}/models/colour:stable"

    def kill_broker(self) -> None:
        self.broker_kills.append(time.time())
        self.broker.kill()

    def finish(self, row: Row, status: Path, spool: Path, drain_s: float = 120.0) -> list[int]:
        """Everything healthy again: let the spool drain, stop the gateway cleanly, account seqs."""
        gw = self.gateway
        assert gw is not None and self.observer is not None
        row.check("gateway alive at the end", gw.alive(), gw.tail(1500))
        row.check("spool drained after the faults", drain(status, drain_s))
        code = gw.terminate()
        row.check("clean exit 0", code == 0, f"exit {code}")
        time.sleep(1.5)  # the last PUBACKed messages reach the observer
        ledger = spool_record(spool)
        row.check("spool integrity_check ok", ledger.integrity == "ok", ledger.integrity)
        gaps = account(row, self.observer, ledger, self.broker_kills)
        row.check("gateway-side gaps == 0", not gaps, str(gaps[:10]))
        return gaps


def warm_up(world: World, status: Path, row: Row, timeout_s: float = 240.0) -> None:
    gw = world.gateway
    assert gw is not None and world.observer is not None
    ready = gw.wait_ready(timeout_s)
    row.notes.append(f"READY after {ready:.1f}s")
    wait_until(lambda: all(c.get("state") == "online" for c in read_status(status).get("cameras", [{}])),
               120, interval_s=0.25, message="all 4 cameras online")
    wait_until(lambda: len(world.observer.docs("results/+")) >= 20, 120, interval_s=0.25,
               message="first results at the broker")


def dump_failure(row: Row, work: Path) -> None:
    """Keep the evidence of a failed scenario next to its work folder."""
    (work / "row.json").write_text(json.dumps(row.__dict__, default=str, indent=1))
