"""The placement plan: where every weight shard and KV-cache slice of a replica lives.

A versioned JSON document. Each chiplet lists its coordinates (server, lane, package,
chip), its pipeline stage and tensor-parallel rank, the blocks it runs, the weight
shards it holds (tensor name and a [start, stop) range per dimension) and its bytes of
weights, KV cache and activation workspace against its capacity.

``validate()`` checks, from the document alone:

1. every tensor of the model's table is covered: along each dimension the shards of
   a tensor tile it without gaps, and each element is held exactly ``copies`` times
   (1 for a sharded tensor, tp for a replicated one, tp / kv_heads for replicated KV
   heads); tied copies (an LM head reading the embedding on another stage) are extra;
2. no shard lies outside its tensor;
3. no chiplet holds more bytes than its capacity;
4. the chiplets form the tp x pp grid of the mapping, every stage's blocks once.

The mapping records the KV-cache layout of each stage (``kv_layout``, one entry per
stage, ``ir.mapping.KVLayout``); plans before 1.2 have none: shared KV heads were
replicated.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from math import prod
from typing import Any

from .errors import PlanError
from .mapping import KVLayout

__all__ = [
    "PLAN_VERSION",
    "ChipletPlacement",
    "Plan",
    "TensorInfo",
    "WeightShard",
    "dumps_sections",
]

PLAN_VERSION = "1.3"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int
    copies: int = 1  # how many times each element is held across one tp group


@dataclass(frozen=True)
class WeightShard:
    tensor: str
    slice: tuple[tuple[int, int], ...]  # [start, stop) per dimension
    bytes: int
    tied: bool = False  # a copy read by a tied LM head, not the owning placement

    @property
    def numel(self) -> int:
        return prod(b - a for a, b in self.slice)


@dataclass(frozen=True)
class ChipletPlacement:
    id: int
    server: int
    lane: int
    package: int
    chip: int
    stage: int
    tp_rank: int
    layers: tuple[int, int]  # first and last block, inclusive
    holds_pre: bool
    holds_post: bool
    shards: tuple[WeightShard, ...]
    weight_bytes: int  # shards plus padded heads
    kv_bytes: int
    activation_bytes: int
    capacity_bytes: int

    @property
    def used_bytes(self) -> int:
        return self.weight_bytes + self.kv_bytes + self.activation_bytes


@dataclass(frozen=True)
class Plan:
    model: dict[str, Any]
    target: dict[str, Any]
    workload: dict[str, Any]
    mapping: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    chiplets: tuple[ChipletPlacement, ...]
    version: str = PLAN_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # performance, cost, solver

    @property
    def weights_streamed(self) -> bool:
        """True when the weights stream in from off the wafer (``target.weights:
        streamed``): a chiplet's memory then holds only its KV cache and workspace."""
        return self.target.get("weights") == "streamed"

    def held_bytes(self, c: ChipletPlacement) -> int:
        """What chiplet ``c``'s memory holds: ``used_bytes``, less its weights when
        they stream in."""
        return c.used_bytes - (c.weight_bytes if self.weights_streamed else 0)

    @property
    def kv_layout(self) -> KVLayout:
        """The KV-cache layout of the plan's stages (one for the whole mapping)."""
        pp = int(self.mapping["pp"])
        layouts = self.mapping.get("kv_layout", [KVLayout.HEADS.value] * pp)
        if not isinstance(layouts, list) or len(layouts) != pp or len(set(layouts)) != 1:
            raise PlanError(
                f"plan: mapping.kv_layout must name one layout for each of the {pp} stages, "
                f"the same for all ({layouts!r})"
            )
        try:
            return KVLayout(layouts[0])
        except ValueError:
            allowed = ", ".join(k.value for k in KVLayout)
            raise PlanError(f"plan: unknown KV layout {layouts[0]!r}; use {allowed}") from None

    # -- serialisation ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "model": self.model,
            "target": self.target,
            "workload": self.workload,
            "mapping": self.mapping,
            **self.extra,
            "tensors": [
                {
                    "name": t.name,
                    "shape": list(t.shape),
                    "dtype": t.dtype,
                    "bytes": t.bytes,
                    "copies": t.copies,
                }
                for t in self.tensors
            ],
            "chiplets": [_chiplet_dict(c) for c in self.chiplets],
        }

    def to_json(self) -> str:
        """Compact but diffable: one line per section, per tensor and per chiplet."""
        return dumps_sections(self.to_dict(), listed=("tensors", "chiplets"))

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Plan:
        try:
            version = doc["version"]
            if str(version).split(".")[0] != PLAN_VERSION.split(".")[0]:
                raise PlanError(
                    f"plan: version {version} is not readable (this chipletc reads {PLAN_VERSION})"
                )
            tensors = tuple(
                TensorInfo(
                    t["name"], tuple(t["shape"]), t["dtype"], int(t["bytes"]), int(t["copies"])
                )
                for t in doc["tensors"]
            )
            chiplets = tuple(_chiplet_from(c) for c in doc["chiplets"])
            known = {"version", "model", "target", "workload", "mapping", "tensors", "chiplets"}
            extra = {k: v for k, v in doc.items() if k not in known}
            return cls(
                doc["model"],
                doc["target"],
                doc["workload"],
                doc["mapping"],
                tensors,
                chiplets,
                version,
                extra,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise PlanError(f"plan: malformed document ({type(err).__name__}: {err})") from None

    # -- invariants -------------------------------------------------------------------

    def validate(self) -> Plan:
        """Check the invariants in the module docstring; return self or raise PlanError."""
        tp, pp = int(self.mapping["tp"]), int(self.mapping["pp"])
        stages = [tuple(s) for s in self.mapping["stages"]]
        grid = {(c.stage, c.tp_rank) for c in self.chiplets}
        if len(self.chiplets) != tp * pp or grid != {(s, r) for s in range(pp) for r in range(tp)}:
            raise PlanError(f"plan: chiplets do not form the {tp} x {pp} grid of the mapping")
        for c in self.chiplets:
            if tuple(c.layers) != stages[c.stage]:
                raise PlanError(
                    f"chiplet {c.id}: layers {c.layers} differ from stage {c.stage}'s "
                    f"{stages[c.stage]}"
                )
            held = self.held_bytes(c)
            if held > c.capacity_bytes:
                raise PlanError(
                    f"chiplet {c.id}: holds {held} bytes, over its capacity "
                    f"{c.capacity_bytes} by {held - c.capacity_bytes}"
                )
        table = {t.name: t for t in self.tensors}
        held: dict[str, list[WeightShard]] = defaultdict(list)
        for c in self.chiplets:
            for s in c.shards:
                if s.tensor not in table:
                    raise PlanError(f"chiplet {c.id}: shard of unknown tensor {s.tensor!r}")
                if not s.tied:
                    held[s.tensor].append(s)
        for t in self.tensors:
            _check_cover(t, held.get(t.name, []))
        return self


def dumps_sections(doc: dict[str, Any], listed: tuple[str, ...]) -> str:
    """JSON with one top-level key per line, and one item per line for ``listed`` keys."""

    def one(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"))

    lines = []
    for key, value in doc.items():
        if key in listed:
            items = ",\n".join(f"  {one(v)}" for v in value)
            lines.append(f"{one(key)}: [\n{items}\n ]")
        else:
            lines.append(f"{one(key)}: {one(value)}")
    return "{\n " + ",\n ".join(lines) + "\n}\n"


def _check_cover(t: TensorInfo, shards: list[WeightShard]) -> None:
    """Each element of ``t`` is held exactly ``t.copies`` times by ``shards``."""
    if not shards:
        raise PlanError(f"tensor {t.name}: placed nowhere")
    for s in shards:
        if len(s.slice) != len(t.shape) or any(
            not 0 <= a < b <= n for (a, b), n in zip(s.slice, t.shape, strict=True)
        ):
            raise PlanError(
                f"tensor {t.name} {list(t.shape)}: shard {list(s.slice)} lies outside it"
            )
    total = sum(s.numel for s in shards)
    if total != t.copies * prod(t.shape):
        raise PlanError(
            f"tensor {t.name}: shards hold {total} elements, expected {t.copies} x {prod(t.shape)}"
        )
    # Equal totals could still hide an overlap balanced by a gap. Single copies cut
    # along one dimension (tensor parallelism's usual shape) tile when their sorted
    # ranges meet end to start; anything else is counted on the grid of shard
    # boundaries (shards are boxes, so this is exact).
    if t.copies == 1 and _tiles_along_one_dim(t.shape, shards):
        return
    cuts = [
        sorted({0, n} | {a for s in shards for a in (s.slice[d])}) for d, n in enumerate(t.shape)
    ]
    cells: dict[tuple[int, ...], int] = defaultdict(int)
    for s in shards:
        # the cells of dimension d a shard covers run from its start's cut to its end's
        ranges = [
            list(range(bisect_left(cuts[d], a), bisect_left(cuts[d], b)))
            for d, (a, b) in enumerate(s.slice)
        ]
        for cell in _product(ranges):
            cells[cell] += 1
    n_cells = prod(len(c) - 1 for c in cuts)
    if len(cells) != n_cells or any(v != t.copies for v in cells.values()):
        raise PlanError(f"tensor {t.name}: shards overlap or leave a gap")


def _tiles_along_one_dim(shape: tuple[int, ...], shards: list[WeightShard]) -> bool:
    cut = [d for d, n in enumerate(shape) if any(s.slice[d] != (0, n) for s in shards)]
    if len(cut) > 1:
        return False
    if not cut:
        return len(shards) == 1
    d = cut[0]
    ranges = sorted(s.slice[d] for s in shards)
    ends = [0] + [b for _, b in ranges]
    return all(a == end for (a, _), end in zip(ranges, ends, strict=False)) and ends[-1] == shape[d]


def _product(ranges: list[list[int]]) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = [()]
    for r in ranges:
        out = [(*o, i) for o in out for i in r]
    return out


def _chiplet_dict(c: ChipletPlacement) -> dict[str, Any]:
    d = asdict(c)
    d["layers"] = list(c.layers)
    d["shards"] = [
        {
            "tensor": s.tensor,
            "slice": [list(r) for r in s.slice],
            "bytes": s.bytes,
            **({"tied": True} if s.tied else {}),
        }
        for s in c.shards
    ]
    d["sram_capacity_bytes"] = d.pop("capacity_bytes")
    return d


def _chiplet_from(d: dict[str, Any]) -> ChipletPlacement:
    shards = tuple(
        WeightShard(
            s["tensor"],
            tuple(tuple(r) for r in s["slice"]),
            int(s["bytes"]),
            bool(s.get("tied", False)),
        )
        for s in d["shards"]
    )
    return ChipletPlacement(
        id=int(d["id"]),
        server=int(d["server"]),
        lane=int(d["lane"]),
        package=int(d["package"]),
        chip=int(d["chip"]),
        stage=int(d["stage"]),
        tp_rank=int(d["tp_rank"]),
        layers=(int(d["layers"][0]), int(d["layers"][1])),
        holds_pre=bool(d["holds_pre"]),
        holds_post=bool(d["holds_post"]),
        shards=shards,
        weight_bytes=int(d["weight_bytes"]),
        kv_bytes=int(d["kv_bytes"]),
        activation_bytes=int(d["activation_bytes"]),
        capacity_bytes=int(d["sram_capacity_bytes"]),
    )
