"""Hostile input for the CLI: random flags and random model-config, target and space files
never give a traceback, a hang, an exit code other than 0/2/130, or a partial output folder.

The cases run in this process (``main(argv)``, no interpreter start-up) under a per-case
time limit; a few run the installed command in a subprocess. The examples are derandomized,
so CI sees the same cases each run; ``CHIPLETC_FUZZ_EXAMPLES=500`` searches further.
Inputs the fuzz once broke are kept as named cases (``HF_FIXED``), each refused in one line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from builders import CliRun
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("CHIPLETC_FUZZ_EXAMPLES", "12"))
CASE_SECONDS = 60  # per case; a normal one takes well under a second
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module", autouse=True)
def warm_up(zoo_graph) -> None:
    """Lower a model before any timed case: torch imports its compiler stack (dynamo,
    sympy) on first use, which can take a minute on a loaded machine."""
    zoo_graph("gpt2-small")


class Hang(BaseException):
    """A case ran past CASE_SECONDS (a BaseException, so no ``except Exception`` eats it)."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise Hang(f"no answer after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check(
    cli: CliRun, argv: list[str], out_dir: Path | None = None, seconds: float = CASE_SECONDS
) -> tuple[int, str, str]:
    """Run one case and assert the invariants every input must keep."""
    if out_dir is not None:
        argv = [*argv, "-o", str(out_dir)]
    with time_limit(seconds):
        code, out, err = cli(*argv)
    shown = " ".join(argv)
    assert code in (0, 2, 130), f"exit {code}: {shown}\n{err}"
    if code == 2:
        # explore's progress lines ("explore: ...") are not error output
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith("explore: ")]
        assert len(lines) == 1 and lines[0].startswith("chipletc: error: "), f"{shown}\n{err}"
        assert out == "", shown
    if out_dir is not None:
        written = sorted(p.name for p in out_dir.iterdir()) if out_dir.exists() else []
        if code == 0:
            assert written, f"nothing written: {shown}"
        else:
            assert written == [], f"partial output {written}: {shown}"
    return code, out, err


# -- values ----------------------------------------------------------------------------------

NASTY_NUMBERS = st.sampled_from(
    [0, 1, 2, 3, -1, -7, 0.5, -0.5, 1 + 1e-12, 1e-30, 1e30, -1e30, 2**31, 2**40, 2**63, 10**30,
     1e308]
)  # fmt: skip
NASTY_VALUES = (
    NASTY_NUMBERS
    | st.integers(-(10**6), 10**6)
    | st.sampled_from(["abc", "", "1e3", None, True, [], {}, [1, 2], "nan", "inf"])
)
FLAG_TEXT = st.one_of(
    st.integers(-10, 10**13).map(str),
    st.sampled_from(["0", "-1", "1e30", "1e-30", "nan", "inf", "-inf", "abc", "", "0.5", "1.5"]),
    st.sampled_from(["1099511627776", "18446744073709551616", "9" * 40]),
)

# -- random flags per command ----------------------------------------------------------------

VALUED = {
    "inspect": ["--batch", "--prompt-len", "--context-len", "--weights-dtype", "--kv-dtype",
                "--weight-sparsity"],
    "compile": ["--objective", "--prompt-len", "--gen-len", "--max-latency-ms",
                "--min-throughput", "--max-chiplets", "--max-servers", "--max-batch", "--tp",
                "--pp", "--batch", "--micro-batch", "--weights-dtype", "--kv-dtype",
                "--weight-sparsity", "--solver", "--time-limit", "--ranks", "--trace-steps"],
    "simulate": ["--tp", "--pp", "--stages", "--batch", "--micro-batch", "--prompt-len",
                 "--gen-len", "--weights-dtype", "--kv-dtype", "--weight-sparsity", "--ranks",
                 "--trace-steps"],
    "explore": ["--workers", "--objective", "--prompt-len", "--gen-len", "--max-latency-ms",
                "--min-throughput", "--max-batch", "--max-servers", "--weights-dtype",
                "--kv-dtype", "--weight-sparsity", "--baseline", "--stop-after"],
}  # fmt: skip
SWITCHES = {
    "inspect": ["--json", "--per-layer"],
    "compile": ["--json", "--pad-heads"],
    "simulate": ["--json", "--pad-heads"],
    "explore": ["--json", "--pad-heads", "--no-baselines"],
}
# values a flag takes in practice, mixed with the hostile ones
PLAUSIBLE = {
    "--objective": ["tco", "latency", "throughput"],
    "--solver": ["cpsat", "exhaustive"],
    "--weights-dtype": ["int8", "fp8", "int4", "bf16", "int3"],
    "--kv-dtype": ["fp8", "bf16", "fp32"],
    "--ranks": ["all", "0", "0,1", "-1"],
    "--stages": ["0-5,6-11", "0-11", "5-0", "0-3,5-11", "a-b"],
    "--baseline": ["a100:tokens_per_s=18", "x:y=1", "tpu-v4:", "a100:tokens_per_s=1e400"],
}
# flags whose large values are honoured slowly by design (every decode step traced)
BOUNDED = {"--trace-steps": ["0", "1", "2", "-1", "abc"]}


