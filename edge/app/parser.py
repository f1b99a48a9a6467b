"""edge-gateway's command line. Standard library only: the build generates the man page and shell
completion from this parser without installing the package's dependencies."""
from __future__ import annotations

import argparse
from pathlib import Path

from edge.util.paths import DEFAULT_CONFIG_PATH, version

DESCRIPTION = "Edge camera classification gateway: cameras -> model -> MQTT, as a systemd service."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-gateway", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the gateway (the default)", description=DESCRIPTION)
    for p in (parser, run):
        p.add_argument("--config", type=Path, default=None,
                       help=f"gateway TOML config (default {DEFAULT_CONFIG_PATH})")
        p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None,
                       help="override log_level from the config")
    return parser
