"""Torch ``state_dict`` files (legacy and zip format) read into NumPy arrays without torch, safely.

A pickle can run arbitrary code, so a restricted unpickler builds NumPy arrays from tensors
and ordered dicts and refuses every other global; it also refuses files that ask for more
than their bytes hold (storages of another size, tensors outside their storage, shared or
nested structures that would take exponential time or unbounded memory).
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nnjax.errors import DataNotFoundError, NnjaxError


class UnsafePickleError(NnjaxError):
    """A pickle asked for something a weight file never contains, or for more than its bytes hold."""


_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


#: All tensors of one file together may hold at most this many times the bytes of its storages:
#: distinct views may overlap a storage (``w.t()`` and ``w[1:]``), identical views count once, and
#: anything beyond this factor is a crafted file asking for memory it does not hold.
_TENSOR_BYTES_PER_STORAGE_BYTE = 2
_MAX_DIMS = 32  # a weight tensor has at most a handful; NumPy allows 64
_MAX_EXTENT = 1 << 48  # bound on any size, stride, offset or element count
_MAX_NESTING = 100  # containers inside containers; a state dict nests two or three levels
_MAX_MEMO_INDEX = 1 << 32  # what LONG_BINPUT can name; text PUT could name any integer


class _StorageType:
    """Stands in for ``torch.FloatStorage`` & co.: only remembers the dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A flat typed buffer of ``numel`` elements; ``data`` is filled once the raw bytes have been read."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, int(numel)
        self.data: np.ndarray | None = None


class _StorageView:
    """A legacy-format view into a root storage (offset and length in elements, checked to fit it)."""

    def __init__(self, root: _Storage, offset: int, numel: int):
        self.root, self.offset, self.numel = root, int(offset), int(numel)


def _small_int(value: Any) -> bool:
    return type(value) is int and 0 <= value < _MAX_EXTENT


class _TensorRef:
    """A tensor waiting for its storage bytes: ``storage[offset]`` with size / stride (in elements)."""

    def __init__(self, storage: Any, offset: int, size: tuple, stride: tuple, path: str = "this pickle"):
        if not isinstance(storage, (_Storage, _StorageView)):
            raise UnsafePickleError(f"{path} has a tensor that is not backed by a storage; it is not a weight file.")
        if not (_int_tuple(size) and _int_tuple(stride) and len(size) == len(stride) and _small_int(offset)):
            raise UnsafePickleError(f"{path} has a tensor with a malformed size, stride or offset; it is corrupt.")
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def bounds(self, path: str) -> tuple[_Storage, int, int]:
        """``(root storage, first element, element count)`` once every element the tensor can reach
        is known to lie in its storage's bytes and the tensor holds no more elements than they do."""
        if not (
            _int_tuple(self.size)
            and _int_tuple(self.stride)
            and len(self.size) == len(self.stride)
            and _small_int(self.offset)
            and isinstance(self.storage, (_Storage, _StorageView))
        ):
            raise UnsafePickleError(f"{path} has a tensor with a malformed size, stride or offset; it is corrupt.")
        if isinstance(self.storage, _StorageView):
            root, base, limit = self.storage.root, self.storage.offset, self.storage.numel
        else:
            root, base, limit = self.storage, 0, self.storage.numel
        if root.data is None:
            raise NnjaxError(f"{path}: storage {root.key!r} has no data in the file; it is truncated or corrupt.")
        numel = math.prod(self.size)
        if numel == 0:
            return root, base, 0
        last = self.offset + sum((n - 1) * st for n, st in zip(self.size, self.stride, strict=True))
        if last >= limit:
            raise UnsafePickleError(
                f"{path} has a tensor of shape {self.size} that reaches element {last} of a storage of "
                f"{limit} elements; the file is corrupt or crafted, so it was not loaded."
            )
        if numel > limit:
            raise UnsafePickleError(
                f"{path} has a tensor of shape {self.size} with {numel} elements over a storage of only "
                f"{limit} (stride 0 or overlapping strides); the file is corrupt or crafted, so it was not loaded."
            )
        return root, base + self.offset, numel

    def materialize(self, path: str = "this pickle") -> np.ndarray:
        """A new array copied from the storage (never more elements than the storage holds)."""
        root, start, numel = self.bounds(path)
        if numel == 0:
            return np.zeros(self.size, root.dtype)
        item = root.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            root.data[start:], shape=self.size, strides=[st * item for st in self.stride]
        )
        return np.array(view, copy=True)


def _int_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) <= _MAX_DIMS and all(_small_int(v) for v in value)


def _ascii(value: Any) -> Any:
    return value.decode("ascii") if isinstance(value, bytes) else value


