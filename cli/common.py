"""Flags and loading shared by the commands that take a model and a target."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from chipletc.ir.dtypes import DType, parse_dtype
from chipletc.ir.errors import UsageError

if TYPE_CHECKING:
    from chipletc.ir.graph import Graph
    from chipletc.ir.plan import Plan
    from chipletc.ir.target import Target

__all__ = [
    "add_cache_arg",
    "add_economics_flags",
    "add_model_args",
    "add_model_or_plan_args",
    "add_option_flags",
    "add_storage_args",
    "economics_from",
    "load_graph",
    "options_from",
    "parse_compute_dtype",
    "plan_sources",
    "positive_int",
    "require_tdp_basis",
    "storage_flags",
    "with_sources",
]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


Options = TypeVar("Options")


def number(text: str) -> float:
    """Any finite number; the options dataclass checks its range."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def add_option_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    names: Iterable[str] | None = None,
    help: Mapping[str, str] | None = None,
    over: str | None = None,
) -> None:
    """Add a flag for each of the fields ``names`` (default all, in order) of the options
    dataclass ``cls``.

    The field's metadata gives the flag (``--`` + the name with dashes by default), its
    ``help``, ``metavar`` and ``divide_by``; its type gives the parser (positive int or
    float, a switch for bool, the values of an enum, optional or not) and its default
    is appended to the help. ``help`` replaces a field's help text for one command. With
    ``over`` (what the flags override, e.g. "the target's"), a flag has no default of its
    own: given, it replaces the value ``over`` names, whose range check then applies.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for name in fields if names is None else names:
        f, kind = fields[name], hints[name]
        meta = f.metadata
        text = (help or {}).get(name, meta.get("help"))
        kwargs: dict[str, Any] = {}
        types = (kind, *typing.get_args(kind))
        enum = next((t for t in types if isinstance(t, type) and issubclass(t, Enum)), None)
        if kind is bool:
            kwargs["action"] = "store_true"
        elif enum is not None:  # an enum, or an optional one (None: not pinned)
            default = None if f.default is None else f.default.value
            kwargs.update(choices=[e.value for e in enum], default=default)
        else:
            is_int = int in typing.get_args(kind) or kind is int
            kwargs["type"] = number if over else positive_int if is_int else positive_float
            kwargs["metavar"] = meta.get("metavar")
            if f.default is not None:
                kwargs["default"] = f.default
        default = kwargs.get("default")
        if over:
            kwargs["default"] = None
            shown = "" if default is None else (
                f"{default:g}" if isinstance(default, float) else str(default))
            text = f"{text} (default: {over}" + (
                f", {shown} unless set there)" if shown else ")")
        elif text is not None and default is not None:
            text += f" (default {default:g})" if isinstance(default, float) else (
                f" (default {default})"
            )
        parser.add_argument(_flag(f), help=text, **kwargs)


def add_economics_flags(parser: argparse.ArgumentParser) -> None:
    """The economic knobs (``Economics`` fields with a flag) over the target's values."""
    from chipletc.ir.tech import Economics

    knobs = [f.name for f in dataclasses.fields(Economics) if "flag" in f.metadata]
    add_option_flags(parser, Economics, knobs, over="the target's economics")


def economics_from(args: argparse.Namespace, target: Target) -> Target:
    """``target`` with the economic knobs given on the command line, each range-checked
    and named by its flag when out of range."""
    from chipletc.ir.errors import TargetError
    from chipletc.ir.tech import Economics

    values = {}
    for f in dataclasses.fields(Economics):
        if "flag" in f.metadata and getattr(args, _dest(f), None) is not None:
            values[f.name] = getattr(args, _dest(f))
    if not values:
        return target
    try:
        economics = dataclasses.replace(target.economics, **values)
    except TargetError as err:
        name, _, what = str(err).partition(": ")
        flags = {f.name: _flag(f) for f in dataclasses.fields(Economics)}
        raise UsageError(f"{flags.get(name, name)}: {what}") from None
    return dataclasses.replace(target, economics=economics)


def require_tdp_basis(target: Target, command: str, why: str) -> None:
    """Refuse a power basis other than TDP for an owned ``target`` in a ``command`` that
    has no run's average power to charge (``why`` says why not)."""
    basis = target.economics.power_basis.value
    if basis != "tdp" and not target.economics.rented:
        raise UsageError(f"--power-basis {basis}: {command} charges owned servers at TDP "
                         f"({why}); use tdp, or compile/simulate for the other bases")


def options_from(cls: type[Options], args: argparse.Namespace) -> Options:
    """The options dataclass ``cls`` from the flags ``add_option_flags`` added (fields
    without a flag keep their defaults)."""
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        dest = _dest(f)
        if not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        if value is not None and "divide_by" in f.metadata:
            value = value / f.metadata["divide_by"]
        values[f.name] = value
    return cls(**values)


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def _dest(f: dataclasses.Field) -> str:
    return _flag(f).removeprefix("--").replace("-", "_")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a zoo name (chipletc models), path/to/file.py:factory, a .onnx or .gguf file, "
        "or a Hugging Face checkpoint directory (or its Hub cache folder)",
    )


