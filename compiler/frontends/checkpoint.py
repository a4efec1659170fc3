"""A Hugging Face checkpoint's files: where they are, and every tensor they hold.

Weights come as safetensors (one ``model.safetensors`` or the shards a
``model.safetensors.index.json`` lists) or, from older uploads, as ``pytorch_model.bin``
(or the shards of ``pytorch_model.bin.index.json``); safetensors win when both are
there, as transformers prefers them. Only headers and pickles are read, never data.

A directory in the Hub cache layout (``models--org--name`` holding ``refs/main`` and
``snapshots/<revision>/``) names the snapshot ``refs/main`` points at, or its only
snapshot; the snapshot's files may be links into ``blobs/`` (they are followed).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from chipletc.ir.errors import ModelError

from .safetensors_header import TensorEntry, read_header
from .torch_bin import read_bin

__all__ = ["read_checkpoint", "resolve_checkpoint"]

# (index file, single file, reader), in the order transformers prefers them.
_FORMATS: tuple[tuple[str, str, Callable[[Path], dict[str, TensorEntry]]], ...] = (
    ("model.safetensors.index.json", "model.safetensors", read_header),
    ("pytorch_model.bin.index.json", "pytorch_model.bin", read_bin),
)


def resolve_checkpoint(path: Path) -> Path:
    """``path``, or for a Hub cache folder the snapshot it stands for.

    Raises ``ModelError`` when a cache folder has several snapshots and no ``refs/main``
    to choose one (naming them), or none.
    """
    snapshots = path / "snapshots"
    if (path / "config.json").is_file() or not snapshots.is_dir():
        return path
    ref = path / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
        return snapshots / ref.read_text().strip()
    revisions = sorted(p.name for p in snapshots.iterdir() if p.is_dir())
    if len(revisions) == 1:
        return snapshots / revisions[0]
    if not revisions:
        raise ModelError(f"checkpoint {path}: a Hub cache folder without snapshots")
    raise ModelError(
        f"checkpoint {path}: {len(revisions)} snapshots and no refs/main; give one of "
        f"{', '.join(str(snapshots / r) for r in revisions[:3])}"
    )


def read_checkpoint(directory: Path) -> dict[str, TensorEntry] | None:
    """Every tensor of a checkpoint directory, or None when it holds no weight files.

    Each shard an index lists must exist: a partial checkpoint would give wrong byte
    counts.
    """
    for index_name, single_name, reader in _FORMATS:
        index, single = directory / index_name, directory / single_name
        if index.is_file():
            files = _shards(directory, index)
        elif single.is_file():
            files = [single_name]
        else:
            continue
        out: dict[str, TensorEntry] = {}
        for f in files:
            out.update(reader(directory / f))
        return out
    return None


def _shards(directory: Path, index: Path) -> list[str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ModelError(
            f"checkpoint {index}: not a checkpoint index ({type(err).__name__}: {err})"
        ) from None
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        raise ModelError(
            f"checkpoint {directory}: shard {missing[0]} listed in {index.name} is missing"
            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}"
        )
    return files
