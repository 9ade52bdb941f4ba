"""benchmarks/candidate_count.py: its table is the committed records, and it resumes."""

from pathlib import Path

import pytest

from bench_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def _script():
    return load_script("candidate_count")


def _record(arm, seed, val, options=None, **extra):
    return {
        "arm": arm, "options": options or {}, "seed": seed, "budget": 1000, "steps": 4,
        "val_selected": val, "val_last": val, "code": {"commit": "abcdef0123"}, **extra,
    }  # fmt: skip


def test_table_pairs_seeds_against_base_and_marks_removed_arms():
    cc = _script()
    records = [
        _record("base", 0, 0.5), _record("base", 1, 0.7),
        _record("subset 1/2", 0, 0.6, {"blocks_per_step": 78}),
        _record("subset 1/2", 1, 0.9, {"blocks_per_step": 78}),
        _record("gone", 0, 0.4, {"x": 1}),
        _record("subset 1/2", 0, 0.6, {"blocks_per_step": 78}, test_acc_selected=0.61,
                test_acc_last=0.59),
    ]  # fmt: skip
    text = cc.table(records)
    assert '| subset 1/2 | `{"blocks_per_step": 78}` | 1,000 | 2 | 75.0 +- 21.2 |' in text
    assert "| +15.0 (2/2) |" in text  # (0.1 + 0.2) / 2 over the paired seeds, both ahead
    assert "| gone (removed) |" in text and "| -10.0 (0/1) |" in text
    assert "seeds [0]): validation-selected model 61.0 +- 0.0 %, last 59.0 +- 0.0 %" in text


def test_committed_table_is_generated_from_the_committed_records():
    cc = _script()
    results = ROOT / "benchmarks" / "results" / "tuning"
    records = cc.read(results / "candidate_count.jsonl")
    assert records, "the records are committed"
    assert (results / "candidate_count.md").read_text().strip() == cc.table(records).strip()


def test_vary_seeds_one_source_and_holds_the_others_at_zero():
    cc = _script()
    assert cc.seeds_of(3, "all") == {"init": 3, "draws": 3, "data": 3}
    assert cc.seeds_of(3, "draws") == {"init": 0, "draws": 3, "data": 0}


def test_silent_counts_neurons_and_images_that_never_spike():
    import torch

    from polystep.nn import SpikingMLP

    cc = _script()
    model = SpikingMLP((4, 3, 2), num_steps=5)
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([5.0, 5.0, 0.0]))  # hidden 0, 1 fire, 2 never
        model[2].weight.zero_()
        model[2].bias.copy_(torch.tensor([5.0, 0.0]))  # output 1 never fires
    got = cc.silent(model, torch.rand(6, 4))
    assert got == pytest.approx({"hidden": 1 / 3, "output": 1 / 2, "images": 0.0})
    with torch.no_grad():
        model[2].bias.zero_()
    assert cc.silent(model, torch.rand(6, 4))["images"] == 1.0


def test_spread_table_shares_the_all_zero_run_and_keeps_vary_all_out_of_the_main_table():
    cc = _script()
    quiet = {"hidden": 0.0, "output": 0.1, "images": 0.5}

    def run(vary, seed, val, **extra):
        seeds = cc.seeds_of(seed, vary)
        return _record("base", seed, val, vary=vary, seeds=seeds, silent_start=quiet,
                       silent_end=quiet, **extra)  # fmt: skip

    assert "| init |" not in cc.table([_record("base", 0, 0.5), run("draws", 1, 0.62)])
    records = [
        _record("base", 0, 0.5), _record("base", 1, 0.7),  # older runs: no silence recorded
        run("init", 0, 0.6), run("init", 1, 0.8), run("draws", 1, 0.62), run("data", 2, 0.3),
    ]  # fmt: skip
    text = cc.table(records)
    assert "| base | `{}` | 1,000 | 2 | 60.0 +- 14.1 |" in text  # the vary-all runs only
    assert (
        "| base | 1,000 | all | 2 | 60.0 +- 14.1 | 60.0 +- 14.1 | 50.0 70.0 | - | - | - |" in text
    )
    assert "| base | 1,000 | init | 2 | 70.0 +- 14.1 | 70.0 +- 14.1 | 60.0 80.0 | 0 (0-0) |" in text
    assert "| base | 1,000 | draws | 2 | 61.0 +- 1.4 | 61.0 +- 1.4 | 60.0 62.0 |" in text
    assert "| base | 1,000 | data | 2 | 45.0 +- 21.2 | 45.0 +- 21.2 | 60.0 30.0 |" in text


def test_output_start_wakes_silent_output_neurons_only():
    import torch

    from polystep.nn import SpikingMLP

    cc = _script()
    torch.manual_seed(0)
    model = SpikingMLP((8, 16, 3), num_steps=5)
    x = torch.rand(64, 8)
    with torch.no_grad():
        model[2].bias.copy_(torch.tensor([-2.0, -2.0, 5.0]))  # outputs 0, 1 silent, 2 fires
    assert cc.silent(model, x)["output"] == pytest.approx(2 / 3)
    cc.output_start(model, x, 0.25)
    counts = model(x)
    assert ((counts > 0).float().mean(dim=0) >= 0.25).all()
    assert model[2].bias[2].item() == 5.0
    assert (model[2].bias[:2] > -2.0).all()


def test_silent_finding_names_runs_ending_with_a_silent_class_or_blank_images():
    cc = _script()

    def run(seed, val, output, images):
        end = {"hidden": 0.0, "output": output, "images": images}
        return _record("base", seed, val, silent_start=end, silent_end=end)

    text = cc.silent_finding([run(0, 0.8, 0.0, 0.02), run(1, 0.6, 0.1, 0.2), run(2, 0.7, 0.0, 0.15),
                              run(3, 0.78, 0.0, 0.05)])  # fmt: skip
    assert "of the 4 runs that record silence, 1 end with an output neuron" in text
    assert "(val last: base 1k all 1: 60.0)" in text
    assert "1 more end with 10 % or more" in text and "(base 1k all 2: 70.0)" in text
    assert "the other 2 end at val last 79.0 +- 1.4 %" in text


def test_readme_section_holds_the_generated_tables():
    cc = _script()
    records = cc.read(ROOT / "benchmarks" / "results" / "tuning" / "candidate_count.jsonl")
    readme = (ROOT / "benchmarks" / "README.md").read_text()
    assert cc.table(records).strip() in readme
