"""Read a legacy (non-zip) PyTorch ``.pth`` state dict into numpy arrays without torch.

The legacy format written by ``torch.save(..., _use_new_zipfile_serialization=False)``
is a sequence of pickles followed by raw storage bytes:

1. the magic number ``0x1950a86a20f9469cfc6c``,
2. the protocol version (1001),
3. a ``sys_info`` dict (byte order and C type sizes),
4. the state dict itself, whose tensors refer to storages through persistent ids
   ``('storage', StorageClass, key, device, numel, view_metadata)``,
5. the list of storage keys in the order their data follows,
6. for each key: a little-endian int64 element count and ``count * itemsize`` bytes.

Unpickling runs arbitrary callables named by the pickle, so the loader resolves
only the globals a plain state dict needs and raises :class:`UnsafePickleError`
for everything else.
"""

from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch storage class name -> numpy dtype of its elements (little-endian).
STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced a global outside the state-dict allow list."""


class CheckpointFormatError(ValueError):
    """A file is not a legacy PyTorch state dict this reader understands."""


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: np.dtype


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise CheckpointFormatError(f"storage {self.storage.key} has no data in the file")
        if not self.shape:
            return data[self.offset : self.offset + 1].reshape(()).copy()
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise CheckpointFormatError(f"tensor refers to {type(storage).__name__}, expected a storage")
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name])
        raise UnsafePickleError(
            f"checkpoint pickle references disallowed global {module}.{name}; "
            "only OrderedDict, torch._utils._rebuild_tensor_v2 and torch storage classes are allowed"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise CheckpointFormatError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _device, numel, view_metadata = pid
        if not isinstance(storage_type, _StorageType):
            raise CheckpointFormatError(f"persistent id names {storage_type!r}, expected a storage class")
        if view_metadata is not None:
            raise CheckpointFormatError(f"storage {key} is a storage view, which this reader does not support")
        storage = self.storages.get(key)
        if storage is None:
            storage = _Storage(str(key), storage_type.dtype, int(numel))
            self.storages[key] = storage
        return storage


class _PlainUnpickler(pickle.Unpickler):
    """Unpickler for the header and key-list pickles, which contain only builtin values."""

    def find_class(self, module: str, name: str):
        raise UnsafePickleError(f"checkpoint header pickle references disallowed global {module}.{name}")


def _read_header(file: BinaryIO) -> None:
    magic = _PlainUnpickler(file).load()
    if magic != LEGACY_MAGIC_NUMBER:
        raise CheckpointFormatError(
            "not a legacy PyTorch checkpoint (bad magic number); zip-format checkpoints are not supported"
        )
    protocol = _PlainUnpickler(file).load()
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise CheckpointFormatError(f"unsupported legacy protocol version {protocol}")
    sys_info = _PlainUnpickler(file).load()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise CheckpointFormatError("checkpoint was written on a big-endian machine, which is not supported")


def _read_storage_data(file: BinaryIO, unpickler: _StateDictUnpickler) -> None:
    keys = _PlainUnpickler(file).load()
    for key in keys:
        storage = unpickler.storages.get(key)
        if storage is None:
            raise CheckpointFormatError(f"storage {key} has data but no tensor refers to it")
        count = int(np.frombuffer(file.read(8), dtype="<i8")[0])
        if count != storage.numel:
            raise CheckpointFormatError(f"storage {key} contains {count} elements, expected {storage.numel}")
        nbytes = count * storage.dtype.itemsize
        raw = file.read(nbytes)
        if len(raw) != nbytes:
            raise CheckpointFormatError(f"storage {key} is truncated ({len(raw)} of {nbytes} bytes)")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Load every tensor of a legacy ``.pth`` state dict as a contiguous numpy array.

    Raises :class:`UnsafePickleError` if the pickle names any global outside the
    allow list, and :class:`CheckpointFormatError` for other format problems.
    """
    with open(path, "rb") as file:
        _read_header(file)
        unpickler = _StateDictUnpickler(file)
        state = unpickler.load()
        if not isinstance(state, dict):
            raise CheckpointFormatError(f"{path} contains a {type(state).__name__}, expected a state dict")
        _read_storage_data(file, unpickler)

    tensors: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if not isinstance(value, _TensorRef):
            raise CheckpointFormatError(f"state dict entry {name!r} is a {type(value).__name__}, expected a tensor")
        tensors[name] = value.materialize()
    return tensors
