"""MAX-SAT: parsing, objectives (full, bit-packed, delta), generator, solvers, smoke bench."""

from __future__ import annotations

import gzip
import itertools
import lzma
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from polystep.engine import Engine, shaping
from polystep.problems.maxsat import (
    ClauseTensors,
    DeltaEvaluator,
    ESConfig,
    MaxSATInstance,
    MaxSATPreset,
    parse_dimacs,
    probsat,
    random_ksat,
    read_dimacs,
    solve_maxsat,
    solve_maxsat_openai_es,
    unsat_weight,
    unsat_weight_numpy,
    write_dimacs,
)
from polystep.spaces import Blocks
from polystep.step import StepRule

torch.set_num_threads(1)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "maxsat"


def brute_force_cost(instance: MaxSATInstance, x: np.ndarray) -> float:
    """Clause-by-clause Python count (independent of the vectorised code)."""
    cost = 0.0
    for clause, w in zip(instance.clause_lists(), instance.weights, strict=True):
        if not any((lit > 0) == bool(x[abs(lit) - 1]) for lit in clause):
            cost += w
    return cost


# ----- parsing ---------------------------------------------------------------------------------


def test_parse_comments_multiple_clauses_per_line_spanning_and_empty_clause():
    text = (
        "c a comment with -1 2 0 numbers\n"
        "c\n"
        "p cnf 5 5\n"
        "  1 -2 0 2 3\n"  # leading spaces; second clause spans two lines
        "  -1 0\n"
        "0\n"  # empty clause
        "c comment between clauses\n"
        "4\t4 -4 0 5 0\n"
        "%\n0\n"  # SATLIB trailer
    )
    inst = parse_dimacs(text)
    assert inst.num_vars == 5
    assert inst.clause_lists() == [[1, -2], [2, 3, -1], [], [4, 4, -4], [5]]
    assert inst.literals.shape == (5, 3)
    assert not inst.hard.any() and np.all(inst.weights == 1)
    # The empty clause is never satisfied.
    assert unsat_weight_numpy(inst, np.ones(5, bool)) == 1.0


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("p cnf 3 2\n1 2 0\n1 x 0\n", 3),
        ("p cnf 3 2\n1 2 0\n1 - 0\n", 3),
        ("p cnf 3 1\n1 2 0\n\n4 0\n", 4),  # literal beyond the declared variables
        ("c ok\np cnf 3\n1 0\n", 2),  # malformed header
        ("p cnf 3 2\np cnf 3 2\n1 0\n", 2),  # second header
        ("p cnf 3 2\n1 2 0\n3 -1\n", 3),  # last clause not terminated
        ("p cnf 3 2\n1 2 0 c 0\n", 2),  # letters inside a clause line
        ("p wcnf 3 2 10\n1 1 2 0\n-3 0\n", 3),  # WCNF weight 0 / missing
        ("p cnf 3 1\n1 h 0\n", 2),
        ("p cnf 3 1\n1 2-3 0\n", 2),
    ],
)
def test_malformed_input_names_the_line(text, line):
    with pytest.raises(ValueError, match=rf"line {line}\b"):
        parse_dimacs(text)


def test_wcnf_classic_and_2022_formats():
    classic = parse_dimacs("c x\np wcnf 3 4 10\n10 1 2 0\n3 -1 0\n1 -2 3 0\n10 -3 0\n")
    assert classic.hard.tolist() == [True, False, False, True]
    assert classic.weights.tolist() == [10, 3, 1, 10]
    assert classic.top == 10
    new = parse_dimacs("c x\nh 1 2 0\n3 -1 0\n1 -2 3 0\nh -3 0\n")
    assert new.hard.tolist() == [True, False, False, True]
    assert new.clause_lists() == classic.clause_lists()
    assert new.weights[~new.hard].tolist() == [3, 1]
    assert new.top == 5.0  # 1 + total soft weight
    x = np.array([True, False, False])
    assert unsat_weight_numpy(new, x) == brute_force_cost(new, x) == 0.0 + 0.0 + 3.0


