"""Storage data types of weights, KV cache and activations.

Sizes are kept in bits so that int4 stays exact: byte counts are rounded up once, per
tensor, never per element.
"""

from __future__ import annotations

from enum import Enum

from .errors import UsageError

__all__ = ["DType", "parse_dtype"]


class DType(str, Enum):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"

    @property
    def bits(self) -> int:
        return _BITS[self]

    def nbytes(self, numel: int) -> int:
        """Bytes to store ``numel`` elements, rounded up to a whole byte."""
        return (numel * self.bits + 7) // 8

    def __str__(self) -> str:
        return self.value


_BITS = {
    DType.FP32: 32,
    DType.BF16: 16,
    DType.FP16: 16,
    DType.FP8: 8,
    DType.INT8: 8,
    DType.INT4: 4,
}


def parse_dtype(text: str, where: str = "dtype") -> DType:
    """Read a dtype name as users write it (``bf16``, ``float16``, ``int8`` ...);
    ``where`` (the flag or field that gave it) starts the error."""
    key = text.strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return DType(key)
    except ValueError:
        allowed = ", ".join(d.value for d in DType)
        raise UsageError(f"{where}: unknown data type {text!r}; use one of {allowed}") from None


_ALIASES = {
    "float32": "fp32",
    "float": "fp32",
    "f32": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "f16": "fp16",
    "float8": "fp8",
    "float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8",
    "f8_e4m3": "fp8",
    "f8_e5m2": "fp8",
    "i8": "int8",
    "u8": "int8",
    "uint8": "int8",
    "i4": "int4",
}
