"""Gateway config files for tests: `CameraSpec` and `render_config` (TOML text for `edge-gateway`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from provisioning.device.init import toml_value  # the TOML scalars `edgectl init` writes


@dataclass
class CameraSpec:
    name: str
    source: str
    fps: float = 10.0
    extra: dict[str, object] = field(default_factory=dict)


def toml_inline(value: object) -> str:
    """`toml_value`, with tables inline (``rois = [{name = "door", x = 20, ...}]``)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_inline(v) for v in value) + "]"
    return toml_value(value)


def render_config(
    device_id: str,
    cameras: list[CameraSpec],
    model_store: Path,
    model_name: str,
    broker_url: str,
    spool_path: Path,
    health_interval_s: float = 1.0,
    keepalive_s: int = 3,
    extra_sections: str = "",
    max_batch_size: int = 4,
    serving: dict[str, object] | None = None,
    status_file: Path | None = None,
) -> str:
    lines = [f'device_id = "{device_id}"', 'log_level = "info"', ""]
    for cam in cameras:
        lines += ["[[cameras]]", f'name = "{cam.name}"', f"source = {toml_value(cam.source)}", f"fps = {cam.fps}"]
        lines += [f"{k} = {toml_inline(v)}" for k, v in cam.extra.items()]
        lines.append("")
    lines += [
        "[model]", f'name = "{model_name}"', f"store = {toml_value(str(model_store))}", "",
        "[serving]", f"max_batch_size = {max_batch_size}", "max_wait_ms = 5",
        *[f"{k} = {toml_value(v)}" for k, v in (serving or {}).items()], "",
        "[mqtt]", f'url = "{broker_url}"', f"keepalive_s = {keepalive_s}", "",
        "[spool]", f"path = {toml_value(str(spool_path))}", 'sync = "normal"', "",
        "[health]", f"interval_s = {health_interval_s}",
        f"status_file = {toml_value(str(status_file or spool_path.with_name(spool_path.stem + '-status.json')))}", "",
        extra_sections,
    ]
    return "\n".join(lines)
