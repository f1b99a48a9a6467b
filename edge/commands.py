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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from edge.fleet import CommandError, CommandRouter
from edge.live_config import (EXIT_RESTART, LiveCamera, PatchError, changed_keys, dotted, needs_restart, persist,
                              validate_patch)

if TYPE_CHECKING:
    from edge.gateway import Gateway
    from edge.pipeline import ClassifiedBatch

logger = logging.getLogger(__name__)

MAX_SNAPSHOT_BYTES = 512 * 1024
SNAPSHOT_LABELS = 3


@dataclass(frozen=True)
class _Seen:
    """References into the last classified batch of one camera (no copies on the inference thread)."""

    image: np.ndarray
    number: int
    captured_wall: float
    rows: tuple[tuple[str | None, np.ndarray, tuple[int, int, int, int] | None], ...]  # (roi, scores, box)
    labels: Sequence[str]


class SnapshotTap:
    """Sits between the pipeline and the result publisher and remembers each camera's last frame."""

    def __init__(self, deliver: Callable[[ClassifiedBatch], None]) -> None:
        self._deliver = deliver
        self._seen: dict[str, _Seen] = {}

    def __call__(self, batch: ClassifiedBatch) -> None:
        per_camera: dict[str, list[Any]] = {}
        frames: dict[str, Any] = {}
        for row, item in enumerate(batch.items):
            frames[item.frame.camera] = item.frame
            box = None
            if item.roi is not None:
                box = _roi_box(item.frame.image, item.image)
            per_camera.setdefault(item.frame.camera, []).append((item.roi, batch.scores[row], box))
        for camera, rows in per_camera.items():
            frame = frames[camera]
            self._seen[camera] = _Seen(frame.image, frame.number, frame.captured_wall, tuple(rows), batch.labels)
        self._deliver(batch)

    def last(self, camera: str) -> _Seen | None:
        return self._seen.get(camera)


def _roi_box(full: np.ndarray, view: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of a numpy view inside its frame, from the memory offsets; None if not a view."""
    try:
        offset = view.__array_interface__["data"][0] - full.__array_interface__["data"][0]
        y, rest = divmod(offset, full.strides[0])
        x = rest // full.strides[1]
        return int(x), int(y), int(view.shape[1]), int(view.shape[0])
    except Exception:
        return None


def _top(scores: np.ndarray, labels: Sequence[str], k: int) -> list[dict[str, Any]]:
    order = np.argsort(-scores)[:k]
    return [{"label": labels[i] if 0 <= i < len(labels) else str(int(i)), "score": round(float(scores[i]), 4)}
            for i in order.tolist()]


def render_snapshot(seen: _Seen, max_bytes: int = MAX_SNAPSHOT_BYTES) -> tuple[bytes, int, int, bool, list]:
    """JPEG bytes (<= max_bytes), width, height, scaled?, the labels drawn."""
    import cv2

    image = seen.image.copy()
    drawn = []
    y_text = 0
    for roi, scores, box in seen.rows:
        top = _top(scores, seen.labels, SNAPSHOT_LABELS)
        drawn.append({"roi": roi, "top": top})
        x0, y0 = 4, 0
        if box is not None:
            x, y, w, h = box
            cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), (0, 255, 255), 2)
            x0, y0 = x + 4, y
        for entry in top:
            y_text = (y0 if box is not None else y_text) + 18
            if box is not None:
                y0 = y_text
            text = f"{roi + ': ' if roi else ''}{entry['label']} {entry['score']:.2f}"
            cv2.putText(image, text, (x0, y_text), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(image, text, (x0, y_text), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    scaled = False
    quality = 85
    while True:
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise CommandError("could not encode the snapshot as JPEG")
        data = encoded.tobytes()
        if len(data) <= max_bytes or min(image.shape[:2]) < 32:
            return data, int(image.shape[1]), int(image.shape[0]), scaled, drawn
        if quality > 50:
            quality -= 15
        else:
            image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
            scaled = True


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

        from edge.factory import capture_settings

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
