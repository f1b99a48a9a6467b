"""Model versions as OCI artifacts: packing, safe unpacking, signatures, and pulling by digest.

Artifact format (``application/vnd.edge.model.v1``)
---------------------------------------------------
A model version is one OCI image manifest (``application/vnd.oci.image.manifest.v1+json``,
``schemaVersion: 2``) with ``artifactType: application/vnd.edge.model.v1`` and:

- **config** blob ``application/vnd.edge.model.config.v1+json``: the JSON document that
  ``edgectl model package`` writes to ``assets.extra/model.json`` in the version folder::

      {"format": 1, "name": "classifier", "version": 3,
       "input": {"name": "image", "dtype": "uint8", "shape": [-1, 224, 224, 3]},
       "outputs": {"scores": {"dtype": "float32", "shape": [-1, 1000]}},
       "labels": 1000, "golden": 4, "created": "2026-01-31T12:00:00Z", "source": "<url or path>"}

  (``-1`` = any size; ``labels`` and ``golden`` are counts.)
- **one layer** ``application/vnd.edge.model.layer.v1.tar+gzip``: the version folder's contents
  with relative paths (``saved_model.pb``, ``variables/...``, ``assets.extra/...``). Deterministic:
  sorted, mtime 0, uid/gid 0, no user/group names, modes 0644/0755, regular files and
  directories only; the gzip header has no name and mtime 0. The same folder packs to the same digest.
- **annotations**: ``org.opencontainers.image.created``, ``org.opencontainers.image.source``,
  ``org.opencontainers.image.version``, ``dev.edge.model.name``, ``dev.edge.model.version``,
  ``dev.edge.model.input`` (compact JSON of ``input``).

Tags name versions (``3``) and channels (``stable``, ``canary``, ...); devices pull by digest.

**Signature** (optional): ed25519 over the manifest digest string (``sha256:<hex>``, ASCII),
stored under the sibling tag ``sha256-<hex>.sig`` (cosign-style naming) as an OCI manifest with
``artifactType: application/vnd.edge.model.signature.v1``, the empty config
(``application/vnd.oci.empty.v1+json``, ``{}``) and one layer
``application/vnd.edge.model.signature.v1+json``::

    {"digest": "sha256:...", "algorithm": "ed25519",
     "key_id": "<sha256 of the raw 32-byte public key, hex>", "signature": "<base64>"}

The signature manifest also carries ``subject`` (the signed manifest's descriptor), but
docker-registry 2.8 has no referrers API, so readers find signatures by the tag name only.

Unpacking (:func:`safe_extract`) refuses absolute paths, ``..``, links of any kind, device and
fifo members, duplicate members, corrupt or truncated gzip, and more than ``max_bytes`` of
content (counted while streaming, so a gzip bomb cannot fill the disk).
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from edge.errors import (
    ArtifactError,
    KeyFileError,
    RegistryNotFound,
    SignatureError,
    UnsafeArtifact,
)
from edge.transport.oci import OCI_MANIFEST, Progress, RegistryClient
from edge.util.ociref import Reference

logger = logging.getLogger(__name__)

ARTIFACT_TYPE = "application/vnd.edge.model.v1"
CONFIG_MEDIA_TYPE = "application/vnd.edge.model.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.edge.model.layer.v1.tar+gzip"
SIGNATURE_ARTIFACT_TYPE = "application/vnd.edge.model.signature.v1"
SIGNATURE_MEDIA_TYPE = "application/vnd.edge.model.signature.v1+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
DESCRIPTION_FILE = "assets.extra/model.json"
MAX_CONFIG_BYTES = 1 << 20
MAX_MEMBERS = 10_000  # a SavedModel folder holds tens of files; more is a tar bomb
MAX_MEMBER_DEPTH = 32
MAX_MEMBER_NAME = 1024
_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
COPY_CHUNK = 1 << 20



# --- packing -------------------------------------------------------------------------------------

def read_description(version_dir: Path) -> dict[str, Any]:
    """``assets.extra/model.json`` of a packaged version folder (written by ``edgectl model package``)."""
    path = Path(version_dir) / DESCRIPTION_FILE
    if not path.is_file():
        raise ArtifactError(f"{version_dir}: no {DESCRIPTION_FILE}; build the folder with `edgectl model package`")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON: {exc}") from None
    check_config(doc, str(path))
    return doc


def check_config(doc: Any, where: str) -> None:
    if not isinstance(doc, dict):
        raise ArtifactError(f"{where}: model config must be a JSON object")
    if not isinstance(doc.get("name"), str) or not doc["name"]:
        raise ArtifactError(f"{where}: 'name' must be a non-empty string")
    if not _MODEL_NAME_RE.match(doc["name"]) or doc["name"] in (".", ".."):
        raise ArtifactError(f"{where}: 'name' {doc['name'][:80]!r} must be 1-64 letters, digits, '_', '-' or '.' "
                            "(it names folders on the device)")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ArtifactError(f"{where}: 'version' must be a positive integer, got {version!r}")
    if not isinstance(doc.get("input"), dict):
        raise ArtifactError(f"{where}: 'input' must be an object {{name, dtype, shape}}")


def _members(version_dir: Path) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(version_dir):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            path = Path(root) / name
            rel = path.relative_to(version_dir).as_posix()
            mode = path.lstat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ArtifactError(f"{path}: only regular files and folders can be packed (links and special files cannot)")
            found.append((rel, path))
    return sorted(found)


def pack_version(version_dir: Path, out: Path) -> dict:
    """Write the deterministic layer tar.gz of a version folder to ``out``; returns the config dict."""
    version_dir = Path(version_dir)
    if not ((version_dir / "saved_model.pb").is_file() or (version_dir / "model.tflite").is_file()):
        raise ArtifactError(f"{version_dir}: not a model version folder (no saved_model.pb or model.tflite)")
    config = read_description(version_dir)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, path in _members(version_dir):
            info = tarfile.TarInfo(rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = path.stat().st_size
                info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                with path.open("rb") as f:
                    tar.addfile(info, f)
    os.replace(tmp, out)
    return config


# --- unpacking -----------------------------------------------------------------------------------

def _safe_name(member: tarfile.TarInfo) -> PurePosixPath:
    name = member.name
    if len(name) > MAX_MEMBER_NAME:
        raise UnsafeArtifact(f"archive member name is {len(name)} characters long (limit {MAX_MEMBER_NAME}): "
                             f"{name[:60]!r}...")
    path = PurePosixPath(name)
    if not name or name.startswith("/") or path.is_absolute():
        raise UnsafeArtifact(f"archive member {name!r} has an absolute path")
    if ".." in path.parts:
        raise UnsafeArtifact(f"archive member {name!r} points outside the folder ('..')")
    if "\\" in name or "\x00" in name:
        raise UnsafeArtifact(f"archive member {name!r} has a backslash or NUL in its name")
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts:
        raise UnsafeArtifact(f"archive member {name!r} has an empty path")
    if len(parts) > MAX_MEMBER_DEPTH:
        raise UnsafeArtifact(f"archive member {name[:60]!r}... is {len(parts)} folders deep "
                             f"(limit {MAX_MEMBER_DEPTH})")
    return PurePosixPath(*parts)


def safe_extract(archive: Path, dest: Path, *, max_bytes: int) -> None:
    """Extract a layer tar.gz into ``dest`` (created; must not exist or be empty), or refuse it.

    On refusal, ``dest`` is removed again and nothing was written outside it.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ArtifactError(f"{dest}: extraction target must be empty")
    try:
        _extract(Path(archive), dest, max_bytes)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _extract(archive: Path, dest: Path, max_bytes: int) -> None:
    total = 0
    seen: set[PurePosixPath] = set()
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for member in tar:
                if len(seen) >= MAX_MEMBERS:
                    raise UnsafeArtifact(f"archive has more than {MAX_MEMBERS} members; refusing it (tar bomb?)")
                rel = _safe_name(member)
                if member.issym() or member.islnk():
                    raise UnsafeArtifact(f"archive member {member.name!r} is a link (to {member.linkname!r}); links are refused")
                if not (member.isreg() or member.isdir()):
                    raise UnsafeArtifact(f"archive member {member.name!r} is a device, fifo or other special file")
                if rel in seen:
                    raise UnsafeArtifact(f"archive member {member.name!r} appears twice")
                seen.add(rel)
                target = dest.joinpath(*rel.parts)
                for parent in rel.parents:  # a parent must never be a file we wrote
                    if parent != PurePosixPath(".") and dest.joinpath(*parent.parts).is_file():
                        raise UnsafeArtifact(f"archive member {member.name!r} is inside a file")
                if member.isdir():
                    target.mkdir(mode=0o755, parents=True, exist_ok=True)
                    continue
                total += member.size
                if total > max_bytes:
                    raise UnsafeArtifact(f"archive is larger than the {max_bytes}-byte limit "
                                         f"(at member {member.name!r}); refusing it")
                target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # regular file
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                fd = os.open(target, flags, 0o755 if member.mode & 0o111 else 0o644)
                written = 0
                with os.fdopen(fd, "wb") as out:
                    for chunk in iter(lambda: source.read(COPY_CHUNK), b""):
                        written += len(chunk)
                        if written > member.size:
                            raise UnsafeArtifact(f"archive member {member.name!r} is longer than its header says")
                        out.write(chunk)
                if written != member.size:
                    raise UnsafeArtifact(f"archive member {member.name!r} is truncated")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, TypeError, ValueError) as exc:
        # (tarfile's stream reader raises TypeError/ValueError on some truncated gzip headers)
        raise UnsafeArtifact(f"{archive.name}: not a readable tar.gz (corrupt or truncated: {exc})") from None
    except OSError as exc:
        if isinstance(exc, (FileExistsError, IsADirectoryError, NotADirectoryError)):
            raise UnsafeArtifact(f"{archive.name}: archive members collide: {exc}") from None
        raise
    if not seen:
        raise UnsafeArtifact(f"{archive.name}: archive is empty")