def _check_key(key: Any, path: str) -> None:
    """Dict keys must be strings or small ints: hashing a tuple nested from shared parts takes time
    exponential in its depth, and crafted big ints can all share one hash."""
    if type(key) is str or (type(key) is int and -(1 << 31) <= key < (1 << 31)):
        return
    raise UnsafePickleError(
        f"{path} keys a dict by a value of type {type(key).__name__}, which a weight file never does (its "
        "keys are strings), so it was not loaded."
    )


class _RestrictedUnpickler(pickle._Unpickler):
    """Allows exactly: ``collections.OrderedDict``, ``torch._utils._rebuild_tensor[_v2]``
    (rebuilt as NumPy references) and ``torch.<Type>Storage``; refuses every other global.

    Bounded as well as restricted: it is the pure-Python unpickler (its memo is a dict, where
    the C unpickler allocates an array as long as the largest memo index a pickle names, so 10
    bytes can ask for gigabytes), dict keys must be strings or small ints (no exponential or
    colliding hashes), sets are refused, and BUILD may only set a dict's attributes.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, path: str, storages: dict[str, _Storage], zip_format: bool):
        super().__init__(file, encoding="utf-8")
        self._path = path
        self._storages = storages
        self._zip = zip_format

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return self._ordered_dict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(
            f"{self._path} asks to import {module}.{name}, which a weight file never needs, so it was "
            "not loaded (it could run code); use a state dict saved with torch.save(model.state_dict())."
        )

    def _rebuild_tensor(self, storage, storage_offset, size, stride, *_grad_hooks_metadata) -> _TensorRef:
        """``torch._utils._rebuild_tensor(storage, offset, size, stride)`` and ``_rebuild_tensor_v2``
        (which adds requires_grad, backward hooks and metadata, none of them kept)."""
        return _TensorRef(storage, storage_offset, size, stride, self._path)

    def _ordered_dict(self, items: Any = ()) -> collections.OrderedDict:
        result: collections.OrderedDict = collections.OrderedDict()
        for key, value in items.items() if isinstance(items, Mapping) else items:
            _check_key(key, self._path)
            result[key] = value
        return result

    def persistent_load(self, pid: Any):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and _ascii(pid[0]) == "storage"):
            raise UnsafePickleError(f"{self._path} holds an unknown persistent object; it is not a weight file.")
        storage_type, key, numel = pid[1], _ascii(pid[2]), pid[4]
        if not isinstance(storage_type, _StorageType) or type(key) is not str or not _small_int(numel):
            raise UnsafePickleError(f"{self._path} has a malformed storage record; it is not a weight file.")
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(key, storage_type.dtype, numel)
        elif storage.dtype != storage_type.dtype or storage.numel != numel:
            raise UnsafePickleError(
                f"{self._path} declares storage {key!r} twice with different types or sizes; it is corrupt."
            )
        view = pid[5] if len(pid) > 5 and not self._zip else None
        if view is not None:
            if not (
                isinstance(view, tuple)
                and len(view) == 3
                and _small_int(view[1])
                and _small_int(view[2])
                and view[1] + view[2] <= numel
            ):
                raise UnsafePickleError(
                    f"{self._path} has a storage view outside its storage {key!r}; the file is corrupt."
                )
            return _StorageView(storage, view[1], view[2])
        return storage

    # --- opcodes that would hash, allocate or mutate beyond what a weight file needs

    def load_setitem(self):
        _check_key(self.stack[-2], self._path)
        pickle._Unpickler.load_setitem(self)

    def load_setitems(self):  # after MARK, self.stack holds key, value, key, value, ...
        for key in self.stack[0::2]:
            _check_key(key, self._path)
        pickle._Unpickler.load_setitems(self)

    def load_dict(self):
        for key in self.stack[0::2]:
            _check_key(key, self._path)
        pickle._Unpickler.load_dict(self)

    def load_build(self):
        inst, state = self.stack[-2], self.stack[-1]
        if type(inst) not in (dict, collections.OrderedDict) or not isinstance(state, dict):
            raise UnsafePickleError(
                f"{self._path} sets the state of a {type(inst).__name__}, which a weight file never does, "
                "so it was not loaded."
            )
        pickle._Unpickler.load_build(self)

    def load_put(self):
        index = int(self.readline()[:-1])
        if not 0 <= index < _MAX_MEMO_INDEX:
            raise UnsafePickleError(f"{self._path} uses a memo index out of range; the file is corrupt.")
        self.memo[index] = self.stack[-1]

    def load_set(self):
        raise UnsafePickleError(f"{self._path} builds a set, which a weight file never holds, so it was not loaded.")

    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.DICT[0]] = load_dict
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.PUT[0]] = load_put
    for _opcode in (pickle.EMPTY_SET, pickle.ADDITEMS, pickle.FROZENSET):
        dispatch[_opcode[0]] = load_set
    del _opcode


class _Materializer:
    """Turns tensor references into arrays. Every shared sub-object is walked once (memo by
    identity), a container holding itself or nested over ``_MAX_NESTING`` deep is refused,
    identical views of one storage share one array, and all arrays together stay within
    ``budget`` bytes."""

    def __init__(self, path: str, budget: int | None):
        self.path, self.left = path, budget
        self.memo: dict[int, Any] = {}
        self.views: dict[tuple, np.ndarray] = {}
        self.active: set[int] = set()

    def tensor(self, ref: _TensorRef) -> np.ndarray:
        root, start, numel = ref.bounds(self.path)
        signature = (id(root), start, ref.size, ref.stride)
        array = self.views.get(signature)
        if array is None:
            nbytes = numel * root.dtype.itemsize
            if self.left is not None:
                if nbytes > self.left:
                    raise UnsafePickleError(
                        f"{self.path}'s tensors overlap so much that they would take more than "
                        f"{_TENSOR_BYTES_PER_STORAGE_BYTE} times the bytes the file holds; it is corrupt or "
                        "crafted, so it was not loaded."
                    )
                self.left -= nbytes
            array = self.views[signature] = ref.materialize(self.path)
        return array

    def __call__(self, obj: Any, depth: int = 0) -> Any:
        if not isinstance(obj, (_TensorRef, Mapping, list, tuple)):
            return obj
        key = id(obj)
        if key in self.memo:
            return self.memo[key]
        if isinstance(obj, _TensorRef):
            result = self.tensor(obj)
        else:
            if key in self.active:
                raise UnsafePickleError(
                    f"{self.path} holds a container that contains itself, which a weight file (a tree of "
                    "dicts and tensors) never does, so it was not loaded."
                )
            if depth >= _MAX_NESTING:
                raise UnsafePickleError(
                    f"{self.path} nests containers more than {_MAX_NESTING} levels deep, which a weight file "
                    "never does, so it was not loaded."
                )
            self.active.add(key)
            if isinstance(obj, Mapping):
                result = {k: self(v, depth + 1) for k, v in obj.items()}
            else:
                result = type(obj)(self(v, depth + 1) for v in obj)
            self.active.discard(key)
        self.memo[key] = result
        return result


def _materialize(obj: Any, path: str = "this pickle", budget: int | None = None) -> Any:
    """``obj`` with every tensor reference replaced by a NumPy array (dicts, lists, tuples rebuilt).

    Linear in the number of distinct objects however they are shared; ``budget``: the most
    bytes all arrays together may take (None: only each tensor's own bounds are checked).
    """
    return _Materializer(path, budget)(obj)


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _storage_bytes(storages: Mapping[str, _Storage]) -> int:
    return sum(s.numel * s.dtype.itemsize for s in storages.values() if s.data is not None)


def _load_legacy(handle, path: str) -> tuple[Any, int]:
    """torch's pre-1.6 format: magic, protocol, sys info, the object pickle, the list of
    storage keys, then per storage an int64 element count and the raw little-endian bytes.

    ``handle``: a binary file object (an in-memory one keeps every read within the bytes present).
    Returns ``(object, bytes of storage data read)``.
    """
    no_storage: dict[str, _Storage] = {}
    magic = _RestrictedUnpickler(handle, path, no_storage, False).load()
    if magic != _LEGACY_MAGIC:
        raise NnjaxError(f"{path} is not a torch weight file (bad magic number); check the file.")
    _RestrictedUnpickler(handle, path, no_storage, False).load()  # protocol version
    sys_info = _RestrictedUnpickler(handle, path, no_storage, False).load()
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        raise NnjaxError(f"{path} was written on a big-endian machine, which is not supported.")
    storages: dict[str, _Storage] = {}
    result = _RestrictedUnpickler(handle, path, storages, False).load()
    keys = _RestrictedUnpickler(handle, path, no_storage, False).load()
    if not isinstance(keys, list):
        raise NnjaxError(f"{path} has no storage index; the file is truncated or corrupt.")
    for key in keys:
        storage = storages.get(key) if isinstance(key, str) else None
        if storage is None:
            raise NnjaxError(f"{path} lists a storage that no tensor uses; the file is corrupt.")
        if storage.data is not None:
            raise NnjaxError(f"{path} lists storage {key!r} twice; the file is corrupt.")
        header = handle.read(8)
        if len(header) != 8:
            raise NnjaxError(f"{path} ends early (storage {key!r}); download the file again.")
        (numel,) = struct.unpack("<q", header)
        if numel != storage.numel:
            raise NnjaxError(
                f"{path} disagrees about the size of storage {key!r} ({numel} vs {storage.numel} elements); "
                "the file is corrupt."
            )
        nbytes = numel * storage.dtype.itemsize
        raw = handle.read(nbytes)
        if len(raw) != nbytes:
            raise NnjaxError(f"{path} ends early (storage {key!r}); download the file again.")
        storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<")).astype(storage.dtype)
    return result, _storage_bytes(storages)


def _read_member(archive: zipfile.ZipFile, name: str, path: str, size_on_disk: int) -> bytes:
    """One zip member's bytes, refused unless stored as torch writes them (uncompressed, inside the file)."""
    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
        raise UnsafePickleError(
            f"{path}: {name} is compressed, but torch.save writes weight files uncompressed; re-save the "
            "weights with torch.save."
        )
    if info.header_offset + info.compress_size > size_on_disk:
        raise NnjaxError(f"{path}: {name} claims more bytes than the file holds; download the file again.")
    return archive.read(name)


def _load_zip(path: str) -> tuple[Any, int]:
    """torch's zip format (1.6+): ``<root>/data.pkl`` plus raw storages in ``<root>/data/<key>``.

    Returns ``(object, bytes of storage data read)``; every storage member must hold exactly
    ``numel * itemsize`` bytes.
    """
    size_on_disk = os.path.getsize(path)
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        pickles = sorted(n for n in names if n.endswith("/data.pkl") or n == "data.pkl")
        if not pickles:
            raise NnjaxError(f"{path} is a zip file without data.pkl; it is not a torch weight file.")
        root = pickles[0][: -len("data.pkl")]
        if f"{root}byteorder" in names:
            if _read_member(archive, f"{root}byteorder", path, size_on_disk).strip() != b"little":
                raise NnjaxError(f"{path} was written on a big-endian machine, which is not supported.")
        storages: dict[str, _Storage] = {}
        data = _read_member(archive, pickles[0], path, size_on_disk)
        result = _RestrictedUnpickler(io.BytesIO(data), path, storages, True).load()
        for key, storage in storages.items():
            member = f"{root}data/{key}"
            if member not in names:
                raise NnjaxError(f"{path} lacks storage {member}; the file is truncated or corrupt.")
            need = storage.numel * storage.dtype.itemsize
            if archive.getinfo(member).file_size != need:
                raise NnjaxError(
                    f"{path}: storage {member} holds {archive.getinfo(member).file_size} bytes but its record "
                    f"says {need}; the file is corrupt."
                )
            raw = _read_member(archive, member, path, size_on_disk)
            storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<")).astype(storage.dtype)
    return result, _storage_bytes(storages)


def load_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a torch ``state_dict`` file (legacy or zip format) into NumPy arrays, safely.

    Only tensors, ordered dicts and plain Python values are accepted; any other global in
    the pickle raises :class:`UnsafePickleError` before anything is constructed. The file
    also cannot ask for more than its bytes hold: every storage must be exactly as long as
    it says, every tensor must lie inside its storage and hold no more elements than it, all
    tensors together at most twice the storages' bytes, and shared or nested objects are
    walked once. Returns ``{name: array}`` (a top-level ``"state_dict"`` entry is unwrapped).
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"Weight file {str(path)!r} does not exist; check the path.")
    try:
        if zipfile.is_zipfile(path):
            result, storage_bytes = _load_zip(str(path))
        else:
            with open(path, "rb") as handle:
                raw = handle.read()
            result, storage_bytes = _load_legacy(io.BytesIO(raw), str(path))
            del raw
    except NnjaxError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
        OverflowError,
        struct.error,
        zipfile.BadZipFile,
        OSError,
        RecursionError,
    ) as err:
        raise NnjaxError(
            f"{str(path)!r} is not a readable torch weight file ({type(err).__name__}); download it again."
        ) from None
    if isinstance(result, Mapping) and "state_dict" in result and isinstance(result["state_dict"], Mapping):
        result = result["state_dict"]
    if not isinstance(result, Mapping):
        raise NnjaxError(f"{str(path)!r} does not hold a state dict (found {type(result).__name__}).")
    arrays = _materialize(result, str(path), _TENSOR_BYTES_PER_STORAGE_BYTE * storage_bytes)
    return {str(k): v for k, v in arrays.items() if isinstance(v, np.ndarray)}
