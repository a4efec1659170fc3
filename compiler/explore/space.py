"""A design space: value lists and ranges over chiplet, package and server parameters.

A space file is YAML::

    name: paper-7nm
    base: cc-7nm-gpt3          # the target preset (or path) every design starts from
    node: [7nm]                # optional: technology presets to try (default: the base's)
    chiplet:                   # by area ...
      area_mm2: {from: 20, to: 800, step: 20}
      mac_ratio: [0.01, 0.02, 0.05]
      ops_per_sram_read: {from: 1, to: 32, factor: 2}
      link_count: 16           # optional, as are link_bw_Bps
      memory: [sram, hbm3]     # optional: where weights live (sram, or a stacked-memory preset)
      stacks: [2, 4]           # stacks per chiplet of a stacked memory (needed with one)
      layers: [1, 2]           # layers of a bonded memory such as 3d-sram (needed with one)
    # chiplet: {tops: [...], sram_mib: [...], ops_per_sram_read: [...]}   # ... or by performance
    package: {chiplets_per_package: [1, 2]}
    server: {packages_per_lane: {from: 3, to: 20}, lanes: 8, server_link_count: 2,
             server_link_bw_Bps: 12.5e9, topology: [ring, torus2d]}
    constraints: {reticle_mm2: 900, max_w_per_mm2: 1.1, lane_thermal: true,
                  server_power_w: 2000}

A value is a number, a list, or a range ``{from, to, step}`` (arithmetic) or
``{from, to, factor}`` (geometric), both ends included. Constraints default to the
base target's node (reticle, power density), cooling (the per-lane air budget) and
server power cap. Every error is a ``TargetError`` "file: field: what (value); allowed".

A design is one point of the grid, numbered in enumeration order (server parameters
vary fastest, so neighbouring designs share a chiplet). ``screen`` builds its target
and names the first constraint it breaks, in the order of ``CONSTRAINTS``.

A chiplet with ``memory: hbm3`` (any preset of ``backends/targets/memory``) carries
``stacks`` stacks beside the die (``chiplet_by_area``'s ``memory``), sits on a silicon
interposer and reads weights at the memory's ``bw_efficiency``; an SRAM-only design
is kept once, at the first ``stacks`` value, and its repeats are screened out as
"same design". A bonded memory (``3d-sram``) puts ``layers`` SRAM dies on the die
(on-die-class memory: the die's substrate and efficiency stay); a design is kept once
for the count axis its memory does not use (``stacks`` or ``layers``).
``package.topology`` and ``server.topology`` wire the chiplets of a
package and of a server as ``ir.target.TOPOLOGIES`` names them (ring, mesh2d, torus2d,
torus3d, switch) over the same chip links; a switched server pays its switch ports
(``ServerParts.switch_usd_per_port``) and two link hops per message.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chipletc.backends.cost import thermal_check
from chipletc.backends.targets import _read as read_yaml
from chipletc.backends.targets import (
    chiplet_by_area,
    chiplet_by_performance,
    load_memory,
    load_target,
    load_tech,
)
from chipletc.ir.errors import TargetError
from chipletc.ir.target import TOPOLOGIES, ChipletSpec, Target
from chipletc.ir.tech import BondedMemory, MemoryTech, TechNode

__all__ = [
    "CONSTRAINTS",
    "DEFAULT_SPACE",
    "Design",
    "Space",
    "load_space",
    "parse_space",
    "screen",
]

DEFAULT_SPACE = Path(__file__).resolve().parent / "spaces" / "paper-7nm.yaml"
"""The Chiplet Cloud paper's 7 nm design space (arXiv 2307.02666)."""

CONSTRAINTS = ("same design", "chiplet geometry", "reticle", "power density", "lane thermal",
               "server power")
"""Design constraints in the order ``screen`` checks them."""

_BY_AREA = ("area_mm2", "mac_ratio", "ops_per_sram_read")
_BY_PERF = ("tops", "sram_mib")
_CHIPLET_KEYS = (*_BY_AREA, *_BY_PERF, "sram_bw_Bps", "link_count", "link_bw_Bps", "memory",
                 "stacks", "layers")
