"""Config changes at run time: JSON merge-patch, strict validation, live apply or persist + restart.

`cmd/config {"patch": {...}}` carries an RFC 7396 JSON merge-patch of the gateway's TOML document,
with one extension: ``"cameras"`` may be an object keyed by camera name, which merge-patches that
camera's table (``{"cameras": {"front": {"fps": 2}}}``); an array replaces the whole list (RFC
semantics). The patched document is validated with the same strict model as the config file
(`edge.config.parse_config`) BEFORE anything changes; a refused patch changes nothing.

An accepted patch is always persisted (temp file + fsync + rename, the previous file kept as
``<config>.bak``), so a later restart keeps it. Then:

- **live** when every change is one of: a camera's settings (that camera is restarted with new
  CaptureSettings; names and order of cameras unchanged), ``results.publish``,
  ``results.min_score``, ``model.top_k``, ``health.interval_s``, ``log_level``;
- **restart** otherwise: the gateway replies, publishes retained ``restarting`` on `status`, shuts
  down cleanly and exits with :data:`EXIT_RESTART` (75); the unit restarts it with
  ``RestartForceExitStatus=75`` (and ``SuccessExitStatus=75`` so it is not logged as a failure).
  The change is pending until that start succeeds; a start that fails puts the previous file back
  (:mod:`edge.config.pending`, event ``config_reverted``).

If the config file cannot be written the patch is refused and nothing changes.

**Trust anchors** (:mod:`edge.config.trust_keys`: registry, broker, credentials, paths, the fleet
root, the device identity...) are checked first, on the document as written and again on the
validated config: a patch that touches one is refused with :class:`~edge.errors.TrustError`
(nothing read further, nothing written) unless the caller vouches for it with `authorise`, which
the device commands pass only for a patch carried by a valid signed document. `authorise` runs
(and records the document's counter) before the file is written.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from edge.config.loader import parse_config
from edge.config.pending import mark_pending
from edge.config.schema import GatewayConfig
from edge.config.trust_keys import is_live, touched_anchors
from edge.errors import EXIT_RESTART, ConfigError, PatchError, TrustError
from edge.util.fsutil import atomic_write_bytes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

logger = logging.getLogger(__name__)

SIGN_HOWTO = ("sign it with `edgectl trust sign config --key FLEET_ROOT_KEY --device DEVICE --patch PATCH` "
              "and send {\"signed\": <document>} to cmd/config (docs/threat-model.md)")


# -- merge patch ---------------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def apply_patch(document: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`merge_patch`, plus cameras addressed by name (see the module docstring)."""
    patch = dict(patch)
    cameras_patch = patch.pop("cameras", None) if isinstance(patch.get("cameras"), dict) else None
    merged = merge_patch(document, patch)
    if cameras_patch is not None:
        cameras = [dict(c) for c in document.get("cameras", []) if isinstance(c, dict)]
        by_name = {c.get("name"): i for i, c in enumerate(cameras)}
        unknown = sorted(str(n) for n in cameras_patch if n not in by_name)
        if unknown:
            raise PatchError(f"cameras: unknown camera(s) {unknown} (known: {', '.join(map(str, by_name))}); "
                             "to add a camera send the whole cameras array")
        for name, camera_patch in cameras_patch.items():
            if camera_patch is None:
                cameras[by_name[name]] = None  # type: ignore[call-overload]
            elif not isinstance(camera_patch, dict):
                raise PatchError(f"cameras.{name}: must be an object (a merge-patch of that camera) or null")
            else:
                if camera_patch.get("name", name) != name:
                    raise PatchError(f"cameras.{name}.name: a camera cannot be renamed by patch; "
                                     "send the whole cameras array")
                cameras[by_name[name]] = merge_patch(cameras[by_name[name]], camera_patch)
        merged["cameras"] = [c for c in cameras if c is not None]
    return cast(dict[str, Any], merged)


