"""Platforms as OCI image indexes name them (``os/architecture[/variant]``, Go's GOOS/GOARCH values),
normalised the way containerd does, and which ones a machine runs."""
from __future__ import annotations

import logging
import platform as platform_module
import re
from dataclasses import dataclass

logger = logging.getLogger(__name__)

_ARCH = {"x86_64": ("amd64", ""), "x86-64": ("amd64", ""), "amd64": ("amd64", ""), "aarch64": ("arm64", ""),
         "arm64": ("arm64", ""), "armhf": ("arm", "v7"), "armel": ("arm", "v6"), "armv7l": ("arm", "v7"),
         "armv6l": ("arm", "v6"), "armv8l": ("arm", "v8"), "i386": ("386", ""), "i686": ("386", "")}
_PART_RE = re.compile(r"^[a-z0-9._-]{1,32}$")


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def as_dict(self) -> dict[str, str]:
        doc = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            doc["variant"] = self.variant
        return doc


def normalize(os_name: str, architecture: str, variant: str = "") -> Platform:
    """containerd's normalisation: x86_64 -> amd64, aarch64 -> arm64 (v8 implied), arm -> arm/v7, ..."""
    os_name, architecture, variant = os_name.lower(), architecture.lower(), variant.lower()
    architecture, implied = _ARCH.get(architecture, (architecture, ""))
    variant = variant or implied
    if os_name == "macos":
        os_name = "darwin"
    if (architecture, variant) in (("arm64", "8"), ("arm64", "v8"), ("amd64", "v1")):
        variant = ""
    elif architecture == "arm" and variant in ("", "7"):
        variant = "v7"
    return Platform(os_name, architecture, variant)


def parse_platform(text: str) -> Platform:
    """``os/arch[/variant]`` (``linux/arm64``, ``linux/arm/v7``) -> a normalised Platform; ValueError if not."""
    parts = text.strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(_PART_RE.match(p) for p in parts):
        raise ValueError(f"platform {text!r}: expected os/architecture[/variant], e.g. linux/arm64 or linux/arm/v7")
    return normalize(*parts)


def host_platform() -> Platform:
    return normalize(platform_module.system() or "linux", platform_module.machine() or "unknown")


def compatible(host: Platform) -> list[Platform]:
    """The platforms `host` runs, best first (containerd's ``platforms.Only``)."""
    found = [host]
    if host.architecture == "arm" and re.fullmatch(r"v[5-8]", host.variant):
        found += [Platform(host.os, "arm", f"v{n}") for n in range(int(host.variant[1:]) - 1, 4, -1)]
    elif host.architecture == "amd64":
        found.append(Platform(host.os, "386"))
    elif host.architecture == "arm64":
        found += [Platform(host.os, "arm", f"v{n}") for n in (8, 7, 6, 5)]
    return found
