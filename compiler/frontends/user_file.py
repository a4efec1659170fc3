"""Running a user's model file (``path/to/file.py:factory``), guarded.

``build_module`` imports the file and calls ``factory()``:

* under ``torch.device("meta")``: parameters are shapes without storage, so a
  7B-parameter model builds in seconds and little memory (chipletc never reads
  weight values). A factory that needs real data (loading a checkpoint, printing a
  tensor) fails as one line saying so;
* with the file's folder first on ``sys.path`` while it runs, so the file can import a
  module beside it;
* with every exception the user's code raises, ``SystemExit`` included, reported as
  one ``ModelError`` line naming the user's ``file:line`` nearest to the raise.
  ``KeyboardInterrupt`` is not caught (the CLI exits 130).

``guarded`` applies the same reporting to later steps that run the user's code
(tracing calls ``forward``).
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from chipletc.ir.errors import ChipletcError, ModelError

__all__ = ["build_module", "guarded", "user_frame"]


def build_module(path: Path, factory: str) -> nn.Module:
    """``factory()`` of the model file ``path``, built on the meta device."""
    where = f"model file {path}"
    if not path.is_file():
        raise ModelError(f"{where}: not found; give path/to/file.py:factory")
    if not factory.isidentifier():
        raise ModelError(f"{where}: {factory!r} is not a function name; give file.py:factory")
    spec = importlib.util.spec_from_file_location(f"chipletc_user_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ModelError(f"{where}: cannot be imported as Python")
    source = importlib.util.module_from_spec(spec)
    with guarded(f"{where}: import raised", path.parent), torch.device("meta"):
        spec.loader.exec_module(source)
    fn = getattr(source, factory, None)
    if not callable(fn):
        raise ModelError(f"{where}: no function {factory!r}; define {factory}() -> nn.Module")
    with guarded(f"{where}: {factory}() raised", path.parent), torch.device("meta"):
        module = fn()
    if not isinstance(module, nn.Module):
        raise ModelError(
            f"{where}: {factory}() returned {type(module).__name__}, not a torch nn.Module"
        )
    return module


@contextmanager
def guarded(where: str, folder: Path) -> Iterator[None]:
    """Run user code with ``folder`` first on ``sys.path``; its failures become one
    ``ModelError`` line: ``{where} Type: message (at file:line)``.

    A ``ChipletcError`` raised from an exception of the user's code (a failed trace)
    becomes a ``ModelError`` with the ``(at file:line)`` of that exception.
    """
    entry = str(folder.resolve())
    sys.path.insert(0, entry)
    try:
        yield
    except KeyboardInterrupt:
        raise
    except ChipletcError as err:
        at = user_frame(err.__cause__, folder) if err.__cause__ is not None else ""
        if not at:
            raise
        raise ModelError(f"{err}{at}") from None
    except SystemExit as err:
        raise ModelError(
            f"{where} SystemExit: sys.exit({err.code!r}){user_frame(err, folder)}; "
            "a model file must return a module, not exit"
        ) from None
    except Exception as err:
        raise ModelError(f"{where} {one_line(err)}{user_frame(err, folder)}") from None
    finally:
        if entry in sys.path:
            sys.path.remove(entry)


def one_line(err: BaseException) -> str:
    """``Type: first line of the message``, at most 300 characters (marked when cut)."""
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= 300 else text[:297] + "..."


def user_frame(err: BaseException, folder: Path) -> str:
    """`` (at file:line)`` of the innermost frame of the user's code, else empty.

    The user's code is what lies in ``folder`` but not in chipletc's own packages or
    in an installed package (``site-packages``), either of which the folder may hold.
    """
    root = folder.resolve()
    own = _own_roots()
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        path = Path(frame.filename).resolve()
        if (
            path.is_file()
            and path.is_relative_to(root)
            and "site-packages" not in path.parts
            and not any(path.is_relative_to(p) for p in own)
        ):
            return f" (at {frame.filename}:{frame.lineno})"
    return ""


def _own_roots() -> list[Path]:
    """Folders of chipletc's own top-level packages (``chipletc.ir``, ...)."""
    mods = [
        m
        for n, m in list(sys.modules.items())
        if n == "chipletc" or (n.startswith("chipletc.") and n.count(".") == 1)
    ]
    return [Path(m.__file__).resolve().parent for m in mods if getattr(m, "__file__", None)]
