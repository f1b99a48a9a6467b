"""Simulated devices that speak the gateway's fleet protocol against a real broker, thousands per thread.

Each device is one paho MQTT 5 client (persistent session, retained ``status`` with ``offline`` as
its last will) driven by one ``selectors`` loop on one thread (paho's external-loop callbacks; a
thread per client does not scale, see docs/benchmarks.md). A device subscribes to its retained
``desired`` document and handles it with the gateway's own rules (:mod:`edge.util.shadow`: the
same parser, the same generation verdicts, the same ``reported`` document): a new model digest is
"installed" after a short random delay (``installing``, then ``serving``), the previous digest is a
rollback (instant), a digest listed in ``fail_digests`` for that device is refused after the
install (``rolled-back``), config revisions apply at once. It publishes retained ``model`` and
``reported`` so the controller knows what it serves.

``installs[device]`` lists every digest a device started installing, and ``desired_seen[device]``
every generation it received: the tests check that no device was updated twice.
"""
from __future__ import annotations

import heapq
import json
import logging
import queue
import random
import selectors
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.device.desired import SETTLE_S
from edge.errors import DesiredStateError
from edge.util.shadow import (
    ConfigProgress,
    GenerationVerdict,
    ModelProgress,
    ShadowState,
    judge_generation,
    parse_desired,
    refusal_reason,
    reported_document,
)

logger = logging.getLogger(__name__)

R, W = selectors.EVENT_READ, selectors.EVENT_WRITE


@dataclass
class SimDevice:
    name: str
    ref: str
    serving: tuple[int, str]  # (version, digest)
    previous: tuple[int, str] | None = None
    generation: int = 0
    target_sha: str | None = None
    since: float | None = None
    rollout: str | None = None
    model: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    config_revision: int | None = None
    refused: dict[str, Any] | None = None
    bad: set[str] = field(default_factory=set)
    client: paho.Client | None = None
    online: bool = False
    pending: bytes | None = None  # the newest desired copy, handled when the burst settled


