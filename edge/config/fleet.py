"""The `[fleet]` and `[homeassistant]` config sections: desired state and Home Assistant.

Kept out of :mod:`edge.config.schema` (which includes them as ``GatewayConfig.fleet`` and
``GatewayConfig.homeassistant``) so each module stays small; nothing here imports the schema.

- ``[fleet]``: whether the gateway follows its retained desired state
  (``<prefix>/<device>/desired``, see :mod:`edge.device.desired`) and where it records the
  generation it accepted.
- ``[homeassistant]``: MQTT discovery, and how often the throttled Home Assistant states (top-1 per
  camera, snapshots) are published.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

logger = logging.getLogger(__name__)

_TOPIC_RE = re.compile(r"^[^#+\s]+(/[^#+\s]+)*$")
RESERVED_DEVICE_IDS = frozenset({"fleet"})  # <prefix>/fleet/… holds the fleet's rollout documents


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FleetConfig(_Strict):
    """Desired state from the fleet: a model reference + digest and a config revision, retained on the broker."""

    desired_state: bool = True
    # the generation accepted and what was done about it; default <model.store>/../desired-state.json
    state_file: Path | None = None

    @field_validator("state_file")
    @classmethod
    def _path(cls, v: Path | None) -> Path | None:
        if v is not None and ("\x00" in str(v) or len(str(v)) > 4096):
            raise ValueError("must be a path of at most 4096 characters without NUL")
        return v


def desired_state_file(fleet: FleetConfig, model_store: Path) -> Path:
    """Where the desired-state record lives: `fleet.state_file`, else beside the model store."""
    return fleet.state_file or model_store.parent / "desired-state.json"


class HomeAssistantConfig(_Strict):
    """Home Assistant MQTT discovery (device-based): online, model update, rollback, fps, top label/score and a
    snapshot per camera."""

    enabled: bool = False
    discovery_prefix: str = "homeassistant"
    # label/score per camera reach Home Assistant at most this often (its recorder keeps every state)
    score_interval_s: float = Field(default=10.0, ge=1.0, le=86_400)
    # a snapshot per camera (image entity) this often; 0 = never
    snapshot_interval_s: float = Field(default=60.0, ge=0.0, le=86_400)

    @field_validator("discovery_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not _TOPIC_RE.match(v):
            raise ValueError(f"must be topic levels without '#', '+', spaces or empty levels, got {v!r}")
        return v

    @field_validator("snapshot_interval_s")
    @classmethod
    def _snapshots(cls, v: float) -> float:
        if 0 < v < 5:
            raise ValueError("must be 0 (no snapshots) or at least 5 seconds (each one is a JPEG of up to 512 KiB)")
        return v
