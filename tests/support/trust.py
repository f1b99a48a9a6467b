"""Helpers for trust-anchor and signed-document tests.

- `ATTACK_VALUES`: for every trust anchor (edge.config.trust_keys.anchor_keys()), a value an
  attacker holding the broker would set: valid where the schema allows, so refusals are not
  validation errors. A test checks it covers exactly the anchor list.
- `attack_patch(key, camera)`: the cmd/config merge patch that sets that value.
- `ISSUE_19_PATCH`: the patch of issue 19 (no signing key, another registry, plain HTTP).
- `sign(kind, key_file, ...)`: a signed document from `provisioning.pki.trust.make_document`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edge.models.artifact.signing import load_private_key
from edge.util.signed import DocType, public_key_pem
from provisioning.pki.trust import make_document

ATTACK_VALUES: dict[str, Any] = {
    "device_id": "gate-evil",
    "cameras.*.source": "gst:videotestsrc ! appsink",
    "health.status_file": "/tmp/evil/status.json",
    "model.store": "/tmp/evil/models",
    "mqtt.allow_plaintext_password": True,
    "mqtt.ca_file": "/tmp/evil/ca.pem",
    "mqtt.cert_file": "/tmp/evil/device.crt",
    "mqtt.client_id": "evil-client",
    "mqtt.key_file": "/tmp/evil/device.key",
    "mqtt.password": "hunter2",
    "mqtt.topic_prefix": "evil",
    "mqtt.url": "mqtt://evil.example:1883",
    "mqtt.username": "evil",
    "registry.ca_file": "/tmp/evil/registry-ca.pem",
    "registry.docker_config": "/tmp/evil/docker-config.json",  # credentials from a helper of the attacker's
    "registry.insecure": True,
    "registry.max_mb": 1_000_000.0,
    "registry.password": "hunter2",
    "registry.public_key": None,  # unset: no signature check (or, where unset, the attacker's key below)
    "registry.ref": "evil.example:5000/models/colour:stable",
    "registry.timeout_s": 3600.0,
    "registry.username": "evil",
    "serving.target": "evil.example:8500",
    "spool.path": "/tmp/evil/spool.db",
    "trust.root_key": "/tmp/evil/fleet-root.pub",
    "trust.state_file": "/tmp/evil/trust-state.json",
    "fleet.state_file": "/tmp/evil/desired-state.json",
    "console.enabled": True,
    "console.bind": "0.0.0.0",
    "console.tls_cert": "/etc/edge/device.crt",  # the device's own MQTT identity, already on the box
    "console.tls_key": "/etc/edge/device.key",
    "console.token": "evil-token-0123456789",
    "console.password_hash": "scrypt$16384$8$1$ZXZpbHNhbHQ=$ZXZpbGV2aWxldmlsZXZpbGV2aWw=",
}

ISSUE_19_PATCH = {"patch": {"registry": {"public_key": None, "ref": "evil.example:5000/m:stable", "insecure": True}}}


def attack_patch(key: str, camera: str, current: dict[str, Any] | None = None) -> dict[str, Any]:
    """The merge patch setting anchor `key` to its attack value (`camera` for ``cameras.*`` keys).

    `current` (the config document) decides how ``registry.public_key`` is attacked: removed when
    set, else pointed at a key of the attacker's."""
    value = ATTACK_VALUES[key]
    parts = key.split(".")
    now = _lookup(current or {}, parts, camera)
    if key == "registry.public_key" and not now:
        value = "/tmp/evil/models.pub"
    elif isinstance(value, bool):
        value = not now  # a flag the device already has set: the attack clears it
    if parts[:2] == ["cameras", "*"]:
        return {"cameras": {camera: {parts[2]: value}}}
    patch: dict[str, Any] = {}
    node = patch
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return patch


def _lookup(doc: dict[str, Any], parts: list[str], camera: str) -> Any:
    node: Any = doc
    for part in parts:
        if part == "*":
            node = next((c for c in node if isinstance(c, dict) and c.get("name") == camera), {})
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node


def sign(kind: DocType, key_file: Path, *, device: str, content: dict[str, Any], expires_in_s: float = 3600.0,
         counter: int | None = None, now: float | None = None, extra_keys: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A signed document, as `edgectl trust sign` makes it (the counter files beside the keys rise)."""
    return make_document(kind, [key_file, *extra_keys], target=device, content=content, expires_in_s=expires_in_s,
                         counter=counter, now=time.time() if now is None else now)


def rotation_content(new_key_file: Path, root_version: int) -> dict[str, Any]:
    return {"root_version": root_version, "public_key": public_key_pem(load_private_key(new_key_file).public_key())}
