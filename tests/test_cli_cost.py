"""`chipletc targets` and `chipletc cost`: output, JSON keys, one-line errors, exit codes."""

from __future__ import annotations

import json

import pytest
from builders import CliRun

from chipletc.backends.targets import DEFAULT_TARGET, list_targets

JSON_KEYS = {
    "die": ["area_mm2", "dies_per_wafer", "yield", "cost_usd"],
    "package": ["cost_usd"],
    "server": ["cost_usd", "power_w", "tco_usd", "life_years"],
}


def test_targets_lists_every_preset(cli: CliRun):
    code, out, err = cli("targets")
    assert code == 0 and not err
    for name in list_targets():
        assert name in out
    assert f"{DEFAULT_TARGET} *" in out


def test_targets_columns_are_separated(cli: CliRun):
    """Every value stands apart from the next, the longest tech name included."""
    _, out, _ = cli("targets")
    _, js, _ = cli("targets", "--json")
    by_name = {row["name"]: row for row in json.loads(js)["targets"]}
    for line in out.splitlines():
        name = line.split(" ", 1)[0]
        if name in by_name:
            row = by_name[name]
            assert f" {row['tech']}  " in line and f"  {row['ownership']} " in line, line


def test_targets_json(cli: CliRun):
    code, out, _ = cli("targets", "--json")
    data = json.loads(out)
    assert code == 0
    assert [row["name"] for row in data["targets"]] == list_targets()
    assert "3nm" in data["techs"]


@pytest.mark.parametrize("name", list_targets())
def test_cost_json_has_the_documented_keys(cli: CliRun, name):
    code, out, err = cli("cost", name, "--json")
    assert code == 0 and not err
    report = json.loads(out)
    for section, keys in JSON_KEYS.items():
        for key in keys:
            assert key in report[section], f"{section}.{key}"
    rented = report["ownership"] == "rented"
    assert ("rent_usd_per_hour" in report) == rented


def test_cost_text_shows_every_level(cli: CliRun):
    code, out, _ = cli("cost")
    assert code == 0
    for word in ("die", "package", "server", "TCO", "thermal", "memory"):
        assert any(line.startswith(word) for line in out.splitlines()), word
    assert DEFAULT_TARGET in out


def test_cost_of_a_rented_target_prints_rent(cli: CliRun):
    code, out, _ = cli("cost", "a100-80gb-x8")
    assert code == 0
    assert "rented at $8.80/hour" in out
    assert "if fabricated and owned" in out


def test_cost_accepts_a_yaml_path(tmp_path, cli: CliRun):
    path = tmp_path / "mine.yaml"
    path.write_text("base: cc-7nm-gpt3\nserver: {packages_per_lane: 10}\n")
    code, out, _ = cli("cost", str(path), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["target"] == "mine" and report["server"]["chips"] == 80


def test_unknown_preset_is_exit_2_with_close_names(cli: CliRun):
    code, out, err = cli("cost", "a100")
    assert code == 2 and out == ""
    assert "did you mean" in err and "a100-80gb-x8?" in err
