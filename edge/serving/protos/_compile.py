"""The vendored TF Serving .proto files as a serialized FileDescriptorSet.

The wheel carries the set, compiled when the package is built (``setup.py`` calls
:func:`write_packaged_set`): ``descriptors.binpb`` beside the .proto files, with
``descriptors.sha256`` naming the SHA-256 of every vendored .proto (path and contents) it was made
from. At run time the packaged set is used when that digest matches the .proto files present, so a
device needs neither a compiler nor grpcio-tools. Otherwise (a source checkout whose .proto files
changed since the last build) ``grpc_tools.protoc`` (grpcio-tools, a build/test dependency) runs in a
child process and the result is cached under ``$XDG_CACHE_HOME/edge/`` (default ``~/.cache/edge/``)
in a file named after that digest; when no cache folder is writable it is compiled in memory. No
generated code is written anywhere.

This module imports only the standard library and edge.errors / edge.util (the build loads it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from edge.errors import ProtoCompileError
from edge.util.fsutil import atomic_write_bytes

logger = logging.getLogger(__name__)

PROTO_ROOT = Path(__file__).resolve().parent
CACHE_PREFIX = "tfserving-protos-"
PACKAGED_SET = "descriptors.binpb"
PACKAGED_DIGEST = "descriptors.sha256"



def proto_files() -> list[str]:
    """Every vendored .proto, as a path relative to PROTO_ROOT (the import path), sorted."""
    return sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_ROOT.rglob("*.proto"))


def source_digest(files: list[str] | None = None) -> str:
    """SHA-256 over the relative paths and contents of the vendored .proto files."""
    digest = hashlib.sha256()
    for rel in files if files is not None else proto_files():
        digest.update(rel.encode() + b"\0")
        digest.update((PROTO_ROOT / rel).read_bytes() + b"\0")
    return digest.hexdigest()


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edge"


def cache_path(digest: str | None = None) -> Path:
    return cache_dir() / f"{CACHE_PREFIX}{(digest or source_digest())[:32]}.binpb"


def _well_known_include() -> str:
    import grpc_tools  # build/test dependency: only when the descriptor set must be compiled

    return str(Path(grpc_tools.__file__).resolve().parent / "_proto")


def _protoc_args(files: list[str], out: str, include: str) -> list[str]:
    return [
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        "--include_imports",
        f"--descriptor_set_out={out}",
        *files,
    ]


def compile_descriptor_set(files: list[str] | None = None) -> bytes:
    """Run protoc on the vendored files and return the serialized FileDescriptorSet.

    protoc runs in a child process: grpc_tools links its own C++ protobuf runtime, and running it
    inside a process that later imports TensorFlow (another C++ protobuf) crashes that import.
    """
    files = files if files is not None else proto_files()
    try:
        include = _well_known_include()
    except ImportError as exc:
        raise ProtoCompileError(
            "TF Serving protos need grpcio-tools to compile (pip install grpcio-tools)"
        ) from exc
    with tempfile.TemporaryDirectory(prefix="edge-protoc-") as tmp:
        out = os.path.join(tmp, "descriptors.binpb")
        args = _protoc_args(files, out, include)
        proc = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            detail = " ".join(proc.stderr.split()) or f"exit status {proc.returncode}"
            raise ProtoCompileError(f"protoc failed on edge/serving/protos: {detail}")
        return Path(out).read_bytes()


def write_packaged_set(out_dir: Path) -> None:
    """Compile the set into `out_dir` (the build): descriptors.binpb and the digest it was made from."""
    files = proto_files()
    data = compile_descriptor_set(files)
    (Path(out_dir) / PACKAGED_SET).write_bytes(data)
    (Path(out_dir) / PACKAGED_DIGEST).write_text(source_digest(files) + "\n")


def packaged_set(digest: str) -> bytes | None:
    """The set the package was built with, when it was built from exactly these .proto files."""
    try:
        built_from = (PROTO_ROOT / PACKAGED_DIGEST).read_text().strip()
        if built_from != digest:
            logger.info("the packaged TF Serving descriptor set is from other .proto files; compiling")
            return None
        return (PROTO_ROOT / PACKAGED_SET).read_bytes() or None
    except OSError:
        return None


def load_descriptor_set(use_cache: bool = True) -> bytes:
    """The serialized FileDescriptorSet: the packaged one when it matches the .proto files, else from the
    cache when it matches, else compiled (and cached)."""
    files = proto_files()
    digest = source_digest(files)
    packaged = packaged_set(digest)
    if packaged is not None:
        return packaged
    path = cache_path(digest)
    if use_cache:
        try:
            data = path.read_bytes()
        except OSError:
            pass
        else:
            if data:
                logger.debug("TF Serving descriptors from cache %s", path)
                return data
    data = compile_descriptor_set(files)
    if use_cache:
        try:
            atomic_write_bytes(path, data, 0o644, mkdir=True)
        except OSError as exc:
            logger.debug("cannot cache TF Serving descriptors at %s: %s", path, exc)
    return data
