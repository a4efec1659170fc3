"""Charts as PNG bytes that repeat byte for byte: a matplotlib ``Figure`` on the Agg
backend (no display, no pyplot state) saved without the software-version metadata."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["new_figure", "png_bytes"]


def new_figure(width_in: float, height_in: float) -> Figure:
    """A figure of ``width_in`` x ``height_in`` inches at 100 dpi."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=100)


def png_bytes(fig: Figure) -> bytes:
    """The laid-out figure as PNG, with no "Software" chunk (it names the version)."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
