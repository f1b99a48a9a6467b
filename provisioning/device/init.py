"""`edgectl init`: write a device's validated gateway config and identity; `edgectl cert install`.

    edgectl init --device-id gate-01 --broker mqtts://broker.example:8883 --tls \
        --camera front=rtsp://cam/stream1 --model classifier --registry reg.example:5000/models/classifier:stable
    # on the CA host: edgectl ca sign device.csr --ca ca/ --out gate-01.crt
    edgectl cert install gate-01.crt --ca-cert ca.crt

Files (under ``--root DIR`` when given, e.g. an image being built):
- ``/etc/edge/gateway.toml``: validated with ``edge.config.parse_config`` before it is written;
  mode 0600 when it holds the MQTT password, else 0640.
- ``/etc/edge/device-id``: the device identity (one line).
- ``--tls``: ``/etc/edge/device.key`` (EC P-256, 0600, never leaves the device) and
  ``/etc/edge/device.csr`` (CN = device id) for the fleet CA; the config points at
  ``/etc/edge/ca.crt`` and ``/etc/edge/device.crt``, which ``edgectl cert install`` puts in place.
- ``--trust-root PUB``: the fleet root public key (``edgectl trust init``) copied to
  ``/etc/edge/fleet-root.pub`` and named in ``[trust] root_key``: the only way a fleet root
  reaches a device is out of band, like this.
Missing values are asked for when stdin is a terminal; otherwise they are errors (exit 2).
"""
from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edge.config.loader import load_config, parse_config
from edge.errors import ConfigError, InitError, KeyFileError
from edge.models.artifact.signing import load_public_key
from provisioning.names import DEFAULT_BROKER
from provisioning.pki.ca import common_name, is_valid_device_id, key_pem, make_csr, new_private_key, write_file

logger = logging.getLogger(__name__)

ETC = Path("/etc/edge")
CONFIG_NAME, DEVICE_ID_NAME = "gateway.toml", "device-id"
KEY_NAME, CSR_NAME, CERT_NAME, CA_NAME = "device.key", "device.csr", "device.crt", "ca.crt"
TRUST_ROOT_NAME = "fleet-root.pub"
DEFAULT_STORE = Path("/var/lib/edge/models")
DEFAULT_SPOOL = Path("/var/lib/edge/spool.db")



def under_root(root: Path | None, path: Path) -> Path:
    """`path` (absolute, as on the device) inside the staging root, or itself when root is None."""
    return path if root is None else Path(root) / path.relative_to("/")


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    text = str(value)
    escaped = "".join(c if c.isprintable() and c not in '"\\' else
                      {'"': '\\"', "\\": "\\\\"}.get(c, f"\\u{ord(c):04x}") for c in text)
    return f'"{escaped}"'


def render_toml(doc: dict[str, Any]) -> str:
    """TOML for the config shapes init writes: scalars, tables, and arrays of tables."""
    lines = [f"{k} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, (dict, list))]
    for key, value in doc.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]"] + [f"{k} = {toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list):
            for item in value:
                lines += ["", f"[[{key}]]"] + [f"{k} = {toml_value(v)}" for k, v in item.items()]
    return "# Written by `edgectl init`; checked by `edgectl config check`. Keys: docs/configuration.md.\n" + \
        "\n".join(lines) + "\n"


def parse_camera(text: str) -> dict[str, str]:
    name, sep, uri = text.partition("=")
    if not sep or not name.strip() or not uri.strip():
        raise InitError(f"--camera {text!r}: expected NAME=URI, e.g. front=rtsp://192.0.2.10/stream1")
    return {"name": name.strip(), "source": uri.strip()}


def _ask(prompt: str, default: str | None = None) -> str:
    suffix = f" [{default}]" if default else ""
    answer = input(f"{prompt}{suffix}: ").strip()
    return answer or (default or "")