# -- TOML out ----------------------------------------------------------------------------------

def _toml_scalar(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return "[" + ", ".join(_toml_scalar(v, where) for v in value) + "]"
    raise PatchError(f"{where}: cannot be written to TOML ({type(value).__name__})")


def _toml_table(doc: dict[str, Any], path: list[str], out: list[str]) -> None:
    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    arrays = {k: v for k, v in doc.items() if isinstance(v, list) and v and all(isinstance(i, dict) for i in v)}
    for key, value in doc.items():
        if key not in tables and key not in arrays:
            out.append(f"{_toml_key(key)} = {_toml_scalar(value, '.'.join([*path, key]))}")
    for key, value in tables.items():
        out += ["", f"[{'.'.join(_toml_key(p) for p in [*path, key])}]"]
        _toml_table(value, [*path, key], out)
    for key, items in arrays.items():
        for item in items:
            out += ["", f"[[{'.'.join(_toml_key(p) for p in [*path, key])}]]"]
            _toml_table(item, [*path, key], out)


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) else json.dumps(key)


def to_toml(doc: dict[str, Any]) -> str:
    """A TOML document for a parsed config (comments of the original file are not kept; `.bak` has them)."""
    out: list[str] = ["# written by edge-gateway (cmd/config); the previous file is kept as .bak"]
    _toml_table(doc, [], out)
    return "\n".join(out) + "\n"


# -- change classification --------------------------------------------------------------------

def changed_keys(old: GatewayConfig, new: GatewayConfig) -> list[tuple[str, ...]]:
    """Dotted paths (as tuples) whose values differ; cameras compared per index."""
    return document_changes(old.model_dump(mode="json"), new.model_dump(mode="json"))


def document_changes(a: Any, b: Any) -> list[tuple[str, ...]]:
    """Paths where two config documents differ: tables recursed (a table added as the keys it holds),
    cameras per index when the list keeps its length, anything else (values, other lists, a table
    removed) compared whole."""
    paths: list[tuple[str, ...]] = []

    def walk(x: Any, y: Any, path: tuple[str, ...]) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y)):
                walk(x.get(key), y.get(key), (*path, key))
        elif x is None and isinstance(y, dict) and y:
            walk({}, y, path)  # a table added: the keys it holds (the validated configs are compared too)
        elif path == ("cameras",) and isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (cx, cy) in enumerate(zip(x, y)):
                walk(cx, cy, (*path, str(i)))
        elif x != y:
            paths.append(path)

    walk(a, b, ())
    return paths


def needs_restart(old: GatewayConfig, paths: list[tuple[str, ...]]) -> list[str]:
    """The changed keys that cannot be applied to the running gateway (see trust_keys.KEYS)."""
    return [dotted(path, old) for path in paths if not is_live(path)]


def refuse_anchors(paths: list[tuple[str, ...]]) -> None:
    """TrustError naming the trust anchors among `paths`, if any."""
    anchors = touched_anchors(paths)
    if anchors:
        raise TrustError(f"refused: {', '.join(anchors)} {'is a trust anchor' if len(anchors) == 1 else 'are trust anchors'}"
                         f"; a remote change to {'it' if len(anchors) == 1 else 'them'} needs a document signed by "
                         f"the fleet root key: {SIGN_HOWTO}. Nothing was changed", tuple(anchors))


def dotted(path: tuple[str, ...], config: GatewayConfig) -> str:
    if len(path) >= 2 and path[0] == "cameras" and path[1].isdigit():
        return f"cameras.{config.cameras[int(path[1])].name}" + "".join(f".{p}" for p in path[2:])
    return ".".join(path)


# -- the camera slot that can be reconfigured --------------------------------------------------


# -- reading and writing the config file ------------------------------------------------------

def read_document(path: Path) -> dict[str, Any]:
    try:
        document: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PatchError(f"cannot read the config file {path}: {exc}") from None
    return document