class SimFleet:
    def __init__(self, host: str, port: int, names: Iterable[str], *, ref: str, digest: str, version: int = 1,
                 prefix: str = "edge", install_s: tuple[float, float] = (0.2, 0.8),
                 fail_digests: dict[str, set[str]] | None = None, seed: int = 1) -> None:
        self.host, self.port, self.prefix = host, port, prefix
        self.devices = {n: SimDevice(n, ref, (version, digest)) for n in names}
        self.install_s = install_s
        self.fail = fail_digests or {}
        self.rng = random.Random(seed)
        self.installs: dict[str, list[str]] = defaultdict(list)
        self.desired_seen: dict[str, list[int]] = defaultdict(list)
        self.published = 0
        self.received = 0
        self.connected = 0
        self._sel = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._tick = 0
        self._commands: queue.Queue[Callable[[], None]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- control (any thread) ------------------------------------------------------------------------

    def start(self, timeout_s: float = 600.0) -> SimFleet:
        self._thread = threading.Thread(target=self._loop, name="fleet-sim", daemon=True)
        self._thread.start()
        self.call(lambda: self._connect(list(self.devices)))
        self.wait(lambda: self.connected >= len(self.devices), timeout_s, "every simulated device connected")
        return self

    def stop(self) -> None:
        def disconnect_all() -> None:
            for device in self.devices.values():
                if device.client is not None and device.online:
                    device.client.disconnect()
                    device.client.loop_write()
        self.call(disconnect_all)
        time.sleep(0.5)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def call(self, command: Callable[[], None]) -> None:
        self._commands.put(command)

    def go_offline(self, names: Iterable[str]) -> None:
        """Drop off the network: the broker publishes each device's last will (`offline`)."""
        chosen = list(names)

        def run() -> None:
            for name in chosen:
                device = self.devices[name]
                if device.client is not None and device.online:
                    device.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
                    device.client.loop_write()
                    device.online = False
                    self.connected -= 1
        self.call(run)

    def come_back(self, names: Iterable[str]) -> None:
        chosen = list(names)
        self.call(lambda: self._connect(chosen))

    def wait(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"simulated fleet: {what} not within {timeout_s:g}s")
            time.sleep(0.1)

    def serving(self) -> dict[str, str]:
        return {n: d.serving[1] for n, d in self.devices.items()}

    # -- the loop --------------------------------------------------------------------------------------

    def _loop(self) -> None:
        last_misc = time.monotonic()
        while not self._stop.is_set():
            while True:
                try:
                    self._commands.get_nowait()()
                except queue.Empty:
                    break
            for key, mask in self._sel.select(0.05):
                client: paho.Client = key.data
                if mask & R:
                    client.loop_read()
                if mask & W:
                    client.loop_write()
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                heapq.heappop(self._timers)[2]()
            if now - last_misc >= 1.0:
                last_misc = now
                for device in self.devices.values():
                    if device.client is not None and device.online:
                        device.client.loop_misc()

    def _later(self, delay_s: float, action: Callable[[], None]) -> None:
        self._tick += 1
        heapq.heappush(self._timers, (time.monotonic() + delay_s, self._tick, action))

    def _connect(self, names: list[str]) -> None:
        for i, name in enumerate(names):
            device = self.devices[name]
            if device.client is None:
                device.client = self._client(device)
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            try:
                device.client.connect(self.host, self.port, keepalive=60, clean_start=False, properties=props)
            except OSError as exc:
                logger.warning("%s: connect failed (%s); retrying", name, exc)
                self._later(1.0, lambda n=name: self._connect([n]))
                continue
            if i % 200 == 199:  # let the broker answer before the next batch
                for key, mask in self._sel.select(0.01):
                    if mask & R:
                        key.data.loop_read()
                    if mask & W:
                        key.data.loop_write()

    def _client(self, device: SimDevice) -> paho.Client:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{device.name}", protocol=paho.MQTTv5,
                        userdata=device)
        c.on_socket_open = lambda cl, ud, s: self._sel.register(s, R, cl)
        c.on_socket_close = lambda cl, ud, s: self._sel.unregister(s)
        c.on_socket_register_write = lambda cl, ud, s: self._sel.modify(s, R | W, cl)
        c.on_socket_unregister_write = lambda cl, ud, s: self._sel.modify(s, R, cl)
        c.will_set(self._topic(device, "status"), b"offline", qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        return c

    # -- the device --------------------------------------------------------------------------------------

    def _topic(self, device: SimDevice, kind: str) -> str:
        return f"{self.prefix}/{device.name}/{kind}"

    def _publish(self, device: SimDevice, kind: str, doc: Any) -> None:
        assert device.client is not None
        payload = doc if isinstance(doc, bytes) else json.dumps(doc, separators=(",", ":")).encode()
        device.client.publish(self._topic(device, kind), payload, qos=1, retain=True)
        self.published += 1

    def _on_connect(self, client: paho.Client, device: SimDevice, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            logger.warning("%s refused: %s", device.name, reason)
            return
        device.online = True
        self.connected += 1
        self._publish(device, "status", b"online")
        self._publish_model(device)
        self._report(device, self._verdict(device) if device.generation else None)
        client.subscribe(self._topic(device, "desired"), qos=1)

    def _publish_model(self, device: SimDevice) -> None:
        version, digest = device.serving
        prev = device.previous or (None, None)
        self._publish(device, "model", {"state": "serving", "serving": {"version": version, "digest": digest},
                                        "previous": {"version": prev[0], "digest": prev[1]}, "ref": device.ref,
                                        "bad": sorted(device.bad), "name": "classifier"})

    def _report(self, device: SimDevice, state: ShadowState | None = None) -> None:
        if state is None:
            state = ShadowState.NONE if device.generation == 0 else ShadowState.RECONCILING
        version, digest = device.serving
        self._publish(device, "reported", reported_document(
            device=device.name, generation=device.generation, state=state, since=device.since,
            rollout=device.rollout, model=device.model, config=device.config,
            serving={"version": version, "digest": digest}, config_revision=device.config_revision,
            refused=device.refused))

    def _on_message(self, client: paho.Client, device: SimDevice, msg: paho.MQTTMessage) -> None:
        """As the gateway: copies arriving together (a reconnect's queued ones, then the retained one)
        settle for SETTLE_S and only the newest is handled."""
        self.received += 1
        if not msg.payload:
            return
        pending = device.pending is None
        device.pending = bytes(msg.payload)
        if pending:
            self._later(SETTLE_S, lambda: self._handle(device))

    def _handle(self, device: SimDevice) -> None:
        payload, device.pending = device.pending, None
        if payload is None:
            return
        try:
            doc = parse_desired(payload)
        except DesiredStateError as exc:
            device.refused = {"generation": None, "reason": str(exc), "at": time.time()}
            self._report(device)
            return
        verdict = judge_generation(device.generation, device.target_sha, doc)
        if verdict in (GenerationVerdict.STALE, GenerationVerdict.CONFLICT):
            device.refused = {"generation": doc.generation, "reason": refusal_reason(verdict, doc, device.generation),
                              "at": time.time()}
            self._report(device)
            return
        if verdict is GenerationVerdict.SAME:
            self._report(device, self._verdict(device))
            return
        self.desired_seen[device.name].append(doc.generation)
        device.generation, device.target_sha, device.since = doc.generation, doc.target_sha256, time.time()
        device.rollout = doc.rollout
        if doc.config is not None:
            device.config_revision = doc.config.revision
            device.config = {"revision": doc.config.revision, "state": ConfigProgress.APPLIED.value, "reason": None}
        else:
            device.config = None
        device.model = None
        if doc.model is not None:
            self._converge(device, doc.model.ref, doc.model.digest, doc.generation)
        self._report(device, self._verdict(device))

    def _converge(self, device: SimDevice, ref: str, digest: str, generation: int) -> None:
        model = {"ref": ref, "digest": digest, "version": None, "reason": None}
        if device.serving[1] == digest:
            device.model = {**model, "state": ModelProgress.SERVING.value, "version": device.serving[0]}
        elif device.previous is not None and device.previous[1] == digest:  # one step back: instant
            device.bad.add(device.serving[1])
            device.serving, device.previous = device.previous, None
            device.model = {**model, "state": ModelProgress.SERVING.value, "version": device.serving[0]}
            self._publish_model(device)
        else:
            device.model = {**model, "state": ModelProgress.INSTALLING.value}
            self.installs[device.name].append(digest)
            self._later(self.rng.uniform(*self.install_s), lambda: self._installed(device, digest, generation))

    def _installed(self, device: SimDevice, digest: str, generation: int) -> None:
        if device.generation != generation:
            return  # superseded by a newer document
        assert device.model is not None
        if digest in self.fail.get(device.name, set()):
            device.bad.add(digest)
            device.model = {**device.model, "state": ModelProgress.ROLLED_BACK.value,
                            "reason": "probation: error rate 0.40 above 0.05"}
        else:
            device.previous = device.serving
            device.serving = (device.serving[0] + 1, digest)
            device.model = {**device.model, "state": ModelProgress.SERVING.value, "version": device.serving[0]}
        if device.online:  # else on_connect publishes both when it is back
            self._publish_model(device)
            self._report(device, self._verdict(device))

    @staticmethod
    def _verdict(device: SimDevice) -> ShadowState:
        state = (device.model or {}).get("state")
        if state in (ModelProgress.ROLLED_BACK.value, ModelProgress.FAILED.value):
            return ShadowState.FAILED
        if device.model is None or state == ModelProgress.SERVING.value:
            return ShadowState.CONVERGED
        return ShadowState.RECONCILING
