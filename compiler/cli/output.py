"""Write a command's output files all at once, or not at all.

Files are first written into a hidden staging folder inside DIR, then moved into place
one rename each; on any failure the staging folder is removed, so no half-written file
is ever left behind. An unwritable DIR is a ``UsageError`` (one line, exit code 2).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from chipletc.ir.errors import UsageError

__all__ = ["write_outputs"]


def write_outputs(directory: str | Path, files: Mapping[str, str | bytes]) -> list[Path]:
    """Write ``files`` (relative path -> content) under ``directory``; return their paths."""
    root = Path(directory)
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".chipletc-", dir=root))
    except OSError as err:
        raise UsageError(f"-o {directory}: cannot write there ({err.strerror or err})") from None
    written = []
    try:
        for rel, content in files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        for rel in files:
            final = root / rel
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, final)
            written.append(final)
    except OSError as err:
        raise UsageError(f"-o {directory}: cannot write there ({err.strerror or err})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written
