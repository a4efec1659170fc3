"""Hardware target presets (YAML) and their loader.

A target file is a mapping with the sections of ``chipletc.ir.target.Target``::

    name: my-target            # optional, defaults to the file name
    base: cc-7nm-gpt3          # optional: start from a preset (or a path) and override
    tech: 7nm                  # a node name, a path, or a mapping (may say base: 7nm)
    chiplet: {by_area: {area_mm2: 200, mac_ratio: 0.03, ops_per_sram_read: 1}}
    package: {chiplets_per_package: 1, substrate: organic}
    server: {packages_per_lane: 18, lanes: 8, ..., parts: {...}, cooling: {...}}
    system: {max_servers: 16}
    economics: {rent_usd_per_hour: 8.8}   # optional; owned by default (docs/constants.md)
    efficiency: {compute: 0.9, memory: 1.0, link: 0.9}

``chiplet`` is either ``by_area`` (die area, MAC-area ratio, operational intensity),
``by_performance`` (TOPS, SRAM MB, SRAM bandwidth) or the explicit ``ChipletSpec``
fields. Overrides merge key by key into the base; giving a chiplet in another form
replaces the base's. Every error is a ``TargetError`` of the form
"file.yaml: section.field: what (value); allowed ...". Numbers may be written
``1.2e12`` (plain YAML reads that as a string; the loader accepts it).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from chipletc.ir.dtypes import DType
from chipletc.ir.errors import TargetError
from chipletc.ir.target import (
    ChipletSpec,
    Efficiency,
    PackageSpec,
    ServerSpec,
    SystemSpec,
    Target,
)
from chipletc.ir.tech import BondedMemory, Economics, MemoryTech, TechNode

from .chiplet import chiplet_by_area, chiplet_by_performance

__all__ = [
    "DEFAULT_TARGET",
    "MEMORY_DIR",
    "PRESET_DIR",
    "TECH_DIR",
    "chiplet_by_area",
    "chiplet_by_performance",
    "list_memories",
    "list_targets",
    "list_techs",
    "load_memory",
    "load_target",
    "load_tech",
    "target_from_dict",
]

PRESET_DIR = Path(__file__).resolve().parent
TECH_DIR = PRESET_DIR / "tech"
MEMORY_DIR = PRESET_DIR / "memory"
DEFAULT_TARGET = "cc-7nm-gpt3"
"""A Chiplet Cloud 7 nm design that holds GPT-3 175B in bf16 in SRAM (see its YAML)."""

_MAX_BASE_DEPTH = 8
_TOP_KEYS = ("name", "description", "base", "tech", "chiplet", "package", "server", "system",
             "economics", "efficiency", "tp_domain")
_REQUIRED = ("tech", "chiplet", "server", "system", "efficiency")
_BUILDERS: dict[str, tuple[Callable[..., ChipletSpec], tuple[str, ...]]] = {
    "by_area": (chiplet_by_area, ("area_mm2", "mac_ratio", "ops_per_sram_read")),
    "by_performance": (chiplet_by_performance, ("tops", "sram_mib", "sram_bw_Bps")),
}
_BUILDER_OPTIONS = {"link_count": int, "link_bw_Bps": float, "link_latency_s": float,
                    "link_mm2": float, "link_w": float, "name": str, "memory": str,
                    "stacks": int, "layers": int}


def list_targets() -> list[str]:
    """Names of the target presets, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def list_techs() -> list[str]:
    """Names of the technology-node presets, sorted."""
    return sorted(p.stem for p in TECH_DIR.glob("*.yaml"))


def load_tech(name_or_path: str) -> TechNode:
    """A technology node by preset name ("16nm", "7nm", "5nm", "3nm") or YAML path."""
    path, label = _locate(name_or_path, TECH_DIR, list_techs(), "tech", Path.cwd())
    data = _with_base(path, label, TECH_DIR, list_techs(), "tech")
    data.setdefault("name", path.stem)
    return _build(TechNode, data, "", label)


def list_memories() -> list[str]:
    """Names of the memory presets (HBM generations, bonded SRAM), sorted."""
    return sorted(p.stem for p in MEMORY_DIR.glob("*.yaml"))


