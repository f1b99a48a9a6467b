"""Desired and reported state per device, retained on the broker (device-shadow style).

Two retained topics per device (AWS IoT Device Shadow and Azure device twins are the model):

- ``<prefix>/<device>/desired``: written by the fleet operator only (broker ACL), what the device
  should run: a model reference and digest, and a config revision. A **generation** orders the
  documents: a device applies a generation above the one it accepted, ignores a lower one (a stale
  document, e.g. from a controller working from an old view) and refuses the same generation with
  another target. Every connect delivers the retained document again, so a device that was offline
  for a week converges when it returns::

      {"generation": 7,
       "model": {"ref": "registry.example:5000/models/classifier:4", "digest": "sha256:…"},
       "config": {"revision": 3, "values": {"results": {"min_score": 0.2}, "cameras": {"front": {"fps": 2}}}},
       "rollout": "r-0612", "previous": {"model": {…}, "config": {…}},
       "issued_at": 1795626490.1, "issued_by": "ops@laptop"}

  (``"restores": "<rollout id>"`` instead of ``rollout`` marks the document that sets back what an
  aborted rollout changed.)

  ``config.values`` is the complete set of settings the fleet manages on this device (a merge patch
  of keys that are not trust anchors; cameras by name); a key dropped from it goes back to the value
  the device had before the fleet set it. ``previous`` is what a rollout sets back on abort (the
  device does not act on it).
- ``<prefix>/<device>/reported``: written by the device: the generation it works on, its progress
  (:class:`ModelProgress`, :class:`ConfigProgress`), the outcome and why, what it serves.

This module is the format and the pure rules shared by the gateway, the simulated devices of the
bench and the rollout controller; acting on a document is :mod:`edge.device.desired`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from edge.errors import DesiredStateError
from edge.util.ociref import Reference, is_digest

logger = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 64 * 1024
MAX_GENERATION = 2**53 - 1  # exact in every JSON parser
MAX_VALUE_DEPTH = 6
MAX_VALUE_LEAVES = 256
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOP_KEYS = {"generation", "model", "config", "rollout", "restores", "previous", "issued_at", "issued_by"}
_JSON_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", dict: "an object",
               list: "an array", type(None): "null"}


class ModelProgress(str, Enum):
    """Where a device stands with the desired model (``reported.model.state``)."""

    PENDING = "pending"  # accepted, not started (e.g. waiting for a running probation to end)
    INSTALLING = "installing"  # downloading and verifying
    VALIDATING = "validating"  # golden images
    PROBATION = "probation"  # switched; error rate and latency watched
    SERVING = "serving"  # converged
    FAILED = "failed"  # refused by the device (install or validation failed, older than accepted…)
    ROLLED_BACK = "rolled-back"  # switched, then rolled back (probation or an operator)
    REFUSED = "refused"  # not possible here (no [registry], another registry)

    def __str__(self) -> str:
        return self.value


class ConfigProgress(str, Enum):
    """Where a device stands with the desired config revision (``reported.config.state``)."""

    PENDING = "pending"
    APPLIED = "applied"
    RESTARTING = "restarting"  # persisted; the gateway restarts to apply it
    REFUSED = "refused"  # a trust anchor, an invalid value: nothing changed

    def __str__(self) -> str:
        return self.value


class ShadowState(str, Enum):
    """The device's verdict on the desired generation (``reported.state``)."""

    NONE = "none"  # no desired state received yet
    RECONCILING = "reconciling"
    CONVERGED = "converged"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


ENDED_BADLY = (ModelProgress.FAILED, ModelProgress.ROLLED_BACK, ModelProgress.REFUSED)


@dataclass(frozen=True)
class ModelTarget:
    ref: str
    digest: str

    @property
    def pinned(self) -> str:
        """The reference a device follows for this target: the tag's repository, pinned to the digest."""
        return str(replace(Reference.parse(self.ref), digest=self.digest))

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "digest": self.digest}


@dataclass(frozen=True)
class ConfigTarget:
    revision: int
    values: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "values": self.values}


