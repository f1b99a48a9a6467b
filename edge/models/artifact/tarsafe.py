"""Safe unpacking of a model layer: no absolute paths, `..`, links, devices, duplicates, bombs or corrupt gzip."""
from __future__ import annotations

import gzip
import logging
import os
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from edge.errors import ArtifactError, UnsafeArtifact

logger = logging.getLogger(__name__)


MAX_MEMBERS = 10_000  # a SavedModel folder holds tens of files; more is a tar bomb


MAX_MEMBER_DEPTH = 32


MAX_MEMBER_NAME = 1024


COPY_CHUNK = 1 << 20


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