def test_compressed_files_and_write_roundtrip(tmp_path):
    inst = random_ksat(60, seed=3)
    text = write_dimacs(inst)
    (tmp_path / "a.cnf.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "a.cnf.xz").write_bytes(lzma.compress(text.encode()))
    (tmp_path / "a.cnf").write_text(text)
    for name in ("a.cnf", "a.cnf.gz", "a.cnf.xz"):
        back = read_dimacs(tmp_path / name)
        assert np.array_equal(back.literals, inst.literals)
        assert back.num_vars == 60
    wc = MaxSATInstance(3, np.array([[1, 2], [-1, 0]]), np.array([4.0, 2.0]), np.array([1, 0]))
    again = parse_dimacs(write_dimacs(wc))
    assert again.hard.tolist() == [True, False] and again.weights[1] == 2.0


def test_parse_matches_pysat():
    from pysat.formula import CNF

    inst = random_ksat(200, seed=5)
    text = "c header comment\n" + write_dimacs(inst)
    ref = CNF(from_string=text)
    assert parse_dimacs(text).clause_lists() == ref.clauses


def test_shared_instances_parse_like_pysat(tmp_path):
    from pysat.formula import CNF, WCNF

    if not DATA.is_dir():
        pytest.skip("../shared/data is not present on this machine")
    files = sorted(p for p in DATA.rglob("*") if p.name.endswith((".cnf", ".cnf.gz", ".wcnf")))
    assert files
    for path in files:
        inst = read_dimacs(path)
        text = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = text.decode().split("\n%")[0]  # pysat does not know the SATLIB trailer
        if path.name.endswith(".wcnf"):
            ref = WCNF(from_string=text)
            assert sorted(map(tuple, inst.clause_lists())) == sorted(
                map(tuple, ref.hard + ref.soft)
            )
            assert int(inst.hard.sum()) == len(ref.hard)
        else:
            ref = CNF(from_string=text)
            assert inst.clause_lists() == ref.clauses, path.name
            assert inst.num_vars == ref.nv


# ----- generator -------------------------------------------------------------------------------


def test_generator_reproducible_and_distinct_variables():
    a, b, c = random_ksat(500, seed=1), random_ksat(500, seed=1), random_ksat(500, seed=2)
    assert np.array_equal(a.literals, b.literals)
    assert not np.array_equal(a.literals, c.literals)
    assert a.num_clauses == int(500 * 4.27)
    v = np.sort(np.abs(a.literals), axis=1)
    assert (v[:, 1:] != v[:, :-1]).all() and v.min() >= 1 and v.max() <= 500
    assert 0.45 < (a.literals > 0).mean() < 0.55
    assert random_ksat(3, num_clauses=50, seed=0).num_clauses == 50


# ----- objectives ------------------------------------------------------------------------------


def _quirky(n: int, seed: int) -> MaxSATInstance:
    """Random 3-SAT plus duplicated literals, a tautology, an empty clause and weights."""
    base = random_ksat(n, seed=seed)
    extra = np.array([[1, 1, 0], [2, -2, 3], [0, 0, 0], [-4, -4, -4], [5, 0, 0]], np.int32)
    lits = np.concatenate([base.literals, extra])
    rng = np.random.default_rng(seed)
    weights = rng.integers(1, 4, len(lits)).astype(float)
    hard = rng.random(len(lits)) < 0.1
    weights[hard] = 1000.0
    return MaxSATInstance(n, lits, weights, hard, top=1000.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_objective_equals_brute_force(seed):
    inst = _quirky(10, seed)
    clauses = ClauseTensors.from_instance(inst)
    # Every assignment of 10 variables (1024 candidates: several 64-wide packed words).
    x = torch.tensor(list(itertools.product([0, 1], repeat=10)), dtype=torch.bool)
    theta = torch.where(x, 1.0, -1.0)
    got = unsat_weight(clauses, theta)
    want = [brute_force_cost(inst, row.numpy()) for row in x]
    assert got.tolist() == want
    packed = unsat_weight(clauses, theta, dense_limit=0, chunk_clauses=7)  # bit-packed path
    assert packed.tolist() == want
    assert float(unsat_weight(clauses, theta[5])) == want[5]
    # theta == 0 means False.
    assert float(unsat_weight(clauses, torch.zeros(10))) == brute_force_cost(inst, np.zeros(10))


def test_objective_many_weights_path():
    rng = np.random.default_rng(0)
    inst = random_ksat(30, seed=0)
    inst = MaxSATInstance(30, inst.literals, rng.random(inst.num_clauses), inst.hard)
    theta = torch.randn(70, 30, generator=torch.Generator().manual_seed(0))
    got = unsat_weight(ClauseTensors.from_instance(inst), theta, dense_limit=0)
    want = torch.tensor([unsat_weight_numpy(inst, (t > 0).numpy()) for t in theta])
    assert torch.allclose(got, want.double())


@pytest.mark.parametrize(
    ("block_dim", "polytope"), [(1, "orthoplex"), (2, "orthoplex"), (3, "cube")]
)
def test_delta_evaluator_equals_full_evaluation(block_dim, polytope):
    inst = _quirky(23, block_dim)
    clauses = ClauseTensors.from_instance(inst)
    ev = DeltaEvaluator(inst, block_dim)
    rule = StepRule.build(epsilon=1.0, step_radius=0.4, probe_radius=1.5, polytope=polytope)
    gen = torch.Generator().manual_seed(block_dim)
    z = torch.randn(23, generator=gen, dtype=torch.float64)
    assert ev.set_assignment(z > 0) == unsat_weight_numpy(inst, (z > 0).numpy())
    engine = Engine(rule, Blocks(23, block_dim), shaping(None))
    state = engine.start(z, gen)
    for it in range(12):
        cand = engine.ask(state)
        got = ev.costs(state.x, cand)
        want = unsat_weight(clauses, cand.dense(state.x))
        assert torch.allclose(got, want), it
        z = engine.tell(state, got)[0].x
        cost = ev.set_assignment(z > 0)  # incremental update
        fresh = DeltaEvaluator(inst, block_dim)
        assert cost == fresh.set_assignment(z > 0) == unsat_weight_numpy(inst, (z > 0).numpy())
        assert torch.allclose(ev.score, fresh.score)
        assert torch.equal(ev.ntrue, fresh.ntrue)


def test_delta_incremental_path_on_a_larger_instance():
    inst = random_ksat(3000, seed=4)
    ev = DeltaEvaluator(inst, 2)
    x = torch.rand(3000, generator=torch.Generator().manual_seed(0)) < 0.5
    ev.set_assignment(x)
    for step in range(5):
        flip = torch.randperm(3000, generator=torch.Generator().manual_seed(step))[:20]
        x = x.clone()
        x[flip] = ~x[flip]
        cost = ev.set_assignment(x)
        fresh = DeltaEvaluator(inst, 2)
        assert cost == fresh.set_assignment(x) == unsat_weight_numpy(inst, x.numpy())
        assert torch.allclose(ev.score, fresh.score)


# ----- solvers ---------------------------------------------------------------------------------


def test_preset_schedules_decay():
    sch = MaxSATPreset().schedules(100)
    for s in sch.values():
        assert s(0) > s(99)
    power = MaxSATPreset(radius_schedule="power").schedules(100)
    assert power["step_radius"](0) > power["step_radius"](50)


def test_rc2_optimum_on_a_tiny_instance():
    from pysat.examples.rc2 import RC2
    from pysat.formula import WCNF

    inst = random_ksat(12, ratio=8.0, seed=11)  # over-constrained: optimum cost > 0
    wcnf = WCNF()
    for clause in inst.clause_lists():
        wcnf.append(clause, weight=1)
    with RC2(wcnf) as rc2:
        model = rc2.compute()
        optimum = rc2.cost
    assert optimum > 0
    x = np.array([v > 0 for v in sorted(model, key=abs)][:12])
    assert unsat_weight_numpy(inst, x) == optimum
    # Exhaustive check of the objective against RC2, then PolyStep reaches the optimum.
    theta = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=12)))
    assert float(unsat_weight(ClauseTensors.from_instance(inst), theta).min()) == optimum
    res = solve_maxsat(inst, budget_evals=20_000, seed=0)
    assert res.best_cost == optimum
    assert unsat_weight_numpy(inst, res.best_assignment) == res.best_cost