SRAM = "sram"
"""The ``chiplet.memory`` value of an SRAM-only design (weights and KV cache on die)."""
_SECTIONS: Mapping[str, tuple[str, ...]] = {
    "chiplet": _CHIPLET_KEYS,
    "package": ("chiplets_per_package", "topology"),
    "server": ("packages_per_lane", "lanes", "server_link_count", "server_link_bw_Bps",
               "topology"),
}
_INTEGER = {"link_count", "chiplets_per_package", "packages_per_lane", "lanes",
            "server_link_count", "stacks", "layers"}
_CONSTRAINT_KEYS = ("reticle_mm2", "max_w_per_mm2", "lane_thermal", "server_power_w")
_TOP_KEYS = ("name", "description", "base", "node", "constraints", *_SECTIONS)
_MAX_VALUES = 100_000


@dataclass(frozen=True)
class Design:
    """One point of a space: its number and its parameter values (``Space.params`` order)."""

    index: int
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Space:
    """The parsed grid: the base target, the axes and the constraints."""

    name: str
    description: str
    base: Target
    nodes: tuple[TechNode, ...]
    memories: tuple[MemoryTech | BondedMemory, ...]  # the memories ``chiplet.memory`` names
    axes: tuple[tuple[str, tuple[Any, ...]], ...]  # (section.key, values), slowest first
    reticle_mm2: float | None
    max_w_per_mm2: float | None
    lane_thermal: bool
    server_power_w: float | None

    @property
    def params(self) -> tuple[str, ...]:
        return ("node", *(name for name, _ in self.axes))

    @property
    def size(self) -> int:
        return len(self.nodes) * math.prod(len(v) for _, v in self.axes)

    def designs(self) -> Iterator[Design]:
        """Every design, numbered in enumeration order."""
        names = tuple(n.name for n in self.nodes)
        grid = itertools.product(names, *(values for _, values in self.axes))
        for index, values in enumerate(grid):
            yield Design(index, values)

    def design(self, index: int) -> Design:
        """The design numbered ``index`` (mixed-radix decoding of the grid)."""
        if not 0 <= index < self.size:
            raise IndexError(f"design {index} outside 0..{self.size - 1}")
        number = index
        sizes = [len(self.nodes), *(len(v) for _, v in self.axes)]
        picks = []
        for size in reversed(sizes):
            index, r = divmod(index, size)
            picks.append(r)
        picks.reverse()
        values = (self.nodes[picks[0]].name,
                  *(vals[i] for (_, vals), i in zip(self.axes, picks[1:], strict=True)))
        return Design(number, values)

    def as_dict(self, design: Design) -> dict[str, Any]:
        return dict(zip(self.params, design.values, strict=True))


def screen(space: Space, design: Design, chiplets: dict | None = None) -> tuple[Target | None, str]:
    """The design's target and "", or None and the first constraint it breaks.

    ``chiplets`` caches chiplet specs across designs that share them.
    """
    p = space.as_dict(design)
    memory = p.get("chiplet.memory", SRAM)
    mem = next((m for m in space.memories if m.name == memory), None)
    first = dict(space.axes)
    for count, kind in (("chiplet.stacks", MemoryTech), ("chiplet.layers", BondedMemory)):
        if not isinstance(mem, kind) and p.get(count, 0) != first.get(count, (0,))[0]:
            return None, "same design"
    tech = next(n for n in space.nodes if n.name == p["node"])
    chip_key = (p["node"], *(p.get(f"chiplet.{k}") for k in _CHIPLET_KEYS))
    cache = chiplets if chiplets is not None else {}
    chip = cache.get(chip_key)
    if chip is None:
        try:
            chip = _chiplet(p, tech, space.memories)
        except TargetError:
            chip = "chiplet geometry"
        cache[chip_key] = chip
    if isinstance(chip, str):
        return None, chip
    base = space.base
    server = base.server
    changes = {k.split(".", 1)[1]: v for k, v in p.items() if k.startswith("server.")}
    if space.server_power_w is not None:
        changes["power_cap_w"] = space.server_power_w
    if changes.get("topology") == "switch" and server.latency_s is None:
        changes["latency_s"] = 2 * chip.link_latency_s  # chip -> switch -> chip
    package = {k.split(".", 1)[1]: v for k, v in p.items() if k.startswith("package.")}
    efficiency = base.efficiency
    if isinstance(mem, MemoryTech):  # stacks on a silicon interposer, read at its efficiency
        package["substrate"] = "interposer"
        efficiency = dataclasses.replace(efficiency, memory=mem.bw_efficiency)
    try:
        target = dataclasses.replace(
            base,
            name=f"{space.name}#{design.index}",
            description="",
            tech=tech,
            chiplet=chip,
            package=dataclasses.replace(base.package, **package),
            server=dataclasses.replace(server, **changes),
            efficiency=efficiency,
        )
    except TargetError as err:
        raise TargetError(f"space {space.name}: design {design.index}: {err}") from None
    for broken in thermal_check(target).limits:  # compile's check (require_within_limits)
        if broken.limit != "lane thermal" or space.lane_thermal:
            return None, broken.limit
    return target, ""


