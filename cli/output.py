"""Write a command's output files all at once, or not at all.

Files are first written into a hidden staging folder inside DIR. Then every top-level
entry is checked against what DIR already holds (a file where a folder goes, or the
reverse, fails before anything is replaced), and only then moved into place: a file by
one rename, a folder (such as ``chakra/``) by replacing the old folder whole, so no
stale rank file of an earlier run survives. On any failure the staging folder is
removed and no half-written file is left behind. An unwritable DIR is a ``UsageError``
(one line, exit code 2).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from chipletc.ir.errors import UsageError

__all__ = ["assumption_lines", "shown_dir", "write_outputs"]


def assumption_lines(values: Mapping[str, object], width: int = 88) -> list[str]:
    """The assumptions block of a report: each economic knob as the flag that sets it and
    its value (``backends.cost.assumptions``), wrapped to ``width``."""
    import dataclasses

    from chipletc.ir.tech import Economics

    flags = {f.name: f.metadata["flag"] for f in dataclasses.fields(Economics)
             if "flag" in f.metadata}
    lines, line = ["assumptions (override with these flags)"], " "
    for name, value in values.items():
        item = f" {flags[name]} {value:g}" if isinstance(value, float) else (
            f" {flags[name]} {value}")
        if len(line) + len(item) > width:
            lines.append(line)
            line = " "
        line += item
    return [*lines, line] if line.strip() else lines


def shown_dir(directory: str | Path) -> str:
    """``directory`` as the user gave it, ending in exactly one separator ("out/")."""
    return os.path.join(directory, "")


def write_outputs(directory: str | Path, files: Mapping[str, str | bytes]) -> list[Path]:
    """Write ``files`` (relative path -> content) under ``directory``; return their paths."""
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise UsageError(f"-o {directory}: is a file, not a directory; give a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".chipletc-", dir=root))
    except OSError as err:
        raise UsageError(f"-o {directory}: cannot write there ({err.strerror or err})") from None
    try:
        for rel, content in files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        entries = sorted({Path(rel).parts[0] for rel in files})
        for name in entries:
            new, old = staging / name, root / name
            if old.exists() and old.is_dir() != new.is_dir():
                kind = "a folder" if old.is_dir() else "a file"
                raise UsageError(f"-o {directory}: {name} is {kind} there; move it away")
        for name in entries:
            new, old = staging / name, root / name
            if new.is_dir() and old.exists():
                shutil.rmtree(old)
            os.replace(new, old)
    except OSError as err:
        raise UsageError(f"-o {directory}: cannot write there ({err.strerror or err})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [root / rel for rel in files]
