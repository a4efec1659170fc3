"""The cache of lowered models: exact round trips, identical outputs, no trusted junk."""

from __future__ import annotations

import filecmp
import json
import re
from pathlib import Path

import pytest

from chipletc.cli.main import main
from chipletc.compiler import cache
from chipletc.compiler.frontends import lower_module
from chipletc.compiler.passes.sharding import assign_sharding
from chipletc.ir.errors import IRError
from chipletc.ir.graph import Graph
from chipletc.ir.graph_json import graph_from_json, graph_to_json
from chipletc.models import zoo

MODELS = zoo.list_models()


def assert_same_graph(a: Graph, b: Graph) -> None:
    assert a.info == b.info
    assert (a.kv_dtype, a.act_dtype) == (b.kv_dtype, b.act_dtype)
    assert a.ops == b.ops
    assert list(a.edges()) == list(b.edges())
    assert [[o.name for o in a.inputs(op.name)] for op in a.ops] == [
        [o.name for o in b.inputs(op.name)] for op in b.ops
    ]


def shallow(name: str) -> Graph:
    """The zoo model with two blocks: every op kind and attribute of its family."""
    cfg = zoo.with_layers(zoo.get_config(name), 2)
    return assign_sharding(lower_module(zoo.build(cfg), cfg.name, max_positions=cfg.max_positions))


def test_every_zoo_model_is_in_the_round_trip():
    assert len(MODELS) >= 15


@pytest.mark.parametrize("name", MODELS)
def test_graph_round_trip_is_exact(name):
    graph = shallow(name)
    text = graph_to_json(graph)
    back = graph_from_json(text)
    assert_same_graph(graph, back)
    assert graph_to_json(back) == text


def test_full_depth_round_trip_with_dtypes_and_sparsity(zoo_graph):
    from chipletc.ir.dtypes import DType

    graph = zoo_graph("gpt3-175b").with_dtypes(weights=DType.INT4, kv=DType.FP8)
    graph = graph.with_sparsity(0.5)
    back = graph_from_json(graph_to_json(graph))
    assert_same_graph(graph, back)
    assert back.weight_bytes == graph.weight_bytes


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d.update(version="0.9"),
        lambda d: d["ops"][3]["dims"].update(in_features=-1),
        lambda d: d["ops"][3].update(kind="convolution"),
        lambda d: d["ops"][5].update(inputs=["nowhere"]),
        lambda d: d["ops"].reverse(),
    ],
    ids=["version", "negative-dim", "unknown-kind", "dangling-input", "order"],
)
def test_malformed_document_is_refused(mangle):
    doc = json.loads(graph_to_json(shallow("gpt2-small")))
    mangle(doc)
    with pytest.raises(IRError):
        graph_from_json(json.dumps(doc))


class CountingLoader:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, spec: str) -> Graph:
        self.calls += 1
        return shallow(spec)


def entry_of(spec: str) -> Path:
    return cache.cache_dir() / "graphs" / f"{cache.source_key(spec)}.json"


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CHIPLETC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_second_load_reads_the_cache(cache_dir):
    load = CountingLoader()
    first = cache.load_cached("gpt2-small", load=load)
    second = cache.load_cached("gpt2-small", load=load)
    assert load.calls == 1
    assert_same_graph(first, second)
    assert entry_of("gpt2-small").is_file()
    cache.load_cached("gpt2-small", use_cache=False, load=load)
    assert load.calls == 2


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda text: text[: len(text) // 2],  # truncated
        lambda text: "not json\n" + text,
        lambda text: text.replace('"in_features":768', '"in_features":769', 1),  # edited
        lambda text: "",
    ],
    ids=["truncated", "garbage-header", "edited-body", "empty"],
)
def test_corrupt_entry_is_rebuilt_not_trusted(cache_dir, corrupt):
    load = CountingLoader()
    good = cache.load_cached("gpt2-small", load=load)
    path = entry_of("gpt2-small")
    text = path.read_text()
    bad = corrupt(text)
    assert bad != text
    path.write_text(bad)
    again = cache.load_cached("gpt2-small", load=load)
    assert load.calls == 2
    assert_same_graph(good, again)
    assert path.read_text() == text  # replaced by a good entry


def test_key_follows_the_source(tmp_path):
    model = tmp_path / "m.py"
    model.write_text("def build():\n    return None\n")
    key = cache.source_key(f"{model}:build")
    assert key is not None and key == cache.source_key(f"{model}:build")
    assert cache.source_key(f"{model}:other") != key
    model.write_text("def build():\n    return 1\n")
    assert cache.source_key(f"{model}:build") != key
    assert cache.source_key("gpt2-small") != cache.source_key("gpt2-medium")
    assert cache.source_key("no-such-model") is None  # load_model says why
    assert cache.source_key(str(tmp_path / "missing.onnx")) is None


def test_cache_info_and_clear(cache_dir, capsys):
    cache.load_cached("gpt2-small", load=CountingLoader())
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert str(cache_dir) in out and "1 lowered model(s)" in out
    assert main(["cache", "clear"]) == 0
    assert "removed 1 " in capsys.readouterr().out
    assert cache.cache_info().entries == 0


def _without_wall_time(text: str) -> str:
    """The summary without the solver's wall time (a clock reading)."""
    return re.sub(r"(gap [^,]+, )[0-9.]+ s", r"\1", text)


def test_compile_outputs_identical_with_and_without_cache(cache_dir, tmp_path, capsys):
    outs = {}
    for run, flags in (("none", ["--no-cache"]), ("cold", []), ("warm", [])):
        out = tmp_path / run
        argv = ["compile", "gpt2-small", "--gen-len", "64", "-o", str(out), *flags]
        assert main(argv) == 0
        outs[run] = (out, _without_wall_time(capsys.readouterr().out.replace(str(out), "OUT")))
    assert cache.cache_info().entries == 1
    (ref, ref_text), *others = outs.values()
    for out, text in others:
        assert text == ref_text
        files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(ref) for p in ref.rglob("*") if p.is_file())
        for f in files:
            assert filecmp.cmp(out / f, ref / f, shallow=False), f