def _chiplet(p: Mapping[str, Any], tech: TechNode,
             memories: tuple[MemoryTech | BondedMemory, ...]) -> ChipletSpec:
    links: dict[str, Any] = {
        k: p[f"chiplet.{k}"] for k in ("link_count", "link_bw_Bps") if f"chiplet.{k}" in p}
    memory = p.get("chiplet.memory", SRAM)
    if memory != SRAM:
        links["memory"] = mem = next(m for m in memories if m.name == memory)
        count = "stacks" if isinstance(mem, MemoryTech) else "layers"
        links[count] = p[f"chiplet.{count}"]
    if "chiplet.area_mm2" in p:
        return chiplet_by_area(p["chiplet.area_mm2"], p["chiplet.mac_ratio"],
                               p["chiplet.ops_per_sram_read"], tech, **links)
    tops = p["chiplet.tops"]
    bw = p.get("chiplet.sram_bw_Bps")
    if bw is None:
        bw = tops * 1e12 / p["chiplet.ops_per_sram_read"]
    return chiplet_by_performance(tops, p["chiplet.sram_mib"], bw, tech, **links)


# --- parsing ---------------------------------------------------------------------------


def load_space(path: str | Path | None = None) -> Space:
    """The space in ``path`` (default: the shipped paper space), validated."""
    path = Path(path) if path is not None else DEFAULT_SPACE
    label = path.name
    data = read_yaml(path, label)
    return parse_space(data, label, path.stem, path.parent)


def _fail(label: str, where: str, what: str, value: Any, allowed: str) -> TargetError:
    return TargetError(f"{label}: {where}: {what} ({value!r}); allowed {allowed}")


def _unknown(label: str, where: str, key: Any, allowed: tuple[str, ...]) -> TargetError:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return TargetError(f"{label}: {where}: unknown key ({key!r}); {hint}allowed: "
                       f"{', '.join(allowed)}")


