"""Flags and loading shared by the commands that take a model and a target."""

from __future__ import annotations

import argparse
from dataclasses import replace

from chipletc.ir.dtypes import parse_dtype
from chipletc.ir.errors import UsageError
from chipletc.ir.graph import Graph
from chipletc.ir.plan import Plan

__all__ = [
    "add_model_args",
    "add_model_or_plan_args",
    "add_storage_args",
    "load_graph",
    "plan_sources",
    "positive_int",
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


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a zoo name (chipletc models), path/to/file.py:factory, a .onnx file or a "
        "Hugging Face checkpoint directory",
    )


def add_model_or_plan_args(parser: argparse.ArgumentParser, verb: str) -> None:
    """MODEL and --target, or --plan FILE instead (simulate, serve)."""
    from chipletc.backends.targets import DEFAULT_TARGET

    parser.add_argument(
        "model",
        metavar="MODEL",
        nargs="?",
        help="a zoo name (chipletc models), path/to/file.py:factory, a .onnx file or a "
        "Hugging Face checkpoint directory; omit with --plan",
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
        "--weight-sparsity",
        type=float,
        default=0.0,
        metavar="S",
        help="fraction of zero weights, stored compressed (values + a 1-bit mask per "
        "weight) and loaded dense: changes SRAM fit and memory time, not FLOPs",
    )


def load_graph(args: argparse.Namespace) -> Graph:
    """The model MODEL names, with the storage flags applied."""
    from chipletc.compiler.frontends import load_model

    weights = parse_dtype(args.weights_dtype) if getattr(args, "weights_dtype", None) else None
    kv = parse_dtype(args.kv_dtype) if getattr(args, "kv_dtype", None) else None
    sparsity = getattr(args, "weight_sparsity", 0.0) or 0.0
    if not 0.0 <= sparsity < 1.0:
        raise UsageError(f"--weight-sparsity: must be in [0, 1) ({sparsity})")
    return load_model(args.model, weights_dtype=weights, kv_dtype=kv, weight_sparsity=sparsity)


def with_sources(plan: Plan, model: str, target: str, sparsity: float) -> Plan:
    """The plan, recording how MODEL and the target were named and the weight sparsity,
    so that `chipletc simulate --plan` rebuilds the same system."""
    return replace(
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
