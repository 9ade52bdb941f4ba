"""benchmarks/memory.py: the spiking conv net, the measurement, the table and the plot."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench_scripts import load_script
from polystep.evaluate import LayeredEvaluator
from polystep.nn import hard_blocks, smooth_twin
from polystep.subspace import FactoredSubspace
from polystep.transform import ParamLayout


@pytest.fixture(scope="module")
def bench():
    return load_script("memory")


def test_conv_net_is_spiking_layerable_and_millions(bench) -> None:
    model = bench.spiking_conv_net(3)
    assert sum(p.numel() for p in model.parameters()) == 3_257_578
    assert len(hard_blocks(model)) == 4 and not hard_blocks(smooth_twin(model))
    out = model(3 * torch.rand(2, 1, 28, 28))
    assert out.shape == (2, 10) and set(out.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    space = FactoredSubspace.from_layout(ParamLayout.from_module(model), rank=2, seed=0)
    assert LayeredEvaluator.supports(model, space) is None


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("mode", ["forward", "forward_streamed", "bptt", "polystep", "streamed"])
def test_measure_one_small_case(bench, mode: str) -> None:
    record = bench.measure("snn_mlp", mode, 3, 2, "cpu")
    assert record["mode"] == mode and record["T"] == 3 and record["params"] == 101_770
    assert record["peak_mib"] >= 0
    if mode in ("polystep", "streamed"):
        name = "StreamedEvaluator" if mode == "streamed" else "LayeredEvaluator"
        assert record["evaluator"] == name and record["fallback"] is None
        assert record["candidates"] > 0


def test_table_and_plot(bench, tmp_path: Path) -> None:
    recs = [
        {"model": "snn_mlp", "batch": 4, "T": 25, "mode": "polystep", "peak_mib": 10.0},
        {"model": "snn_mlp", "batch": 4, "T": 25, "mode": "streamed", "peak_mib": 1.0},
        {"model": "snn_mlp", "batch": 4, "T": 25, "mode": "bptt", "peak_mib": 40.0},
        {"model": "snn_mlp", "batch": 4, "T": 25, "mode": "forward", "peak_mib": 2.0},
        {"model": "snn_conv", "batch": 8, "T": 50, "mode": "bptt", "peak_mib": 80.0},
    ]
    text = bench.table(recs)
    assert (
        "| snn_mlp | 4 | 25 | 40.00 | 1.00 | 40.0× | 10.00 | 4.0× | 2.00 | — | untagged, 1 |"
        in text
    )
    assert "| snn_conv | 8 | 50 | 80.00 | — | — | — | — | — | — | — |" in text
    bench.plot(recs, tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 0


def test_summary_says_met_or_missed(bench) -> None:
    recs = [
        {"model": "snn_conv", "batch": 4, "T": 25, "mode": "streamed", "peak_mib": 10.0},
        {"model": "snn_conv", "batch": 4, "T": 400, "mode": "streamed", "peak_mib": 11.0},
        {"model": "snn_conv", "batch": 4, "T": 400, "mode": "bptt", "peak_mib": 440.0},
        {"model": "snn_mlp", "batch": 4, "T": 25, "mode": "streamed", "peak_mib": 1.0},
        {"model": "snn_mlp", "batch": 4, "T": 400, "mode": "streamed", "peak_mib": 2.0},
        {"model": "snn_mlp", "batch": 4, "T": 400, "mode": "bptt", "peak_mib": 10.0},
    ]
    text = bench.summary(recs)
    assert "snn_conv, batch 4: at T=400 one BPTT step takes 40.0×" in text
    assert "goal ≥ 30×: met" in text and "(flat:" in text
    assert "snn_mlp, batch 4: at T=400 one BPTT step takes 5.0×" in text
    assert "goal ≥ 30×: missed: it needs ≤ 0.33 MiB)" in text and "(not flat:" in text


def test_repeats_count_by_their_median(bench) -> None:
    recs = [
        {"model": "snn_mlp", "batch": 4, "T": 25, "mode": "streamed", "peak_mib": v}
        for v in (3.0, 9.0, 4.0)
    ]
    assert bench.medians(recs) == {("snn_mlp", 4, 25, "streamed"): 4.0}


def test_each_case_counts_its_newest_code_only(bench) -> None:
    def rec(value: float, commit: str | None) -> dict:
        r = {"model": "snn_mlp", "batch": 4, "T": 25, "mode": "streamed", "peak_mib": value}
        return r if commit is None else {**r, "commit": commit}

    recs = [rec(9.0, None), rec(8.0, "aaa"), rec(2.0, "bbb"), rec(4.0, "bbb"), rec(3.0, "bbb")]
    recs.append({**rec(50.0, None), "mode": "bptt"})
    assert bench.medians(recs) == {
        ("snn_mlp", 4, 25, "streamed"): 3.0,
        ("snn_mlp", 4, 25, "bptt"): 50.0,
    }
    assert "| 50.00 | 3.00 | 16.7× |" in bench.table(recs) and "| bbb, 3 |" in bench.table(recs)
    assert bench.code_commit()  # HEAD's short hash, +dirty with local changes


@pytest.fixture(scope="module")
def breakdown():
    return load_script("memory_breakdown")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_breakdown_parts_of_one_small_step(breakdown) -> None:
    phases = breakdown.rss_phases(breakdown.prepared_step(2, 3))
    assert list(phases) == ["incumbent loss", "ask", "scoring", "tell", "move written"]
    assert all(b >= a for a, b in zip(phases.values(), list(phases.values())[1:], strict=False))
    peak = breakdown.torch_peak(breakdown.prepared_step(2, 3))
    assert peak["torch_peak_mib"] > 0 and peak["live_tensors"] > 0
    assert any("streamed.py" in source for source in peak["sources_kib"])  # the chunks' own
    assert breakdown.python_peak(breakdown.prepared_step(2, 3))["python_peak_mib"] > 0


def test_breakdown_report(breakdown) -> None:
    record = {
        "batch": 64, "T": 25, "commit": "abc",
        "rss_phases_mib": {"incumbent loss": 0.3, "ask": 0.6, "scoring": 2.0},
        "torch_peak_mib": 1.25, "live_tensors": 9, "python_peak_mib": 0.02,
        "sources_kib": {"nn/spiking.py(84): step": 202.0}, "other_sources_kib": 3.0,
    }  # fmt: skip
    text = breakdown.report([record])
    assert "#### snn_mlp, batch 64, T=25 (code abc)" in text
    assert "incumbent loss 0.30 → ask 0.60 → scoring 2.00" in text
    assert "| `nn/spiking.py(84): step` | 202.0 |" in text and "at most: 1.25 MiB (9" in text


def test_code_of_a_commit_is_its_library_tree(bench) -> None:
    head = bench.code_commit().removesuffix("+dirty")
    assert bench.code_of(head) == bench.code_of(head + "~0")  # the same tree, two names
    assert len(bench.code_of(head)) == 40 and bench.code_of(head) != head
    assert bench.code_of(None) is None and bench.code_of("abc+dirty") == "abc+dirty"
    assert bench.code_of("not-a-commit") == "not-a-commit"


def test_readme_block_is_rewritten(bench) -> None:
    readme = "intro\n<!-- memory begin -->\nold table\n<!-- memory end -->\nnotes\n"
    new = bench.into_readme(readme, "| new | table |\n")
    assert new == "intro\n<!-- memory begin -->\n| new | table |\n<!-- memory end -->\nnotes\n"
    with pytest.raises(SystemExit, match="memory begin"):
        bench.into_readme("no block here", "x")