def load_memory(name_or_path: str) -> MemoryTech | BondedMemory:
    """A memory by preset name ("hbm2e", "hbm3", "hbm3e", "3d-sram") or YAML path: HBM
    stacks beside the die, or (``kind: bonded``) layers hybrid-bonded on it."""
    path, label = _locate(name_or_path, MEMORY_DIR, list_memories(), "memory", Path.cwd())
    data = _with_base(path, label, MEMORY_DIR, list_memories(), "memory")
    data.setdefault("name", path.stem)
    kind = data.pop("kind", "stacked")
    kinds: dict[str, type] = {"stacked": MemoryTech, "bonded": BondedMemory}
    if kind not in kinds:
        raise TargetError(f"{label}: kind: unknown value ({kind!r}); allowed stacked, bonded")
    return _build(kinds[kind], data, "", label)


def load_target(name_or_path: str, overrides: Mapping[str, Any] | None = None) -> Target:
    """A target by preset name (``list_targets()``) or YAML path, validated; ``overrides``
    merge into it as a derived file's fields would (``{"tech": {"w_per_TOPS": 1.0}}``
    rebuilds a ``by_area`` chiplet on the changed node)."""
    path, label = _locate(name_or_path, PRESET_DIR, list_targets(), "target", Path.cwd())
    data = _with_base(path, label, PRESET_DIR, list_targets(), "target")
    data.setdefault("name", path.stem)
    if overrides:
        if isinstance(data.get("tech"), str) and isinstance(overrides.get("tech"), dict):
            data["tech"] = {"base": data["tech"]}
        data = _merge(data, overrides)
    return target_from_dict(data, label, path.parent)


def target_from_dict(data: Mapping[str, Any], label: str = "target",
                     base_dir: Path | None = None) -> Target:
    """Build a ``Target`` from an already-merged mapping (a file without ``base``)."""
    here = base_dir or Path.cwd()
    for key in data:
        if key not in _TOP_KEYS:
            _unknown(label, "", key, [k for k in _TOP_KEYS if k != "base"])
    for key in _REQUIRED:
        if key not in data:
            raise TargetError(f"{label}: {key}: missing section; required in every target "
                              "(or inherit it with base: <preset>)")
    tech = _tech_section(data["tech"], label, here)
    sections = {
        "chiplet": _chiplet_section(data["chiplet"], tech, label),
        "package": _build(PackageSpec, data.get("package", {}), "package", label),
        "server": _build(ServerSpec, data["server"], "server", label),
        "system": _build(SystemSpec, data["system"], "system", label),
        "economics": _build(Economics, data.get("economics", {}), "economics", label),
        "efficiency": _build(Efficiency, data["efficiency"], "efficiency", label),
    }
    extras = {k: _convert(str, data[k], k, label) for k in ("name", "description", "tp_domain")
              if k in data}
    try:
        return Target(tech=tech, **sections, **extras)
    except TargetError as err:
        raise TargetError(f"{label}: {err}") from None


# --- files and bases ---------------------------------------------------------------


def _locate(name_or_path: str, directory: Path, names: list[str], kind: str,
            relative_to: Path) -> tuple[Path, str]:
    """The file a preset name or path denotes, and how messages should name it."""
    if not isinstance(name_or_path, str) or not name_or_path:
        raise TargetError(f"{kind}: expected a preset name or a YAML path ({name_or_path!r}); "
                          f"presets: {', '.join(names)}")
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        path = Path(name_or_path)
        path = path if path.is_absolute() else relative_to / path
        return path, name_or_path
    path = directory / f"{name_or_path}.yaml"
    if path.is_file():
        return path, path.name
    close = difflib.get_close_matches(name_or_path, names, n=3, cutoff=0.4)
    hint = f"did you mean {' or '.join(close)}?" if close else "no close match;"
    raise TargetError(f"{kind}: unknown preset ({name_or_path!r}); {hint} known: "
                      f"{', '.join(names)} (or give a path to a .yaml file)")


