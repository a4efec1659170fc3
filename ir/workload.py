"""The workload an op's cost is evaluated at.

Costs are functions of the workload, not numbers frozen at trace time: the graph is
traced once and evaluated for every batch the solver tries.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .errors import UsageError

__all__ = ["Phase", "Workload"]


class Phase(str, Enum):
    PREFILL = "prefill"
    DECODE = "decode"


@dataclass(frozen=True)
class Workload:
    """One forward step of ``batch`` sequences.

    Prefill processes ``prompt_len`` tokens per sequence and attends over them (the full
    square score matrix, as fused kernels compute it); a prefill *chunk* (``chunk``) is
    the same after ``context_len - prompt_len`` positions already cached by earlier
    chunks, which it reads and attends over too. Decode processes one token per sequence
    and attends over ``context_len`` cached positions, the new one included.
    """

    batch: int
    phase: Phase
    prompt_len: int = 1
    context_len: int = 1

    def __post_init__(self) -> None:
        for field in ("batch", "prompt_len", "context_len"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"workload: {field} must be a positive integer ({value!r})")
        if self.phase is Phase.PREFILL and self.context_len < self.prompt_len:
            raise UsageError(
                f"workload: a prefill attends over at least its own {self.prompt_len} tokens "
                f"(context_len {self.context_len})"
            )

    @classmethod
    def prefill(cls, batch: int, prompt_len: int) -> Workload:
        return cls(batch=batch, phase=Phase.PREFILL, prompt_len=prompt_len, context_len=prompt_len)

    @classmethod
    def chunk(cls, batch: int, chunk_len: int, cached_len: int) -> Workload:
        """A prefill chunk of ``chunk_len`` tokens after ``cached_len`` cached ones."""
        return cls(
            batch=batch,
            phase=Phase.PREFILL,
            prompt_len=chunk_len,
            context_len=cached_len + chunk_len,
        )

    @classmethod
    def decode(cls, batch: int, context_len: int) -> Workload:
        return cls(batch=batch, phase=Phase.DECODE, prompt_len=1, context_len=context_len)

    @property
    def query_len(self) -> int:
        """New tokens per sequence in this step."""
        return self.prompt_len if self.phase is Phase.PREFILL else 1

    @property
    def tokens(self) -> int:
        """New tokens in this step over the whole batch."""
        return self.batch * self.query_len

    @property
    def attended_len(self) -> int:
        """Key/value positions each query attends to."""
        return self.context_len

    @property
    def cached_len(self) -> int:
        """Positions each sequence reads from the KV cache: the context before a prefill
        chunk, the whole context in decode (the new position is written, then read)."""
        if self.phase is Phase.PREFILL:
            return self.context_len - self.prompt_len
        return self.context_len
