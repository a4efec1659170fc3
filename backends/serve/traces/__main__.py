"""Write the shipped traces into a folder: ``python -m chipletc.backends.serve.traces DIR``."""

import sys
from pathlib import Path

from chipletc.backends.serve.traces import SPECS, render

out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
out.mkdir(parents=True, exist_ok=True)
for name in SPECS:
    (out / f"{name}.jsonl").write_text(render(name), encoding="utf-8")
    print(f"wrote {out / name}.jsonl")
