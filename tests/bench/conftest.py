"""Collect ``bench_*.py`` here, but only when tests/bench is asked for by path.

``pytest`` alone (the default suite) never runs benchmarks; ``pytest tests/bench -s``
(``make bench``) does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).parent.resolve()


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Module | None:
    if not (file_path.suffix == ".py" and file_path.name.startswith("bench_")):
        return None
    asked = [Path(a.split("::")[0]).resolve() for a in parent.config.args]
    if file_path.resolve() in asked:
        return None  # named on the command line: pytest collects it itself
    if any(a == BENCH_DIR or BENCH_DIR in a.parents for a in asked):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