# --- keys and signatures -------------------------------------------------------------------------

def key_id(public_key: Ed25519PublicKey) -> str:
    """sha256 (hex) of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def signature_tag(digest: str) -> str:
    """``sha256:<hex>`` -> ``sha256-<hex>.sig``."""
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}-{hexdigest}.sig"


def sign_digest(private_key: Ed25519PrivateKey, digest: str) -> dict:
    signature = private_key.sign(digest.encode("ascii"))
    return {"digest": digest, "algorithm": "ed25519", "key_id": key_id(private_key.public_key()),
            "signature": base64.b64encode(signature).decode("ascii")}


def verify_signature(public_key: Ed25519PublicKey, digest: str, doc: dict) -> None:
    """Raise SignatureError unless ``doc`` is a valid signature of ``digest`` by ``public_key``."""
    if not isinstance(doc, dict) or doc.get("algorithm") != "ed25519":
        raise SignatureError(f"signature of {digest}: not an ed25519 signature document")
    if doc.get("digest") != digest:
        raise SignatureError(f"signature of {digest}: it signs {doc.get('digest')!r}, another artifact")
    expected = key_id(public_key)
    if doc.get("key_id") != expected:
        raise SignatureError(f"signature of {digest}: made with key {doc.get('key_id')!r}, "
                             f"not the configured key {expected}")
    try:
        public_key.verify(base64.b64decode(doc.get("signature", ""), validate=True), digest.encode("ascii"))
    except (InvalidSignature, ValueError, TypeError):
        raise SignatureError(f"signature of {digest}: invalid (content or signature was tampered with)") from None


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """An ed25519 private key from a PEM file that only its owner can read (mode 0600 or stricter)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"signing key {path}: cannot read it: {exc.strerror}") from None
    if mode & 0o077:
        raise KeyFileError(f"signing key {path} is readable by group/others (mode {stat.S_IMODE(mode):04o}); "
                           f"run `chmod 600 {path}`")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"signing key {path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"signing key {path}: not an ed25519 key (use `edgectl keys gen`)")
    return key


