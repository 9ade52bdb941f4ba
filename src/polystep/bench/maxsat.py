"""``polystep bench maxsat``: PolyStep against OpenAI-ES (equal evaluations) and a probSAT domain
reference on random 3-SAT and on DIMACS/WCNF files.

Per instance and seed it runs:

* ``polystep``: :func:`~polystep.problems.maxsat.solve_maxsat` with the preset rule
  (:func:`~polystep.problems.maxsat.preset_for_budget`) at the budget (``--budget``
  evaluations, or ``--sweeps`` times ``2n + 1`` evaluations);
* ``openai-es``: OpenAI-ES at the same budget, stopped early by ``--es-max-seconds`` if given
  (its evaluation count is then what it reached);
* ``polystep@es-evals``: when ES stopped early, PolyStep again at exactly the evaluations ES used
  (the same preset rule at that budget), so every size has an equal-evaluation comparison;
* ``probsat (domain ref)``: a probSAT-style local search given PolyStep's wall time. It exploits
  the clause structure and is a reference for what a specialist reaches, not a peer.

The budget is stated before any run, and long runs report progress (evaluations done, elapsed
time, ETA) on stderr every few seconds per instance and method: on a large industrial instance
the default budget can take hours. A method that leaves a hard clause unsatisfied is reported as
``infeasible`` with the number of hard clauses it violates.

Appends to ``runs.jsonl`` in ``--out`` (one JSON line per run, with the exact configuration;
never truncated) and writes ``table.md`` (mean +- std over seeds of this invocation's runs), and
prints the table. ``--baselines-from RUNS.jsonl`` reuses the OpenAI-ES and probSAT records of an
earlier run (same instance and seed) instead of running them again, and ``polystep@es-evals``
then uses that ES evaluation count.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polystep.bench.outdir import ensure_writable
from polystep.cliargs import (
    choice_list,
    existing_file,
    int_list,
    nonneg_int,
    parser,
    positive_float,
    positive_int,
    torch_device,
)
from polystep.problems.maxsat import (
    ClauseTensors,
    DeltaEvaluator,
    ESConfig,
    MaxSATInstance,
    MaxSATResult,
    probsat,
    random_ksat,
    read_dimacs,
    satisfied_fraction,
    solve_maxsat,
    solve_maxsat_openai_es,
    unsat_weight_numpy,
)

DEFAULT_BLOCK_DIM = 2  # the evaluator index; subspace presets use any block size
SMOKE = {"vars": "100,1000", "seeds": "0", "sweeps": 20, "es_max_seconds": 3.0, "ls_cap": 1.0}
METHODS = ("polystep", "openai-es", "probsat")
PROGRESS_EVERY = 10.0  # seconds between progress lines of one method


def build_parser() -> argparse.ArgumentParser:
    ap = parser("polystep bench maxsat", __doc__)
    src = ap.add_mutually_exclusive_group()
    src.add_argument(
        "--vars", type=int_list(positive_int),
        help="comma-separated sizes of random 3-SAT instances (ratio --ratio)",
    )  # fmt: skip
    src.add_argument(
        "--cnf", nargs="+", type=existing_file, help="DIMACS CNF / WCNF files (.gz/.bz2/.xz ok)"
    )
    ap.add_argument(
        "--seeds", type=int_list(), default=None,
        help="comma-separated seeds, instance + run (default: 0,1,2; smoke: 0)",
    )  # fmt: skip
    ap.add_argument(
        "--budget", type=positive_int, default=None,
        help="evaluations per run (default: --sweeps full steps, at least --min-budget)",
    )  # fmt: skip
    ap.add_argument(
        "--sweeps", type=positive_int, default=100,
        help="budget in full PolyStep steps of 4 ceil(n/2) + 1 evaluations",
    )  # fmt: skip
    ap.add_argument("--min-budget", type=nonneg_int, default=100_000, help="floor of the budget")
    ap.add_argument(
        "--methods", type=choice_list(METHODS), default=",".join(METHODS), help="comma list"
    )
    ap.add_argument(
        "--es-max-seconds", type=positive_float, default=None, help="wall cap for OpenAI-ES"
    )
    ap.add_argument(
        "--ls-max-seconds",
        type=positive_float,
        default=None,
        help="wall cap for probSAT (default: PolyStep's wall time of the same seed)",
    )
    ap.add_argument("--ratio", type=positive_float, default=4.27, help="clauses per variable")
    ap.add_argument("--device", type=torch_device, default="cpu", help="torch device")
    ap.add_argument("--threads", type=positive_int, default=1, help="torch.set_num_threads")
    ap.add_argument("--out", type=Path, default=None, help="output folder (runs.jsonl, table.md)")
    ap.add_argument(
        "--baselines-from",
        type=existing_file,
        default=None,
        help="runs.jsonl whose openai-es / probsat records are reused (same instance and seed)",
    )
    ap.add_argument("--scale", choices=["smoke", "full"], default="full", help="smoke: seconds")
    return ap


def parse_args(ap: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parsed options with the smoke-scale defaults applied; ``--out`` checked writable."""
    args = ap.parse_args(argv)
    if args.scale == "smoke":
        args.vars = args.vars if (args.vars or args.cnf) else _ints(SMOKE["vars"])
        args.seeds = args.seeds or _ints(SMOKE["seeds"])
        args.sweeps = min(args.sweeps, SMOKE["sweeps"])
        args.min_budget = 0
        args.es_max_seconds = args.es_max_seconds or SMOKE["es_max_seconds"]
        args.ls_max_seconds = args.ls_max_seconds or SMOKE["ls_cap"]
    args.seeds = args.seeds or [0, 1, 2]
    if not (args.vars or args.cnf):
        ap.error("give --vars or --cnf")
    if args.out is not None:
        try:
            ensure_writable(args.out)
        except ValueError as err:
            ap.error(f"argument --out: {err}")
    return args


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def budget_for(num_vars: int, args: argparse.Namespace) -> int:
    """Evaluations per run: ``--budget``, else ``--sweeps`` full steps (floored)."""
    if args.budget is not None:
        return int(args.budget)
    sweep = 4 * math.ceil(num_vars / 2) + 1  # one full step of 2-variable blocks, 4 vertices each
    return max(args.sweeps * sweep + 1, args.min_budget)


