"""Compile the vendored TF Serving .proto files into a serialized FileDescriptorSet.

`grpc_tools.protoc` (package `grpcio-tools`) runs in a child process (see compile_descriptor_set); the result is cached under
`$XDG_CACHE_HOME/edge/` (default `~/.cache/edge/`) in a file named after a SHA-256 of every
vendored .proto (path and contents), so an edit to any of them recompiles and a stale cache is
never read. When the cache folder is not writable the set is compiled in memory on every start.
No generated code is written anywhere.
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


def load_descriptor_set(use_cache: bool = True) -> bytes:
    """The serialized FileDescriptorSet: from the cache when it matches, else compiled (and cached)."""
    files = proto_files()
    path = cache_path(source_digest(files))
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