def add_model_or_plan_args(parser: argparse.ArgumentParser, verb: str) -> None:
    """MODEL and --target, or --plan FILE instead (simulate, serve)."""
    from chipletc.backends.targets import DEFAULT_TARGET

    parser.add_argument(
        "model",
        metavar="MODEL",
        nargs="?",
        help="a zoo name (chipletc models), path/to/file.py:factory, a .onnx or .gguf file, "
        "or a Hugging Face checkpoint directory (or its Hub cache folder); omit with --plan",
    )
    parser.add_argument("--plan", metavar="FILE", help=f"{verb} the mapping of a plan.json")
    parser.add_argument(
        "--target",
        "-t",
        default=DEFAULT_TARGET,
        metavar="T",
        help=f"preset name or YAML file (default {DEFAULT_TARGET})",
    )


def add_storage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights-dtype", metavar="D", help="store weights as D: fp32, bf16, fp16, fp8, int8, int4"
    )
    parser.add_argument("--kv-dtype", metavar="D", help="store the KV cache as D (default bf16)")
    parser.add_argument(
        "--compute-dtype",
        metavar="D",
        help="run matmuls at the chip's peak rate for D: bf16 (default, also for "
        "quantized weights: weight-only), fp16, fp8, int8, int4 (W8A8-style runs)",
    )
    parser.add_argument(
        "--weight-sparsity",
        type=float,
        default=0.0,
        metavar="S",
        help="fraction of zero weights, stored compressed (values + a 1-bit mask per "
        "weight) and loaded dense: changes SRAM fit and memory time, not FLOPs",
    )


def add_cache_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="lower the model again instead of reading the cache of lowered models "
        "(chipletc cache info), and do not write it",
    )


COMPUTE_DTYPES = (DType.BF16, DType.FP16, DType.FP8, DType.INT8, DType.INT4)


def parse_compute_dtype(text: str | None) -> DType | None:
    """``--compute-dtype``: one of ``COMPUTE_DTYPES``, or None when not given."""
    if not text:
        return None
    dtype = parse_dtype(text, "--compute-dtype")
    if dtype not in COMPUTE_DTYPES:
        allowed = ", ".join(d.value for d in COMPUTE_DTYPES)
        raise UsageError(f"--compute-dtype: {text!r} is not a compute type; use one of {allowed}")
    return dtype


def storage_flags(
    args: argparse.Namespace,
) -> tuple[DType | None, DType | None, DType | None, float]:
    """The storage flags checked: (weights, KV, compute dtype, weight sparsity)."""
    weights_text = getattr(args, "weights_dtype", None)
    weights = parse_dtype(weights_text, "--weights-dtype") if weights_text else None
    kv = parse_dtype(args.kv_dtype, "--kv-dtype") if getattr(args, "kv_dtype", None) else None
    compute = parse_compute_dtype(getattr(args, "compute_dtype", None))
    sparsity = getattr(args, "weight_sparsity", 0.0) or 0.0
    if not 0.0 <= sparsity < 1.0:
        raise UsageError(f"--weight-sparsity: must be in [0, 1) ({sparsity})")
    return weights, kv, compute, sparsity


def load_graph(args: argparse.Namespace) -> Graph:
    """The model MODEL names (through the cache of lowered models unless --no-cache),
    with the storage flags applied."""
    from chipletc.compiler.cache import load_cached

    weights, kv, compute, sparsity = storage_flags(args)
    graph = load_cached(args.model, use_cache=not getattr(args, "no_cache", False))
    if weights is None and kv is None and compute is None and not sparsity:
        return graph  # a cached graph as it is: no frontend (and no torch) imported
    from chipletc.compiler.frontends import apply_storage

    return apply_storage(graph, weights, kv, sparsity, compute_dtype=compute)


def with_sources(plan: Plan, model: str, target: str, sparsity: float) -> Plan:
    """The plan, recording how MODEL and the target were named and the weight sparsity,
    so that `chipletc simulate --plan` rebuilds the same system."""
    return dataclasses.replace(
        plan,
        model={**plan.model, "source": model, "weight_sparsity": sparsity},
        target={**plan.target, "source": target},
    )


def plan_sources(plan: Plan) -> tuple[str, str, float]:
    """(model, target, sparsity) as ``with_sources`` recorded them; names otherwise."""
    return (
        str(plan.model.get("source", plan.model["name"])),
        str(plan.target.get("source", plan.target["name"])),
        float(plan.model.get("weight_sparsity", 0.0)),
    )
