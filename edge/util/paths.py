"""Where things live on a device by default (FHS paths the systemd units and edgectl agree on)."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path

DEFAULT_CONFIG_PATH = Path("/etc/edge/gateway.toml")
DEFAULT_STATUS_PATH = Path("/run/edge/status.json")  # health.status_file; the units' RuntimeDirectory
DISTRIBUTION = "edge-gateway"  # the name on PyPI and of the Debian package


def version() -> str:
    """The installed distribution's version ("unknown" in a bare source checkout)."""

    try:
        return dist_version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"
