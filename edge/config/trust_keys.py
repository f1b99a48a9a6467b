"""Every config key, classified once: does a change apply live, and is the key a trust anchor?

A **trust anchor** is a key whose value decides whom the device trusts or where its data and
identity live: the registry's location, credentials, TLS settings and model-signing key, the
broker's URL, credentials and certificate paths, the model store, spool and status file paths, the
fleet root itself, the device identity, where camera frames come from and where they are sent.
A remote change to an anchor (``cmd/config``) is refused unless it arrives inside a document
signed by the fleet root key (:mod:`edge.util.trustroot`); locally (the config file, ``edgectl``
on the box) anything can be changed, since a local administrator is trusted anyway.

:data:`KEYS` is THE list: the config patcher reads it to decide live/restart and signed/unsigned,
the docs are checked against it, and a test fails when the schema has a key this table does not
classify (so a new key cannot slip in as an unclassified, remotely changeable one).

Keys are dotted paths; ``cameras.*`` is any camera. A changed path that is a table (a section
added or removed, the cameras list grown) covers every key under it.
"""
from __future__ import annotations

import logging
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel

from edge.config.schema import GatewayConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyRule:
    live: bool  # applied to the running gateway; otherwise persisted and the gateway restarts
    anchor: bool = False  # a trust anchor: a remote change needs a signed document
    why: str = ""  # for anchors: what an attacker could do with an unsigned change


_LIVE, _RESTART = KeyRule(live=True), KeyRule(live=False)


def _anchor(why: str, live: bool = False) -> KeyRule:
    return KeyRule(live=live, anchor=True, why=why)


_REGISTRY = "where models come from and how they are verified"
_BROKER = "which broker the device trusts and talks to, and as whom"
_PATHS = "where the device writes (a path elsewhere could overwrite or expose files)"
_BOUND = "the bound that stops a hostile registry (endless data, slow retrieval)"

KEYS: dict[str, KeyRule] = {
    "device_id": _anchor("the device's identity: its topics and the target signed documents name"),
    "log_level": _LIVE,
    **{f"cameras.*.{k}": _LIVE for k in ("fps", "size", "loop", "realtime", "watchdog_s", "backoff_initial_s",
                                          "backoff_max_s", "open_timeout_s", "read_timeout_s", "decode", "rois",
                                          "reader", "keyframes", "hwaccel", "decode_threads", "gate.threshold",
                                          "gate.max_interval_s")},
    "cameras.*.name": _RESTART,
    "cameras.*.source": _anchor("what the model sees; a gst: pipeline or file path reads and writes local files",
                                live=True),
    "model.name": _RESTART,
    "model.store": _anchor(_PATHS),
    "model.version": _RESTART,
    "model.top_k": _LIVE,
    **{f"model.preprocess.{k}": _RESTART for k in ("color", "resize", "mean", "std")},
    **{f"serving.{k}": _RESTART for k in ("backend", "max_batch_size", "max_wait_ms", "threads", "interpreters",
                                          "runtime", "precision", "timeout_ms", "send", "jpeg_quality")},
    "serving.target": _anchor("camera frames are sent there and its answers become the results"),
    **{f"mqtt.{k}": _anchor(_BROKER) for k in ("url", "client_id", "username", "password", "ca_file", "cert_file",
                                               "key_file", "topic_prefix", "allow_plaintext_password")},
    "mqtt.keepalive_s": _RESTART,
    "spool.path": _anchor(_PATHS),
    "spool.max_mb": _RESTART,
    "spool.sync": _RESTART,
    "health.interval_s": _LIVE,
    "health.status_file": _anchor(_PATHS),
    "results.publish": _LIVE,
    "results.min_score": _LIVE,
    **{f"registry.{k}": _anchor(_REGISTRY) for k in ("ref", "username", "password", "insecure", "ca_file",
                                                     "public_key", "docker_config")},
    "registry.platform": _RESTART,  # chooses among variants that are all signed
    "registry.accelerators": _RESTART,
    "registry.max_mb": _anchor(_BOUND),
    "registry.timeout_s": _anchor(_BOUND),
    "registry.poll_interval_s": _RESTART,
    **{f"rollout.{k}": _RESTART for k in ("keep_versions", "tolerance", "latency_factor", "require_golden",
                                          "probation_s", "probation_max_error_rate", "probation_latency_factor")},
    "homeassistant.enabled": _RESTART,
    "homeassistant.discovery_prefix": _RESTART,
    "homeassistant.score_interval_s": _RESTART,
    "homeassistant.snapshot_interval_s": _RESTART,
    "fleet.desired_state": _RESTART,
    "fleet.state_file": _anchor(_PATHS),
    "trust.root_key": _anchor("the fleet root key itself (rotate it with a signed root-rotation document)"),
    "trust.state_file": _anchor("the counters that refuse replayed documents"),
    **{f"console.{k}": _anchor("who can reach the console: camera images and the device's state")
       for k in ("enabled", "bind", "tls_cert", "tls_key", "token", "password_hash")},
    **{f"console.{k}": _RESTART for k in ("port", "live_fps", "max_connections", "request_timeout_s")},
}


def anchor_keys() -> list[str]:
    """The trust anchors, sorted: every key a remote change may touch only with a signature."""
    return sorted(k for k, rule in KEYS.items() if rule.anchor)


def normalise(path: tuple[str, ...]) -> tuple[str, ...]:
    """("cameras", "0", "fps") -> ("cameras", "*", "fps")."""
    if len(path) >= 2 and path[0] == "cameras":
        return ("cameras", "*", *path[2:])
    return path


def rules_under(path: tuple[str, ...]) -> dict[str, KeyRule]:
    """The classified keys a changed `path` covers: itself if it is a key, every key below it if it is
    a table (or a key's ancestor, e.g. a whole section set to null)."""
    norm = normalise(path)
    out = {}
    for key, rule in KEYS.items():
        parts = tuple(key.split("."))
        if parts[: len(norm)] == norm or norm[: len(parts)] == parts:
            out[key] = rule
    return out


def touched_anchors(paths: Iterable[tuple[str, ...]]) -> list[str]:
    """The anchor keys among (or under) the changed `paths`, sorted and de-duplicated."""
    return sorted({key for path in paths for key, rule in rules_under(path).items() if rule.anchor})


def is_live(path: tuple[str, ...]) -> bool:
    """A change at `path` applies to the running gateway (every key it covers is live)."""
    rules = rules_under(path)
    return bool(rules) and all(rule.live for rule in rules.values())


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (X, X | None, list[X])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def schema_keys(model: type[BaseModel] = GatewayConfig, prefix: str = "") -> set[str]:
    """Every key of the schema as the patcher sees it: sub-tables recursed, a camera's keys under
    ``cameras.*``, a list of other tables (a camera's ROIs) as one key."""
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        nested = _models_in(annotation)
        if nested and typing.get_origin(annotation) is list:
            if name == "cameras" and not prefix:
                keys |= schema_keys(nested[0], "cameras.*.")
            else:
                keys.add(prefix + name)
        elif nested:
            keys |= schema_keys(nested[0], f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys
