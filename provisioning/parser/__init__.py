"""edgectl's command line: every subcommand and option, standard library only.

The parser names each command's handler as a ``"module:function"`` string; `provisioning.cli` imports
only the module of the command that runs, so ``edgectl status`` does not load the registry client,
TensorFlow's tensor helpers or paho, and the build generates edgectl's man page and shell completion
from this parser without the package's dependencies installed (packaging/generate.py).
"""
from __future__ import annotations

import argparse

from edge.util.paths import version
from provisioning.parser import device, fleet, model, pki

DESCRIPTION = "Provision and operate edge gateways."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgectl", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("--context", dest="global_context", metavar="NAME",
                        help="operator context of ~/.config/edgectl/config.toml for every fleet command")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    device.add_config(sub)
    model.add_model(sub)
    pki.add_keys(sub)
    pki.add_trust(sub)
    device.add_init(sub)
    device.add_install(sub)
    pki.add_ca(sub)
    pki.add_broker(sub)
    device.add_doctor(sub)
    device.add_status(sub)
    fleet.add_fleet(sub)
    fleet.add_context(sub)
    fleet.add_snapshot(sub)
    device.add_console(sub)
    return parser
