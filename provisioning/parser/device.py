"""edgectl's commands for one device: config check, init, cert, install/uninstall, doctor, status, console."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge.util.paths import DEFAULT_CONFIG_PATH, DEFAULT_STATUS_PATH
from provisioning.names import DEFAULT_BROKER
from provisioning.parser.common import command, group


def add_config(sub: Any) -> None:
    _, config_sub = group(sub, "config", "work with gateway config files", "config_command")
    check = command(config_sub, "check", "validate a gateway TOML config; exit 2 on the first problem",
                    "provisioning.device.check:cmd_config_check")
    check.add_argument("file", type=Path, nargs="?", default=DEFAULT_CONFIG_PATH,
                       help=f"config file (default {DEFAULT_CONFIG_PATH})")


def add_init(sub: Any) -> None:
    init = command(sub, "init", "write this device's gateway config, identity and MQTT credentials",
                   "provisioning.device.init:cmd_init")
    init.add_argument("--root", type=Path, help="write under this folder instead of / (image building, tests)")
    init.add_argument("--device-id", help="device id: letters, digits, '_', '-', '.' (used in MQTT topics)")
    init.add_argument("--broker", help=f"mqtt://host[:port] or mqtts://host[:port] (default {DEFAULT_BROKER})")
    init.add_argument("--camera", action="append", metavar="NAME=URI", help="a camera (repeat for more)")
    init.add_argument("--model", help="model name (folder under /var/lib/edge/models)")
    init.add_argument("--registry", help="OCI reference the model comes from, host:port/repository:tag")
    init.add_argument("--registry-insecure", action="store_true", help="plain HTTP registry (labs only)")
    init.add_argument("--username", help="MQTT username (with --password-file)")
    init.add_argument("--password-file", type=Path, help="file holding the MQTT password (one line)")
    init.add_argument("--tls", action="store_true",
                      help="TLS client certificate: generate device.key (0600) and device.csr (CN = device id)")
    init.add_argument("--ca-cert", type=Path, help="with --tls: the fleet CA certificate to trust")
    init.add_argument("--trust-root", type=Path, metavar="PUB",
                      help="the fleet root public key (`edgectl trust init`): signed remote changes to trust anchors")
    init.add_argument("--no-input", action="store_true", help="never prompt, even on a terminal")
    init.add_argument("--force", action="store_true", help="replace an existing config (and device key)")

    _, cert_sub = group(sub, "cert", "device TLS certificate", "cert_command")
    inst = command(cert_sub, "install", "install the CA-signed device certificate (checks key and CN)",
                   "provisioning.device.init:cmd_cert_install")
    inst.add_argument("cert", type=Path, metavar="CERT")
    inst.add_argument("--ca-cert", type=Path, help="the fleet CA certificate (if not installed yet)")
    inst.add_argument("--root", type=Path, help="the folder `edgectl init --root` wrote to")


def add_install(sub: Any) -> None:
    inst = command(sub, "install", "install the systemd units, the edge user and folders; enable the gateway",
                   "provisioning.device.install:cmd_install")
    inst.add_argument("--root", type=Path, help="install into this folder instead of / (no user is created)")
    inst.add_argument("--no-enable", action="store_true", help="do not enable edge-gateway.service")
    uninst = command(sub, "uninstall", "disable and remove the units (--purge: config, data and user too)",
                     "provisioning.device.install:cmd_uninstall")
    uninst.add_argument("--root", type=Path, help="the folder `edgectl install --root` wrote to")
    uninst.add_argument("--purge", action="store_true", help="also remove /etc/edge, /var/lib/edge and the user")


def add_doctor(sub: Any) -> None:
    doc = command(sub, "doctor", "live checks: config, cameras, model, broker, registry, disk, clock",
                  "provisioning.device.doctor:cmd_doctor")
    doc.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help=f"default {DEFAULT_CONFIG_PATH}")
    doc.add_argument("--timeout", type=float, default=10.0, help="seconds per network/camera check (default 10)")
    doc.add_argument("--width", type=int, default=None, help=argparse.SUPPRESS)


def add_status(sub: Any) -> None:
    st = command(sub, "status", "this device at a glance (from the gateway's status file)",
                 "provisioning.device.status:cmd_status")
    st.add_argument("--file", type=Path, default=DEFAULT_STATUS_PATH,
                    help=f"status file the gateway writes (default {DEFAULT_STATUS_PATH})")
    st.add_argument("--max-age", type=float, default=None,
                    help="seconds after which the file counts as stale (default: 3 health intervals)")
    st.add_argument("--json", action="store_true", help="print the raw snapshot")
    st.add_argument("--quiet", action="store_true",
                    help="print nothing; exit 0 while the gateway keeps its status file fresh, else 1 (health checks)")
    st.add_argument("--width", type=int, default=None, help=argparse.SUPPRESS)


def add_console(sub: Any) -> None:
    _, csub = group(sub, "console", "the gateway's local web console: password hashes", "console_command")
    command(csub, "hash-password", "print the console.password_hash line for a password "
            "(read from the terminal, or from stdin)", "provisioning.device.console:cmd_hash_password")
