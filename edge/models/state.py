"""The device's model state, one small JSON file per model that survives power loss.

``<store>/<model>/.edge-state.json`` (a dot-file: invisible to the loader and to TF Serving)::

    {"format": 1, "state": "serving", "serving": {"version": 2, "digest": "sha256:…"},
     "previous": {"version": 1, "digest": "sha256:…"}, "installed": {"1": "sha256:…", "2": "sha256:…"},
     "installing": null, "bad": {"sha256:…": "golden image red.png: top-1 2 != reference 0"},
     "validated": ["sha256:…"], "ref": null,
     "highest": {"version": 2, "digest": "sha256:…"},
     "rollback_allowed": {"sha256:…": {"version": 1, "expires": 1795712890.0, "counter": 7}},
     "artifacts": {"sha256:…": {"variant": {"manifest": "sha256:…", "platform": "linux/arm64", "accelerator": null},
                                "signature": "model-signing", "signed_by": "<key hint>"}},
     "channels": {"reg:5000/models/m:stable": {"digest": "sha256:…", "issued_at": 1795626490.0,
                                               "expires": 1796231290.0, "status": "fresh", "reason": null}},
     "last_error": null, "updated_at": 1795626490.1}

``highest`` is the newest version this device ever validated: an older one (or another build of the
same number) is refused unless ``rollback_allowed`` holds its digest, put there by a rollback
document signed by the fleet root key (until it expires, and only until that version is switched
in). See :func:`edge.rollout.policy.stale_version`. ``artifacts`` records how each installed digest was
verified and which variant of a multi-platform version it is; ``channels`` the newest signed channel statement seen per
followed channel (:func:`edge.rollout.policy.judge_channel`: an older one is refused).

Writes go to a temp file in the same folder, are fsynced, renamed over the old file and the folder
is fsynced: after a power cut the file is either the old or the new document, never a torn one.
A leftover ``.edge-state.json.tmp-*`` (a write cut short) is ignored and removed.

On startup :func:`choose_serving` decides what to serve: the recorded serving version if it is
still a complete folder, else the newest complete version whose digest is not known bad — never
"whatever is newest" after an interrupted install.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from edge.models.store import ModelVersion, list_versions
from edge.util.fsutil import atomic_write_bytes

logger = logging.getLogger(__name__)

STATE_FILE = ".edge-state.json"


class RolloutState(str, Enum):
    """Where a model's rollout stands (the `state` of the retained `model` message and of health).

    idle -> downloading -> validating -> probation -> serving; refused versions go back to what
    was before (serving, or idle when nothing serves yet); an automatic or operator rollback ends in
    rolled-back, which stays until the next version passes probation.
    """

    IDLE = "idle"  # nothing serves yet (first install pending)
    DOWNLOADING = "downloading"
    VALIDATING = "validating"
    PROBATION = "probation"
    SERVING = "serving"
    ROLLED_BACK = "rolled-back"

    @classmethod
    def parse(cls, value: object) -> RolloutState:
        """A state read from disk; anything unknown (e.g. an older file's "failed") reads as idle."""
        try:
            return cls(value)
        except ValueError:
            return cls.IDLE

    def __str__(self) -> str:
        return self.value


INTERRUPTED = (RolloutState.DOWNLOADING, RolloutState.VALIDATING, RolloutState.PROBATION)


@dataclass
class ModelState:
    state: RolloutState = RolloutState.IDLE
    serving_version: int | None = None
    serving_digest: str | None = None
    previous_version: int | None = None
    previous_digest: str | None = None
    installed: dict[int, str] = field(default_factory=dict)  # version -> digest
    installing: dict[str, Any] | None = None  # {"version": n, "digest": d} while a folder is being moved in
    bad: dict[str, str] = field(default_factory=dict)  # digest -> why it is never deployed automatically
    validated: list[str] = field(default_factory=list)  # digests that passed validation on this device
    ref: str | None = None  # the reference an operator deployed, followed instead of the configured one
    highest_version: int | None = None  # the newest version ever validated here (rollback protection)
    highest_digest: str | None = None
    rollback_allowed: dict[str, dict[str, Any]] = field(default_factory=dict)  # digest -> signed allowance
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)  # digest -> {variant, signature, signed_by}
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)  # channel ref -> newest signed statement seen
    last_error: str | None = None
    updated_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        def pair(version: int | None, digest: str | None) -> dict[str, Any] | None:
            return None if version is None else {"version": version, "digest": digest}

        return {
            "format": 1,
            "state": self.state.value,
            "serving": pair(self.serving_version, self.serving_digest),
            "previous": pair(self.previous_version, self.previous_digest),
            "installed": {str(v): d for v, d in sorted(self.installed.items())},
            "installing": self.installing,
            "bad": dict(self.bad),
            "validated": list(self.validated),
            "ref": self.ref,
            "highest": pair(self.highest_version, self.highest_digest),
            "rollback_allowed": {d: dict(a) for d, a in self.rollback_allowed.items()},
            "artifacts": {d: dict(v) for d, v in self.artifacts.items()},
            "channels": {c: dict(s) for c, s in self.channels.items()},
            "last_error": self.last_error,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ModelState:
        serving = doc.get("serving") or {}
        previous = doc.get("previous") or {}
        highest = doc.get("highest") or {}
        allowed = doc.get("rollback_allowed") or {}
        return cls(
            state=RolloutState.parse(doc.get("state")),
            serving_version=serving.get("version"),
            serving_digest=serving.get("digest"),
            previous_version=previous.get("version"),
            previous_digest=previous.get("digest"),
            installed={int(v): str(d) for v, d in (doc.get("installed") or {}).items()},
            installing=doc.get("installing"),
            bad={str(k): str(v) for k, v in (doc.get("bad") or {}).items()},
            validated=[str(d) for d in (doc.get("validated") or [])],
            ref=doc.get("ref") if isinstance(doc.get("ref"), str) else None,
            highest_version=highest.get("version"),
            highest_digest=highest.get("digest"),
            rollback_allowed={str(d): dict(a) for d, a in allowed.items() if isinstance(a, dict)},
            artifacts={str(d): dict(v) for d, v in (doc.get("artifacts") or {}).items() if isinstance(v, dict)},
            channels={str(c): dict(s) for c, s in (doc.get("channels") or {}).items() if isinstance(s, dict)},
            last_error=doc.get("last_error"),
            updated_at=float(doc.get("updated_at") or 0.0),
        )

    def version_of(self, digest: str) -> int | None:
        for version, known in self.installed.items():
            if known == digest:
                return version
        return None

    def summary(self) -> dict[str, Any]:
        """What health and the retained `model` topic show."""
        return {
            "state": self.state.value,
            "serving": {"version": self.serving_version, "digest": self.serving_digest},
            "previous": {"version": self.previous_version, "digest": self.previous_digest},
            "installed": sorted(self.installed),
            "bad": sorted(self.bad),
            "highest": {"version": self.highest_version, "digest": self.highest_digest},
            "rollback_allowed": sorted(self.rollback_allowed),
            "variant": self.artifacts.get(self.serving_digest or "", {}).get("variant"),
            "signature": self.artifacts.get(self.serving_digest or "", {}).get("signature"),
            "last_error": self.last_error,
        }

    def accepted(self, version: int, digest: str) -> None:
        """`version` passed validation: it raises the rollback floor and uses up its allowance."""
        if self.highest_version is None or version > self.highest_version:
            self.highest_version, self.highest_digest = version, digest
        self.rollback_allowed.pop(digest, None)


class StateStore:
    """Loads and atomically saves one model's state file."""

    def __init__(self, model_base: Path) -> None:
        self.model_base = Path(model_base)
        self.path = self.model_base / STATE_FILE

    def load(self) -> ModelState:
        """The saved state; an empty one when there is none or it cannot be read (logged)."""
        self._remove_torn_writes()
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            return ModelState.from_json(doc)
        except FileNotFoundError:
            return ModelState()
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # Cannot happen through save(); a hand edit or a broken disk. Start from the folders.
            logger.error("model state %s unreadable (%s); starting from what is on disk", self.path, exc)
            return ModelState()

    def save(self, state: ModelState) -> None:
        self.model_base.mkdir(parents=True, exist_ok=True)
        state.updated_at = time.time()
        data = json.dumps(state.to_json(), indent=1, sort_keys=True).encode() + b"\n"
        atomic_write_bytes(self.path, data)

    def _remove_torn_writes(self) -> None:
        if not self.model_base.is_dir():
            return
        for leftover in self.model_base.glob(f"{STATE_FILE}.tmp-*"):
            logger.info("removing interrupted state write %s", leftover.name)
            try:
                leftover.unlink()
            except OSError:
                pass


def recover(state: ModelState, model_base: Path) -> ModelState:
    """Reconcile the state with the folders after a restart (no disk writes; caller saves)."""
    present = {v.version: v for v in list_versions(model_base)}
    if state.installing:
        version, digest = int(state.installing["version"]), str(state.installing["digest"])
        if version in present and version not in state.installed:
            # The rename happened (it is atomic) but the record did not: the folder is complete.
            state.installed[version] = digest
        state.installing = None
    state.installed = {v: d for v, d in state.installed.items() if v in present}
    state.artifacts = {d: a for d, a in state.artifacts.items() if d in state.installed.values()}
    if state.previous_version is not None and state.previous_version not in present:
        state.previous_version = state.previous_digest = None
    if state.highest_version is None and state.serving_version is not None:
        # a state file from before rollback protection: what serves is the floor
        state.highest_version, state.highest_digest = state.serving_version, state.serving_digest
    if state.state in INTERRUPTED:
        # Interrupted mid-rollout: what was serving (recorded) is what serves now.
        state.state = RolloutState.SERVING if state.serving_version is not None else RolloutState.IDLE
    return state


def choose_serving(state: ModelState, model_base: Path) -> ModelVersion | None:
    """The version to serve at startup: the recorded serving version if still complete; else the
    newest complete folder that is trusted: validated here, or placed by hand (not installed from
    the registry). A version installed but never validated (power cut before its switch) waits
    for the rollout manager to validate it; a known-bad digest is never picked."""
    present = list_versions(model_base)
    for candidate in present:
        if candidate.version == state.serving_version:
            return candidate

    def trusted(version: int) -> bool:
        digest = state.installed.get(version)
        return digest is None or (digest in state.validated and digest not in state.bad)

    good = [v for v in present if trusted(v.version)]
    return good[-1] if good else None