@dataclass(frozen=True)
class DesiredState:
    generation: int
    model: ModelTarget | None = None
    config: ConfigTarget | None = None
    rollout: str | None = None
    restores: str | None = None
    previous: dict[str, Any] | None = None
    issued_at: float | None = None
    issued_by: str | None = None

    @property
    def target_sha256(self) -> str:
        """What the generation promises (model and config): two documents of one generation must agree."""
        return hashlib.sha256(canonical({"model": self.model.to_json() if self.model else None,
                                         "config": self.config.to_json() if self.config else None})).hexdigest()

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"generation": self.generation}
        if self.model is not None:
            doc["model"] = self.model.to_json()
        if self.config is not None:
            doc["config"] = self.config.to_json()
        for key in ("rollout", "restores", "previous", "issued_at", "issued_by"):
            if getattr(self, key) is not None:
                doc[key] = getattr(self, key)
        return doc


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _kind(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _want(where: str, value: Any, *types: type) -> Any:
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise DesiredStateError(f"{where}: must be {' or '.join(_JSON_NAMES[t] for t in types)}, got {_kind(value)}")
    return value


def _only(where: str, doc: dict[str, Any], allowed: set[str], required: set[str] | None = None) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise DesiredStateError(f"{where}: unknown field(s) {unknown} (accepted: {', '.join(sorted(allowed))})")
    missing = sorted((required or set()) - set(doc))
    if missing:
        raise DesiredStateError(f"{where}: missing field(s) {missing}")


def parse_model(value: Any, where: str = "model") -> ModelTarget:
    doc = _want(where, value, dict)
    _only(where, doc, {"ref", "digest"}, {"ref", "digest"})
    ref, digest = _want(f"{where}.ref", doc["ref"], str), _want(f"{where}.digest", doc["digest"], str)
    if not is_digest(digest):
        raise DesiredStateError(f"{where}.digest: must be sha256:<64 lowercase hex digits>, got {digest[:80]!r}")
    try:
        parsed = Reference.parse(ref)
    except ValueError as exc:
        raise DesiredStateError(f"{where}.ref: {exc}") from None
    if parsed.digest is not None and parsed.digest != digest:
        raise DesiredStateError(f"{where}.ref: pins {parsed.digest[:19]}…, which is not {where}.digest")
    return ModelTarget(ref, digest)


def _check_values(value: Any, where: str, depth: int, leaves: list[int]) -> None:
    if depth > MAX_VALUE_DEPTH:
        raise DesiredStateError(f"{where}: nested deeper than {MAX_VALUE_DEPTH} levels")
    for key, item in value.items():
        here = f"{where}.{key}"
        if not key or "." in key:
            raise DesiredStateError(f"{here}: a key must be a non-empty name without '.'")
        if item is None:
            raise DesiredStateError(f"{here}: null is not a setting; leave the key out to give it back to the device")
        if isinstance(item, dict):
            if not item:
                raise DesiredStateError(f"{here}: an empty object sets nothing")
            _check_values(item, here, depth + 1, leaves)
        else:
            leaves[0] += 1
            if leaves[0] > MAX_VALUE_LEAVES:
                raise DesiredStateError(f"config.values: more than {MAX_VALUE_LEAVES} settings")


def parse_config(value: Any, where: str = "config") -> ConfigTarget:
    doc = _want(where, value, dict)
    _only(where, doc, {"revision", "values"}, {"revision", "values"})
    revision = _want(f"{where}.revision", doc["revision"], int)
    if not 0 <= revision <= MAX_GENERATION:
        raise DesiredStateError(f"{where}.revision: must be between 0 and {MAX_GENERATION}, got {revision}")
    values = _want(f"{where}.values", doc["values"], dict)
    _check_values(values, f"{where}.values", 1, [0])
    return ConfigTarget(revision, values)


def parse_desired(payload: bytes | str | dict[str, Any]) -> DesiredState:
    """A desired-state document, checked in full; DesiredStateError naming the field otherwise."""
    if isinstance(payload, dict):
        doc: Any = payload
    else:
        raw = payload.encode() if isinstance(payload, str) else payload
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise DesiredStateError(f"the document is {len(raw)} bytes; the limit is {MAX_DOCUMENT_BYTES}")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise DesiredStateError(f"not valid JSON: {exc}") from None
        except RecursionError:
            raise DesiredStateError("not valid JSON: nested too deeply") from None
    _want("document", doc, dict)
    _only("document", doc, _TOP_KEYS, {"generation"})
    generation = _want("generation", doc["generation"], int)
    if not 1 <= generation <= MAX_GENERATION:
        raise DesiredStateError(f"generation: must be between 1 and {MAX_GENERATION}, got {generation}")
    model = None if doc.get("model") is None else parse_model(doc["model"])
    config = None if doc.get("config") is None else parse_config(doc["config"])
    rollout, restores = doc.get("rollout"), doc.get("restores")
    for key, value in (("rollout", rollout), ("restores", restores)):
        if value is not None and not _ID_RE.match(_want(key, value, str)):
            raise DesiredStateError(f"{key}: {value[:80]!r} is not a rollout id (1-64 letters, digits, '_', '-', '.')")
    previous = doc.get("previous")
    if previous is not None:
        _want("previous", previous, dict)
        _only("previous", previous, {"model", "config"})
        if previous.get("model") is not None:
            parse_model(previous["model"], "previous.model")
        if previous.get("config") is not None:
            parse_config(previous["config"], "previous.config")
    issued_at = doc.get("issued_at")
    if issued_at is not None:
        issued_at = float(_want("issued_at", issued_at, int, float))
    issued_by = doc.get("issued_by")
    if issued_by is not None and len(_want("issued_by", issued_by, str)) > 200:
        raise DesiredStateError("issued_by: at most 200 characters")
    return DesiredState(generation, model, config, rollout, restores, previous, issued_at, issued_by)


class GenerationVerdict(str, Enum):
    NEW = "new"  # above the accepted generation: apply it
    SAME = "same"  # the accepted generation again (a reconnect, a retained copy): keep reconciling
    STALE = "stale"  # below the accepted generation: ignored
    CONFLICT = "conflict"  # the accepted generation with another target: refused


def judge_generation(accepted: int, accepted_sha256: str | None, doc: DesiredState) -> GenerationVerdict:
    if doc.generation > accepted:
        return GenerationVerdict.NEW
    if doc.generation < accepted:
        return GenerationVerdict.STALE
    if accepted_sha256 is not None and accepted_sha256 != doc.target_sha256:
        return GenerationVerdict.CONFLICT
    return GenerationVerdict.SAME


def refusal_reason(verdict: GenerationVerdict, doc: DesiredState, accepted: int) -> str:
    if verdict is GenerationVerdict.STALE:
        return (f"generation {doc.generation} is older than generation {accepted}, which this device already "
                "accepted; ignored (publish a higher generation)")
    return (f"generation {doc.generation} was already accepted with another model/config; a changed target "
            "needs a higher generation")


# -- the reported document ------------------------------------------------------------------------------

def reported_document(*, device: str, generation: int, state: ShadowState, since: float | None,
                      rollout: str | None, model: dict[str, Any] | None, config: dict[str, Any] | None,
                      serving: dict[str, Any] | None, config_revision: int | None,
                      refused: dict[str, Any] | None) -> dict[str, Any]:
    """``reported``: the generation worked on (0: none yet), the verdict, since when, the progress of the
    model (``{"ref", "digest", "state", "version", "reason"}``) and of the config (``{"revision",
    "state", "reason"}``), what serves, the config revision applied, the last document refused."""
    return {"device": device, "generation": generation, "state": state.value, "since": since, "rollout": rollout,
            "model": model, "config": config, "serving": serving, "config_revision": config_revision,
            "refused": refused}


# -- reading a reported document (the fleet side) --------------------------------------------------

class Outcome(str, Enum):
    """What the fleet side makes of a device for one desired generation."""

    PENDING = "pending"  # not acknowledged yet, or still working on it
    CONVERGED = "converged"
    FAILED = "failed"


def judge_reported(generation: int, reported: dict[str, Any] | None) -> tuple[Outcome, str]:
    """The outcome of desired `generation` on a device whose last retained `reported` is `reported`."""
    if not reported:
        return Outcome.PENDING, "no reported state yet"
    refused = reported.get("refused")
    if isinstance(refused, dict) and refused.get("generation") == generation:
        return Outcome.FAILED, f"refused the document: {refused.get('reason')}"
    if reported.get("generation") != generation:
        return Outcome.PENDING, f"working on generation {reported.get('generation')}"
    state = reported.get("state")
    if state == ShadowState.CONVERGED.value:
        return Outcome.CONVERGED, ""
    if state == ShadowState.FAILED.value:
        parts = []
        for key in ("model", "config"):
            part = reported.get(key)
            if isinstance(part, dict) and part.get("reason"):
                parts.append(f"{key} {part.get('state')}: {part.get('reason')}")
        return Outcome.FAILED, "; ".join(parts) or "failed"
    model = reported.get("model")
    return Outcome.PENDING, f"model {model.get('state', '-') if isinstance(model, dict) else '-'}"
