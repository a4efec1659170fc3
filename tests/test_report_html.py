"""report.html of `compile -o`: one self-contained page whose charts show the plan.

Checked by parsing (structure, no external resources, the mapping of plan.json) and by
decoding its images (PNG, not blank, the chiplet map with a colour per stage); where a
headless Chromium is installed it also renders the page to a non-blank screenshot."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from builders import CliRun


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images.append(a)
        for key in ("href", "src"):
            if key in a and tag != "img":
                self.links.append(a[key])
        self._in_cell = tag in ("td", "th")

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells.append(data)


def decode(uri: str) -> np.ndarray:
    from matplotlib.image import imread

    head, _, data = uri.partition(",")
    assert head == "data:image/png;base64"
    raw = base64.b64decode(data)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(io.BytesIO(raw), format="png")




def test_compile_writes_a_self_contained_page(cli: CliRun, tmp_path: Path):
    code, out, _ = cli("compile", "gpt2-xl", "-o", str(tmp_path))
    assert code == 0 and "report.html" in out
    text = (tmp_path / "report.html").read_text()
    page = Page()
    page.feed(text)
    assert page.tags.count("html") == 1 and page.tags.count("body") == 1
    assert "script" not in page.tags and not page.links  # nothing to fetch
    assert all(i["src"].startswith("data:image/png;base64,") for i in page.images)
    assert [i["alt"] for i in page.images] == [
        "chiplets by stage and by memory use", "cost per 1K tokens by item",
        "timeline of a decode step"]
    plan = json.loads((tmp_path / "plan.json").read_text())
    m = plan["mapping"]
    assert [str(m[k]) for k in ("tp", "pp", "batch", "micro_batch")] == page.cells[6:10]
    for item in plan["cost"]["breakdown_per_1k_tokens_usd"]:
        assert item in page.cells
    images = [decode(i["src"]) for i in page.images]
    for img in images:
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert img[..., :3].std() > 0.01  # something is drawn
    # the stage panel (top half of the chiplet map) shows every stage's colour (tab20,
    # repeating every 20 stages) and the memory panel one cell colour per use level
    from matplotlib import colormaps

    top = images[0][: images[0].shape[0] // 2, :, :3].reshape(-1, 3)
    seen = {tuple(c) for c in np.round(top * 255).astype(int)}
    palette = {tuple(np.round(np.array(colormaps["tab20"](i)[:3]) * 255).astype(int))
               for i in range(20)}
    assert len(seen & palette) == min(m["pp"], 20)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no headless Chromium here")
def test_chromium_renders_the_page(cli: CliRun, tmp_path: Path):
    code, _, _ = cli("compile", "gpt2-xl", "-o", str(tmp_path))
    assert code == 0
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    f"--screenshot={shot}", "--window-size=1280,2400",
                    (tmp_path / "report.html").as_uri()], check=True, timeout=120,
                   capture_output=True)
    from matplotlib.image import imread

    assert imread(shot)[..., :3].std() > 0.01
