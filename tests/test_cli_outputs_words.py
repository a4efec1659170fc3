"""What the CLI says about its output folder: the path as given, and why it refuses one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chipletc.cli.explore import JOURNAL
from chipletc.cli.main import main
from chipletc.cli.output import shown_dir

SIMULATE_SMALL = ("simulate", "gpt2-small", "--tp", "1", "--pp", "1", "--batch", "1",
                  "--prompt-len", "8", "--gen-len", "2")


def test_output_onto_a_file_says_it_is_a_file(capsys, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    code = main([*SIMULATE_SMALL, "-o", str(afile)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.splitlines() == [f"chipletc: error: -o {afile}: is a file, not a directory; "
                                "give a folder"]
    assert afile.read_text() == "keep me"  # untouched, nothing written beside it
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]


@pytest.mark.parametrize("suffix", ["", "/"])
def test_written_folder_is_printed_with_one_slash(capsys, tmp_path, suffix):
    assert main([*SIMULATE_SMALL, "-o", f"{tmp_path}/out{suffix}"]) == 0
    wrote = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote")]
    assert wrote == [f"wrote {tmp_path}/out/: plan.json, schedule.json, simulation.json, "
                     "trace.json, report.md, chakra/"]
    assert (tmp_path / "out" / "plan.json").is_file()


@pytest.mark.parametrize(("given", "shown"), [("out", "out/"), ("out/", "out/"),
                                              ("a/b", "a/b/"), ("/", "/")])
def test_shown_dir_ends_in_one_separator(given, shown):
    assert shown_dir(given) == shown


def test_explore_help_names_every_model_form_and_the_journal(capsys):
    with pytest.raises(SystemExit):
        main(["explore", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for word in ("file.py:factory", ".onnx", "checkpoint directories", JOURNAL):
        assert word in text, word


# the project's notes that live outside the repository: none of them may be cited in it
OUTSIDE = tuple(f"{name}.md" for name in ("REFERENCE", "DESIGN", "STYLE"))


def test_nothing_in_the_repository_cites_a_file_outside_it():
    """README, docs, code, help texts and presets name only what ships."""
    root = Path(__file__).resolve().parents[1]
    cited = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in {"build", "dist"}
                   and not d.endswith(".egg-info") and d != "__pycache__"]
        for name in files:
            path = Path(folder) / name
            if path.suffix in {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ""}:
                text = path.read_text(errors="replace")
                cited += [f"{path.relative_to(root)}: {o}" for o in OUTSIDE if o in text]
    assert cited == []


@pytest.mark.parametrize(("argv", "words"), [
    # a latency no mapping reaches: the best one, and the bound that works
    (("compile", "gpt2-small", "--max-latency-ms", "0.0001"), "raise --max-latency-ms to "
                                                              "at least"),
    # a server life too short to repay one monthly instalment (was a ZeroDivisionError)
    (("cost", "cc-7nm-gpt3", "--life-years", "1e-30"),
     "--life-years: out of range (1e-30); allowed one month to 100 years"),
    # a baseline figure beyond any chip (1e400 parses as inf)
    (("explore", "gpt2-small", "--baseline", "a100:tokens_per_s=1e400"),
     "a100:tokens_per_s: must be a finite positive number ('1e400')"),
])
def test_issue_cases_refused_in_one_line(capsys, argv, words):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("chipletc: error: ") and words in err
