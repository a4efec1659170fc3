"""Shared fixtures: zoo models are lowered once per session (lowering costs ~1 s each, GPT-3
~5 s), and the CLI runs in process on those cached models."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/builders.py

from builders import CliRun

from chipletc.cli.main import main
from chipletc.compiler import frontends
from chipletc.ir.graph import Graph
from chipletc.models.zoo import list_models

_load_model = frontends.load_model
ZOO = frozenset(list_models())


@pytest.fixture(scope="session", autouse=True)
def _checked_chakra_sets():
    """Every Chakra set ``output_files`` emits in any test (`-o` of compile and simulate
    included) passes the structural checker of ``chakra_check.py``."""
    from chakra_check import check_chakra_set

    import chipletc.backends.emit as emit

    emitter = emit.to_chakra

    def checked(schedule, target, ranks="representative", steps=2, prefix="chipletc"):
        files = emitter(schedule, target, ranks, steps, prefix)
        check_chakra_set(files, schedule, target, ranks, steps)
        return files

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(emit, "to_chakra", checked)
        yield


@pytest.fixture(scope="session", autouse=True)
def private_model_cache(tmp_path_factory) -> Iterator[None]:
    """Tests, and the chipletc processes they start, cache lowered models in a temporary
    folder, never in the user's cache."""
    before = os.environ.get("CHIPLETC_CACHE")
    os.environ["CHIPLETC_CACHE"] = str(tmp_path_factory.mktemp("chipletc-cache"))
    yield
    if before is None:
        del os.environ["CHIPLETC_CACHE"]
    else:
        os.environ["CHIPLETC_CACHE"] = before


@cache
def _lowered(name: str) -> Graph:
    return _load_model(name)


def _load_cached(spec: str, **storage: object) -> Graph:
    """``load_model`` with zoo names from the session cache (graphs are immutable; the
    storage flags apply to a copy); files and directories are read afresh, since tests
    write them per case."""
    if spec in ZOO:
        return frontends.apply_storage(_lowered(spec), **storage)
    return _load_model(spec, **storage)


@pytest.fixture(scope="session")
def zoo_graph() -> Callable[[str], Graph]:
    """``zoo_graph(name)`` returns the IR of a zoo model, lowered once per session."""
    return _lowered


@pytest.fixture(scope="session")
def default_target():
    from chipletc.backends.targets import DEFAULT_TARGET, load_target

    return load_target(DEFAULT_TARGET)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> CliRun:
    """``cli(*argv)`` runs ``chipletc argv`` in this process and returns (exit code, stdout,
    stderr); zoo models come from the session cache instead of being lowered per call."""
    monkeypatch.setattr(frontends, "load_model", _load_cached)

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(list(argv))
        except SystemExit as flag_error:  # argparse exits; the installed command does the same
            code = flag_error.code
        out, err = capsys.readouterr()
        return code, out, err

    return run