def test_solvers_improve_and_report_consistent_costs():
    inst = random_ksat(300, seed=9)
    start = unsat_weight_numpy(inst, np.zeros(300, bool))
    ps = solve_maxsat(inst, budget_evals=60 * 601 + 1, seed=1)
    assert 60 * 601 + 1 - 300 <= ps.evaluations <= 60 * 601 + 1
    assert ps.best_cost <= ps.incumbent_cost
    assert unsat_weight_numpy(inst, ps.best_assignment) == ps.best_cost
    assert unsat_weight_numpy(inst, ps.incumbent_assignment) == ps.incumbent_cost
    assert ps.best_cost < 0.03 * inst.num_clauses < start
    again = solve_maxsat(inst, budget_evals=60 * 601 + 1, seed=1)
    assert again.best_cost == ps.best_cost  # seeded
    sub = solve_maxsat(inst, budget_evals=5_000, seed=1, preset=MaxSATPreset(blocks_per_step=50))
    assert sub.evaluations <= 5_000 and sub.steps == 33  # 3 counted candidates per block
    es = solve_maxsat_openai_es(inst, budget_evals=2_000, seed=1, config=ESConfig())
    assert es.evaluations <= 2_000
    assert unsat_weight_numpy(inst, es.best_assignment) == es.best_cost
    ls = probsat(inst, max_flips=20_000, seed=0)
    assert unsat_weight_numpy(inst, ls.best_assignment) == ls.best_cost < ps.best_cost + 5


def test_wcnf_shared_partial_instance_hard_clauses(tmp_path):
    if not DATA.is_dir():
        pytest.skip("../shared/data is not present on this machine")
    inst = read_dimacs(DATA / "partial" / "max_clq_150-0-447-1.clq.wcnf")
    assert inst.num_soft == 150 and int(inst.hard.sum()) == 10728
    res = solve_maxsat(inst, budget_evals=60_000, seed=0)
    assert res.best_cost < inst.top  # every hard clause satisfied
    assert unsat_weight_numpy(inst, res.best_assignment) == res.best_cost


# ----- bench -----------------------------------------------------------------------------------


def test_smoke_bench(tmp_path):
    from polystep.bench.maxsat import main

    t0 = time.perf_counter()
    assert main(["--scale", "smoke", "--out", str(tmp_path)]) == 0
    assert time.perf_counter() - t0 < 60
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) >= 5
    table = (tmp_path / "table.md").read_text()
    assert "polystep" in table and "openai-es" in table and "probsat (domain ref)" in table


@pytest.mark.slow
def test_parse_one_million_variables_in_seconds(tmp_path):
    inst = random_ksat(1_000_000, seed=0)
    path = tmp_path / "big.cnf"
    write_dimacs(inst, path)
    t0 = time.perf_counter()
    back = read_dimacs(path)
    elapsed = time.perf_counter() - t0
    assert np.array_equal(back.literals, inst.literals)
    assert elapsed < 30, elapsed
