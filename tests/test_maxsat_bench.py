"""``polystep bench maxsat`` hardening: budget stated up front, progress with ETA, infeasible runs
reported as such, appends instead of truncating, bad instances refused naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from polystep.bench import maxsat as bench
from polystep.problems.maxsat import parse_dimacs

bad_input = pytest.mark.bad_input


@bad_input(
    "WCNF where a method never satisfies every hard clause",
    "reported `infeasible (K hard violated)` per method (was: `nan%`)",
)
def test_infeasible_runs_name_the_violated_hard_clauses(tmp_path, capsys):
    path = tmp_path / "contradiction.wcnf"
    path.write_text("h 1 0\nh -1 0\n1 2 0\n3 -2 0\n")
    assert bench.main(["--cnf", str(path), "--seeds", "0", "--budget", "300",
                       "--ls-max-seconds", "0.2", "--out", str(tmp_path)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "nan" not in out
    assert "infeasible (1 hard clauses violated) best" in out
    table = (tmp_path / "table.md").read_text()
    assert "nan" not in table and "| infeasible (1 hard violated) |" in table
    records = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert {r["method"] for r in records} == {"polystep", "openai-es", "probsat (domain ref)"}
    assert all(r["hard_violated"] == 1 and r["pct_satisfied"] is None for r in records)


def test_feasible_hard_instance_reports_percentages():
    inst = parse_dimacs("h 1 0\n2 -1 2 0\n1 -2 0\n")
    assert bench.hard_violated(inst, np.array([True, True])) == 0
    assert bench.hard_violated(inst, np.array([False, True])) == 1
    rows = [
        {"pct_satisfied": 50.0, "hard_violated": 0},
        {"pct_satisfied": None, "hard_violated": 2},
    ]
    assert bench._pct(rows[:1], "pct_satisfied", "hard_violated") == "50.000"
    assert bench._pct(rows, "pct_satisfied", "hard_violated") == (
        "infeasible in 1/2 seeds (2 hard violated); others 50.000"
    )


@bad_input(
    "`polystep bench maxsat --cnf` on a large instance",
    "budget printed up front; progress per instance and method with ETA on stderr "
    "(was: silent for 13 minutes)",
)
def test_budget_up_front_and_progress_with_eta(monkeypatch, capsys):
    monkeypatch.setattr(bench, "PROGRESS_EVERY", 0.0)
    assert bench.main(["--vars", "200", "--seeds", "3", "--sweeps", "5", "--min-budget", "0",
                       "--es-max-seconds", "5", "--ls-max-seconds", "0.1"]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("budget: 5 full PolyStep steps = 5 x (4 ceil(n/2) + 1)")
    assert lines[1] == "[1/1] random-3sat-n200-r4.27-s3: 200 vars, 853 clauses (0 hard), " + (
        "seed 3: 2,006 evaluations per run"
    )
    assert "  polystep: " in err and "  openai-es: " in err
    progress = [line for line in err.splitlines() if line.startswith("  polystep: ")]
    assert "/2,006 evaluations (" in progress[-1] and ", ETA " in progress[-1]
    assert "  probsat (domain ref): up to 0 s" in err


@bad_input(
    "`polystep bench maxsat --out DIR` twice, or with `--baselines-from`",
    "records appended to runs.jsonl (was: rewritten with --baselines-from)",
)
def test_maxsat_bench_appends(tmp_path):
    argv = ["--vars", "60", "--seeds", "0", "--budget", "500", "--methods", "polystep,openai-es",
            "--out", str(tmp_path)]  # fmt: skip
    assert bench.main(argv) == 0
    first = (tmp_path / "runs.jsonl").read_text()
    assert bench.main([*argv, "--baselines-from", str(tmp_path / "runs.jsonl")]) == 0
    both = (tmp_path / "runs.jsonl").read_text()
    assert both.startswith(first) and len(both.splitlines()) == 2 * len(first.splitlines())


@bad_input("`--cnf` file that is empty or malformed", "argparse error naming --cnf and the file")
def test_bad_cnf_files_are_argparse_errors(tmp_path, capsys):
    empty, declared_empty = tmp_path / "empty.cnf", tmp_path / "none.cnf"
    empty.write_text("c nothing\n")
    declared_empty.write_text("p cnf 3 0\n")
    for path, message in (
        (empty, f"argument --cnf: {empty}: empty input"),
        (declared_empty, f"argument --cnf: {declared_empty}: the instance has no clauses"),
    ):
        with pytest.raises(SystemExit) as stop:
            bench.main(["--cnf", str(path)])
        assert stop.value.code == 2
        assert message in capsys.readouterr().err
