"""Version policies: which versions of a model to aspire, and the next load/unload step.

Mirrors TF Serving's ``ServableVersionPolicy`` (latest N / all / specific) and its
``AvailabilityPreservingPolicy``: a non-aspired version is unloaded only once an aspired version
is AVAILABLE (or another non-aspired one still is), so a model never drops to zero versions
because of a swap or of a new version that fails to load.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Latest:
    """Serve the ``num_versions`` highest versions (TF Serving's default: 1)."""

    num_versions: int = 1

    def __post_init__(self) -> None:
        if self.num_versions < 1:
            raise ValueError(f"Latest.num_versions must be >= 1, got {self.num_versions}")


@dataclass(frozen=True)
class All:
    """Serve every version found."""


@dataclass(frozen=True)
class Specific:
    """Serve exactly these versions (those that exist)."""

    versions: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "versions", tuple(sorted({int(v) for v in self.versions})))


VersionPolicy = Union[Latest, All, Specific]


def aspired_versions(policy: VersionPolicy, available: Sequence[int]) -> list[int]:
    """The versions (ascending) that ``policy`` wants served out of ``available``."""
    found = sorted(set(available))
    if isinstance(policy, Latest):
        return found[-policy.num_versions :]
    if isinstance(policy, All):
        return found
    if isinstance(policy, Specific):
        wanted = set(policy.versions)
        return [v for v in found if v in wanted]
    raise TypeError(f"unknown version policy {policy!r}")


@dataclass(frozen=True)
class Action:
    kind: str  # "load" | "unload"
    version: int


def next_action(aspired: set[int], states: Mapping[int, str]) -> Action | None:
    """TF Serving's AvailabilityPreservingPolicy::GetNextAction.

    ``states`` maps each known version to "new" (aspired, never tried), "available", or anything
    else (loading, failed, unloading, end). Unload the lowest non-aspired AVAILABLE version if an
    aspired version is AVAILABLE or more than one non-aspired version is; otherwise load the highest
    new aspired version.
    """
    unaspired_serving = sorted(v for v, s in states.items() if v not in aspired and s == "available")
    aspired_serving = [v for v, s in states.items() if v in aspired and s == "available"]
    if unaspired_serving and (aspired_serving or len(unaspired_serving) > 1):
        return Action("unload", unaspired_serving[0])
    new = [v for v, s in states.items() if v in aspired and s == "new"]
    if new:
        return Action("load", max(new))
    return None
