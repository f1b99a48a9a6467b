"""Derive a part's frozen settings dataclass from a validated config section, field by name.

Each package declares the settings it consumes (``camera.CaptureSettings``,
``edge.transport.mqtt.MqttSettings``, ``edge.rollout.policy.RolloutSettings``) and never sees the
config schema. Copying fields one by one in the wiring meant touching three places per new key;
:func:`settings_from` takes every field the section has under the same name (or under the name
``renames`` gives), so a key added to both the schema and the settings flows through by itself.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


def settings_from(cls: type[T], section: Any, renames: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """``cls(**fields)`` where each field of the dataclass `cls` comes from `overrides`, else from
    ``getattr(section, renames.get(name, name))`` when the section has it, else the field's default."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    renames = renames or {}
    unknown = set(renames) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        if field.name in overrides:
            values[field.name] = overrides[field.name]
            continue
        source_name = renames.get(field.name, field.name)
        if hasattr(section, source_name):
            values[field.name] = getattr(section, source_name)
    return cls(**values)