@st.composite
def flags(draw: st.DrawFn, command: str) -> list[str]:
    argv: list[str] = []
    for flag in draw(st.lists(st.sampled_from(VALUED[command]), max_size=4, unique=True)):
        if flag in BOUNDED:
            argv += [flag, draw(st.sampled_from(BOUNDED[flag]))]
            continue
        plausible = PLAUSIBLE.get(flag, ["1", "2", "4", "8", "64"])
        argv += [flag, draw(st.sampled_from(plausible) | FLAG_TEXT)]
    argv += draw(st.lists(st.sampled_from(SWITCHES[command]), max_size=2, unique=True))
    return argv


# -- random files ----------------------------------------------------------------------------

HF_CONFIG = {
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
    "max_position_embeddings": 64, "torch_dtype": "bfloat16",
}  # fmt: skip


@st.composite
def hf_configs(draw: st.DrawFn) -> dict[str, Any]:
    """A small Llama config.json with some fields made hostile or left out."""
    config = dict(HF_CONFIG)
    for key in draw(st.lists(st.sampled_from(sorted(HF_CONFIG)), max_size=3, unique=True)):
        if draw(st.booleans()):
            config[key] = draw(NASTY_VALUES)
        else:
            del config[key]
    return config


TARGET_FIELDS = [
    ("chiplet", "by_area", "area_mm2"), ("chiplet", "by_area", "mac_ratio"),
    ("chiplet", "by_area", "ops_per_sram_read"), ("chiplet", "by_area", "link_count"),
    ("package", "chiplets_per_package"), ("server", "packages_per_lane"), ("server", "lanes"),
    ("server", "power_cap_w"), ("server", "server_link_bw_Bps"), ("system", "max_servers"),
    ("economics", "electricity_usd_per_kWh"), ("economics", "server_life_years"),
    ("economics", "rent_usd_per_hour"), ("efficiency", "compute"), ("efficiency", "link"),
    ("tech", "wafer_cost_usd"), ("tech", "defect_density_per_cm2"),
]  # fmt: skip


def nest(path: tuple[str, ...], value: object, into: dict[str, Any]) -> None:
    *parents, leaf = path
    for key in parents:
        into = into.setdefault(key, {})
    into[leaf] = value


@st.composite
def target_files(draw: st.DrawFn) -> dict[str, Any]:
    """cc-7nm-gpt3 with up to three fields overridden by hostile values."""
    doc: dict[str, Any] = {"base": "cc-7nm-gpt3"}
    for path in draw(st.lists(st.sampled_from(TARGET_FIELDS), min_size=1, max_size=3)):
        nest(path, draw(NASTY_VALUES), doc)
    if "tech" in doc:
        doc["tech"]["base"] = "7nm"
    return doc


SPACE = {
    "name": "fuzz", "base": "cc-7nm-gpt3",
    "chiplet": {"area_mm2": [200, 300], "mac_ratio": [0.03], "ops_per_sram_read": [4]},
    "server": {"packages_per_lane": [16]},
}  # fmt: skip  (two designs that hold the small model: explore runs to the end)
SPACE_AXES = [("chiplet", "area_mm2"), ("chiplet", "mac_ratio"), ("chiplet", "ops_per_sram_read"),
              ("server", "packages_per_lane"), ("server", "lanes")]  # fmt: skip


@st.composite
def space_files(draw: st.DrawFn) -> dict[str, Any]:
    """SPACE with up to two axes made hostile (values, ranges, scalars) or a key left out."""
    doc = json.loads(json.dumps(SPACE))
    for path in draw(st.lists(st.sampled_from(SPACE_AXES), max_size=2, unique=True)):
        axis = draw(
            st.lists(NASTY_VALUES, min_size=1, max_size=2)
            | st.fixed_dictionaries(
                {"from": NASTY_NUMBERS, "to": NASTY_NUMBERS, "step": NASTY_NUMBERS}
            )
            | st.fixed_dictionaries(
                {"from": NASTY_NUMBERS, "to": NASTY_NUMBERS, "factor": NASTY_NUMBERS}
            )
            | NASTY_VALUES
        )
        nest(path, axis, doc)
    if draw(st.booleans()):
        del doc[draw(st.sampled_from(["name", "base", "server"]))]
    return doc


def write(directory: Path, name: str, doc: object) -> str:
    path = directory / name
    path.write_text(json.dumps(doc) if name.endswith(".json") else yaml.safe_dump(doc))
    return str(path)


