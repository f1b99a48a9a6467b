"""The chaos scenarios. Each `run_*` builds its own world in `work`, injects a bounded number of
faults at random moments (seeded), stops everything it started (finally), and returns a `Row`
whose `checks` hold the invariants (`Row.ok` is their conjunction)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.chaos.harness import (
    CAMERA_BACKOFF_CAP_S,
    DEVICE,
    GRPC_BACKOFF_CAP_S,
    MQTT_BACKOFF_CAP_S,
    Cameras,
    Gateway,
    NetnsBroker,
    NotifySocket,
    Observer,
    Resources,
    Row,
    account,
    drain,
    gateway_config,
    growth_bounded,
    growth_text,
    integrity_of,
    rand_between,
    read_status,
    sh,
    spool_record,
    wait_until,
)

logger = logging.getLogger("chaos")


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
        """The full run: `minutes` in all (15 gives the table in the README)."""
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
        from tests.test_rollout_support import package_colour

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
        self.registry = None
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
            self.notify = NotifySocket(self.work / "notify.sock")
            self.callback(self.notify.close)
            if self.want_registry:
                from tests.fixtures.net import free_port
                from tests.fixtures.registry import LocalRegistry

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
        from edge.util.ociref import Reference
        from provisioning.model import push_version

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


def _warm_up(world: World, status: Path, row: Row, timeout_s: float = 240.0) -> None:
    gw = world.gateway
    assert gw is not None and world.observer is not None
    ready = gw.wait_ready(timeout_s)
    row.notes.append(f"READY after {ready:.1f}s")
    wait_until(lambda: all(c.get("state") == "online" for c in read_status(status).get("cameras", [{}])),
               120, 0.25, "all 4 cameras online")
    wait_until(lambda: len(world.observer.docs("results/+")) >= 20, 120, 0.25, "first results at the broker")


# ---------------------------------------------------------------------------------- 1 (+ 6)

def run_broker(work: Path, budget: Budget, packages: Packages, swap: bool = True) -> list[Row]:
    """1: broker SIGKILLed/restarted and its link cut without a reset; 6: v2 then v3 deployed meanwhile."""
    rng = random.Random(budget.seed * 101)
    row = Row("1 broker kill / link cut", backoff_cap_s=MQTT_BACKOFF_CAP_S)
    swap_row = Row("6 model swap v1->v2->v3 (during 1)", backoff_cap_s=MQTT_BACKOFF_CAP_S)
    status, spool = work / "status.json", work / "spool.db"
    with World(work, registry=True) as world:
        digests = {1: world.push(packages, 1)}
        world.start_gateway(gateway_config(work, world.cameras.specs, world.broker.url, work / "store", spool,
                                           status, registry_ref=world.registry_ref))
        _warm_up(world, status, row)
        gw = world.gateway
        before = Resources.of(gw.pid)
        modes = ["kill", "link-down", "tc-drop"]
        swaps_at = {max(0, budget.broker_faults // 3): 2, max(1, (2 * budget.broker_faults) // 3): 3} if swap else {}
        recoveries: list[float] = []
        kinds: dict[str, int] = {}
        for i in range(budget.broker_faults):
            if i in swaps_at:
                v = swaps_at[i]
                digests[v] = world.push(packages, v)
                swap_row.faults += 1
                logger.info("pushed v%d as stable", v)
            time.sleep(rand_between(rng, *budget.broker_gap_s))
            mode = modes[i % 3] if i < 3 else rng.choice(modes)
            kinds[mode] = kinds.get(mode, 0) + 1
            outage = rand_between(rng, *budget.broker_outage_s)
            fault_at = time.time()
            logger.info("broker fault %d/%d: %s for %.1fs", i + 1, budget.broker_faults, mode, outage)
            if mode == "kill":
                world.kill_broker()
                time.sleep(outage)
                world.broker.start()
            else:
                world.broker.cut(mode)
                time.sleep(outage)
                world.broker.restore()
            restored = time.time()
            row.faults += 1

            def resumed() -> float | None:
                for at, doc in world.observer.docs("results/+"):
                    if at > restored and doc.get("ts", 0) > fault_at:
                        return at
                return None
            try:
                at = wait_until(resumed, 4 * MQTT_BACKOFF_CAP_S + 30, 0.2, f"results after {mode}")
                recoveries.append(at - restored)
            except TimeoutError as exc:
                row.check(f"results resume after fault {i + 1} ({mode})", False, str(exc))
                break
            row.check("gateway alive", gw.alive(), gw.tail(1500))
            if not gw.alive():
                break
        row.fault_detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        row.recovery_s = max(recoveries, default=0.0)
        if swap:
            def served(v: int) -> bool:
                return read_status(status).get("model", {}).get("version") == v
            try:
                wait_until(lambda: served(3), 240, 0.5, "v3 serving after the swaps")
            except TimeoutError as exc:
                swap_row.check("v3 serving at the end", False, str(exc))
        time.sleep(budget.settle_s)
        after = Resources.of(gw.pid)
        row.growth = growth_text(before, after)
        world.finish(row, status, spool)
        if swap:
            _swap_report(swap_row, world, digests)
    return [row, swap_row] if swap else [row]


def _swap_report(row: Row, world: World, digests: dict[int, str]) -> None:
    events = [d for _, d in world.observer.docs("events")]
    switched = [e for e in events if e.get("event") == "model_switched"]
    versions = {}
    for _, d in world.observer.docs("results/+"):
        versions[d["model"]["version"]] = versions.get(d["model"]["version"], 0) + 1
    row.produced = sum(versions.values())
    row.delivered = row.produced
    row.fault_detail = f"deploys v2, v3; results by version {dict(sorted(versions.items()))}"
    row.check("results from v2 and v3", versions.get(2, 0) > 0 and versions.get(3, 0) > 0, str(versions))
    row.check("no failed install/validation", not any(e.get("event") in ("model_install_failed",
                                                                          "model_validation_failed",
                                                                          "model_rolled_back") for e in events),
              str([e for e in events if "failed" in e.get("event", "") or "rolled" in e.get("event", "")][:3]))
    row.notes.append(f"{len(switched)} model_switched events; gaps/duplicates: see row 1 (same seq record)")


# ---------------------------------------------------------------------------------- 2

def run_cameras(work: Path, budget: Budget, packages: Packages) -> Row:
    """2: live streams cut and restored at random, sometimes replaced by a listener that never writes."""
    rng = random.Random(budget.seed * 202)
    row = Row("2 camera cut / silent stream", backoff_cap_s=CAMERA_BACKOFF_CAP_S)
    status, spool = work / "status.json", work / "spool.db"
    store = packages.store_with(work / "store", 1)
    with World(work) as world:
        world.start_gateway(gateway_config(work, world.cameras.specs, world.broker.url, store, spool, status))
        _warm_up(world, status, row)
        gw = world.gateway
        time.sleep(budget.settle_s)
        before = Resources.of(gw.pid)
        recoveries, silent = [], 0
        for i in range(budget.camera_faults):
            time.sleep(rand_between(rng, *budget.camera_gap_s))
            name = ("mjpeg", "mpegts")[i % 2]
            quiet = i % 3 == 1 or rng.random() < 0.3
            logger.info("camera fault %d/%d: %s %s", i + 1, budget.camera_faults, name, "silent" if quiet else "cut")
            if quiet:
                world.cameras.silence(name)
                silent += 1
            else:
                world.cameras.cut(name)
            time.sleep(rand_between(rng, *budget.camera_outage_s))
            world.cameras.restore(name)
            restored = time.time()
            row.faults += 1
            try:
                at = wait_until(lambda: world.observer.first_result_spooled_after(restored, name), 90, 0.2,
                                f"results from camera {name} after restore")
                recoveries.append(at - restored)
            except TimeoutError as exc:
                row.check(f"camera {name} recovers (fault {i + 1})", False, str(exc))
        row.fault_detail = f"{row.faults - silent} cut, {silent} silent"
        row.recovery_s = max(recoveries, default=0.0)
        try:
            wait_until(lambda: all(c.get("state") == "online" for c in read_status(status).get("cameras", [{}])),
                       60, 0.25, "all cameras online at the end")
        except TimeoutError as exc:
            row.check("all cameras online at the end", False, str(exc))
        time.sleep(budget.settle_s)
        after = Resources.of(gw.pid)
        row.growth = growth_text(before, after)
        row.check("fd/thread growth bounded", growth_bounded(before, after), row.growth)
        reconnects = {c["name"]: c.get("reconnects") for c in read_status(status).get("cameras", [])}
        row.notes.append(f"camera reconnects {reconnects}")
        world.finish(row, status, spool)
    return row


# ---------------------------------------------------------------------------------- 3

def run_serving(work: Path, budget: Budget, packages: Packages) -> Row:
    """3: edge-model-server (gateway in tfserving mode) SIGKILLed and restarted on the same ports."""
    from tests.fixtures.model_server import SERVER_BIN, ModelServerProcess, launch

    rng = random.Random(budget.seed * 303)
    row = Row("3 serving backend kill", backoff_cap_s=GRPC_BACKOFF_CAP_S)
    status, spool = work / "status.json", work / "spool.db"
    store = packages.store_with(work / "store", 1)
    (work / "server").mkdir(parents=True, exist_ok=True)
    servers: list[ModelServerProcess] = []
    try:
        server = launch(["--model_name=colour", f"--model_base_path={store / 'colour'}"], work / "server")
        servers.append(server)
        with World(work) as world:
            world.start_gateway(gateway_config(work, world.cameras.specs, world.broker.url, store, spool, status,
                                               serving={"backend": "tfserving", "target": server.grpc_target,
                                                        "timeout_ms": 2000}))
            _warm_up(world, status, row)
            gw = world.gateway
            before = Resources.of(gw.pid)
            recoveries, failed_seen = [], []
            for i in range(budget.serving_faults):
                time.sleep(rand_between(rng, 2.0, 6.0))
                failed0 = read_status(status).get("inference", {}).get("frames_failed", 0)
                server.kill()
                row.faults += 1
                logger.info("serving fault %d/%d: edge-model-server SIGKILLed", i + 1, budget.serving_faults)
                try:
                    wait_until(lambda: read_status(status).get("model", {}).get("backend", {}).get("state")
                               == "degraded" and read_status(status).get("state") == "degraded", 60, 0.2,
                               "health degraded")
                    wait_until(lambda: read_status(status).get("inference", {}).get("frames_failed", 0) > failed0,
                               60, 0.2, "frames_failed counted")
                    failed_seen.append(True)
                except TimeoutError as exc:
                    row.check(f"degraded + frames_failed after kill {i + 1}", False, str(exc))
                time.sleep(rand_between(rng, *budget.serving_outage_s))
                log = open(server.log_path, "ab")
                proc = subprocess.Popen([str(SERVER_BIN), *server.args], stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
                log.close()
                server = ModelServerProcess(proc, server.port, server.rest_port, server.log_path, server.args)
                servers.append(server)
                server.wait_available("colour")
                restored = time.time()
                try:
                    at = wait_until(lambda: world.observer.first_result_spooled_after(restored), 120, 0.2,
                                    "classification resumes")
                    recoveries.append(at - restored)
                    wait_until(lambda: read_status(status).get("model", {}).get("backend", {}).get("state") == "ok",
                               60, 0.2, "backend ok again")
                except TimeoutError as exc:
                    row.check(f"classification resumes after restart {i + 1}", False, str(exc))
            row.fault_detail = f"{row.faults} SIGKILL+restart"
            row.recovery_s = max(recoveries, default=0.0)
            row.check("degraded and frames_failed seen on every kill", len(failed_seen) == row.faults)
            final = read_status(status).get("inference", {})
            row.notes.append(f"frames_failed {final.get('frames_failed')}")
            time.sleep(budget.settle_s)
            after = Resources.of(gw.pid)
            row.growth = growth_text(before, after)
            world.finish(row, status, spool)
    finally:
        for s in servers:
            with contextlib.suppress(Exception):
                s.stop(10)
    return row


# ---------------------------------------------------------------------------------- 4 (+ 6)

def run_gateway_kills(work: Path, budget: Budget, packages: Packages) -> Row:
    """4: the gateway SIGKILLed at random moments, also during spool writes and model installs."""
    rng = random.Random(budget.seed * 404)
    row = Row("4 gateway SIGKILL (+installs)", backoff_cap_s=MQTT_BACKOFF_CAP_S)
    status, spool = work / "status.json", work / "spool.db"
    store = work / "store"
    with World(work, registry=True) as world:
        world.push(packages, 1)
        gw = world.start_gateway(gateway_config(work, world.cameras.specs, world.broker.url, store, spool, status,
                                                registry_ref=world.registry_ref))
        _warm_up(world, status, row)
        ready_s, bad_integrity, during_install = [], [], 0
        pushes = {max(0, budget.gateway_kills // 4): 2, max(1, budget.gateway_kills // 2): 3}
        for i in range(budget.gateway_kills):
            if i in pushes:
                world.push(packages, pushes[i])
                logger.info("pushed v%d as stable (pending install)", pushes[i])
            time.sleep(rand_between(rng, *budget.kill_after_ready_s))
            log = gw.tail(20000)
            installing = "model_download_started" in log.split("gateway_started")[-1] and \
                "model_probation_passed" not in log.split("model_download_started")[-1]
            during_install += installing
            gw.kill()
            row.faults += 1
            integrity = integrity_of(spool)
            if integrity != "ok":
                bad_integrity.append((i, integrity))
            partial = [p.name for p in (store / "colour").iterdir()
                       if p.name.isdigit() and not (p / "saved_model.pb").is_file()] if (store / "colour").exists() else []
            row.check("no partial version folder visible", not partial, str(partial))
            gw.log_path.write_text("")
            gw.start()
            try:
                ready_s.append(gw.wait_ready(240))
            except (TimeoutError, RuntimeError) as exc:
                row.check(f"restart {i + 1} reaches READY", False, str(exc)[:400])
                break
        row.fault_detail = f"{row.faults} SIGKILL ({during_install} during an install)"
        row.recovery_s = max(ready_s, default=0.0)
        row.check("spool integrity_check ok after every kill", not bad_integrity, str(bad_integrity[:3]))
        row.check("every restart reached READY", len(ready_s) == row.faults)
        try:
            wait_until(lambda: read_status(status).get("model", {}).get("version") == 3, 240, 0.5, "v3 serving")
        except TimeoutError as exc:
            row.check("v3 installed after the kills", False, str(exc))
        wait_until(lambda: len(world.observer.docs("results/+")) > 0, 30)
        row.notes.append(f"READY after restart: max {max(ready_s, default=0):.1f}s (recovery column)")
        world.finish(row, status, spool)
    return row


# ---------------------------------------------------------------------------------- 5

def run_disk_full(work: Path, budget: Budget, packages: Packages) -> Row:
    """5: the spool on a 2 MB tmpfs; broker away (nothing drains) and a ballast file: the disk fills."""
    row = Row("5 spool disk full (2 MB tmpfs)", backoff_cap_s=MQTT_BACKOFF_CAP_S)
    status = work / "status.json"
    mnt = work / "spoolfs"
    mnt.mkdir(parents=True, exist_ok=True)
    store = packages.store_with(work / "store", 1)
    sh("mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt))
    spool = mnt / "spool.db"
    ballast = mnt / "ballast"
    try:
        with World(work) as world:
            world.start_gateway(gateway_config(work, world.cameras.specs, world.broker.url, store, spool, status))
            _warm_up(world, status, row)
            gw = world.gateway
            before = Resources.of(gw.pid)
            # leave ~200 KB above the reserve the spool keeps on a 2 MB filesystem (512 KB), then cut the link
            st = os.statvfs(mnt)
            free = st.f_bavail * st.f_frsize
            with open(ballast, "wb") as f:
                f.write(b"\0" * max(0, free - 720_000))
            world.broker.cut("tc-drop")
            row.faults += 1
            cut_at = time.time()
            try:
                wait_until(lambda: read_status(status).get("spool", {}).get("dropped", 0) > 0, 240, 0.5,
                           "spool dropping oldest (disk full)")
                time.sleep(budget.disk_hold_s)
                doc = read_status(status)
                row.check("health: spool.last_error names the disk", "disk" in str(doc["spool"].get("last_error")),
                          str(doc["spool"]))
                row.check("health: state degraded", doc.get("state") == "degraded")
                row.check("health: spool.dropped counted", doc["spool"].get("dropped", 0) > 0)
                row.notes.append(f"while full: {doc['spool'].get('last_error')}")
            except TimeoutError as exc:
                row.check("spool drops oldest when the disk fills", False, f"{exc}; {read_status(status).get('spool')}")
            row.check("gateway alive while the disk is full", gw.alive(), gw.tail(1500))
            errors = read_status(status).get("results", {}).get("errors", 0)
            row.check("no result batch failed to spool", errors == 0, f"results.errors {errors}")
            # space returns: ballast removed, broker back
            ballast.unlink()
            world.broker.restore()
            restored = time.time()
            try:
                at = wait_until(lambda: read_status(status).get("spool", {}).get("last_error") is None
                                and read_status(status).get("spool", {}).get("depth", 1) < 50 and time.time(),
                                240, 0.25, "spool error cleared after space returned")
                row.recovery_s = at - restored
            except TimeoutError as exc:
                row.check("recovers when space returns", False, f"{exc}; {read_status(status).get('spool')}")
            row.fault_detail = f"disk full for {restored - cut_at:.0f}s (ballast + broker blackholed)"
            after = Resources.of(gw.pid)
            row.growth = growth_text(before, after)
            world.finish(row, status, spool)
            doc_dropped = row.dropped
            row.notes.append(f"dropped (counted by the gateway) {doc_dropped}")
    finally:
        for _ in range(10):
            if sh("umount", str(mnt), check=False).returncode == 0:
                break
            time.sleep(0.5)
    return row


def dump_failure(row: Row, work: Path) -> None:
    """Keep the evidence of a failed scenario next to its work folder."""
    (work / "row.json").write_text(json.dumps(row.__dict__, default=str, indent=1))
