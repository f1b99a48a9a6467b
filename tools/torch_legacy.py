"""Read PyTorch checkpoints (``torch.save`` output) into NumPy arrays without PyTorch.

Two on-disk formats exist:

* **legacy** (torch < 1.6, or ``_use_new_zipfile_serialization=False``): a run of pickles in one
  stream -- magic number, protocol version (1001), a ``sys_info`` dict, the object itself (tensors
  refer to storages by persistent id), the list of storage keys, then for each key in that order
  an 8-byte little-endian element count followed by the raw element bytes.
* **zip** (torch >= 1.6): a zip archive with ``<prefix>/data.pkl`` (the object) and one file per
  storage at ``<prefix>/data/<key>``.

Both are read with a restricted :class:`pickle.Unpickler` whose ``find_class`` resolves only the
few globals a state dict needs; any other global (``os.system``, ``builtins.eval``, ...) raises
:class:`UnsafeCheckpointError`, so loading an untrusted file cannot execute code.
"""

from __future__ import annotations

import collections
import io
import logging
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

logger = logging.getLogger(__name__)

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# Storage class name -> element dtype (little-endian; byte order is fixed up from sys_info).
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class CheckpointError(ValueError):
    """The file is not a PyTorch checkpoint this reader understands."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint's pickle references a global outside the allow-list."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclass(frozen=True)
class _StorageRef:
    """A persistent-id reference to a storage (or, legacy only, a view into one)."""

    key: str
    dtype: np.dtype
    numel: int
    view_offset: int = 0  # in elements, for legacy storage views
    view_numel: int | None = None


@dataclass(frozen=True)
class _LazyTensor:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: _StorageRef, storage_offset: int, size: tuple[int, ...],
                       stride: tuple[int, ...], requires_grad: bool = False,
                       backward_hooks: Any = None, metadata: Any = None) -> _LazyTensor:
    if not isinstance(storage, _StorageRef):
        raise CheckpointError(f"tensor refers to {type(storage).__name__}, not a storage")
    return _LazyTensor(storage, int(storage_offset), tuple(int(s) for s in size),
                       tuple(int(s) for s in stride))


def _rebuild_parameter(data: _LazyTensor, requires_grad: bool = False,
                       backward_hooks: Any = None) -> _LazyTensor:
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and records storage references."""

    def __init__(self, file: BinaryIO, byte_order: str = "<") -> None:
        super().__init__(file)
        self._byte_order = byte_order
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"checkpoint references global {module}.{name}, which is not allowed "
                "(only tensors, storages and OrderedDict may appear in a state dict)") from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel, *rest = pid
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"unsupported storage type {storage_type!r}")
        dtype = storage_type.dtype.newbyteorder(self._byte_order)
        key = str(key)
        root = self.storages.get(key)
        if root is None:
            root = _StorageRef(key, dtype, int(numel))
            self.storages[key] = root
        view_metadata = rest[0] if rest else None
        if view_metadata is None:
            return root
        _view_key, view_offset, view_numel = view_metadata
        return _StorageRef(key, dtype, root.numel, int(view_offset), int(view_numel))


def _materialize(tensor: _LazyTensor, data: np.ndarray) -> np.ndarray:
    """Apply offset/size/stride of ``tensor`` to the flat storage ``data``; returns a copy."""
    ref = tensor.storage
    base_offset = ref.view_offset + tensor.offset
    limit = ref.view_offset + (ref.view_numel if ref.view_numel is not None else ref.numel)
    if any(s < 0 for s in tensor.stride) or any(s < 0 for s in tensor.size):
        raise CheckpointError("negative sizes or strides are not supported")
    if 0 in tensor.size:
        return np.zeros(tensor.size, dtype=data.dtype.newbyteorder("="))
    last = base_offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride))
    if base_offset < 0 or last >= min(limit, data.size):
        raise CheckpointError(f"tensor of size {tensor.size} stride {tensor.stride} at offset "
                              f"{base_offset} overruns storage {ref.key} of {data.size} elements")
    view = np.lib.stride_tricks.as_strided(
        data[base_offset:], shape=tensor.size,
        strides=tuple(s * data.itemsize for s in tensor.stride), writeable=False)
    return np.ascontiguousarray(view).astype(data.dtype.newbyteorder("="), copy=False)


def _resolve(obj: Any, storages: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, _LazyTensor):
        return _materialize(obj, storages[obj.storage.key])
    if isinstance(obj, dict):
        return {k: _resolve(v, storages) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v, storages) for v in obj)
    return obj


def _plain_load(file: BinaryIO) -> Any:
    """Load one pickle that may contain nothing but plain data (no globals at all)."""

    class _NoGlobals(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            raise UnsafeCheckpointError(f"unexpected global {module}.{name} in checkpoint header")

    return _NoGlobals(file).load()


def _load_legacy(file: BinaryIO) -> Any:
    magic = _plain_load(file)
    if magic != LEGACY_MAGIC_NUMBER:
        raise CheckpointError("not a PyTorch checkpoint (bad magic number)")
    protocol = _plain_load(file)
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError(f"unsupported legacy protocol version {protocol!r}")
    sys_info = _plain_load(file)
    byte_order = "<" if sys_info.get("little_endian", True) else ">"
    unpickler = _RestrictedUnpickler(file, byte_order)
    obj = unpickler.load()
    keys = _plain_load(file)
    if not isinstance(keys, list):
        raise CheckpointError("legacy checkpoint has no storage key list")
    count_format = byte_order + "q"
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        ref = unpickler.storages.get(str(key))
        if ref is None:
            raise CheckpointError(f"storage {key} is listed but never referenced")
        header = file.read(8)
        if len(header) != 8:
            raise CheckpointError(f"checkpoint truncated before storage {key}")
        (numel,) = struct.unpack(count_format, header)
        nbytes = numel * ref.dtype.itemsize
        raw = file.read(nbytes)
        if len(raw) != nbytes:
            raise CheckpointError(f"checkpoint truncated inside storage {key}")
        storages[ref.key] = np.frombuffer(raw, dtype=ref.dtype)
    missing = set(unpickler.storages) - set(storages)
    if missing:
        raise CheckpointError(f"storages missing from checkpoint: {sorted(missing)[:5]}")
    return _resolve(obj, storages)


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pickles:
            raise CheckpointError(f"{path}: zip checkpoint without data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder_name = prefix + "byteorder"
        byte_order = "<"
        if byteorder_name in archive.namelist():
            byte_order = "<" if archive.read(byteorder_name).strip() == b"little" else ">"
        unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), byte_order)
        obj = unpickler.load()
        storages = {
            key: np.frombuffer(archive.read(f"{prefix}data/{key}"), dtype=ref.dtype)
            for key, ref in unpickler.storages.items()
        }
    return _resolve(obj, storages)


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Load a PyTorch state dict from ``path`` as ``{name: ndarray}`` without importing torch.

    Accepts the legacy (non-zip) format and the zip format. Raises :class:`CheckpointError` for
    unreadable files and :class:`UnsafeCheckpointError` when the pickle references a global
    outside the allow-list.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        obj = _load_zip(path)
    else:
        with path.open("rb") as file:
            obj = _load_legacy(file)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: checkpoint holds a {type(obj).__name__}, not a state dict")
    bad = [k for k, v in obj.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {bad[:5]}")
    logger.debug("loaded %d tensors from %s", len(obj), path)
    return dict(obj)
