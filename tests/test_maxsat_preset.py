"""MAX-SAT preset rule: exact flip-set costs, the budget -> preset rule, the subspace search,
evaluation counting, and ``--baselines-from`` in the bench."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from polystep.problems.maxsat import (
    DEFAULT_PRESET,
    DeltaEvaluator,
    preset_for_budget,
    random_ksat,
    solve_maxsat,
    unsat_weight_numpy,
)

torch.set_num_threads(1)


@pytest.mark.parametrize("seed", [0, 1])
def test_flip_costs_equal_full_evaluation(seed):
    inst = random_ksat(60, ratio=6.0, seed=seed)  # dense: flips of one candidate share clauses
    ev = DeltaEvaluator(inst, 2)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(60, generator=gen) < 0.5
    ev.set_assignment(x)
    sets = [torch.randperm(60, generator=gen)[: int(k)] for k in (0, 1, 2, 7, 30, 60)]
    var = torch.cat(sets)
    cand = torch.cat([torch.full((len(s),), i) for i, s in enumerate(sets)])
    got = ev.flip_costs(var, cand, len(sets) + 1)
    for i, s in enumerate(sets):
        y = x.clone()
        y[s] = ~y[s]
        assert got[i] == unsat_weight_numpy(inst, y.numpy())
    assert got[-1] == ev.cost  # a candidate with no flips costs the incumbent


def test_preset_rule_large_budget_moves_half_the_blocks():
    preset = preset_for_budget(140, 100_000)
    assert not preset.subspace and preset.block_dim == 2
    assert preset.blocks_per_step == 35
    big = preset_for_budget(10_000, 2_000_001)
    assert big.blocks_per_step == 2_500 and big.group_size == big.group_size_final == 1


def test_preset_rule_medium_budget_keeps_blocks_with_100_steps():
    preset = preset_for_budget(10_000, 70_000)  # 8 n / budget rounds to 1
    assert not preset.subspace and preset.blocks_per_step == 70_000 // (3 * 100)


def test_preset_rule_small_budget_searches_a_subspace():
    preset = preset_for_budget(100_000, 20_000)
    assert preset.subspace and preset.block_dim == 1
    assert (preset.group_size, preset.group_size_final) == (40, 2)
    assert preset.blocks_per_step == 199
    assert preset.group_at(0, 100) == 40 and preset.group_at(99, 100) == 2
    assert preset.group_at(500, 100) == 2  # flat after the planned steps
    sizes = [preset.group_at(t, 100) for t in range(100)]
    assert sizes == sorted(sizes, reverse=True)
    tiny = preset_for_budget(1_000_000, 766)
    assert tiny.group_size == 10_444 and tiny.group_size_final == 653 and tiny.blocks_per_step == 6


def test_subspace_run_counts_only_candidates_that_flip_something():
    inst = random_ksat(3_000, seed=5)
    start = unsat_weight_numpy(inst, np.zeros(3_000, bool))
    preset = preset_for_budget(3_000, 1_500)
    assert preset.subspace and preset.group_size == 16
    res = solve_maxsat(inst, budget_evals=1_500, seed=3)
    # One coordinate per particle: the "-" vertex pushes the group away from its flip (the
    # incumbent, not counted), the "+" vertex flips it: one evaluation per particle per step.
    per_step = preset.blocks_per_step + 1
    assert res.evaluations == 1 + res.steps * per_step <= 1_500
    assert res.evaluations > 1_500 - per_step
    assert [h[0] for h in res.history] == [1 + t * per_step for t in range(res.steps + 1)]
    assert unsat_weight_numpy(inst, res.best_assignment) == res.best_cost
    assert unsat_weight_numpy(inst, res.incumbent_assignment) == res.incumbent_cost
    assert res.best_cost < 0.8 * start
    again = solve_maxsat(inst, budget_evals=1_500, seed=3)
    assert again.best_cost == res.best_cost
    # the subspace beats the full-space blocks at this budget (0.5 evaluations per variable)
    blocks = replace(DEFAULT_PRESET, blocks_per_step=preset.blocks_per_step // 3)
    assert res.best_cost < solve_maxsat(inst, budget_evals=1_500, seed=3, preset=blocks).best_cost


def test_bench_reuses_baselines(tmp_path):
    from polystep.bench.maxsat import main

    first = tmp_path / "first"
    args = ["--vars", "2000", "--seeds", "0", "--budget", "200000", "--es-max-seconds", "1"]
    assert main([*args, "--ls-max-seconds", "0.5", "--out", str(first)]) == 0
    old = [json.loads(line) for line in (first / "runs.jsonl").read_text().splitlines()]
    es = next(r for r in old if r["method"] == "openai-es")
    assert es["evaluations"] < 200_000  # stopped by its wall cap
    second = tmp_path / "second"
    reuse = ["--baselines-from", str(first / "runs.jsonl"), "--out", str(second)]
    assert main([*args, *reuse]) == 0
    new = {
        r["method"]: r
        for r in map(json.loads, (second / "runs.jsonl").read_text().split("\n")[:-1])
    }
    assert new["openai-es"]["best_cost"] == es["best_cost"]
    assert new["openai-es"]["reused_from"] == str(first / "runs.jsonl")
    assert "probsat (domain ref)" in new
    eq = new["polystep@es-evals"]
    assert eq["budget"] == es["evaluations"] and eq["evaluations"] <= es["evaluations"]
