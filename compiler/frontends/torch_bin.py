"""Reading a ``pytorch_model.bin`` (torch.save's zip archive): tensor names, dtypes and
shapes, never the data.

The archive holds ``<name>/data.pkl``, a pickle of the state dict in which each tensor
is a call ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and each
storage a persistent id ``("storage", torch.<Type>Storage, key, location, numel)``; the
bytes live in separate members ``<name>/data/<key>``. Only ``data.pkl`` is read, with an
unpickler that knows those few names and refuses any other (a pickle can run any code
it names; this one builds nothing but records). torch is not imported.

Not read: torch.save's legacy (pre-1.6, non-zip) format, quantized tensors, tensor
subclasses; each is refused in one line.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from math import prod
from pathlib import Path

from chipletc.ir.errors import ModelError

from .safetensors_header import ITEM_BYTES, TensorEntry

__all__ = ["read_bin"]

# torch.<Type>Storage -> the safetensors dtype name of its elements.
_STORAGES = {
    "DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16",
    "BFloat16Storage": "BF16", "LongStorage": "I64", "IntStorage": "I32",
    "ShortStorage": "I16", "CharStorage": "I8", "ByteStorage": "U8", "BoolStorage": "BOOL",
    "Float8_e4m3fnStorage": "F8_E4M3", "Float8_e5m2Storage": "F8_E5M2",
}  # fmt: skip


@dataclass(frozen=True)
class _StorageType:
    dtype: str


@dataclass(frozen=True)
class _Storage:
    dtype: str
    numel: int


@dataclass(frozen=True)
class _Tensor:
    dtype: str
    shape: tuple[int, ...]


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, *_rest: object) -> _Tensor:
    return _Tensor(storage.dtype, tuple(int(n) for n in size))


def _rebuild_parameter(data: _Tensor, *_rest: object) -> _Tensor:
    return data


_CALLABLES = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, file: object, where: str) -> None:
        super().__init__(file)  # type: ignore[arg-type]
        self.where = where

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _CALLABLES:
            return _CALLABLES[module, name]
        if module == "torch" and name in _STORAGES:
            return _StorageType(_STORAGES[name])
        raise ModelError(
            f"{self.where}: the pickle names {module}.{name}, which a plain state dict of "
            "tensors does not; save the checkpoint as safetensors"
        )

    def persistent_load(self, pid: object) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ModelError(f"{self.where}: unknown persistent id {pid!r} in the pickle")
        kind = pid[1]
        if not isinstance(kind, _StorageType):
            raise ModelError(f"{self.where}: storage of unknown type {kind!r}")
        return _Storage(kind.dtype, int(pid[4]))


def read_bin(path: Path) -> dict[str, TensorEntry]:
    """The tensors of one ``pytorch_model.bin``, from its pickle alone (bytes are
    elements x element size of each tensor, whatever storage it views)."""
    where = f"checkpoint {path}"
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pkl) != 1:
                raise ModelError(f"{where}: no data.pkl in the archive; not a torch.save file")
            with archive.open(pkl[0]) as f:
                state = _MetadataUnpickler(f, where).load()
    except zipfile.BadZipFile:
        raise ModelError(
            f"{where}: not a zip archive (torch.save's legacy format, or not a checkpoint); "
            "re-save it with a current torch or as safetensors"
        ) from None
    except OSError as err:
        raise ModelError(f"{where}: cannot be read ({err.strerror or err})") from None
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError) as err:
        raise ModelError(f"{where}: corrupt pickle ({err})") from None
    if not isinstance(state, dict):
        raise ModelError(f"{where}: the pickle holds a {type(state).__name__}, not a state dict")
    out = {}
    for name, t in state.items():
        if not isinstance(t, _Tensor):
            raise ModelError(f"{where}: entry {name!r} is not a tensor")
        size = ITEM_BYTES[t.dtype]
        assert size is not None  # every storage type above has whole-byte elements
        out[name] = TensorEntry(name, t.dtype, t.shape, prod(t.shape) * size, path.name)
    return out
