"""`edgectl`: provision and operate edge devices: config checking, init/install, CA and broker ACL,
doctor, status, model packaging and signing keys, the fleet root key and signed documents, fleet
operations over MQTT.

The arguments are defined in `provisioning.parser` (standard library only); the module that runs a
command is imported once the command is known, so a command loads only what it uses."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from edge.errors import ConfigError, EdgeError, ExitCode, exit_code_for
from provisioning.parser import build_parser

logger = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]


def resolve_handler(spec: str) -> Handler:
    """``"provisioning.device.status:cmd_status"`` -> that function (its module imported now)."""
    module_name, _, name = spec.partition(":")
    handler: Handler = getattr(importlib.import_module(module_name), name)
    return handler


def run(handler: Handler, args: argparse.Namespace) -> int:
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
    spec = getattr(args, "handler", None)
    if spec is None:  # no command, or a command group without its subcommand: its help
        getattr(args, "help_parser", parser).print_help(sys.stderr)
        return int(ExitCode.USAGE)
    return run(resolve_handler(spec), args)


if __name__ == "__main__":
    sys.exit(main())
