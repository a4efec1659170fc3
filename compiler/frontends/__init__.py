"""Frontends: from what a user names to a verified, sharded ``ir.Graph``.

``load_model`` accepts a zoo name (``gpt3-175b``), ``path/to/file.py:factory``
(``factory()`` returns a torch ``nn.Module`` mapping token ids to logits; it runs on the
meta device, see ``user_file``), an ``.onnx``
file, a llama.cpp ``.gguf`` file, or a Hugging Face checkpoint directory holding
``config.json`` (or its Hub cache folder). All of them
lower to the same IR; none reads weight data. Every failure a user can cause surfaces
as one ``ModelError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from chipletc.compiler.passes.manager import Pass, run_passes
from chipletc.compiler.passes.sharding import assign_sharding
from chipletc.ir.dtypes import DType
from chipletc.ir.errors import ModelError
from chipletc.ir.graph import Graph
from chipletc.models import zoo

from .checkpoint import resolve_checkpoint
from .fx import LOWERING_PASSES, UnrecognisedOpsWarning, lower_module
from .gguf_file import lower_gguf
from .hf import lower_checkpoint
from .onnx import lower_onnx
from .user_file import build_module, guarded

__all__ = [
    "UnrecognisedOpsWarning",
    "apply_storage",
    "load_model",
    "lower_checkpoint",
    "lower_gguf",
    "lower_module",
    "lower_onnx",
]


def load_model(
    spec: str,
    *,
    weights_dtype: DType | None = None,
    kv_dtype: DType | None = None,
    weight_sparsity: float = 0.0,
    compute_dtype: DType | None = None,
) -> Graph:
    """Build or import the model ``spec`` names, lower it, then run the graph passes.

    The passes (verified after each, see ``compiler.passes.manager``):
    ``assign_sharding``, then the storage passes of ``apply_storage``.
    """
    graph = _lower(spec)
    done = [f"trace ({graph.info.frontend})", *(p.name for p in LOWERING_PASSES)]
    graph = run_passes(graph, [Pass("assign_sharding", assign_sharding)], done)
    return apply_storage(
        graph, weights_dtype, kv_dtype, weight_sparsity, [*done, "assign_sharding"], compute_dtype
    )


def apply_storage(
    graph: Graph,
    weights_dtype: DType | None = None,
    kv_dtype: DType | None = None,
    weight_sparsity: float = 0.0,
    before: Sequence[str] = ("load_model",),
    compute_dtype: DType | None = None,
) -> Graph:
    """``graph`` stored differently: ``cast_dtypes`` when a weight, KV-cache or compute
    dtype is given, then ``sparsify`` when ``weight_sparsity`` is not 0 (verified after
    each). The compute dtype is the rate matmuls run at, not a storage format."""
    passes: list[Pass[Graph]] = []
    if weights_dtype is not None or kv_dtype is not None or compute_dtype is not None:
        passes.append(
            Pass("cast_dtypes", lambda g: g.with_dtypes(weights_dtype, kv_dtype, compute_dtype))
        )
    if weight_sparsity:
        passes.append(Pass("sparsify", lambda g: g.with_sparsity(weight_sparsity)))
    return run_passes(graph, passes, before)


def _lower(spec: str) -> Graph:
    """The verified, unsharded graph of the model ``spec`` names."""
    path, sep, factory = spec.rpartition(":")
    if spec.endswith(".onnx"):
        graph = lower_onnx(Path(spec))
    elif spec.endswith(".gguf"):
        graph = lower_gguf(Path(spec))
    elif Path(spec).is_dir():
        directory = resolve_checkpoint(Path(spec))
        if not (directory / "config.json").is_file():
            what = "a config.json that is not a file" if (directory / "config.json").exists() \
                else "no config.json"
            raise ModelError(
                f"model {spec}: a directory with {what}; give a Hugging Face checkpoint "
                "directory (or its Hub cache folder), an .onnx or .gguf file, a zoo name or "
                "file.py:factory"
            )
        graph = lower_checkpoint(directory)
    elif sep and (path.endswith(".py") or Path(path).exists()):
        module = build_module(Path(path), factory)
        with guarded(f"model {spec}: tracing forward raised", Path(path).parent):
            graph = lower_module(module, f"{Path(path).stem}:{factory}")
    else:
        cfg = zoo.get_config(spec)
        graph = lower_module(zoo.build(cfg), cfg.name, max_positions=cfg.max_positions)
    return graph
