"""`edgectl config check FILE`: load a gateway config the way the gateway does; one line either way."""
from __future__ import annotations

import argparse
import logging

from edge.config.loader import load_config

logger = logging.getLogger(__name__)


def cmd_config_check(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    cams = ", ".join(f"{c.name} ({c.source})" for c in config.cameras)
    print(f"{args.file}: OK — device {config.device_id}, model {config.model.name} "
          f"version {config.model.version}, backend {config.serving.backend}, cameras: {cams}")
    return 0
