"""A 7B-parameter user model file (``file.py:build``) inspected: wall time and peak memory.

Budget: under 10 s and under 1 GB (10^9 bytes), measured with ``/usr/bin/time -v`` around
the whole ``chipletc inspect`` process (interpreter and torch import included). The
model file builds its layers in plain torch; the guarded loader builds it on the meta
device, so no weight memory is allocated (in real memory it would need ~27 GB in fp32).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

MODEL = textwrap.dedent(
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    D, HEADS, FFN, LAYERS, VOCAB = 4096, 32, 11008, 32, 32000  # Llama-2-7B's shape

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.n1, self.n2 = nn.RMSNorm(D), nn.RMSNorm(D)
            self.q, self.k, self.v, self.o = (nn.Linear(D, D, bias=False) for _ in range(4))
            self.gate, self.up = nn.Linear(D, FFN, bias=False), nn.Linear(D, FFN, bias=False)
            self.down = nn.Linear(FFN, D, bias=False)

        def forward(self, x):
            b, t, _ = x.shape
            h = self.n1(x)
            q, k, v = (p(h).view(b, t, HEADS, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.o(y.transpose(1, 2).reshape(b, t, D))
            h = self.n2(x)
            return x + self.down(F.silu(self.gate(h)) * self.up(h))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(VOCAB, D)
            self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
            self.norm = nn.RMSNorm(D)
            self.head = nn.Linear(D, VOCAB, bias=False)

        def forward(self, ids):
            x = self.emb(ids)
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x))

    def build():
        return Model()
    """
)


def test_7b_model_file_inspects_fast_in_little_memory(tmp_path: Path) -> None:
    path = tmp_path / "llama7b.py"
    path.write_text(MODEL)
    chipletc = Path(sys.executable).parent / "chipletc"
    proc = subprocess.run(
        ["/usr/bin/time", "-v", str(chipletc), "inspect", f"{path}:build", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    cpu = re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", proc.stderr)
    assert wall and rss and len(cpu) == 2, proc.stderr
    hours, minutes, seconds = int(wall[1] or 0), int(wall[2]), float(wall[3])
    wall_s = 3600 * hours + 60 * minutes + seconds
    peak_bytes = int(rss[1]) * 1024  # time -v reports KiB
    params = int(re.search(r'"params": (\d+)', proc.stdout)[1])
    cpu_s = sum(float(c) for c in cpu)
    print(
        f"\n7B model file: {params / 1e9:.2f}B parameters, {wall_s:.1f} s wall ({cpu_s:.1f} s "
        f"CPU: a loaded machine stretches wall time), peak RSS {peak_bytes / 1e6:.0f} MB"
    )
    assert 6.5e9 < params < 7.0e9  # 6.74B: Llama-2-7B's count
    assert wall_s < 10.0
    assert peak_bytes < 1e9
