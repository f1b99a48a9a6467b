"""The chaos scenarios. Each `run_*` builds its own world in `work`, injects a bounded number of
faults at random moments (seeded), stops everything it started (finally), and returns a `Row`
whose `checks` hold the invariants (`Row.ok` is their conjunction)."""
from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from pathlib import Path

from tests.chaos.broker import MQTT_BACKOFF_CAP_S, sh
from tests.chaos.cameras import CAMERA_BACKOFF_CAP_S
from tests.chaos.gateway import GRPC_BACKOFF_CAP_S, gateway_config, read_status
from tests.chaos.ledger import Resources, Row, growth_bounded, growth_text, integrity_of, rand_between
from tests.chaos.world import Budget, Packages, World, warm_up
from tests.fixtures.model_server import ModelServerProcess, launch
from tests.support.waits import wait_until

logger = logging.getLogger("chaos")


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
        warm_up(world, status, row)
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
                at = wait_until(resumed, 4 * MQTT_BACKOFF_CAP_S + 30, interval_s=0.2, message=f"results after {mode}")
                recoveries.append(at - restored)
            except AssertionError as exc:
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
                wait_until(lambda: served(3), 240, interval_s=0.5, message="v3 serving after the swaps")
            except AssertionError as exc:
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
        warm_up(world, status, row)
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
                at = wait_until(lambda: world.observer.first_result_spooled_after(restored, name), 90, interval_s=0.2,
                                message=f"results from camera {name} after restore")
                recoveries.append(at - restored)
            except AssertionError as exc:
                row.check(f"camera {name} recovers (fault {i + 1})", False, str(exc))
        row.fault_detail = f"{row.faults - silent} cut, {silent} silent"
        row.recovery_s = max(recoveries, default=0.0)
        try:
            wait_until(lambda: all(c.get("state") == "online" for c in read_status(status).get("cameras", [{}])),
                       60, interval_s=0.25, message="all cameras online at the end")
        except AssertionError as exc:
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
            warm_up(world, status, row)
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
                               == "degraded" and read_status(status).get("state") == "degraded", 60, interval_s=0.2,
                               message="health degraded")
                    wait_until(lambda: read_status(status).get("inference", {}).get("frames_failed", 0) > failed0,
                               60, interval_s=0.2, message="frames_failed counted")
                    failed_seen.append(True)
                except AssertionError as exc:
                    row.check(f"degraded + frames_failed after kill {i + 1}", False, str(exc))
                time.sleep(rand_between(rng, *budget.serving_outage_s))
                server = server.respawn()
                servers.append(server)
                server.wait_available("colour")
                restored = time.time()
                try:
                    at = wait_until(lambda: world.observer.first_result_spooled_after(restored), 120, interval_s=0.2,
                                    message="classification resumes")
                    recoveries.append(at - restored)
                    wait_until(lambda: read_status(status).get("model", {}).get("backend", {}).get("state") == "ok",
                               60, interval_s=0.2, message="backend ok again")
                except AssertionError as exc:
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
        warm_up(world, status, row)
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
            except (AssertionError, RuntimeError) as exc:
                row.check(f"restart {i + 1} reaches READY", False, str(exc)[:400])
                break
        row.fault_detail = f"{row.faults} SIGKILL ({during_install} during an install)"
        row.recovery_s = max(ready_s, default=0.0)
        row.check("spool integrity_check ok after every kill", not bad_integrity, str(bad_integrity[:3]))
        row.check("every restart reached READY", len(ready_s) == row.faults)
        try:
            wait_until(lambda: read_status(status).get("model", {}).get("version") == 3, 240, interval_s=0.5, message="v3 serving")
        except AssertionError as exc:
            row.check("v3 installed after the kills", False, str(exc))
        wait_until(lambda: len(world.observer.docs("results/+")) > 0, 30, message="results at the broker after the kills")
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
            warm_up(world, status, row)
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
                wait_until(lambda: read_status(status).get("spool", {}).get("dropped", 0) > 0, 240, interval_s=0.5,
                           message="spool dropping oldest (disk full)")
                time.sleep(budget.disk_hold_s)
                doc = read_status(status)
                row.check("health: spool.last_error names the disk", "disk" in str(doc["spool"].get("last_error")),
                          str(doc["spool"]))
                row.check("health: state degraded", doc.get("state") == "degraded")
                row.check("health: spool.dropped counted", doc["spool"].get("dropped", 0) > 0)
                row.notes.append(f"while full: {doc['spool'].get('last_error')}")
            except AssertionError as exc:
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
                                240, interval_s=0.25, message="spool error cleared after space returned")
                row.recovery_s = at - restored
            except AssertionError as exc:
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
