"""Device command handlers: `ping`, `config`, `snapshot`, `restart-camera`, `trust` (deploy/rollback: edge.app.model_updates).

Payloads and results (all replies are ``{"ok", "command", "result" | "error"}``, see
:mod:`edge.transport.commands`):

- ``ping {}`` -> ``{"device", "uptime_s", "state", "model": {"name", "version", "state"},
  "cameras": [{"name", "state", "fps", "size", "rois"}], "results": {"publish", "min_score", "top_k"},
  "health_interval_s", "commands", "command_sensitivity": {name: class}, "trust": {"root", "root_version",
  "counter"}}``
- ``config {"patch": {...}}`` -> ``{"applied": "live" | "restart" | "none", "changed": [keys],
  "restart_keys": [keys], "persisted": path, "backup": path}``; see :mod:`edge.config.patch`.
  A patch touching a trust anchor (:mod:`edge.config.trust_keys`) is refused (event
  `config_refused` with the keys) unless sent as ``config {"signed": <config-patch document>}``,
  the patch then being the document's ``content.patch``.
- ``trust {"signed": <root-rotation document>}`` -> ``{"root", "root_version", "counter"}``: the
  fleet root key rotated (event `trust_root_rotated`); documents signed by the old key are refused
  from then on.
- ``snapshot {"camera": name}`` -> ``{"camera", "frame", "captured_at", "age_s", "width", "height",
  "scaled", "labels": [{"roi", "top": [{"label", "score"}]}], "content_type": "image/jpeg",
  "jpeg_base64"}``: the camera's most recently classified frame with its top labels drawn; the JPEG
  is at most :data:`edge.inference.snapshots.MAX_SNAPSHOT_BYTES` (quality lowered, then the image
  halved, until it fits).
- ``restart-camera {"camera": name}`` -> ``{"camera", "reconnects_before"}`` (the camera drops its
  connection and reconnects at once: `camera_offline` then `camera_online` events).

The handlers get what they read and change passed in (:class:`DeviceContext`); they never see the
gateway object.
"""
from __future__ import annotations

import base64
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from camera.live import LiveCamera
from edge.config.patch import LiveConfig, PatchOutcome
from edge.errors import EXIT_RESTART, CommandError, PatchError, SignedDocumentError, TrustError
from edge.inference.snapshots import SnapshotTap, render_snapshot
from edge.util.signed import DocType
from edge.util.trustroot import Sensitivity, TrustRoot

logger = logging.getLogger(__name__)


Handler = Callable[[dict[str, Any]], dict[str, Any]]


