"""Device command handlers: `ping`, `config`, `snapshot`, `restart-camera` (deploy/rollback: model_updates).

Payloads and results (all replies are ``{"ok", "command", "result" | "error"}``, see edge/fleet.py):

- ``ping {}`` -> ``{"device", "uptime_s", "state", "model": {"name", "version", "state"},
  "cameras": [{"name", "state", "fps", "size", "rois"}], "results": {"publish", "min_score", "top_k"},
  "health_interval_s", "commands"}``
- ``config {"patch": {...}}`` -> ``{"applied": "live" | "restart" | "none", "changed": [keys],
  "restart_keys": [keys], "persisted": path, "backup": path}``; see edge/live_config.py.
- ``snapshot {"camera": name}`` -> ``{"camera", "frame", "captured_at", "age_s", "width", "height",
  "scaled", "labels": [{"roi", "top": [{"label", "score"}]}], "content_type": "image/jpeg",
  "jpeg_base64"}``: the camera's most recently classified frame with its top labels drawn; the JPEG
  is at most :data:`MAX_SNAPSHOT_BYTES` (quality lowered, then the image halved, until it fits).
- ``restart-camera {"camera": name}`` -> ``{"camera", "reconnects_before"}`` (the camera drops its
  connection and reconnects at once: `camera_offline` then `camera_online` events).
"""
from __future__ import annotations

import base64
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from camera.live import LiveCamera
from edge.config.patch import (
    changed_keys,
    dotted,
    needs_restart,
    persist,
    validate_patch,
)
from edge.errors import EXIT_RESTART, CommandError, PatchError
from edge.inference.snapshots import render_snapshot
from edge.transport.commands import CommandRouter

if TYPE_CHECKING:
    from edge.app.gateway import Gateway

logger = logging.getLogger(__name__)


class DeviceCommands:
    """The gateway's own commands, registered on its CommandRouter."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._config_lock = threading.Lock()

    def register(self, router: CommandRouter) -> None:
        router.register("ping", self.ping, {})
        router.register("config", self.config, {"patch": dict}, required=("patch",))
        router.register("snapshot", self.snapshot, {"camera": str}, required=("camera",))
        router.register("restart-camera", self.restart_camera, {"camera": str}, required=("camera",))

    def _camera(self, name: str) -> LiveCamera:
        for cam in self.gateway.cameras:
            if cam.name == name:
                return cam
        known = ", ".join(c.name for c in self.gateway.cameras)
        raise CommandError(f"camera: unknown camera {name!r} (known: {known})")

    # -- ping --------------------------------------------------------------------------------

    def ping(self, payload: dict[str, Any]) -> dict[str, Any]:
        gw = self.gateway
        cfg = gw.config
        version = None
        if gw.pipeline is not None:
            try:
                version = gw.pipeline.classifier.info.version
            except Exception:
                version = None
        state = "starting"
        if gw.pipeline is not None and gw.publisher is not None:
            try:
                state = gw.health_snapshot()["state"]
            except Exception as exc:
                state = f"unknown ({exc})"
        elif gw.health.waiting_for_model:
            state = "waiting-for-model"
        model: dict[str, Any] = {"name": cfg.model.name, "version": version}
        if gw.updates is not None:
            model["state"] = gw.updates.summary().get("state")
        return {
            "device": cfg.device_id,
            "uptime_s": round(time.monotonic() - gw.health.started_mono, 1),
            "state": state,
            "model": model,
            "cameras": [{"name": c.name, "state": c.state, "fps": c.settings.target_fps,
                         "size": list(c.settings.size) if c.settings.size else None,
                         "rois": [r.name for r in c.rois]} for c in gw.cameras],
            "results": {"publish": cfg.results.publish, "min_score": cfg.results.min_score,
                        "top_k": cfg.model.top_k},
            "health_interval_s": cfg.health.interval_s,
            "commands": gw.commands.names,
        }

    # -- config ------------------------------------------------------------------------------

    def config(self, payload: dict[str, Any]) -> dict[str, Any]:
        gw = self.gateway
        if gw.config_path is None:
            raise CommandError("this gateway was started without a config file; config patches are unavailable")
        with self._config_lock:
            try:
                document, new = validate_patch(gw.config_path, payload["patch"])
            except PatchError as exc:
                raise CommandError(str(exc)) from None
            old = gw.config
            paths = changed_keys(old, new)
            if not paths:
                return {"applied": "none", "changed": [], "restart_keys": []}
            restart_keys = needs_restart(old, paths)
            changed = sorted({dotted(p, old) for p in paths})
            try:
                backup = persist(gw.config_path, document)
            except PatchError as exc:
                raise CommandError(str(exc)) from None
            result = {"changed": changed, "restart_keys": restart_keys, "persisted": str(gw.config_path),
                      "backup": str(backup)}
            if restart_keys:
                logger.warning("config patch needs a restart (%s); exiting with status %d",
                               ", ".join(restart_keys), EXIT_RESTART)
                gw.request_restart(f"config changed: {', '.join(restart_keys)}")
                return {"applied": "restart", "exit_status": EXIT_RESTART, **result}
            self._apply_live(old, new, paths)
            gw.emit("config_changed", {"changed": changed, "applied": "live"})
            return {"applied": "live", **result}

    def _apply_live(self, old: Any, new: Any, paths: list[tuple[str, ...]]) -> None:
        import logging as _logging

        from edge.app.wiring import capture_settings

        gw = self.gateway
        gw.config = new
        cameras = sorted({int(p[1]) for p in paths if p[0] == "cameras"})
        settings = capture_settings(new)
        for index in cameras:
            gw.cameras[index].reconfigure(settings[index])
        publisher = gw.publisher
        if publisher is not None:  # not serving yet: it is built from gw.config when it starts
            publisher.reconfigure(k=new.model.top_k, on_change_only=new.results.publish == "on_change",
                                  min_score=new.results.min_score)
        if ("log_level",) in paths:
            _logging.getLogger().setLevel(new.log_level.upper())
        logger.info("config applied live: %s", ", ".join(dotted(p, old) for p in paths))

    # -- snapshot ----------------------------------------------------------------------------

    def snapshot(self, payload: dict[str, Any]) -> dict[str, Any]:
        camera = self._camera(payload["camera"])
        tap = self.gateway.snapshots
        seen = tap.last(camera.name) if tap is not None else None
        if seen is None:
            raise CommandError(f"camera {camera.name!r} has no classified frame yet (state {camera.state})")
        data, width, height, scaled, labels = render_snapshot(seen)
        return {"camera": camera.name, "frame": seen.number, "captured_at": round(seen.captured_wall, 3),
                "age_s": round(max(0.0, time.time() - seen.captured_wall), 3), "width": width, "height": height,
                "scaled": scaled, "labels": labels, "content_type": "image/jpeg", "bytes": len(data),
                "jpeg_base64": base64.b64encode(data).decode("ascii")}

    # -- restart-camera ----------------------------------------------------------------------

    def restart_camera(self, payload: dict[str, Any]) -> dict[str, Any]:
        camera = self._camera(payload["camera"])
        before = camera.stats().reconnects
        camera.restart()
        return {"camera": camera.name, "reconnects_before": before}
