"""`edgectl`: provision and operate edge devices: config checking, init/install, CA and broker ACL,
doctor, status, model packaging and signing keys, the fleet root key and signed documents, fleet
operations over MQTT."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edge.config.loader import load_config
from edge.errors import ConfigError, EdgeError, ExitCode, exit_code_for
from edge.util.paths import DEFAULT_CONFIG_PATH
from provisioning import model as model_cli
from provisioning import profiles
from provisioning.device import console, doctor, init, install, status
from provisioning.fleet import cli as fleet
from provisioning.fleet import snapshot
from provisioning.pki import broker, ca, keys, trust

logger = logging.getLogger(__name__)


def cmd_config_check(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    cams = ", ".join(f"{c.name} ({c.source})" for c in config.cameras)
    print(f"{args.file}: OK — device {config.device_id}, model {config.model.name} "
          f"version {config.model.version}, backend {config.serving.backend}, cameras: {cams}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgectl", description="Provision and operate edge gateways.")
    parser.add_argument("--context", dest="global_context", metavar="NAME",
                        help="operator context of ~/.config/edgectl/config.toml for every fleet command")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    config = sub.add_parser("config", help="work with gateway config files")
    config_sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    check = config_sub.add_parser("check", help="validate a gateway TOML config; exit 2 on the first problem")
    check.add_argument("file", type=Path, nargs="?", default=DEFAULT_CONFIG_PATH,
                       help=f"config file (default {DEFAULT_CONFIG_PATH})")
    check.set_defaults(handler=cmd_config_check)
    model_cli.register(sub)
    keys.register(sub)
    trust.register(sub)
    init.register(sub)
    install.register(sub)
    ca.register(sub)
    broker.register(sub)
    doctor.register(sub)
    status.register(sub)
    fleet.register(sub)
    profiles.register(sub)
    snapshot.register(sub)
    console.register(sub)
    return parser


def run(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run one command; the one place where errors become a line on stderr and an exit status:
    2 for what the user gave (arguments, config, input files), 1 for what failed while doing it."""
    try:
        return int(handler(args))
    except ConfigError as exc:
        print(f"edgectl: config error: {exc}", file=sys.stderr)
    except EdgeError as exc:
        print(f"edgectl: {exc}", file=sys.stderr)
        return int(exit_code_for(exc))
    except ValueError as exc:  # argument values the parsers refuse (fleet selectors, numbers, JSON)
        print(f"edgectl: {exc}", file=sys.stderr)
    except (EOFError, KeyboardInterrupt):
        print("edgectl: cancelled", file=sys.stderr)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"edgectl: failed at{where}: {exc.strerror or exc}", file=sys.stderr)
        return int(ExitCode.FAILURE)
    return int(ExitCode.USAGE)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return int(ExitCode.USAGE)
    return run(handler, args)


if __name__ == "__main__":
    sys.exit(main())