def parse_space(data: Any, label: str = "space", default_name: str = "space",
                base_dir: Path | None = None) -> Space:
    """A ``Space`` from the mapping of a space file (``label`` names it in errors)."""
    if not isinstance(data, dict) or not data:
        raise TargetError(f"{label}: the top level must be a non-empty mapping ({data!r}); "
                          f"allowed keys: {', '.join(_TOP_KEYS)}")
    for key in data:
        if key not in _TOP_KEYS:
            raise _unknown(label, str(key), key, _TOP_KEYS)
    base_name = data.get("base", "cc-7nm-gpt3")
    if not isinstance(base_name, str):
        raise _fail(label, "base", "must be a target preset or path", base_name,
                    "a preset name such as cc-7nm-gpt3")
    if base_dir is not None and base_name.endswith((".yaml", ".yml")):
        candidate = base_dir / base_name
        base_name = str(candidate) if candidate.exists() else base_name
    try:
        base = load_target(base_name)
    except TargetError as err:
        raise TargetError(f"{label}: base: {err}") from None
    nodes = _nodes(data.get("node"), base, label)
    axes: list[tuple[str, tuple[Any, ...]]] = []
    for section, allowed in _SECTIONS.items():
        block = data.get(section, {})
        if not isinstance(block, dict):
            raise _fail(label, section, "must be a mapping", block, "keys " + ", ".join(allowed))
        for key, raw in block.items():
            if key not in allowed:
                raise _unknown(label, f"{section}.{key}", key, allowed)
            where = f"{section}.{key}"
            if where == "chiplet.memory":
                axes.append((where, _names(raw, where, label, None)))
            elif key == "topology":
                axes.append((where, _names(raw, where, label, TOPOLOGIES)))
            else:
                axes.append((where, _values(raw, where, label, key in _INTEGER)))
    _check_chiplet_form({name.split(".", 1)[1] for name, _ in axes
                         if name.startswith("chiplet.")}, label)
    memories = _memories(dict(axes), label)
    constraints = data.get("constraints", {})
    if not isinstance(constraints, dict):
        raise _fail(label, "constraints", "must be a mapping", constraints,
                    "keys " + ", ".join(_CONSTRAINT_KEYS))
    for key in constraints:
        if key not in _CONSTRAINT_KEYS:
            raise _unknown(label, f"constraints.{key}", key, _CONSTRAINT_KEYS)
    limits = {k: _positive(constraints[k], f"constraints.{k}", label)
              for k in ("reticle_mm2", "max_w_per_mm2", "server_power_w") if k in constraints}
    lane = constraints.get("lane_thermal", True)
    if not isinstance(lane, bool):
        raise _fail(label, "constraints.lane_thermal", "must be true or false", lane,
                    "true, false")
    if "reticle_mm2" in limits or "max_w_per_mm2" in limits:
        nodes = tuple(dataclasses.replace(
            n, max_reticle_mm2=limits.get("reticle_mm2", n.max_reticle_mm2),
            max_w_per_mm2=limits.get("max_w_per_mm2", n.max_w_per_mm2)) for n in nodes)
    name = data.get("name", default_name)
    space = Space(
        name=str(name),
        description=" ".join(str(data.get("description", "")).split()),
        base=base,
        nodes=nodes,
        memories=memories,
        axes=tuple(axes),
        reticle_mm2=limits.get("reticle_mm2"),
        max_w_per_mm2=limits.get("max_w_per_mm2"),
        lane_thermal=lane,
        server_power_w=limits.get("server_power_w"),
    )
    if space.size > 10_000_000:
        raise TargetError(f"{label}: {space.size} designs; allowed at most 10,000,000 "
                          "(coarsen a range)")
    return space


def _nodes(raw: Any, base: Target, label: str) -> tuple[TechNode, ...]:
    if raw is None:
        return (base.tech,)
    names = raw if isinstance(raw, list) else [raw]
    if not names:
        raise _fail(label, "node", "empty list", raw, "one or more node presets (7nm, 5nm)")
    out = []
    for name in names:
        if name == base.tech.name:
            out.append(base.tech)
            continue
        try:
            out.append(load_tech(str(name)))
        except TargetError as err:
            raise TargetError(f"{label}: node: {err}") from None
    if len({n.name for n in out}) != len(out):
        raise _fail(label, "node", "repeats a node", raw, "distinct node names")
    return tuple(out)


def _names(raw: Any, where: str, label: str,
           allowed: tuple[str, ...] | None) -> tuple[str, ...]:
    """A categorical axis: names from ``allowed`` (None: memory presets, checked later)."""
    names = raw if isinstance(raw, list) else [raw]
    hint = ", ".join(allowed) if allowed else "sram and stacked-memory presets, e.g. [sram, hbm3]"
    for n in names:
        if not isinstance(n, str) or not n or (allowed is not None and n not in allowed):
            raise _fail(label, where, "unknown value", n, hint)
    if not names or len(set(names)) != len(names):
        raise _fail(label, where, "empty or repeats a value", raw, "distinct names: " + hint)
    return tuple(names)


def _memories(axes: Mapping[str, tuple[Any, ...]],
              label: str) -> tuple[MemoryTech | BondedMemory, ...]:
    """The memories the ``chiplet.memory`` axis names, checked against ``stacks`` (HBM)
    and ``layers`` (bonded)."""
    out = []
    for name in axes.get("chiplet.memory", ()):
        if name == SRAM:
            continue
        try:
            out.append(load_memory(name))
        except TargetError as err:
            raise TargetError(f"{label}: chiplet.memory: {err}") from None
    for count, kind, adjective, example in (("stacks", MemoryTech, "stacked", "hbm3"),
                                            ("layers", BondedMemory, "bonded", "3d-sram")):
        named = [m.name for m in out if isinstance(m, kind)]
        if named and f"chiplet.{count}" not in axes:
            raise _fail(label, f"chiplet.{count}", "missing", None,
                        f"{count} per chiplet, e.g. [1, 2], with memory {named[0]}")
        if f"chiplet.{count}" in axes and not named:
            raise _fail(label, f"chiplet.{count}", f"given without a {adjective} memory",
                        list(axes[f"chiplet.{count}"]),
                        f"with chiplet.memory naming one, e.g. {example}")
    return tuple(out)


