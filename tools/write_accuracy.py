"""Rewrite docs/accuracy.md and the README's accuracy table from the calibration sets
(``make accuracy``); tests/test_accuracy.py fails while either differs from this output.

Usage: ``python tools/write_accuracy.py [ROOT]`` (ROOT: the repository, by default the
one holding this script).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from chipletc.compiler.accuracy import SETS, render, run_set, splice


def main(argv: Sequence[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[1]
    detail, summary = render({s.key: run_set(s) for s in SETS})
    for path, block in ((root / "docs" / "accuracy.md", detail), (root / "README.md", summary)):
        path.write_text(splice(path.read_text(encoding="utf-8"), block), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