# libyaml's parser where PyYAML was built with it (the same safe constructors, ~10x faster:
# `chipletc targets` reads every preset)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read(path: Path, label: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise TargetError(f"{label}: cannot read the file ({err.strerror}); give an existing "
                          "YAML file or a preset name") from None
    try:
        data = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "parse error"
        raise TargetError(f"{label}: not valid YAML ({problem}{where}); fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TargetError(f"{label}: the top level must be a mapping ({type(data).__name__}); "
                          "allowed: a mapping of sections")
    return data


def _with_base(path: Path, label: str, directory: Path, names: list[str],
               kind: str) -> dict[str, Any]:
    """The file's mapping merged over its ``base`` chain (the file wins)."""
    chain: list[dict[str, Any]] = []
    seen: set[Path] = set()
    while True:
        resolved = path.resolve()
        if resolved in seen or len(chain) >= _MAX_BASE_DEPTH:
            raise TargetError(f"{label}: base: the chain of bases loops or is too deep "
                              f"({path.name}); allowed: at most {_MAX_BASE_DEPTH}, no cycle")
        seen.add(resolved)
        data = _read(path, label)
        chain.append(data)
        base = data.get("base")
        if base is None:
            break
        if not isinstance(base, str):
            raise TargetError(f"{label}: base: must be a preset name or a path ({base!r}); "
                              f"presets: {', '.join(names)}")
        path, label = _locate(base, directory, names, f"{label}: base", path.parent)
    merged: dict[str, Any] = {}
    for data in reversed(chain):
        merged = _merge(merged, data)
    merged.pop("base", None)
    if "name" not in chain[0]:
        merged.pop("name", None)  # a derived file is named after itself, not its base
    if kind == "target" and len(chain) > 1 and "description" not in chain[0]:
        # the base's words describe the base, not what this file changed
        merged["description"] = f"based on {chain[0]['base']}"
    return merged


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            out[key] = _merge(_chiplet_kept(old, value) if key == "chiplet" else old, value)
        else:
            out[key] = value
    return out