# bugs the fuzz found and the config ranges fixed: each must be refused in one line, at once
HF_FIXED = {
    "zero_heads": {"num_attention_heads": 0},  # was a ZeroDivisionError
    "huge_width": {"hidden_size": 2**40},  # was torch's storage-overflow traceback
    "huge_depth": {"num_hidden_layers": 10**9},  # was 300 s building 10^9 blocks
    "model_type_a_list": {"model_type": ["llama"]},  # was a TypeError (unhashable)
    "model_type_an_object": {"model_type": {"llama": 1}},
    "architectures_a_number": {"model_type": "nope", "architectures": 3},  # was a TypeError
}


# -- the fuzz cases --------------------------------------------------------------------------


@FUZZ
@given(command=st.sampled_from(["inspect", "compile", "simulate"]), data=st.data())
def test_random_flags_on_a_zoo_model(cli: CliRun, tmp_path: Path, command: str, data) -> None:
    argv = [command, "gpt2-small", *data.draw(flags(command))]
    if command == "simulate":
        argv += ["--prompt-len", "64", "--gen-len", "4"]  # the flags above may override
    out = Path(tempfile.mkdtemp(dir=tmp_path)) / "out" if command != "inspect" else None
    check(cli, argv, out)


@FUZZ
@given(config=hf_configs(), command=st.sampled_from(["inspect", "compile"]))
def test_random_model_configs(cli: CliRun, tmp_path: Path, config, command: str) -> None:
    model = Path(tempfile.mkdtemp(dir=tmp_path))
    write(model, "config.json", config)
    out = model / "out" if command == "compile" else None
    check(cli, [command, str(model)], out)


@FUZZ
@given(doc=target_files(), command=st.sampled_from(["cost", "compile"]))
def test_random_target_files(cli: CliRun, tmp_path: Path, doc, command: str) -> None:
    path = write(Path(tempfile.mkdtemp(dir=tmp_path)), "t.yaml", doc)
    argv = ["cost", path] if command == "cost" else ["compile", "gpt2-small", "--target", path]
    check(cli, argv)


@FUZZ
@given(doc=space_files(), data=st.data())
def test_random_space_files_and_explore_flags(cli: CliRun, tmp_path: Path, doc, data) -> None:
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    model = write(work, "config.json", HF_CONFIG)
    space = write(work, "space.yaml", doc)
    argv = ["explore", str(Path(model).parent), "--space", space, *data.draw(flags("explore"))]
    check(cli, argv, work / "out")


@pytest.mark.parametrize("case", sorted(HF_FIXED))
def test_fixed_config_bugs_are_refused_at_once(cli: CliRun, tmp_path: Path, case: str) -> None:
    write(tmp_path, "config.json", {**HF_CONFIG, **HF_FIXED[case]})
    code, _, err = cli("inspect", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and err.startswith("chipletc: error:"), err


def test_more_workers_than_tasks_start_one_process_per_task(cli: CliRun, tmp_path: Path) -> None:
    """--workers 10^6 on one task of two designs: it used to fork 10^6 processes (hang)."""
    model = write(tmp_path, "config.json", HF_CONFIG)
    space = write(tmp_path, "space.yaml", SPACE)
    code, out, _ = check(
        cli, ["explore", str(Path(model).parent), "--space", space, "--workers", "1000000",
              "--no-baselines", "--json"], seconds=60,
    )  # fmt: skip
    assert code == 0 and json.loads(out)["designs"] == 2


# -- in a real process: the installed command, interrupted and not --------------------------


def installed(*argv: str, timeout: float = 120, **popen: Any) -> subprocess.Popen[str]:
    exe = Path(sys.executable).parent / "chipletc"
    return subprocess.Popen(
        [str(exe), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def test_installed_command_on_a_hostile_config(tmp_path: Path) -> None:
    write(tmp_path, "config.json", {**HF_CONFIG, "num_attention_heads": "four"})
    proc = installed("compile", str(tmp_path), "-o", str(tmp_path / "out"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("chipletc: error: ")
    assert not (tmp_path / "out").exists()


def test_interrupt_exits_130_and_writes_nothing(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) while explore works: exit 130, no traceback, and in the output
    folder only the journal a rerun resumes from."""
    proc = installed(
        "explore", "gpt2-small", "--prompt-len", "64", "--gen-len", "8", "-o",
        str(tmp_path / "out"), "--no-baselines", "--progress",
    )  # fmt: skip
    assert proc.stderr is not None
    proc.stderr.read(1)  # the progress bar has begun: the run is under way
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    out_dir = tmp_path / "out"
    assert not out_dir.exists() or {p.name for p in out_dir.iterdir()} <= {"journal.jsonl"}
