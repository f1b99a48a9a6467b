"""`edgectl ca init|sign`: a fleet CA for the MQTT broker's TLS, and device certificates.

    edgectl ca init --out ca/ --server-name broker.example.com --server-name 127.0.0.1
    edgectl ca sign /etc/edge/device.csr --ca ca/ --out gate-01.crt

``ca init`` writes ``ca.key`` (0600, stays with the fleet operator), ``ca.crt`` (goes to every
device and the broker), and a broker certificate ``server.key`` (0600) / ``server.crt`` whose
subjectAltNames are the ``--server-name`` values (IP addresses become IP SANs). ``ca sign`` turns
a device's CSR (written by ``edgectl init --tls``; the device key never leaves the device) into a
client certificate whose CN is the device id: Mosquitto with ``use_identity_as_username true``
then knows the device by that CN and the ACL confines it to its own topics. Keys are EC P-256.
"""
from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.config.schema import _NAME_RE as DEVICE_ID_RE
from edge.errors import CaError
from edge.util.fsutil import atomic_write_bytes
from provisioning.names import HOMEASSISTANT_NAME, OPERATOR_NAME

logger = logging.getLogger(__name__)

CA_KEY, CA_CERT, SERVER_KEY, SERVER_CERT = "ca.key", "ca.crt", "server.key", "server.crt"
RESERVED_NAMES = frozenset({OPERATOR_NAME})
# never a device's CN: the operator and Home Assistant have wider rights; <prefix>/fleet/ holds rollouts
RESERVED_DEVICE_IDS = frozenset({OPERATOR_NAME, HOMEASSISTANT_NAME, "fleet"})
ROLE_NAMES = {"operator": OPERATOR_NAME, "homeassistant": HOMEASSISTANT_NAME}



def is_valid_device_id(value: str) -> bool:
    return bool(DEVICE_ID_RE.match(value))


def write_file(path: Path, data: bytes, mode: int, *, force: bool = True) -> None:
    """Atomically write `path` with exactly `mode` (never briefly readable by others)."""
    path = Path(path)
    if not force and path.exists():
        raise CaError(f"{path} already exists; pass --force to replace it")
    atomic_write_bytes(path, data, mode, mkdir=True)


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def make_csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> x509.CertificateSigningRequest:
    return x509.CertificateSigningRequestBuilder().subject_name(_name(common_name)).sign(key, hashes.SHA256())


@dataclass(frozen=True)
class CaFiles:
    ca_key: Path
    ca_cert: Path
    server_key: Path
    server_cert: Path


def init_ca(out: Path, server_names: list[str], *, name: str = "edge fleet CA", days: int = 3650,
            force: bool = False) -> CaFiles:
    """Create the CA and the broker's server certificate in `out`."""
    if not server_names:
        raise CaError("give at least one --server-name (the broker's DNS name or IP address)")
    out = Path(out)
    files = CaFiles(out / CA_KEY, out / CA_CERT, out / SERVER_KEY, out / SERVER_CERT)
    if not force:
        for path in (files.ca_key, files.ca_cert, files.server_key, files.server_cert):
            if path.exists():
                raise CaError(f"{path} already exists; pass --force to replace the CA (every device cert "
                              "signed by the old one stops working)")
    now = _now()
    ca_key = new_private_key()
    ca_cert = (
        x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = new_private_key()
    server_cert = _issue(ca_key, ca_cert, server_key.public_key(), server_names[0], days=min(days, 825),
                         usage=ExtendedKeyUsageOID.SERVER_AUTH, san=server_names)
    write_file(files.ca_key, key_pem(ca_key), 0o600)
    write_file(files.ca_cert, cert_pem(ca_cert), 0o644)
    write_file(files.server_key, key_pem(server_key), 0o600)
    write_file(files.server_cert, cert_pem(server_cert), 0o644)
    logger.info("fleet CA and broker certificate (%s) written to %s", ", ".join(server_names), out)
    return files


def _issue(ca_key: Any, ca_cert: x509.Certificate, public_key: Any, common_name: str, *, days: int,
           usage: x509.ObjectIdentifier, san: list[str] | None = None) -> x509.Certificate:
    now = _now()
    builder = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_cert.subject)
        .public_key(public_key).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if san:
        builder = builder.add_extension(_san(san), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def load_ca(ca_dir: Path) -> tuple[Any, x509.Certificate]:
    ca_dir = Path(ca_dir)
    try:
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
    except FileNotFoundError as exc:
        raise CaError(f"{exc.filename} not found: --ca must be a folder made by `edgectl ca init`") from None
    except ValueError as exc:
        raise CaError(f"{ca_dir}: not a CA folder made by `edgectl ca init` ({exc})") from None
    return key, cert


def common_name(subject: x509.Name) -> str | None:
    values = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if len(values) == 1 else None


def sign_csr(csr_path: Path, ca_dir: Path, out: Path, *, days: int = 825, role: str = "device",
             force: bool = False) -> str:
    """Sign a device (or operator) CSR with the fleet CA; returns the certificate's CN."""
    try:
        csr = x509.load_pem_x509_csr(Path(csr_path).read_bytes())
    except FileNotFoundError:
        raise CaError(f"{csr_path}: file not found") from None
    except ValueError:
        raise CaError(f"{csr_path}: not a PEM certificate signing request") from None
    try:
        valid = csr.is_signature_valid
    except InvalidSignature:
        valid = False
    if not valid:
        raise CaError(f"{csr_path}: the CSR's signature does not verify (corrupted or forged)")
    cn = common_name(csr.subject)
    if cn is None:
        raise CaError(f"{csr_path}: the CSR must carry exactly one CN (the device id)")
    if role in ROLE_NAMES:
        if cn != ROLE_NAMES[role]:
            raise CaError(f"{csr_path}: {role} certificates must have CN {ROLE_NAMES[role]!r}, got {cn!r}")
    else:
        if not is_valid_device_id(cn):
            raise CaError(f"{csr_path}: CN {cn!r} is not a valid device id (1-64 letters, digits, '_', '-', '.', "
                          "starting with a letter or digit); refusing to sign")
        if cn in RESERVED_DEVICE_IDS:
            raise CaError(f"{csr_path}: CN {cn!r} is reserved (fleet operators, Home Assistant and <prefix>/fleet/ "
                          "have other rights than a device); sign it with --role operator or --role homeassistant "
                          "if that is intended")
    ca_key, ca_cert = load_ca(ca_dir)
    cert = _issue(ca_key, ca_cert, csr.public_key(), cn, days=days, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    write_file(Path(out), cert_pem(cert), 0o644, force=force)
    logger.info("signed %s certificate for %s -> %s", role, cn, out)
    return cn


# ---------------------------------------------------------------------------------------- CLI

def cmd_ca_init(args: argparse.Namespace) -> int:
    files = init_ca(args.out, args.server_name or [], days=args.days, force=args.force)
    print(f"CA certificate {files.ca_cert} (copy to the broker and to every device)")
    print(f"CA private key {files.ca_key} (keep it secret: it signs device certificates)")
    print(f"broker certificate {files.server_cert} + key {files.server_key} for {', '.join(args.server_name)}")
    return 0


def cmd_ca_sign(args: argparse.Namespace) -> int:
    cn = sign_csr(args.csr, args.ca, args.out, days=args.days, role=args.role, force=args.force)
    print(f"signed {args.role} certificate CN={cn} -> {args.out}")
    return 0