def _chiplet_kept(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """What of a base chiplet survives an override that may switch its form."""
    modes = [m for m in _BUILDERS if m in over]
    if modes:
        return {k: v for k, v in base.items() if k in modes}
    if "area_mm2" in over:
        return {k: v for k, v in base.items() if k not in _BUILDERS}
    return base


# --- sections ------------------------------------------------------------------------


def _tech_section(value: Any, label: str, here: Path) -> TechNode:
    if isinstance(value, str):
        path, tech_label = _locate(value, TECH_DIR, list_techs(), f"{label}: tech", here)
        data = _with_base(path, tech_label, TECH_DIR, list_techs(), "tech")
        data.setdefault("name", path.stem)
        return _build(TechNode, data, "", tech_label)
    if not isinstance(value, dict):
        raise TargetError(f"{label}: tech: must be a node name or a mapping ({value!r}); "
                          f"presets: {', '.join(list_techs())}")
    data = dict(value)
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise TargetError(f"{label}: tech.base: must be a node name ({base!r}); "
                              f"presets: {', '.join(list_techs())}")
        path, tech_label = _locate(base, TECH_DIR, list_techs(), f"{label}: tech.base", here)
        inherited = _with_base(path, tech_label, TECH_DIR, list_techs(), "tech")
        inherited.setdefault("name", path.stem)
        data = _merge(inherited, data)
    return _build(TechNode, data, "tech", label)


def _chiplet_section(value: Any, tech: TechNode, label: str) -> ChipletSpec:
    if not isinstance(value, dict):
        raise TargetError(f"{label}: chiplet: must be a mapping ({value!r}); allowed: "
                          "by_area, by_performance or the explicit chiplet fields")
    modes = [m for m in _BUILDERS if m in value]
    explicit = [k for k in value if k not in _BUILDERS]
    if len(modes) + (1 if explicit else 0) != 1:
        given = ", ".join(map(str, value)) or "nothing"
        raise TargetError(f"{label}: chiplet: give exactly one form ({given}); allowed: "
                          "by_area, by_performance, or explicit fields (area_mm2, ...)")
    if explicit:
        return _build(ChipletSpec, value, "chiplet", label)
    mode = modes[0]
    builder, required = _BUILDERS[mode]
    params = value[mode]
    where = f"chiplet.{mode}"
    if not isinstance(params, dict):
        raise TargetError(f"{label}: {where}: must be a mapping ({params!r}); allowed keys: "
                          f"{', '.join(required + tuple(_BUILDER_OPTIONS))}")
    kwargs: dict[str, Any] = {}
    for key, raw in params.items():
        if key in required:
            kwargs[key] = _convert(float, raw, f"{where}.{key}", label)
        elif key in _BUILDER_OPTIONS:
            kwargs[key] = _convert(_BUILDER_OPTIONS[key], raw, f"{where}.{key}", label)
        else:
            _unknown(label, where, key, list(required) + list(_BUILDER_OPTIONS))
    for key in required:
        if key not in kwargs:
            raise TargetError(f"{label}: {where}.{key}: missing; required with {mode} "
                              f"({', '.join(required)})")
    if "memory" in kwargs:  # a memory preset or path, e.g. memory: hbm3 or 3d-sram
        try:
            kwargs["memory"] = load_memory(kwargs["memory"])
        except TargetError as err:
            raise TargetError(f"{label}: {where}.{err}") from None
    try:
        return builder(tech=tech, **kwargs)
    except TargetError as err:
        raise TargetError(f"{label}: {where}.{err}") from None


# --- generic conversion ------------------------------------------------------------------


def _unknown(label: str, where: str, key: object, allowed: list[str]) -> typing.NoReturn:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    path = f"{where}.{key}" if where else str(key)
    raise TargetError(f"{label}: {path}: unknown key ({key!r}); {hint}allowed: "
                      f"{', '.join(allowed)}")


def _build(cls: type, data: Any, where: str, label: str) -> Any:
    """``cls(**data)`` with each value converted to its field type and errors located."""
    if not isinstance(data, dict):
        raise TargetError(f"{label}: {where or 'file'}: must be a mapping ({data!r}); allowed "
                          f"keys: {', '.join(f.name for f in dataclasses.fields(cls))}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    prefix = f"{where}." if where else ""
    kwargs: dict[str, Any] = {}
    for key, raw in data.items():
        if key not in fields:
            _unknown(label, where, key, list(fields))
        kwargs[key] = _convert(hints[key], raw, prefix + key, label)
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in kwargs:
            raise TargetError(f"{label}: {prefix}{name}: missing; required in {where or 'file'}")
    try:
        return cls(**kwargs)
    except TargetError as err:
        raise TargetError(f"{label}: {prefix}{err}") from None


def _convert(hint: Any, value: Any, where: str, label: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(inner, value, where, label)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where, label)
    if origin is Mapping:
        return _rates(value, where, label)
    if hint is float:
        return _number(value, where, label)
    if hint is int:
        number = _number(value, where, label)
        if not number.is_integer():
            raise TargetError(f"{label}: {where}: must be a whole number ({value!r}); "
                              "allowed: an integer")
        # beyond 2**53 a float is no longer an exact integer: the field's range check
        # refuses it with the value as written (1e+30, not its 31-digit expansion)
        return int(number) if abs(number) <= 2**53 else number
    if hint is str or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        if not isinstance(value, str):
            raise TargetError(f"{label}: {where}: must be text ({value!r}); allowed: a string")
        return value  # an enum field's constructor checks the word and names the choices
    raise TypeError(f"no YAML conversion for {hint!r}")  # a new field type: a bug here


def _number(value: Any, where: str, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TargetError(f"{label}: {where}: must be a number ({value!r}); allowed: a number")
    try:
        return float(value)
    except ValueError:
        raise TargetError(f"{label}: {where}: must be a number ({value!r}); "
                          "allowed: a number such as 1.5e12") from None


def _rates(value: Any, where: str, label: str) -> dict[DType, float]:
    if not isinstance(value, dict):
        raise TargetError(f"{label}: {where}: must map dtypes to FLOP/s ({value!r}); "
                          "allowed: e.g. {bf16: 3.12e14, int8: 6.24e14}")
    rates: dict[DType, float] = {}
    for key, raw in value.items():
        try:
            dtype = DType(str(key).lower())
        except ValueError:
            allowed = [d.value for d in DType]
            _unknown(label, where, key, allowed)
        rates[dtype] = _number(raw, f"{where}.{key}", label)
    return rates
