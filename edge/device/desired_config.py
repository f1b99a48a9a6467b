"""The config part of desired state: a revision of fleet-managed settings, applied as one merge patch.

``config.values`` of a desired document is the complete set of settings the fleet manages on the
device (a merge patch of keys that are not trust anchors, cameras by name). To move to a new
revision the device patches its config with those values, and gives every key the fleet managed
before but no longer names back its **baseline**: the value the device had before the fleet first
set it (or no value, i.e. the default). The baselines are kept in the desired-state record on disk,
so an aborted rollout that sets the previous revision back restores the device's own settings.

The patch goes through :meth:`edge.config.patch.LiveConfig.patch` without a signature: a trust
anchor in it is refused (:class:`~edge.errors.TrustError`), exactly as for an unsigned
``cmd/config``; an invalid value is refused by the same validation. Nothing changes then.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

Path_ = tuple[str, ...]


def values_sha256(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def flatten(values: dict[str, Any], prefix: Path_ = ()) -> dict[Path_, Any]:
    """{"results": {"min_score": 0.2}} -> {("results", "min_score"): 0.2}; lists and scalars are leaves."""
    out: dict[Path_, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, (*prefix, key)))
        else:
            out[prefix + (key,)] = value
    return out


def lookup(document: dict[str, Any], path: Path_) -> tuple[bool, Any]:
    """(present, value) of `path` in a config document; ``cameras.<name>`` finds the camera by name."""
    node: Any = document
    parts = list(path)
    if parts and parts[0] == "cameras" and len(parts) >= 2:
        cameras = document.get("cameras")
        match = [c for c in cameras if isinstance(c, dict) and c.get("name") == parts[1]] if isinstance(
            cameras, list) else []
        if not match:
            return False, None
        node, parts = match[0], parts[2:]
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _put(patch: dict[str, Any], path: Path_, value: Any) -> None:
    node = patch
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


@dataclass
class ConfigRecord:
    """What the device applied of the fleet's config: the revision, its values' hash, the baselines."""

    revision: int | None = None
    values_sha256: str | None = None
    baseline: dict[str, dict[str, Any]] = field(default_factory=dict)  # "a.b" -> {"present", "value"}

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "values_sha256": self.values_sha256, "baseline": self.baseline}

    @classmethod
    def from_json(cls, doc: Any) -> ConfigRecord:
        if not isinstance(doc, dict):
            return cls()
        revision = doc.get("revision")
        saved = doc.get("baseline")
        baseline: dict[str, Any] = saved if isinstance(saved, dict) else {}
        return cls(revision if isinstance(revision, int) else None,
                   doc.get("values_sha256") if isinstance(doc.get("values_sha256"), str) else None,
                   {str(k): dict(v) for k, v in baseline.items() if isinstance(v, dict)})


def plan(document: dict[str, Any], values: dict[str, Any], record: ConfigRecord) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(the merge patch that moves `document` to `values`, the baselines to keep once it applied)."""
    wanted = flatten(values)
    patch: dict[str, Any] = {}
    baseline = dict(record.baseline)
    for dotted, saved in sorted(record.baseline.items()):
        path = tuple(dotted.split("."))
        if path in wanted:
            continue
        if path[0] == "cameras" and not lookup(document, path[:2])[0]:
            logger.warning("config %s: camera %s is gone; its fleet baseline is dropped", dotted, path[1])
        else:
            _put(patch, path, saved.get("value") if saved.get("present") else None)
        del baseline[dotted]
    for path, value in sorted(wanted.items()):
        dotted = ".".join(path)
        if dotted not in baseline:
            present, before = lookup(document, path)
            baseline[dotted] = {"present": present, "value": before}
        _put(patch, path, value)
    return patch, baseline