def fill_interactively(args: argparse.Namespace) -> None:
    """Ask for the values that flags did not give (stdin is a terminal)."""
    if not args.device_id:
        args.device_id = _ask("device id", socket.gethostname().split(".")[0])
    if not args.broker:
        args.broker = _ask("MQTT broker URL", DEFAULT_BROKER)
    if not args.camera:
        print("cameras as NAME=URI (e.g. front=rtsp://192.0.2.10/stream1 or usb=/dev/video0); empty line ends")
        while True:
            entry = _ask(f"camera {len(args.camera) + 1}")
            if not entry:
                break
            args.camera.append(entry)
    if not args.model:
        args.model = _ask("model name (folder in /var/lib/edge/models)")
    if args.registry is None:
        args.registry = _ask("registry reference (host:port/repository:tag, empty for none)") or None


def build_document(args: argparse.Namespace, password: str | None) -> dict[str, Any]:
    missing = [flag for flag, value in (("--device-id", args.device_id), ("--camera", args.camera),
                                        ("--model", args.model)) if not value]
    if missing:
        raise InitError(f"missing {', '.join(missing)} (stdin is not a terminal, so nothing can be asked)")
    if not is_valid_device_id(args.device_id):
        raise InitError(f"--device-id {args.device_id!r}: 1-64 letters, digits, '_', '-' or '.', "
                        "starting with a letter or digit")
    broker = args.broker or DEFAULT_BROKER
    if args.tls and not broker.startswith("mqtts://"):
        raise InitError(f"--tls needs an mqtts:// broker URL, got {broker!r}")
    doc: dict[str, Any] = {"device_id": args.device_id, "cameras": [parse_camera(c) for c in args.camera],
                           "model": {"name": args.model, "store": str(DEFAULT_STORE)}}
    mqtt: dict[str, Any] = {"url": broker}
    if args.username:
        mqtt.update(username=args.username, password=password)
        if broker.startswith("mqtt://"):
            # the gateway refuses a password over plain MQTT unless the config says so explicitly
            logger.warning("the MQTT password will travel in plain text over %s; prefer mqtts:// "
                           "(the config gets allow_plaintext_password = true)", broker)
            mqtt["allow_plaintext_password"] = True
    if args.tls:
        mqtt.update(ca_file=str(ETC / CA_NAME), cert_file=str(ETC / CERT_NAME), key_file=str(ETC / KEY_NAME))
    doc["mqtt"] = mqtt
    doc["spool"] = {"path": str(DEFAULT_SPOOL)}
    if args.registry:
        doc["registry"] = {"ref": args.registry, **({"insecure": True} if args.registry_insecure else {})}
    if args.trust_root:
        doc["trust"] = {"root_key": str(ETC / TRUST_ROOT_NAME)}
    return doc


def validate(doc: dict[str, Any], tls: bool) -> None:
    """parse_config on the document as the device will see it.

    With --tls the device certificate (and the CA cert) do not exist until `edgectl cert install`,
    which checks them and loads the finished config; here the TLS trio is left out.
    """
    check = {k: (dict(v) if isinstance(v, dict) else v) for k, v in doc.items()}
    if tls:
        for key in ("ca_file", "cert_file", "key_file"):
            check["mqtt"].pop(key, None)
    check.pop("trust", None)  # written by init itself, after this check
    try:
        parse_config(check, "gateway.toml")
    except ConfigError as exc:
        raise InitError(str(exc)) from None


def read_password(path: Path) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InitError(f"--password-file {path}: cannot read: {exc.strerror}") from None
    password = text.rstrip("\r\n")
    if not password or "\n" in password:
        raise InitError(f"--password-file {path}: must hold the password on one line")
    return password


