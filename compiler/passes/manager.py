"""Running passes in order, verifying the IR after each (torch.fx's pass manager pattern).

A pass is a named function from an IR to an IR (it may change its argument in place
and return it). After every pass ``run_passes`` calls the IR's ``verify()``; when that
raises ``IRError`` the error names the pass that broke the invariant and the passes that
ran before it. An exception a pass raises itself propagates unchanged: a
``ChipletcError`` is already a message for the user, and anything else (a bug) keeps
its traceback with a note naming the pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from chipletc.ir.errors import ChipletcError, IRError

__all__ = ["Pass", "PassError", "run_passes"]


class _Verifiable(Protocol):
    def verify(self) -> object: ...


IR = TypeVar("IR", bound=_Verifiable)


@dataclass(frozen=True)
class Pass(Generic[IR]):
    """A named step: ``run`` takes the IR and returns it transformed."""

    name: str
    run: Callable[[IR], IR]


class PassError(IRError):
    """A pass left the IR breaking an invariant; names the pass and those before it."""

    def __init__(self, pass_name: str, before: Sequence[str], err: IRError) -> None:
        self.pass_name, self.before = pass_name, tuple(before)
        ran = ", ".join(self.before) or "none"
        super().__init__(f"pass {pass_name} (after: {ran}) broke an invariant: {err}")


def run_passes(ir: IR, passes: Sequence[Pass[IR]], before: Sequence[str] = ()) -> IR:
    """Run ``passes`` in order on ``ir``, verifying after each; return the result.

    ``before`` names steps that already ran (e.g. the tracing that produced ``ir``), so
    that an error lists the whole history.
    """
    ran = list(before)
    for p in passes:
        try:
            ir = p.run(ir)
        except ChipletcError:
            raise
        except Exception as err:
            err.add_note(f"in pass {p.name} (after: {', '.join(ran) or 'none'})")
            raise
        try:
            ir.verify()
        except IRError as err:
            raise PassError(p.name, ran, err) from err
        ran.append(p.name)
    return ir