class CommandRegistry(Protocol):
    """Where commands are registered (:class:`edge.transport.commands.CommandRouter`)."""

    @property
    def names(self) -> list[str]: ...

    def register(self, name: str, handler: Handler, fields: dict[str, type | tuple[type, ...]] | None = None,
                 required: tuple[str, ...] = (), *, sensitivity: Sensitivity) -> None: ...

    def classification(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class DeviceStatus:
    """What `ping` reports about the running gateway."""

    state: str  # ok | degraded | starting | waiting-for-model
    model_version: int | None
    model_state: str | None  # the rollout state, when a registry is configured


@dataclass(frozen=True)
class DeviceContext:
    """Everything the device commands read or change, handed over by the app."""

    config: LiveConfig
    cameras: Sequence[LiveCamera]
    snapshots: SnapshotTap
    status: Callable[[], DeviceStatus]
    apply_live: Callable[[PatchOutcome], None]  # cameras, result settings, log level
    request_restart: Callable[[str], None]
    emit: Callable[[str, dict[str, Any]], None]
    started_mono: float
    trust: TrustRoot


class DeviceCommands:
    """The gateway's own commands, registered on its CommandRouter."""

    def __init__(self, context: DeviceContext) -> None:
        self._ctx = context
        self._names: Callable[[], list[str]] = list
        self._classes: Callable[[], dict[str, str]] = dict

    def register(self, router: CommandRegistry) -> None:
        router.register("ping", self.ping, {}, sensitivity=Sensitivity.READ_ONLY)
        router.register("config", self.config, {"patch": dict, "signed": dict}, sensitivity=Sensitivity.OPERATIONAL)
        router.register("snapshot", self.snapshot, {"camera": str}, required=("camera",),
                        sensitivity=Sensitivity.READ_ONLY)
        router.register("restart-camera", self.restart_camera, {"camera": str}, required=("camera",),
                        sensitivity=Sensitivity.OPERATIONAL)
        router.register("trust", self.trust, {}, sensitivity=Sensitivity.SENSITIVE)
        self._names = lambda: router.names
        self._classes = router.classification

    def _camera(self, name: str) -> LiveCamera:
        for cam in self._ctx.cameras:
            if cam.name == name:
                return cam
        known = ", ".join(c.name for c in self._ctx.cameras)
        raise CommandError(f"camera: unknown camera {name!r} (known: {known})")

    def ping(self, payload: dict[str, Any]) -> dict[str, Any]:
        cfg = self._ctx.config.current
        status = self._ctx.status()
        model: dict[str, Any] = {"name": cfg.model.name, "version": status.model_version}
        if status.model_state is not None:
            model["state"] = status.model_state
        return {
            "device": cfg.device_id,
            "uptime_s": round(time.monotonic() - self._ctx.started_mono, 1),
            "state": status.state,
            "model": model,
            "cameras": [{"name": c.name, "state": c.state, "fps": c.settings.target_fps,
                         "size": list(c.settings.size) if c.settings.size else None,
                         "rois": [r.name for r in c.rois]} for c in self._ctx.cameras],
            "results": {"publish": cfg.results.publish, "min_score": cfg.results.min_score,
                        "top_k": cfg.model.top_k},
            "health_interval_s": cfg.health.interval_s,
            "commands": self._names(),
            "command_sensitivity": self._classes(),
            "trust": self._ctx.trust.status(),
        }

    def config(self, payload: dict[str, Any]) -> dict[str, Any]:
        if ("patch" in payload) == ("signed" in payload):
            raise CommandError("config needs either {\"patch\": {...}} or {\"signed\": <a config-patch document "
                               "signed by the fleet root key>} (the patch is then inside the document)")
        trust, signed = self._ctx.trust, None
        try:
            if "signed" in payload:
                signed = trust.verify(payload["signed"], DocType.CONFIG_PATCH)
            patch = payload["patch"] if signed is None else signed.content["patch"]
            # a signed patch: the document is recorded as used once the patch validated, before it is written
            outcome = self._ctx.config.patch(patch, None if signed is None else functools.partial(trust.accept, signed))
        except TrustError as exc:
            self._ctx.emit("config_refused", {"keys": list(exc.keys), "signed": False,
                                              "reason": "unsigned change to trust anchors"})
            raise CommandError(str(exc)) from None
        except SignedDocumentError as exc:
            self._ctx.emit("config_refused", {"keys": [], "signed": True, "reason": str(exc)})
            raise CommandError(f"signed config patch refused: {exc}; nothing changed") from None
        except PatchError as exc:
            raise CommandError(str(exc)) from None
        if signed is not None:
            self._ctx.emit("signed_document_accepted", {"command": "config", **signed.describe(),
                                                        "changed": outcome.changed, "applied": outcome.applied})
        if outcome.applied == "restart":
            logger.warning("config patch needs a restart (%s); exiting with status %d",
                           ", ".join(outcome.restart_keys), EXIT_RESTART)
            self._ctx.request_restart(f"config changed: {', '.join(outcome.restart_keys)}")
        elif outcome.applied == "live":
            self._ctx.apply_live(outcome)
            logger.info("config applied live: %s", ", ".join(outcome.changed))
            self._ctx.emit("config_changed", {"changed": outcome.changed, "applied": "live"})
        return outcome.reply()

    def snapshot(self, payload: dict[str, Any]) -> dict[str, Any]:
        camera = self._camera(payload["camera"])
        seen = self._ctx.snapshots.last(camera.name)
        if seen is None:
            raise CommandError(f"camera {camera.name!r} has no classified frame yet (state {camera.state})")
        data, width, height, scaled, labels = render_snapshot(seen)
        return {"camera": camera.name, "frame": seen.number, "captured_at": round(seen.captured_wall, 3),
                "age_s": round(max(0.0, time.time() - seen.captured_wall), 3), "width": width, "height": height,
                "scaled": scaled, "labels": labels, "content_type": "image/jpeg", "bytes": len(data),
                "jpeg_base64": base64.b64encode(data).decode("ascii")}

    def restart_camera(self, payload: dict[str, Any]) -> dict[str, Any]:
        camera = self._camera(payload["camera"])
        before = camera.stats().reconnects
        camera.restart()
        return {"camera": camera.name, "reconnects_before": before}

    def trust(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Rotate the fleet root key (a root-rotation document signed by the current and the new key)."""
        trust = self._ctx.trust
        try:
            doc = trust.verify(payload["signed"], DocType.ROOT_ROTATION)
            trust.accept(doc)
        except SignedDocumentError as exc:
            self._ctx.emit("signed_document_refused", {"command": "trust", "reason": str(exc)})
            raise CommandError(f"root rotation refused: {exc}; nothing changed") from None
        status = trust.status()
        logger.warning("fleet root key rotated to %s (root version %d)", status["root"], status["root_version"])
        self._ctx.emit("trust_root_rotated", {**doc.describe(), "root": status["root"],
                                              "root_version": status["root_version"]})
        return status
