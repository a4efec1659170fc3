"""How one model replica is spread over chiplets: tensor and pipeline parallelism.

A replica uses ``tp * pp`` chiplets. Stage ``s`` holds the contiguous blocks
``stages[s][0] .. stages[s][1]`` (inclusive); the first stage also holds what comes
before the blocks (embeddings) and the last what comes after (final norm, LM head).
A step's batch is cut into ``batch // micro_batch`` micro-batches that flow through
the pipeline one behind the other.

``kv_layout`` says how a KV cache that several ranks would share is laid out: when tp
exceeds the KV heads of grouped or multi-query attention (or the cache is not kept per
head, as MLA's latent), ``heads`` replicates each KV head on the ranks that share it,
and ``batch`` splits the sequences over them instead, each rank holding whole
sequences (Pope et al. 2022, "Efficiently Scaling Transformer Inference", section
3.3); ``ir.sharding`` says what each costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .errors import UsageError

__all__ = ["KVLayout", "ModelMapping", "even_stages"]


class KVLayout(str, Enum):
    """How ranks that share a KV cache hold it (see the module docstring)."""

    HEADS = "heads"  # split by KV heads; a head shared by several ranks is replicated
    BATCH = "batch"  # the sharing ranks split the sequences, each holding whole ones


@dataclass(frozen=True)
class ModelMapping:
    tp: int
    pp: int
    stages: tuple[tuple[int, int], ...]
    batch: int
    micro_batch: int
    pad_heads: bool = False
    kv_layout: KVLayout = KVLayout.HEADS

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kv_layout", KVLayout(self.kv_layout))
        except ValueError:
            allowed = ", ".join(k.value for k in KVLayout)
            raise UsageError(
                f"mapping: unknown KV layout {self.kv_layout!r}; use {allowed}"
            ) from None
        for field in ("tp", "pp", "batch", "micro_batch"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"mapping: {field} must be a positive integer ({value!r})")
        if self.batch % self.micro_batch:
            raise UsageError(
                f"mapping: micro-batch {self.micro_batch} does not divide batch {self.batch}"
            )
        if len(self.stages) != self.pp:
            raise UsageError(f"mapping: {len(self.stages)} stage ranges for pp {self.pp}")
        expect = 0
        for first, last in self.stages:
            if first != expect or last < first:
                raise UsageError(f"mapping: stages {list(self.stages)} are not contiguous")
            expect = last + 1

    @property
    def num_layers(self) -> int:
        return self.stages[-1][1] + 1

    @property
    def num_micro_batches(self) -> int:
        return self.batch // self.micro_batch

    @property
    def num_chiplets(self) -> int:
        return self.tp * self.pp


def even_stages(num_layers: int, pp: int) -> tuple[tuple[int, int], ...]:
    """Split blocks as evenly as possible, the earlier stages taking the remainder."""
    if not 1 <= pp <= num_layers:
        raise UsageError(f"pp: {pp} stages for {num_layers} layers; use 1..{num_layers}")
    base, extra = divmod(num_layers, pp)
    out, first = [], 0
    for s in range(pp):
        n = base + (1 if s < extra else 0)
        out.append((first, first + n - 1))
        first += n
    return tuple(out)
