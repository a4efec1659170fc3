"""One error hierarchy for everything a user can cause.

The CLI prints any ``ChipletcError`` as one line and exits with code 2; anything else
is a bug and keeps its traceback. Messages follow "where: what (value); what to do".
"""

from __future__ import annotations

__all__ = [
    "ChipletcError",
    "IRError",
    "InfeasibleError",
    "ModelError",
    "PlanError",
    "TargetError",
    "UnsupportedOpError",
    "UsageError",
]


class ChipletcError(Exception):
    """Base of every error caused by user input rather than by a bug."""


class UsageError(ChipletcError):
    """A flag or argument combination that makes no sense."""


class ModelError(ChipletcError):
    """A model that cannot be found, loaded, traced or recognised."""


class UnsupportedOpError(ModelError):
    """An operator the importer cannot cost; the message names the node."""


class IRError(ChipletcError):
    """A graph that breaks one of the invariants listed in ``Graph.verify``."""


class TargetError(ChipletcError):
    """A hardware target or technology file that is missing or invalid."""


class InfeasibleError(ChipletcError):
    """A request no mapping can satisfy; the message says what fails and by how much."""


class PlanError(ChipletcError):
    """A placement plan that breaks its invariants or cannot be read."""