def validate_patch(path: Path, patch: dict[str, Any]) -> tuple[dict[str, Any], GatewayConfig]:
    """(patched document, validated config) or PatchError naming the key."""
    document = apply_patch(read_document(path), patch)
    try:
        return document, parse_config(document, "patch")
    except ConfigError as exc:
        raise PatchError(str(exc)) from None


def persist(path: Path, document: dict[str, Any]) -> Path:
    """Write `document` over `path` atomically, keeping the current file as `<path>.bak`."""
    backup = path.with_name(path.name + ".bak")
    text = to_toml(document)
    try:
        if tomllib.loads(text) != document:  # never write a file that would read back differently
            raise PatchError("internal error: the patched config does not round-trip through TOML")
        atomic_write_bytes(backup, path.read_bytes())
        atomic_write_bytes(path, text.encode("utf-8"))
    except OSError as exc:
        raise PatchError(f"cannot write the config file {path}: {exc.strerror or exc}; nothing changed") from None
    return backup


# -- the running gateway's config ----------------------------------------------------------------

@dataclass(frozen=True)
class PatchOutcome:
    """What a patch did: nothing, a live change, or a change that needs a restart (already persisted)."""

    applied: str  # "none" | "live" | "restart"
    old: GatewayConfig
    new: GatewayConfig
    paths: list[tuple[str, ...]] = field(default_factory=list)  # changed keys, cameras by index
    changed: list[str] = field(default_factory=list)  # changed keys, cameras by name
    restart_keys: list[str] = field(default_factory=list)
    persisted: Path | None = None
    backup: Path | None = None

    def reply(self) -> dict[str, Any]:
        """The `cmd/config` result document."""
        doc: dict[str, Any] = {"applied": self.applied, "changed": self.changed, "restart_keys": self.restart_keys}
        if self.persisted is not None:
            doc.update(persisted=str(self.persisted), backup=str(self.backup))
        if self.applied == "restart":
            doc["exit_status"] = EXIT_RESTART
        return doc


class LiveConfig:
    """The running gateway's validated config and the file it came from; patches go through here.

    `current` changes only by a live patch; a patch that needs a restart is persisted and leaves
    `current` as it is (the restarted gateway reads the file)."""

    def __init__(self, config: GatewayConfig, path: Path | None) -> None:
        self._current = config
        self.path = path
        self._lock = threading.Lock()

    @property
    def current(self) -> GatewayConfig:
        return self._current

    def patch(self, patch: dict[str, Any], authorise: Callable[[], None] | None = None) -> PatchOutcome:
        """Validate `patch` in full, persist it, and say how it applies; PatchError changes nothing.

        Without `authorise` a patch touching a trust anchor raises TrustError before it is even
        validated. With it (a signed document vouches for the patch), `authorise()` is called once
        the patch is known to be valid and before anything is written; if it raises, nothing changes."""
        if self.path is None:
            raise PatchError("this gateway was started without a config file; config patches are unavailable")
        with self._lock:
            before = read_document(self.path)
            document = apply_patch(before, patch)
            if authorise is None:
                refuse_anchors(document_changes(before, document))
            try:
                new = parse_config(document, "patch")
            except ConfigError as exc:
                raise PatchError(str(exc)) from None
            old = self._current
            paths = changed_keys(old, new)
            if authorise is None:
                refuse_anchors(paths)  # also what defaults change, e.g. a whole section removed
            else:
                authorise()
            if not paths:
                return PatchOutcome("none", old, old)
            restart_keys = needs_restart(old, paths)
            changed = sorted({dotted(p, old) for p in paths})
            backup = persist(self.path, document)
            applied = "restart" if restart_keys else "live"
            if applied == "live":
                self._current = new
            else:  # proven only once the gateway has started with it (else put back: edge.config.pending)
                mark_pending(self.path, backup, changed)
            return PatchOutcome(applied, old, new, paths, changed, restart_keys, self.path, backup)
