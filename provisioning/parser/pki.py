"""edgectl's key and certificate commands: the fleet CA, broker settings, model-signing keys, the fleet root."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from provisioning.names import HOMEASSISTANT_NAME, OPERATOR_NAME
from provisioning.parser.common import command, group


def add_ca(sub: Any) -> None:
    _, ca_sub = group(sub, "ca", "fleet CA for MQTT TLS: create it, sign device CSRs", "ca_command")
    init = command(ca_sub, "init", "create ca.key/ca.crt and the broker's server.key/server.crt",
                   "provisioning.pki.ca:cmd_ca_init")
    init.add_argument("--out", type=Path, required=True, help="folder for the CA files")
    init.add_argument("--server-name", action="append", metavar="NAME",
                      help="broker DNS name or IP for the server certificate (repeat; e.g. 127.0.0.1)")
    init.add_argument("--days", type=int, default=3650, help="CA validity (default 3650 days)")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    sign = command(ca_sub, "sign", "sign a device CSR (CN = device id) into a client certificate",
                   "provisioning.pki.ca:cmd_ca_sign")
    sign.add_argument("csr", type=Path, metavar="CSR")
    sign.add_argument("--ca", type=Path, required=True, help="CA folder from `edgectl ca init`")
    sign.add_argument("--out", type=Path, required=True, help="certificate file to write")
    sign.add_argument("--days", type=int, default=825, help="validity (default 825 days)")
    sign.add_argument("--role", choices=("device", "operator", "homeassistant"), default="device",
                      help=f"operator: a CSR with CN {OPERATOR_NAME!r}, full access per the ACL; homeassistant: "
                      f"CN {HOMEASSISTANT_NAME!r}, reads devices and presses rollback")
    sign.add_argument("--force", action="store_true", help="replace an existing certificate file")


def add_broker(sub: Any) -> None:
    _, broker_sub = group(sub, "broker", "Mosquitto settings for the fleet broker (ACL, TLS listener)",
                          "broker_command")
    acl = command(broker_sub, "device-acl", "print an ACL confining each device to its own topics",
                  "provisioning.pki.broker:cmd_device_acl")
    acl.add_argument("--prefix", default="edge", help="topic prefix (the gateway's mqtt.topic_prefix)")
    acl.add_argument("--operator", default=OPERATOR_NAME, help=f"operator identity (default {OPERATOR_NAME})")
    acl.add_argument("--no-operator", action="store_true", help="leave the operator block commented out")
    acl.add_argument("--homeassistant", nargs="?", const=HOMEASSISTANT_NAME, metavar="USER",
                     help=f"let gateways publish Home Assistant discovery, and USER (default {HOMEASSISTANT_NAME}) "
                     "read the devices and press rollback")
    acl.add_argument("--discovery-prefix", default="homeassistant", help="Home Assistant's discovery prefix")
    conf = command(broker_sub, "config", "print a mosquitto.conf snippet for the TLS listener",
                   "provisioning.pki.broker:cmd_broker_config")
    conf.add_argument("--ca-dir", type=Path, required=True, help="folder from `edgectl ca init`")
    conf.add_argument("--acl-file", type=Path, required=True, help="where the device-acl output is saved")
    conf.add_argument("--port", type=int, default=8883)
    conf.add_argument("--bind", help="address to listen on (default: all)")
    conf.add_argument("--devices", type=int, default=10_000, help="fleet size the queues are sized for (default 10000)")


def add_keys(sub: Any) -> None:
    _, keys_sub = group(sub, "keys", "signing keys for model artifacts", "keys_command")
    gen = command(keys_sub, "gen", "generate a model-signing key pair, EC P-256 (signing.key 0600, signing.pub)",
                  "provisioning.pki.keys:cmd_keys_gen")
    gen.add_argument("--out", type=Path, required=True, help="folder for signing.key and signing.pub")
    gen.add_argument("--force", action="store_true", help="replace an existing key pair")


def add_trust(sub: Any) -> None:
    _, tsub = group(sub, "trust", "the fleet root key and the signed documents it makes", "trust_command")
    init = command(tsub, "init", "make the offline fleet root key pair (fleet-root.key 0600, fleet-root.pub)",
                   "provisioning.pki.trust:cmd_init")
    init.add_argument("--out", type=Path, required=True, help="folder for the key pair (keep it offline)")
    init.add_argument("--force", action="store_true", help="replace an existing key pair")

    sign = tsub.add_parser("sign", help="sign a document: config (trust anchors), rollback, rotate (root key)")
    ssub = sign.add_subparsers(dest="doc", metavar="DOCUMENT", required=True)

    def document(name: str, help_text: str) -> argparse.ArgumentParser:
        p = command(ssub, name, help_text, "provisioning.pki.trust:cmd_sign")
        p.add_argument("--key", type=Path, required=True, help="the current fleet root private key")
        p.add_argument("--device", required=True, help="target: a device id, a glob ('gate-*') or '*'")
        p.add_argument("--expires-in", default="24h", help="validity, e.g. 30m, 24h, 7d (default 24h)")
        p.add_argument("--counter", type=int, help="explicit counter (default: above the last one and the time)")
        p.add_argument("--out", type=Path, help="write the document here (default: stdout)")
        return p

    p = document("config", "a cmd/config merge patch allowed to touch trust anchors")
    p.add_argument("--patch", required=True, help="the merge patch as JSON, or @FILE")
    p = document("rollback", "allow one older model version (rollback protection refuses it otherwise)")
    p.add_argument("--model", required=True, help="model name ([model] name on the devices)")
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--digest", required=True, help="its manifest digest, sha256:...")
    p.add_argument("--ref", help="a ref to follow from then on (same registry), e.g. REG/models/m@sha256:...")
    p = document("rotate", "rotate the fleet root key (signed by the current and the new key)")
    p.add_argument("--new-key", type=Path, required=True, help="the new root private key (`edgectl trust init`)")
    p.add_argument("--root-version", type=int, required=True, help="the devices' current root version + 1")

    show = command(tsub, "show", "print a signed document's payload; --pub also verifies it",
                   "provisioning.pki.trust:cmd_show")
    show.add_argument("document", type=Path)
    show.add_argument("--pub", type=Path, help="public key to verify with (e.g. fleet-root.pub)")