def _check_chiplet_form(keys: set[str], label: str) -> None:
    by_area = keys & set(_BY_AREA)
    by_perf = keys & set(_BY_PERF)
    if (by_area and by_perf) or ("area_mm2" in keys and "sram_bw_Bps" in keys):
        raise _fail(label, "chiplet", "mixes the by-area and by-performance forms",
                    sorted(keys), "area_mm2 + mac_ratio + ops_per_sram_read, or tops + "
                    "sram_mib + (ops_per_sram_read or sram_bw_Bps)")
    if by_perf or "sram_bw_Bps" in keys:
        missing = [k for k in _BY_PERF if k not in keys]
        if "ops_per_sram_read" not in keys and "sram_bw_Bps" not in keys:
            missing.append("ops_per_sram_read or sram_bw_Bps")
    else:
        missing = [k for k in _BY_AREA if k not in keys]
    if missing:
        raise _fail(label, "chiplet", "missing " + ", ".join(missing), sorted(keys),
                    "area_mm2 + mac_ratio + ops_per_sram_read, or tops + sram_mib + "
                    "(ops_per_sram_read or sram_bw_Bps)")


def _positive(raw: Any, where: str, label: str) -> float:
    value = _number(raw, where, label)
    if value <= 0:
        raise _fail(label, where, "must be positive", raw, "> 0")
    return value


def _number(raw: Any, where: str, label: str) -> float:
    if isinstance(raw, bool):
        raise _fail(label, where, "must be a number", raw, "a number such as 12.5e9")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _fail(label, where, "must be a number", raw, "a number such as 12.5e9") from None
    if not math.isfinite(value):
        raise _fail(label, where, "must be finite", raw, "a finite number")
    return value


def _values(raw: Any, where: str, label: str, integer: bool) -> tuple[Any, ...]:
    """The values of one axis: a number, a list, or a ``{from, to, step|factor}`` range."""
    if isinstance(raw, dict):
        values = _range(raw, where, label)
    elif isinstance(raw, list):
        if not raw:
            raise _fail(label, where, "empty list", raw, "one or more values")
        values = [_number(v, where, label) for v in raw]
    else:
        values = [_number(raw, where, label)]
    out: list[Any] = []
    for v in values:
        if v <= 0:
            raise _fail(label, where, "must be positive", v, "> 0")
        if integer:
            if not float(v).is_integer():
                raise _fail(label, where, "must be a whole number", v, "integers")
            v = int(v)
        if v not in out:
            out.append(v)
    return tuple(out)


def _range(raw: dict, where: str, label: str) -> list[float]:
    keys = set(raw)
    if not keys <= {"from", "to", "step", "factor"} or not {"from", "to"} <= keys or (
            len(keys & {"step", "factor"}) > 1):
        raise _fail(label, where, "not a range", raw, "{from, to} with step or factor")
    lo, hi = _number(raw["from"], f"{where}.from", label), _number(raw["to"], f"{where}.to", label)
    if lo > hi:
        raise _fail(label, where, "empty range", raw, "from <= to")
    out = [lo]
    if "factor" in raw:
        factor = _number(raw["factor"], f"{where}.factor", label)
        if factor <= 1 or lo <= 0:
            raise _fail(label, where, "geometric range needs factor > 1 and from > 0", raw,
                        "e.g. {from: 1, to: 32, factor: 2}")
        while out[-1] * factor <= hi * (1 + 1e-9):
            out.append(out[-1] * factor)
            if len(out) > _MAX_VALUES:
                raise _fail(label, where, "too many values", raw, f"at most {_MAX_VALUES}")
    else:
        step = _number(raw.get("step", 1), f"{where}.step", label)
        if step <= 0:
            raise _fail(label, where, "step must be positive", raw, "step > 0")
        steps = (hi - lo) / step + 1e-9  # inf when the span overflows a float
        if not steps < _MAX_VALUES:
            raise _fail(label, where, "too many values", raw, f"at most {_MAX_VALUES}")
        out = [round(lo + i * step, 12) for i in range(math.floor(steps) + 1)]
    return out

