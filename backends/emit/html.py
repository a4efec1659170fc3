"""Self-contained HTML pages: one file, the charts inline as PNG data: URIs, no scripts,
no external links, so a report opens offline and repeats byte for byte."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

__all__ = ["html_page", "html_table", "png_img"]

_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:.25em .6em;text-align:right}img{max-width:100%}")


def html_page(title: str, body: Sequence[str]) -> str:
    """A whole page: ``title`` (escaped here) and the ``body`` fragments, in order."""
    return "\n".join([
        "<!DOCTYPE html>",
        "<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        *body,
        "</body></html>",
    ]) + "\n"


def png_img(png: bytes, alt: str) -> str:
    """An <img> holding ``png`` as a data: URI."""
    data = base64.b64encode(png).decode("ascii")
    return f"<img alt=\"{html.escape(alt)}\" src=\"data:image/png;base64,{data}\">"


def html_table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A table of escaped cells: a header row, then ``rows``."""
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"
