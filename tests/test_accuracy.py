"""Accuracy of the simulator against published measurements.

The sets, their sources and tolerances live in ``chipletc.compiler.accuracy``; each
test prints its table (``pytest -s`` shows it) and asserts the set's mean absolute
percentage error (MAPE) and its worst point within the set's tolerances, about 1.5x
what the calibration reaches (the factors were fitted to these points, so a looser gate
would not see a regression). docs/accuracy.md and the README's
table are generated from the same runs (``make accuracy``); a test holds them equal.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chipletc.backends.targets import load_target
from chipletc.compiler import accuracy

ROOT = Path(__file__).resolve().parents[1]
SETS = {s.key: s for s in accuracy.SETS}


@pytest.fixture(scope="module")
def results() -> dict[str, list[accuracy.Result]]:
    return {key: accuracy.run_set(cset) for key, cset in SETS.items()}


@pytest.mark.parametrize("key", list(SETS))
def test_calibration_set_within_its_tolerance(results, key: str) -> None:
    cset, res = SETS[key], results[key]
    lines = [cset.title, f"  {'case':<28}{'measured ms':>12}{'simulated ms':>14}{'error':>9}"]
    lines += [
        f"  {r.case.label:<28}{r.case.measured_ms:>12.1f}{r.predicted_ms:>14.1f}{r.error:>+9.1%}"
        for r in res
    ]
    mape, worst = accuracy.mape(res), accuracy.worst(res)
    lines.append(f"  MAPE {mape:.1%} over {len(res)} points, worst {worst:.1%}")
    print("\n" + "\n".join(lines))
    assert len(res) == len(cset.cases) > 0
    assert mape <= cset.tolerance and worst <= cset.worst


def test_published_tables_are_generated_from_the_code(results) -> None:
    """docs/accuracy.md and the README table are what `make accuracy` writes now."""
    detail, summary = accuracy.render(results)
    for path, block in ((ROOT / "docs" / "accuracy.md", detail), (ROOT / "README.md", summary)):
        text = path.read_text(encoding="utf-8")
        assert accuracy.splice(text, block) == text, f"{path.name}: run `make accuracy`"


@pytest.mark.parametrize("name", ["a100-80gb-x8", "h100-x8", "tpu-v4"])
def test_calibrated_factors_are_physical(name: str) -> None:
    """Guard against a fit that escapes into unphysical corners."""
    eff = load_target(name).efficiency
    assert 0.5 <= eff.compute <= 0.9
    assert 0.6 <= eff.memory <= 0.9
    assert eff.op_overhead_s <= 20e-6 and eff.collective_overhead_s <= 50e-6
