"""`edgectl doctor`: live checks of everything the gateway needs, each with the fix when it fails.

Checks: the config is valid; each camera opens and delivers a frame within --timeout; the serving
backend has the model AVAILABLE with a usable signature; the broker accepts this device's
credentials; the registry resolves the model reference (when configured); there is free disk for
the model store; the clock is sane. Exit 0 only when every check passes, 1 otherwise, 2 for bad
arguments.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table

from camera import CaptureSettings, SourceOpenError, mask_uri_password, open_source
from edge.app.wiring import load_classifier
from edge.config.loader import load_config
from edge.config.schema import GatewayConfig
from edge.errors import ConfigError, RegistryError
from edge.models.store import ModelStore, list_versions
from edge.transport.mqtt import parse_broker_url
from edge.transport.oci import RegistryClient
from edge.util.ociref import Reference

logger = logging.getLogger(__name__)

MIN_YEAR = 2024
STORE_SKEW_S = 86_400.0
QUIET_ENV = {"OPENCV_LOG_LEVEL": "ERROR", "OPENCV_FFMPEG_LOGLEVEL": "-8", "TF_CPP_MIN_LOG_LEVEL": "2"}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _with_timeout(fn: Callable[[], Check], name: str, timeout_s: float, fix: str) -> Check:
    """Run a check that may block in a driver or socket call; a hang becomes a failure."""
    box: list[Check] = []

    def run() -> None:
        try:
            box.append(fn())
        except Exception as exc:  # a check must report, never crash the doctor
            box.append(Check(name, False, f"{type(exc).__name__}: {exc}", fix))

    thread = threading.Thread(target=run, name=f"doctor-{name}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not box:
        return Check(name, False, f"no answer within {timeout_s:g}s", fix)
    return box[0]


def check_camera(cam: Any, timeout_s: float) -> Check:
    name = f"camera {cam.name}"
    uri = mask_uri_password(cam.source)
    fix = f"check that {uri} is reachable from this device (cable, power, address, credentials)"

    def probe() -> Check:
        settings = CaptureSettings(name=cam.name, uri=cam.source, size=cam.size, loop=cam.loop, realtime=False,
                                   open_timeout_s=min(cam.open_timeout_s, timeout_s),
                                   read_timeout_s=min(cam.read_timeout_s, timeout_s), watchdog_s=timeout_s)
        started = time.monotonic()
        try:
            source = open_source(cam.source, settings)
        except (SourceOpenError, ValueError) as exc:
            return Check(name, False, f"cannot open {uri}: {exc}", fix)
        try:
            frames, first_shape = 0, None
            deadline = started + timeout_s
            first_at = None
            while time.monotonic() < deadline and frames < 10:
                image = source.read()
                if image is None:
                    if source.ended:
                        break
                    continue
                frames += 1
                if first_shape is None:
                    first_shape, first_at = image.shape, time.monotonic()
            if first_shape is None:
                return Check(name, False, f"{uri} opened but gave no frame within {timeout_s:g}s", fix)
            fps = source.fps
            if fps is None and frames > 1 and first_at is not None:
                fps = (frames - 1) / max(1e-3, time.monotonic() - first_at)
            fps_text = f", {fps:.1f} fps" if fps else ""
            return Check(name, True, f"{first_shape[1]}x{first_shape[0]}{fps_text} ({uri})")
        finally:
            source.close()

    return _with_timeout(probe, name, timeout_s + 5.0, fix)


def check_model(config: GatewayConfig, timeout_s: float) -> Check:
    """The configured backend can serve the model: a version AVAILABLE with a usable signature."""
    name = f"model {config.model.name} ({config.serving.backend})"
    if config.serving.backend == "embedded":
        versions = ModelStore(config.model.store).versions(config.model.name)
        if not versions:
            if config.registry is not None:
                return Check(name, True, f"no version in {config.model.store} yet: the gateway installs "
                                         f"{config.registry.ref} at start")
            return Check(name, False, f"no servable version under {config.model.store / config.model.name}",
                         "copy a version folder there (TF Serving layout: <store>/<name>/<version>/saved_model.pb)")
        fix = "re-package the model (`edgectl model package`) or point model.version at a good version"
    else:
        fix = (f"start TF Serving or edge-model-server on {config.serving.target} serving model "
               f"{config.model.name!r} (`systemctl start edge-model-server`)")

    def probe() -> Check:
        classifier = load_classifier(config)
        try:
            info = classifier.info
            spec = info.image_input
            return Check(name, True, f"version {info.version} AVAILABLE ({info.runtime}), input {spec.name} "
                                     f"{spec.dtype} {spec.height}x{spec.width}x{spec.channels}")
        finally:
            classifier.close()

    return _with_timeout(probe, name, max(timeout_s, 120.0 if config.serving.backend == "embedded" else timeout_s),
                         fix)


def check_broker(config: GatewayConfig, timeout_s: float) -> Check:

    m = config.mqtt
    host, port, tls = parse_broker_url(m.url)
    name = f"broker {m.url}"
    fix = "check mqtt.url, the broker's firewall, and the device's credentials (username/password or cert)"
    result: dict[str, Any] = {}
    done = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"edgectl-doctor-{config.device_id}",
                         protocol=paho.MQTTv5)
    if tls:
        client.tls_set(ca_certs=str(m.ca_file) if m.ca_file else None,
                       certfile=str(m.cert_file) if m.cert_file else None,
                       keyfile=str(m.key_file) if m.key_file else None)
    if m.username:
        client.username_pw_set(m.username, m.password)

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        result["reason"] = reason
        done.set()

    def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        result.setdefault("reason", reason)
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect(host, port, keepalive=max(5, int(timeout_s) + 5))
    except Exception as exc:  # refused, DNS, TLS handshake (bad CA, expired certificate)...
        return Check(name, False, f"cannot connect: {exc}", fix)
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            return Check(name, False, f"no CONNACK within {timeout_s:g}s", fix)
    finally:
        client.disconnect()
        client.loop_stop()
    reason = result.get("reason")
    if reason is not None and not getattr(reason, "is_failure", True):
        who = m.username or (f"certificate {m.cert_file}" if m.cert_file else "anonymous")
        return Check(name, True, f"CONNACK Success as {who}")
    return Check(name, False, f"refused: CONNACK {reason}", fix)


def check_registry(config: GatewayConfig, timeout_s: float) -> Check:
    reg = config.registry
    assert reg is not None
    name = f"registry {reg.ref}"
    ref = Reference.parse(reg.ref)
    try:
        with RegistryClient(ref.registry, username=reg.username, password=reg.password, insecure=reg.insecure,
                            ca_file=reg.ca_file, timeout_s=min(timeout_s, reg.timeout_s)) as client:
            digest = client.resolve(ref)
    except RegistryError as exc:
        return Check(name, False, str(exc), "check registry.ref (is the tag pushed?), the registry's address and "
                                            "registry.username/password")
    return Check(name, True, f"resolves to {digest}")


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def check_disk(config: GatewayConfig) -> Check:
    base = config.model.store / config.model.name
    probe = config.model.store
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    versions = list_versions(base)
    largest = max((_tree_size(v.path) for v in versions), default=0)
    mb = 1048576
    detail = f"{free / mb:.0f} MB free on {probe}; largest version {largest / mb:.1f} MB"
    if largest and free < 2 * largest:
        return Check("disk", False, detail, f"free at least {2 * largest / mb:.0f} MB (2x the largest version) "
                                            "so an update can be downloaded beside the serving one")
    return Check("disk", True, detail)


def check_clock(config: GatewayConfig) -> Check:
    now = time.time()
    year = dt.datetime.fromtimestamp(now).year
    fix = "enable time sync (`timedatectl set-ntp true`; RTC-less boards need NTP before the gateway)"
    if year < MIN_YEAR:
        return Check("clock", False, f"the clock says {year}: TLS certificates and timestamps will be wrong", fix)
    base = config.model.store / config.model.name
    newest = 0.0
    if base.is_dir():
        for path in base.rglob("*"):
            try:
                newest = max(newest, path.stat().st_mtime)
            except OSError:
                continue
    if newest - now > STORE_SKEW_S:
        ahead = (newest - now) / 86_400
        return Check("clock", False, f"the clock is {ahead:.1f} days behind the newest file in {base}", fix)
    return Check("clock", True, dt.datetime.fromtimestamp(now).isoformat(timespec="seconds"))


def run_checks(config_path: Path, timeout_s: float) -> list[Check]:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        return [Check("config", False, str(exc), f"fix the key named above, then `edgectl config check {config_path}`")]
    checks = [Check("config", True, f"{config_path}: device {config.device_id}")]
    threads: list[tuple[int, threading.Thread]] = []
    results: dict[int, Check] = {}
    jobs: list[Callable[[], Check]] = [lambda c=cam: check_camera(c, timeout_s) for cam in config.cameras]
    jobs += [lambda: check_model(config, timeout_s), lambda: check_broker(config, timeout_s)]
    if config.registry is not None:
        jobs.append(lambda: check_registry(config, timeout_s))
    for index, job in enumerate(jobs):  # cameras, backend, broker and registry are probed concurrently
        def run(i: int = index, j: Callable[[], Check] = job) -> None:
            try:
                results[i] = j()
            except Exception as exc:
                results[i] = Check(f"check {i}", False, f"{type(exc).__name__}: {exc}")
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append((index, thread))
    for index, thread in threads:
        thread.join()
        checks.append(results[index])
    checks += [check_disk(config), check_clock(config)]
    return checks


def render(checks: list[Check], console: Console) -> None:
    table = Table(title="edgectl doctor", title_justify="left")
    table.add_column("check", style="bold")
    table.add_column("result")
    table.add_column("detail")
    table.add_column("fix")
    for c in checks:
        table.add_row(c.name, "[green]PASS[/green]" if c.ok else "[red]FAIL[/red]", c.detail, "" if c.ok else c.fix)
    console.print(table)


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        print(f"edgectl: --timeout must be > 0, got {args.timeout}", file=sys.stderr)
        return 2
    for name, value in QUIET_ENV.items():  # the table says what failed; library chatter only adds noise
        os.environ.setdefault(name, value)
    checks = run_checks(args.config, args.timeout)
    render(checks, Console(width=args.width) if args.width else Console())
    failed = [c.name for c in checks if not c.ok]
    if failed:
        print(f"edgectl: {len(failed)} check(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
