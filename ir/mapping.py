"""How one model replica is spread over chiplets: tensor and pipeline parallelism.

A replica uses ``tp * pp`` chiplets. Stage ``s`` holds the contiguous blocks
``stages[s][0] .. stages[s][1]`` (inclusive); the first stage also holds what comes
before the blocks (embeddings) and the last what comes after (final norm, LM head).
A step's batch is cut into ``batch // micro_batch`` micro-batches that flow through
the pipeline one behind the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError

__all__ = ["ModelMapping", "even_stages"]


@dataclass(frozen=True)
class ModelMapping:
    tp: int
    pp: int
    stages: tuple[tuple[int, int], ...]
    batch: int
    micro_batch: int
    pad_heads: bool = False

    def __post_init__(self) -> None:
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
