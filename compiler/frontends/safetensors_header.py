"""Reading safetensors headers: tensor names, dtypes, shapes and exact bytes, never data.

A safetensors file is an 8-byte little-endian header length, a JSON header mapping
each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}``, then the raw
bytes. Only the first two are read, so a checkpoint of any size costs two small reads
per shard, and header-only files (tests, or a download that stopped after the header)
work. Byte counts are ``end - begin``: exact even for packed or quantized tensors. The
``safetensors`` package is not needed.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path

from chipletc.ir.errors import ModelError

__all__ = ["ITEM_BYTES", "TensorEntry", "read_header"]

# Bytes per element of each safetensors dtype; None where elements are packed.
ITEM_BYTES: dict[str, int | None] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F6_E2M3": None, "F6_E3M2": None, "F4": None,
}  # fmt: skip
_MAX_HEADER = 100_000_000  # bytes; the limit the safetensors format itself sets


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as a safetensors header describes it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    file: str


def read_header(path: Path) -> dict[str, TensorEntry]:
    """The tensors of one ``.safetensors`` file, from its header alone.

    Raises ``ModelError`` naming the file when it is missing, shorter than its header,
    or its header is not the JSON the format defines (dtype, shape and offsets that
    agree).
    """
    where = f"checkpoint {path}"
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelError(f"{where}: corrupt safetensors header (file shorter than 8 bytes)")
            (size,) = struct.unpack("<Q", head)
            if size > _MAX_HEADER:
                raise ModelError(
                    f"{where}: corrupt safetensors header (length {size} exceeds 100 MB)"
                )
            raw = f.read(size)
    except OSError as err:
        raise ModelError(f"{where}: cannot be read ({err.strerror})") from None
    if len(raw) < size:
        raise ModelError(
            f"{where}: corrupt safetensors header (truncated: {len(raw)} of {size} bytes)"
        )
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{where}: corrupt safetensors header (not JSON: {err})") from None
    if not isinstance(header, dict):
        raise ModelError(f"{where}: corrupt safetensors header (not a JSON object)")
    return {
        name: _entry(where, name, spec, path.name)
        for name, spec in header.items()
        if name != "__metadata__"
    }


def _entry(where: str, name: str, spec: object, file: str) -> TensorEntry:
    def bad(what: str) -> ModelError:
        return ModelError(f"{where}: corrupt safetensors header (tensor {name!r}: {what})")

    if not isinstance(spec, dict):
        raise bad("not an object")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if dtype not in ITEM_BYTES:
        raise bad(f"unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise bad(f"shape {shape!r} is not a list of sizes")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise bad(f"data_offsets {offsets!r} are not [begin, end]")
    nbytes = offsets[1] - offsets[0]
    item = ITEM_BYTES[dtype]
    if item is not None and nbytes != prod(shape) * item:
        raise bad(f"{nbytes} bytes do not hold {dtype} {shape}")
    return TensorEntry(name, dtype, tuple(shape), nbytes, file)
