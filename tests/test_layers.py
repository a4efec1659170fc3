"""The import direction of the source tree, read from the files with ``ast``.

Layers, bottom up: ``ir`` (plain data) <- ``models`` <- ``backends`` <- ``compiler`` <-
the CLI. Every ``import`` counts, also one inside a function (a lazy import is still a
dependency). ``chipletc.X`` resolves to the folder ``X/`` at the repository root when
there is one (pyproject's package-dir), else to ``chipletc/X/``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "chipletc"
LAYERS = ("ir", "models", "backends", "compiler", "cli")
SPLIT = ("backends", "compiler")
"""Layers whose subpackages and modules (backends.cost, compiler.place) are units of their own."""


def _folder(layer: str) -> Path:
    """Where ``chipletc.<layer>`` lives: ``<layer>/`` at the root if present, else in chipletc/."""
    top = ROOT / layer
    return top if (top / "__init__.py").is_file() else ROOT / PACKAGE / layer


def _module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {f"{PACKAGE}.{p.stem}".removesuffix(".__init__"): p
           for p in (ROOT / PACKAGE).glob("*.py")}
    for layer in LAYERS:
        folder = _folder(layer)
        if not (folder / "__init__.py").is_file():
            continue  # no such layer (yet): the CLI may live in compiler/cli
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((PACKAGE, layer, *parts))] = path
    return out


def _imports(module: str, path: Path, known: Iterable[str]) -> set[str]:
    """The package modules ``module`` imports anywhere in its file."""
    known = set(known)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            # "from pkg import sub" imports the submodule pkg.sub when there is one.
            names = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in known else origin
                     for a in node.names]
        else:
            continue
        found.update(n for n in names if n == PACKAGE or n.startswith(PACKAGE + "."))
    return found


def unit(module: str) -> str:
    """The unit a module belongs to: "ir", "models", "backends.cost", "compiler.place", ...

    In ``backends`` and ``compiler`` each subpackage and each module beside them is a
    unit of its own; the other layers are one unit each.
    """
    parts = module.split(".")[1:]
    if not parts:
        return PACKAGE
    return ".".join(parts[:2]) if parts[0] in SPLIT else parts[0]


def unit_edges() -> dict[str, set[str]]:
    """Unit -> the other units it imports."""
    files = _module_files()
    edges: dict[str, set[str]] = {}
    for module, path in files.items():
        src = unit(module)
        edges.setdefault(src, set())
        edges[src].update(u for u in map(unit, _imports(module, path, files)) if u != src)
    return edges


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of the directed graph ``edges`` as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


EDGES = unit_edges()


def _layer(u: str) -> str:
    return u.split(".")[0]


def test_the_walk_sees_the_tree():
    """Guards the tests below against passing on an empty walk."""
    assert {"ir", "models", "backends.cost", "backends.targets", "compiler.partition"} <= set(
        EDGES)
    assert "ir" in EDGES["backends.cost"]
    assert any("backends.cost" in v for u, v in EDGES.items() if _layer(u) == "compiler")


def test_lazy_and_relative_imports_are_resolved(tmp_path):
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "def f():\n    from chipletc.backends import targets\n    from . import b\n"
        "from .. import ir\nimport chipletc.compiler.place\n"
    )
    known = {"chipletc.backends.targets", "chipletc.x.b"}
    got = _imports("chipletc.x.a", pkg / "a.py", known)
    assert got == {"chipletc.backends.targets", "chipletc.x.b", "chipletc",
                   "chipletc.compiler.place"}


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_ir_imports_nothing_of_chipletc():
    assert EDGES["ir"] == set()


def test_models_import_only_ir():
    assert EDGES["models"] <= {"ir"}


@pytest.mark.parametrize("u", sorted(u for u in EDGES if _layer(u) == "backends"))
def test_backends_never_import_the_compiler_or_the_cli(u):
    bad = {v for v in EDGES[u] if _layer(v) in ("compiler", "cli") or v == "compiler.cli"}
    assert not bad, f"{u} imports {sorted(bad)}"


def test_no_cycle_between_units():
    assert find_cycle(EDGES) is None


def test_only_the_cli_imports_the_cli():
    bad = {u for u, v in EDGES.items() if _layer(u) != "cli" and "cli" in map(_layer, v)}
    assert not bad, f"{sorted(bad)} import the CLI"