def load_public_key(path: Path | str) -> Ed25519PublicKey:
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise KeyFileError(f"public key {path}: cannot read it: {exc.strerror}") from None
    except ValueError as exc:
        raise KeyFileError(f"public key {path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"public key {path}: not an ed25519 key")
    return key


# --- pulling -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PulledModel:
    digest: str
    name: str
    version: int
    path: Path  # the extracted version folder, in staging (not yet in the model store)
    config: dict
    signed_by: str | None  # key id when the signature was verified


def check_model_manifest(manifest: dict, where: str) -> dict:
    """The single layer descriptor of an edge model manifest, or ArtifactError."""
    media_type = manifest.get("mediaType", OCI_MANIFEST)
    if manifest.get("schemaVersion") != 2 or media_type != OCI_MANIFEST:
        raise ArtifactError(f"{where}: not an OCI image manifest (mediaType {media_type!r})")
    if manifest.get("artifactType") != ARTIFACT_TYPE:
        raise ArtifactError(f"{where}: not an edge model artifact (artifactType {manifest.get('artifactType')!r}, "
                            f"expected {ARTIFACT_TYPE!r}); push it with `edgectl model push`")
    config = manifest.get("config") or {}
    if not isinstance(config, dict):
        raise ArtifactError(f"{where}: config must be a descriptor object, got {type(config).__name__}")
    if config.get("mediaType") != CONFIG_MEDIA_TYPE:
        raise ArtifactError(f"{where}: config mediaType {config.get('mediaType')!r}, expected {CONFIG_MEDIA_TYPE!r}")
    layers = manifest.get("layers") or []
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise ArtifactError(f"{where}: layers must be a list of descriptor objects")
    if len(layers) != 1 or layers[0].get("mediaType") != LAYER_MEDIA_TYPE:
        raise ArtifactError(f"{where}: must have exactly one {LAYER_MEDIA_TYPE} layer, has "
                            f"{[layer.get('mediaType') for layer in layers][:5]}")
    for descriptor in (config, layers[0]):
        digest, size = descriptor.get("digest"), descriptor.get("size")
        if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
            raise ArtifactError(f"{where}: descriptor digest {str(digest)[:80]!r} is not sha256:<64 hex digits>")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ArtifactError(f"{where}: descriptor size {size!r} is not a byte count")
    return layers[0]


def fetch_signature(client: RegistryClient, repository: str, digest: str) -> dict:
    """The signature document stored under the digest's ``.sig`` tag (SignatureError when absent)."""
    tag = signature_tag(digest)
    try:
        manifest, _, _ = client.get_manifest(repository, tag)
    except RegistryNotFound:
        raise SignatureError(f"unsigned artifact: {client.registry}/{repository}@{digest} has no signature "
                             f"(tag {tag}); sign it with `edgectl model push --sign-key`") from None
    layers = manifest.get("layers") or []
    if manifest.get("artifactType") != SIGNATURE_ARTIFACT_TYPE or len(layers) != 1 \
            or layers[0].get("mediaType") != SIGNATURE_MEDIA_TYPE:
        raise SignatureError(f"{repository}:{tag} is not an edge model signature")
    try:
        return json.loads(client.fetch_blob(repository, layers[0]["digest"], max_bytes=64 << 10))
    except (ValueError, KeyError) as exc:
        raise SignatureError(f"{repository}:{tag}: unreadable signature document ({exc})") from None


def pull_model(client: RegistryClient, ref: Reference, staging_dir: Path, *,
               public_key: Ed25519PublicKey | None = None, max_bytes: int = 2 << 30,
               progress: Progress | None = None) -> PulledModel:
    """Download, verify and unpack one model version into ``staging_dir/<name>-<version>-*/``."""
    digest = ref.digest or client.resolve(ref)
    where = f"{ref.registry}/{ref.repository}@{digest}"
    manifest, digest, _ = client.get_manifest(ref.repository, digest)
    layer = check_model_manifest(manifest, where)
    signed_by = None
    if public_key is not None:
        verify_signature(public_key, digest, fetch_signature(client, ref.repository, digest))
        signed_by = key_id(public_key)
    try:
        config = json.loads(client.fetch_blob(ref.repository, manifest["config"]["digest"], max_bytes=MAX_CONFIG_BYTES))
    except ValueError as exc:
        raise ArtifactError(f"{where}: config blob is not JSON ({exc})") from None
    check_config(config, f"{where} config")
    if layer["size"] > max_bytes:
        raise UnsafeArtifact(f"{where}: layer is {layer['size']} bytes, over the {max_bytes}-byte limit")
    staging_dir = Path(staging_dir)
    staging_dir.mkdir(parents=True, exist_ok=True)
    archive = staging_dir / f".layer-{layer['digest'].split(':', 1)[1]}.tar.gz"  # stable name: resumable
    client.download_blob(ref.repository, layer["digest"], archive, progress, expected_size=layer["size"])
    dest = Path(tempfile.mkdtemp(prefix=f".{config['name']}-{config['version']}-", dir=staging_dir))
    try:
        safe_extract(archive, dest, max_bytes=max_bytes)
    finally:
        archive.unlink(missing_ok=True)
    if not ((dest / "saved_model.pb").is_file() or (dest / "model.tflite").is_file()):
        shutil.rmtree(dest, ignore_errors=True)
        raise ArtifactError(f"{where}: the layer holds no saved_model.pb or model.tflite (not a version folder)")
    logger.info("pulled %s (%s version %s) into %s%s", where, config["name"], config["version"], dest,
                f", signed by {signed_by}" if signed_by else "")
    return PulledModel(digest=digest, name=config["name"], version=config["version"], path=dest,
                       config=config, signed_by=signed_by)