def budget_rule(args: argparse.Namespace) -> str:
    """The budget in words, printed before any run."""
    if args.budget is not None:
        rule = f"{args.budget:,} evaluations per run"
    else:
        rule = (
            f"{args.sweeps} full PolyStep steps = {args.sweeps} x (4 ceil(n/2) + 1) evaluations "
            f"per run, at least {args.min_budget:,}"
        )
    es = f", stopped at {args.es_max_seconds:g} s" if args.es_max_seconds else ""
    ls = f"{args.ls_max_seconds:g} s" if args.ls_max_seconds else "PolyStep's wall time"
    return f"budget: {rule}; OpenAI-ES the same{es}; probSAT {ls}"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Callback printing ``label: done/total evaluations (pct), elapsed, ETA`` to stderr at most
    every :data:`PROGRESS_EVERY` seconds (ETA from the rate so far, capped by ``max_seconds``)."""

    def __init__(self, label: str, total: int, max_seconds: float | None = None) -> None:
        self.label, self.total, self.max_seconds = label, total, max_seconds
        self.start = self.last = time.perf_counter()

    def __call__(self, info: dict[str, float]) -> None:
        now = time.perf_counter()
        if now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        done, elapsed = int(info["evaluations"]), now - self.start
        eta = (self.total - done) * elapsed / max(done, 1)
        if self.max_seconds is not None:
            eta = min(eta, self.max_seconds - elapsed)
        print(
            f"  {self.label}: {done:,}/{self.total:,} evaluations "
            f"({100 * done / self.total:.0f} %), {_duration(elapsed)}, ETA {_duration(eta)}",
            file=sys.stderr,
            flush=True,
        )


def hard_violated(instance: MaxSATInstance, x: np.ndarray) -> int:
    """Number of hard clauses that assignment ``x (n,)`` leaves unsatisfied."""
    if not instance.hard.any():
        return 0
    hard = MaxSATInstance(
        instance.num_vars,
        instance.literals[instance.hard],
        np.ones(int(instance.hard.sum())),
        np.zeros(int(instance.hard.sum()), dtype=bool),
    )
    return int(unsat_weight_numpy(hard, x))


def _record(instance: MaxSATInstance, result: MaxSATResult | None, **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "instance": instance.name,
        "num_vars": instance.num_vars,
        "num_clauses": instance.num_clauses,
        "num_hard": int(instance.hard.sum()),
    }
    if result is not None:
        check = unsat_weight_numpy(instance, result.best_assignment)
        if abs(check - result.best_cost) > 1e-6 * max(1.0, abs(check)):
            raise AssertionError(f"{result.method}: reported {result.best_cost}, recount {check}")
        best_violated = hard_violated(instance, result.best_assignment)
        final_violated = hard_violated(instance, result.incumbent_assignment)
        rec.update(
            method=result.method,
            best_cost=result.best_cost,
            incumbent_cost=result.incumbent_cost,
            # % of the soft weight satisfied; None where a hard clause is broken (infeasible).
            pct_satisfied=None
            if best_violated
            else 100 * satisfied_fraction(instance, result.best_cost),
            pct_incumbent=None
            if final_violated
            else 100 * satisfied_fraction(instance, result.incumbent_cost),
            hard_violated=best_violated,
            hard_violated_incumbent=final_violated,
            evaluations=result.evaluations,
            steps=result.steps,
            wall_s=round(result.wall_s, 3),
            config=result.config,
        )
    rec.update(extra)
    return rec


def run_instance(
    instance: MaxSATInstance,
    seed: int,
    args: argparse.Namespace,
    known: dict[str, Any],
    reused: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """All methods on one instance and seed; ``reused`` maps method -> an earlier record of this
    instance and seed that is copied instead of run again (``--baselines-from``)."""
    methods = set(args.methods)
    reused = reused or {}
    budget = budget_for(instance.num_vars, args)
    records = []
    ps_wall = None
    evaluator = None
    if "polystep" in methods:
        evaluator = DeltaEvaluator(instance, DEFAULT_BLOCK_DIM, device=args.device)
        res = solve_maxsat(
            instance, budget_evals=budget, seed=seed, device=args.device, evaluator=evaluator,
            callback=Progress("polystep", budget),
        )  # fmt: skip
        ps_wall = res.wall_s
        records.append(_record(instance, res, seed=seed, budget=budget, **known))
    es_evals = None
    if "openai-es" in reused:
        records.append(reused["openai-es"])
        es_evals, es_budget = reused["openai-es"]["evaluations"], reused["openai-es"]["budget"]
    elif "openai-es" in methods:
        clauses = ClauseTensors.from_instance(instance, args.device)
        es_res = solve_maxsat_openai_es(
            instance,
            budget_evals=budget,
            seed=seed,
            config=ESConfig(),
            device=args.device,
            max_seconds=args.es_max_seconds,
            clauses=clauses,
            callback=Progress("openai-es", budget, args.es_max_seconds),
        )
        records.append(_record(instance, es_res, seed=seed, budget=budget, **known))
        es_evals, es_budget = es_res.evaluations, budget
    if "polystep" in methods and es_evals is not None and es_evals < es_budget - ESConfig().popsize:
        eq = solve_maxsat(
            instance, budget_evals=es_evals, seed=seed, device=args.device, evaluator=evaluator,
            callback=Progress("polystep@es-evals", es_evals),
        )  # fmt: skip
        eq.method = "polystep@es-evals"
        records.append(_record(instance, eq, seed=seed, budget=es_evals, **known))
    if "probsat (domain ref)" in reused:
        records.append(reused["probsat (domain ref)"])
    elif "probsat" in methods:
        cap = args.ls_max_seconds if args.ls_max_seconds is not None else (ps_wall or 60.0)
        print(f"  probsat (domain ref): up to {_duration(cap)}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        ls = probsat(instance, max_flips=10**12, seed=seed, max_seconds=cap)
        wrapped = MaxSATResult(
            method="probsat (domain ref)",
            best_cost=ls.best_cost,
            best_assignment=ls.best_assignment,
            incumbent_cost=ls.best_cost,
            incumbent_assignment=ls.best_assignment,
            evaluations=ls.flips,
            steps=ls.flips,
            wall_s=time.perf_counter() - t0,
            config={"cb": 2.38, "eps": 1.0, "max_seconds": cap, "seed": seed},
        )
        records.append(_record(instance, wrapped, seed=seed, budget=None, flips=ls.flips, **known))
    return records


def load_baselines(path: Path) -> dict[tuple[str, int], dict[str, dict[str, Any]]]:
    """``(instance name, seed) -> method -> record`` for the openai-es and probsat records of an
    earlier ``runs.jsonl`` (its ``meta`` dropped, ``reused_from`` added)."""
    out: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("method") in ("openai-es", "probsat (domain ref)"):
            rec.pop("meta", None)
            rec["reused_from"] = str(path)
            out.setdefault((rec["instance"], int(rec["seed"])), {})[rec["method"]] = rec
    return out


def _pct(records: list[dict[str, Any]], key: str, violated_key: str) -> str:
    """Mean % of soft weight satisfied, or ``infeasible`` with the hard clauses violated."""
    bad = [r for r in records if r.get(key) is None or math.isnan(r[key])]
    if not bad:
        return _fmt([r[key] for r in records], 3)
    counts = ", ".join(str(r.get(violated_key, "?")) for r in bad)
    text = f"infeasible ({counts} hard violated)"
    if len(bad) < len(records):
        good = [r[key] for r in records if r not in bad]
        text = f"infeasible in {len(bad)}/{len(records)} seeds ({counts} hard violated); " + (
            f"others {_fmt(good, 3)}"
        )
    return text


def _fmt(values: list[float], digits: int = 2) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def markdown_table(records: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in records:
        key = (
            r["instance"] if not r["instance"].startswith("random") else "random 3-SAT",
            r["num_vars"],
            r["method"],
        )
        groups.setdefault(key, []).append(r)
    lines = [
        "| instance | vars | clauses | method | seeds | % sat (best) | % sat (final incumbent) "
        "| best cost | evaluations | wall s | known optimum cost |",
        "|---|---:|---:|---|---:|---|---|---|---:|---:|---|",
    ]
    for (inst, n, method), rs in groups.items():
        evals = statistics.mean(r["evaluations"] for r in rs)
        unit = " flips" if method.startswith("probsat") else ""
        lines.append(
            f"| {inst} | {n} | {rs[0]['num_clauses']} | {method} | {len(rs)} "
            f"| {_pct(rs, 'pct_satisfied', 'hard_violated')} "
            f"| {_pct(rs, 'pct_incumbent', 'hard_violated_incumbent')} "
            f"| {_fmt([r['best_cost'] for r in rs], 1)} | {evals:.3g}{unit} "
            f"| {_fmt([r['wall_s'] for r in rs], 1)} | {rs[0].get('opt_cost', '')} |"
        )
    return "\n".join(lines) + "\n"


def _known_values(path: Path) -> dict[str, Any]:
    """Optimum / best-known cost from an ``index.csv`` beside (or above) the file, if any."""
    import csv

    for parent in path.resolve().parents:
        index = parent / "index.csv"
        if index.exists():
            rel = path.resolve().relative_to(parent).as_posix()
            with index.open() as fh:
                for row in csv.DictReader(fh):
                    if row.get("path") == rel:
                        return {"opt_cost": row.get("opt_cost"), "status": row.get("status")}
            return {}
    return {}


def _describe(rec: dict[str, Any], key: str, violated_key: str) -> str:
    if rec.get(key) is None or math.isnan(rec[key]):
        return f"infeasible ({rec.get(violated_key, '?')} hard clauses violated)"
    return f"{rec[key]:.3f}%"


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = parse_args(ap, list(sys.argv[1:] if argv is None else argv))
    torch.set_num_threads(args.threads)
    out = args.out
    records: list[dict[str, Any]] = []
    meta = {
        "argv": list(sys.argv[1:] if argv is None else argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "threads": args.threads,
        "preset_rule": "polystep.problems.maxsat.preset_for_budget (per-run preset in config)",
        "es": asdict(ESConfig()),
    }
    baselines = load_baselines(args.baselines_from) if args.baselines_from else {}
    jsonl = (out / "runs.jsonl").open("a") if out else None
    print(budget_rule(args), flush=True)

    def emit(recs: list[dict[str, Any]]) -> None:
        for r in recs:
            records.append(r)
            line = json.dumps({**r, "meta": meta}, default=float)
            if jsonl:
                jsonl.write(line + "\n")
                jsonl.flush()
            print(
                f"{r['instance']} n={r['num_vars']} {r['method']}: "
                f"{_describe(r, 'pct_satisfied', 'hard_violated')} best, "
                f"{_describe(r, 'pct_incumbent', 'hard_violated_incumbent')} final, "
                f"{r['evaluations']} evals, {r['wall_s']:.1f}s",
                flush=True,
            )

    def announce(index: int, total: int, inst: MaxSATInstance, seed: int) -> None:
        print(
            f"[{index}/{total}] {inst.name}: {inst.num_vars:,} vars, {inst.num_clauses:,} clauses "
            f"({int(inst.hard.sum()):,} hard), seed {seed}: "
            f"{budget_for(inst.num_vars, args):,} evaluations per run",
            flush=True,
        )

    total = len(args.vars or args.cnf) * len(args.seeds)
    done = 0
    if args.vars:
        for n in args.vars:
            for seed in args.seeds:
                t0 = time.perf_counter()
                inst = random_ksat(n, ratio=args.ratio, seed=seed)
                gen_s = time.perf_counter() - t0
                known = {"generate_s": round(gen_s, 3)}
                done += 1
                announce(done, total, inst, seed)
                reused = baselines.get((inst.name, seed))
                emit(run_instance(inst, seed, args, known, reused))
    else:
        for path in args.cnf:
            t0 = time.perf_counter()
            try:
                inst = read_dimacs(path)
            except ValueError as err:
                ap.error(f"argument --cnf: {err}")
            if inst.num_clauses == 0:
                ap.error(f"argument --cnf: {path}: the instance has no clauses")
            parse_s = time.perf_counter() - t0
            known = {"parse_s": round(parse_s, 3), "path": str(path), **_known_values(Path(path))}
            for seed in args.seeds:
                done += 1
                announce(done, total, inst, seed)
                emit(run_instance(inst, seed, args, known, baselines.get((inst.name, seed))))
    if jsonl:
        jsonl.close()
    table = markdown_table(records)
    print(table)
    if out:
        (out / "table.md").write_text(table)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
