"""What every part of edgectl's parser shares: command groups that print their help, value types."""
from __future__ import annotations

import argparse
from typing import Any


def group(sub: Any, name: str, help_text: str, dest: str) -> tuple[argparse.ArgumentParser, Any]:
    """A command made of subcommands (`edgectl ca init|sign`); alone, it prints its help (exit 2)."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
    parser.set_defaults(handler=None, help_parser=parser)
    return parser, parser.add_subparsers(dest=dest, metavar="SUBCOMMAND")


def command(sub: Any, name: str, help_text: str, handler: str) -> argparse.ArgumentParser:
    """A command run by `handler`, ``"module:function"`` imported only when this command runs."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
    parser.set_defaults(handler=handler)
    return parser


def version_number(text: str) -> int:
    """A model version: a positive integer (TF Serving's version folders)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"version must be a positive integer, got {text!r}")
    return int(text)


def percent(text: str) -> float:
    """``10%`` or ``10`` -> 10.0."""
    try:
        return float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage (e.g. 10%)") from None