def run_init(args: argparse.Namespace) -> list[Path]:
    if args.username and not args.password_file:
        raise InitError("--username needs --password-file (a file holding the MQTT password)")
    if args.password_file and not args.username:
        raise InitError("--password-file needs --username")
    if args.tls and args.username:
        raise InitError("choose one broker login: --username/--password-file or --tls")
    if args.camera is None:
        args.camera = []
    if sys.stdin.isatty() and not args.no_input:
        fill_interactively(args)
    password = read_password(args.password_file) if args.password_file else None
    trust_root = read_trust_root(args.trust_root) if args.trust_root else None
    root = args.root
    config_path = under_root(root, ETC / CONFIG_NAME)
    if config_path.exists() and not args.force:
        raise InitError(f"{config_path} already exists; pass --force to replace it")
    doc = build_document(args, password)
    validate(doc, args.tls)
    etc = under_root(root, ETC)
    etc.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if args.tls:
        key_path, csr_path = etc / KEY_NAME, etc / CSR_NAME
        if key_path.exists() and not args.force:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            logger.info("keeping the existing device key %s", key_path)
        else:
            key = new_private_key()
            write_file(key_path, key_pem(key), 0o600)
            written.append(key_path)
        csr = make_csr(key, args.device_id)  # type: ignore[arg-type]
        write_file(csr_path, csr.public_bytes(serialization.Encoding.PEM), 0o644)
        written.append(csr_path)
        if args.ca_cert:
            install_ca_cert(args.ca_cert, etc / CA_NAME)
            written.append(etc / CA_NAME)
    if trust_root is not None:
        write_file(etc / TRUST_ROOT_NAME, trust_root, 0o644)
        written.append(etc / TRUST_ROOT_NAME)
    write_file(etc / DEVICE_ID_NAME, f"{args.device_id}\n".encode(), 0o644)
    write_file(config_path, render_toml(doc).encode("utf-8"), 0o600 if password else 0o640)
    return written + [etc / DEVICE_ID_NAME, config_path]


def read_trust_root(path: Path) -> bytes:
    """The fleet root public key file, checked to be an ed25519 PEM public key."""
    try:
        load_public_key(path)
    except KeyFileError as exc:
        raise InitError(f"--trust-root: {exc} (use the fleet-root.pub from `edgectl trust init`)") from None
    return Path(path).read_bytes()


def install_ca_cert(source: Path, dest: Path) -> None:
    try:
        x509.load_pem_x509_certificate(Path(source).read_bytes())
    except (OSError, ValueError):
        raise InitError(f"--ca-cert {source}: not a readable PEM certificate") from None
    write_file(dest, Path(source).read_bytes(), 0o644)


def cmd_init(args: argparse.Namespace) -> int:
    written = run_init(args)
    for path in written:
        print(f"wrote {path}")
    if args.tls:
        csr = under_root(args.root, ETC / CSR_NAME)
        print(f"next: sign {csr} with the fleet CA (`edgectl ca sign device.csr --ca CA_DIR --out device.crt`), "
              "then `edgectl cert install device.crt --ca-cert ca.crt`")
    return 0


def install_certificate(cert_path: Path, ca_cert: Path | None, root: Path | None) -> str:
    """Check the signed certificate against the device key and id, put it (and the CA) in place."""
    etc = under_root(root, ETC)
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except (OSError, ValueError):
        raise InitError(f"{cert_path}: not a readable PEM certificate") from None
    try:
        key = serialization.load_pem_private_key((etc / KEY_NAME).read_bytes(), password=None)
    except FileNotFoundError:
        raise InitError(f"{etc / KEY_NAME} not found: run `edgectl init --tls` first") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(serialization.Encoding.PEM, spki) != \
            key.public_key().public_bytes(serialization.Encoding.PEM, spki):
        raise InitError(f"{cert_path} was not issued for this device's key {etc / KEY_NAME}")
    device_id_file = etc / DEVICE_ID_NAME
    device_id = device_id_file.read_text().strip() if device_id_file.exists() else None
    cn = common_name(cert.subject)
    if device_id is not None and cn != device_id:
        raise InitError(f"{cert_path} has CN {cn!r} but this device is {device_id!r}")
    if ca_cert is not None:
        install_ca_cert(ca_cert, etc / CA_NAME)
    elif not (etc / CA_NAME).exists():
        raise InitError(f"{etc / CA_NAME} not found: pass --ca-cert (the fleet CA certificate)")
    write_file(etc / CERT_NAME, Path(cert_path).read_bytes(), 0o644)
    if root is None:
        try:
            load_config(etc / CONFIG_NAME)
        except ConfigError as exc:
            raise InitError(f"certificate installed but the config does not load: {exc}") from None
    return str(cn)


def cmd_cert_install(args: argparse.Namespace) -> int:
    cn = install_certificate(args.cert, args.ca_cert, args.root)
    print(f"installed device certificate CN={cn} in {under_root(args.root, ETC / CERT_NAME)}")
    return 0
