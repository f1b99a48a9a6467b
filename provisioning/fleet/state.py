"""What the fleet's retained topics say about each device, and selecting devices by name or glob."""
from __future__ import annotations

import fnmatch
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from edge.errors import UsageError
from provisioning.fleet.client import FleetClient
from provisioning.ui import styled

logger = logging.getLogger(__name__)

STATE_TOPICS = ("status", "health", "model", "reported")



@dataclass
class DeviceView:
    """What the retained topics say about one device."""

    device: str
    status: str | None = None
    health: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)  # desired-state progress (docs/fleet.md)

    @property
    def online(self) -> bool:
        return self.status == "online"

    @property
    def version(self) -> int | None:
        serving = self.model.get("serving") if isinstance(self.model.get("serving"), dict) else {}
        if serving.get("version") is not None:
            return serving["version"]
        return (self.health.get("model") or {}).get("version")

    @property
    def digest(self) -> str | None:
        serving = self.model.get("serving") if isinstance(self.model.get("serving"), dict) else {}
        return serving.get("digest")

    @property
    def fps(self) -> float | None:
        cams = self.health.get("cameras")
        if not isinstance(cams, list) or not cams:
            return None
        return round(sum(float(c.get("process_fps") or 0.0) for c in cams if isinstance(c, dict)), 2)

    @property
    def state(self) -> str | None:
        return self.health.get("state")

    @property
    def last_seen(self) -> float | None:
        ts = self.health.get("ts")
        return float(ts) if isinstance(ts, (int, float)) else None

    @property
    def desired(self) -> str | None:
        """`<state> (generation N)` of the retained `reported` document, when the device has desired state."""
        if not self.reported or not self.reported.get("generation"):
            return None
        return f"{self.reported.get('state')} (generation {self.reported.get('generation')})"

    def row(self) -> dict[str, Any]:
        return {"device": self.device, "online": self.online, "status": self.status, "model_version": self.version,
                "model_digest": self.digest, "model_state": self.model.get("state"), "fps": self.fps,
                "state": self.state, "last_seen": self.last_seen, "desired": self.desired}


def fleet_state(client: FleetClient, device: str = "+", timeout_s: float = 30.0) -> dict[str, DeviceView]:
    """Device id -> DeviceView from the retained state topics."""
    filters = [client.topic(device, t) for t in STATE_TOPICS]
    views: dict[str, DeviceView] = {}
    for topic, payload in client.retained(filters, timeout_s=timeout_s).items():
        name = client.device_of(topic)
        if name is None:
            continue
        view = views.setdefault(name, DeviceView(name))
        kind = topic.rsplit("/", 1)[-1]
        if kind == "status":
            view.status = payload.decode("utf-8", "replace")
            continue
        try:
            doc = json.loads(payload)
        except ValueError:
            logger.warning("ignoring unreadable %s", topic)
            continue
        if isinstance(doc, dict):
            setattr(view, kind, doc)
    return dict(sorted(views.items()))


def select_devices(selector: str, known: list[str]) -> list[str]:
    """`all`, a glob (`gate-*`) or a comma list of names and globs -> the matching known devices."""
    selector = selector.strip()
    if not selector:
        raise UsageError("--devices/--device must not be empty (use 'all', a glob such as 'gate-*', or a comma list)")
    if selector == "all":
        return sorted(known)
    chosen: set[str] = set()
    for part in (p.strip() for p in selector.split(",")):
        if part:
            chosen.update(fnmatch.filter(known, part))
    return sorted(chosen)


def _ago(ts: float | None) -> str:
    if ts is None:
        return "-"
    age = max(0.0, time.time() - ts)
    return f"{age:.0f}s ago" if age < 120 else f"{age / 60:.0f}m ago" if age < 7200 else f"{age / 3600:.0f}h ago"


def ls_table(views: dict[str, DeviceView]) -> Table:
    table = Table(title=f"{len(views)} device(s)", title_justify="left")
    desired = any(view.desired for view in views.values())  # a column only when the fleet uses desired state
    for column in ("device", "online", "model version", "fps", "state", "last seen", *(["desired"] if desired else [])):
        table.add_column(column, justify="right" if column in ("fps", "model version") else "left")
    for view in views.values():
        online = styled("online" if view.online else "offline") + ("" if view.status in ("online", "offline", None)
                                                                     else f" ({view.status})")
        table.add_row(view.device, online, "-" if view.version is None else str(view.version),
                      "-" if view.fps is None else f"{view.fps:.1f}", styled(view.state), _ago(view.last_seen),
                      *([view.desired or "-"] if desired else []))
    return table
