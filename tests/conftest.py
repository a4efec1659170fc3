"""Shared fixtures: zoo models are lowered once per session (lowering costs ~1 s each)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/builders.py


@cache
def _lowered(name: str):
    from chipletc.compiler.frontends import load_model

    return load_model(name)


@pytest.fixture(scope="session")
def zoo_graph() -> Callable:
    """``zoo_graph(name)`` returns the IR of a zoo model, lowered once per session."""
    return _lowered


@pytest.fixture(scope="session")
def default_target():
    from chipletc.backends.targets import DEFAULT_TARGET, load_target

    return load_target(DEFAULT_TARGET)
