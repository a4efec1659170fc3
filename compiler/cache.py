"""A cache of lowered models: each ``load_model`` result kept once on disk as a graph
document (``ir.graph_json``), so a second run skips torch, tracing and lowering.

Where: ``$CHIPLETC_CACHE`` if set, else ``$XDG_CACHE_HOME/chipletc``, else
``~/.cache/chipletc``; entries are ``graphs/<key>.json``. The key is a SHA-256 of what
the lowering reads and of the code that lowers it:

* a zoo name: its configuration (every field of ``ModelConfig``);
* an ``.onnx`` file: its bytes;
* a ``.gguf`` file: its header (metadata and tensor infos, up to the tensor data);
* a Hugging Face checkpoint directory (or Hub cache folder, every snapshot and
  ``refs/main``): each ``*.json`` file, each ``*.safetensors`` file's header and each
  ``*.bin`` archive's pickle (the weights are never read, so they are not hashed);
* ``file.py:factory``: the file's bytes and the factory's name. Modules the file imports
  are not hashed: after editing one of them, pass ``--no-cache``;
* always: the chipletc version, the graph document's version and the source of the
  code that lowers (``ir``, ``models``, ``compiler/frontends``, ``compiler/passes``).

An entry records its key and the SHA-256 of its graph document; an entry that cannot
be read, does not match or does not verify is rebuilt and replaced, never used. Writes
go to a temporary file renamed into place, so a crash leaves no half entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from chipletc import __version__
from chipletc.ir.errors import IRError, ModelError
from chipletc.ir.graph_json import GRAPH_VERSION, graph_from_json, graph_to_json

if TYPE_CHECKING:
    from chipletc.ir.graph import Graph

__all__ = ["CacheInfo", "cache_dir", "cache_info", "clear_cache", "load_cached", "source_key"]

ENTRY_VERSION = 1
_PACKAGE = Path(__file__).resolve().parent.parent  # the folder of ir/, models/, compiler/
_LOWERING_CODE = ("ir", "models", "compiler/frontends", "compiler/passes")


def cache_dir() -> Path:
    """The cache's folder (it may not exist yet)."""
    if os.environ.get("CHIPLETC_CACHE"):
        return Path(os.environ["CHIPLETC_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "chipletc"


@cache
def _code_digest() -> str:
    """SHA-256 of the lowering code's source: an edit to it invalidates every entry."""
    h = hashlib.sha256()
    for folder in _LOWERING_CODE:
        for path in sorted((_PACKAGE / folder).glob("*.py")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _safetensors_header(path: Path) -> bytes:
    """The length prefix and JSON header of a safetensors file (what the frontend reads)."""
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            return prefix
        # a corrupt length may exceed the file (the frontend refuses it): read what is there
        size = path.stat().st_size
        return prefix + f.read(min(struct.unpack("<Q", prefix)[0], size))


def _gguf_header(path: Path) -> bytes:
    """A GGUF file's bytes before its tensor data (what the frontend reads)."""
    try:
        from gguf import GGUFReader

        end = GGUFReader(path).data_offset
    except (ImportError, ValueError, KeyError, IndexError, TypeError, OSError):
        end = 4096  # the frontend refuses it (or says gguf is missing); any stable key will do
    with path.open("rb") as f:
        return f.read(end)


def _bin_pickle(path: Path) -> bytes:
    """The state-dict pickle of a torch.save archive (what the frontend reads)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return b"".join(
                archive.read(n) for n in sorted(archive.namelist()) if n.endswith("data.pkl")
            )
    except (zipfile.BadZipFile, OSError):
        return path.read_bytes()[:4096]  # the frontend refuses it; any stable key will do


# Suffix of a checkpoint file -> the bytes of it the Hugging Face frontend reads.
_HF_READS: dict[str, Callable[[Path], bytes]] = {
    ".json": Path.read_bytes,
    ".safetensors": _safetensors_header,
    ".bin": _bin_pickle,
}


def _source_digest(spec: str) -> str | None:
    """What ``spec`` names, hashed; None where ``load_model`` would fail (it says why)."""
    h = hashlib.sha256()
    path, sep, factory = spec.rpartition(":")
    if spec.endswith(".onnx"):
        if not Path(spec).is_file():
            return None
        h.update(b"onnx\0" + Path(spec).read_bytes())
    elif spec.endswith(".gguf"):
        if not Path(spec).is_file():
            return None
        h.update(b"gguf\0" + _gguf_header(Path(spec)))
    elif Path(spec).is_dir():
        directory = Path(spec)
        if not (directory / "config.json").is_file() and not (directory / "snapshots").is_dir():
            return None
        h.update(b"hf\0")
        for path in sorted(directory.rglob("*")):
            if path.is_file() and "blobs" not in path.relative_to(directory).parts:
                read = _HF_READS.get(path.suffix) or (
                    Path.read_bytes if path.parent.name == "refs" else None
                )
                if read is not None:
                    h.update(str(path.relative_to(directory)).encode() + b"\0" + read(path))
    elif sep and (path.endswith(".py") or Path(path).exists()):
        if not Path(path).is_file():
            return None
        h.update(b"py\0" + factory.encode() + b"\0" + Path(path).read_bytes())
    else:
        from chipletc.models.zoo import get_config

        try:
            cfg = get_config(spec)
        except ModelError:
            return None
        h.update(b"zoo\0" + json.dumps(asdict(cfg), sort_keys=True).encode())
    return h.hexdigest()


def source_key(spec: str) -> str | None:
    """The cache key of the model ``spec`` names (None: not cacheable as named)."""
    source = _source_digest(spec)
    if source is None:
        return None
    parts = (__version__, GRAPH_VERSION, str(ENTRY_VERSION), _code_digest(), source)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _entry_path(key: str) -> Path:
    return cache_dir() / "graphs" / f"{key}.json"


def _read_entry(path: Path, key: str) -> Graph | None:
    """The entry's graph, or None if it is missing or cannot be trusted."""
    try:
        head, _, body = path.read_text(encoding="utf-8").partition("\n")
        meta = json.loads(head)
        if meta != {"entry": ENTRY_VERSION, "key": key,
                    "sha256": hashlib.sha256(body.encode()).hexdigest()}:
            return None
        return graph_from_json(body)
    except (OSError, ValueError, IRError):
        return None


def _write_entry(path: Path, key: str, graph: Graph) -> None:
    """Write atomically; a cache that cannot be written is skipped, not an error."""
    body = graph_to_json(graph)
    meta = {"entry": ENTRY_VERSION, "key": key, "sha256": hashlib.sha256(body.encode()).hexdigest()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(meta) + "\n" + body)
        os.replace(tmp, path)
    except OSError:
        return


def load_cached(spec: str, use_cache: bool = True,
                load: Callable[[str], Graph] | None = None) -> Graph:
    """``load(spec)`` (default ``compiler.frontends.load_model``, imported only on a
    miss: it brings in torch) through the cache."""
    key = source_key(spec) if use_cache else None
    graph = None if key is None else _read_entry(_entry_path(key), key)
    if graph is None:
        if load is None:
            from chipletc.compiler.frontends import load_model as load
        graph = load(spec)
        if key is not None:
            _write_entry(_entry_path(key), key, graph)
    return graph


@dataclass(frozen=True)
class CacheInfo:
    directory: Path
    entries: int
    total_bytes: int


def cache_info() -> CacheInfo:
    files = sorted((cache_dir() / "graphs").glob("*.json"))
    return CacheInfo(cache_dir(), len(files), sum(f.stat().st_size for f in files))


def clear_cache() -> int:
    """Remove every entry (and stray temporary files); return how many entries went."""
    graphs = cache_dir() / "graphs"
    entries = sorted(graphs.glob("*.json"))
    for f in entries + sorted(graphs.glob(".tmp-*")):
        f.unlink(missing_ok=True)
    return len(entries)
