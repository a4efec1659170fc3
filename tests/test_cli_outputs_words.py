"""What the CLI says about its output folder: the path as given, and why it refuses one."""

from __future__ import annotations

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
