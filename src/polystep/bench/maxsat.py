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

Writes ``runs.jsonl`` (one JSON line per run, with the exact configuration) and ``table.md``
(mean +- std over seeds) to ``--out``, and prints the table. ``--baselines-from RUNS.jsonl``
reuses the OpenAI-ES and probSAT records of an earlier run (same instance and seed) instead of
running them again, and ``polystep@es-evals`` then uses that ES evaluation count; the output
``runs.jsonl`` is then rewritten, not appended to.
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

import torch

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


def _ints(text: str) -> list[int]:
    return [int(float(v)) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="polystep bench maxsat", description=__doc__)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--vars", help="comma-separated sizes of random 3-SAT instances (ratio 4.27)")
    src.add_argument("--cnf", nargs="+", help="DIMACS CNF / WCNF files (.gz/.xz ok)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (instance + run)")
    ap.add_argument("--budget", type=int, default=None, help="evaluations per run")
    ap.add_argument("--sweeps", type=int, default=100, help="budget in full PolyStep steps")
    ap.add_argument("--min-budget", type=int, default=100_000, help="floor of the budget")
    ap.add_argument("--methods", default="polystep,openai-es,probsat")
    ap.add_argument("--es-max-seconds", type=float, default=None, help="wall cap for OpenAI-ES")
    ap.add_argument(
        "--ls-max-seconds",
        type=float,
        default=None,
        help="wall cap for probSAT (default: PolyStep's wall time of the same seed)",
    )
    ap.add_argument("--ratio", type=float, default=4.27)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--out", default=None, help="output directory (runs.jsonl, table.md)")
    ap.add_argument(
        "--baselines-from",
        default=None,
        help="runs.jsonl whose openai-es / probsat records are reused (same instance and seed)",
    )
    ap.add_argument("--scale", choices=["smoke", "full"], default="full")
    args = ap.parse_args(argv)
    if args.scale == "smoke":
        args.vars = args.vars if (args.vars or args.cnf) else SMOKE["vars"]
        args.seeds = SMOKE["seeds"] if args.seeds == "0,1,2" else args.seeds
        args.sweeps = min(args.sweeps, SMOKE["sweeps"])
        args.min_budget = 0
        args.es_max_seconds = args.es_max_seconds or SMOKE["es_max_seconds"]
        args.ls_max_seconds = args.ls_max_seconds or SMOKE["ls_cap"]
    if not (args.vars or args.cnf):
        ap.error("give --vars or --cnf")
    return args


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
        rec.update(
            method=result.method,
            best_cost=result.best_cost,
            incumbent_cost=result.incumbent_cost,
            pct_satisfied=100 * satisfied_fraction(instance, result.best_cost),
            pct_incumbent=100 * satisfied_fraction(instance, result.incumbent_cost),
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
    methods = {m.strip() for m in args.methods.split(",")}
    reused = reused or {}
    n = instance.num_vars
    sweep = 4 * math.ceil(n / 2) + 1  # one full step of 2-variable blocks, 4 vertices each
    budget = (
        args.budget if args.budget is not None else max(args.sweeps * sweep + 1, args.min_budget)
    )
    records = []
    ps_wall = None
    evaluator = None
    if "polystep" in methods:
        evaluator = DeltaEvaluator(instance, DEFAULT_BLOCK_DIM, device=args.device)
        res = solve_maxsat(
            instance, budget_evals=budget, seed=seed, device=args.device, evaluator=evaluator
        )
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
        )
        records.append(_record(instance, es_res, seed=seed, budget=budget, **known))
        es_evals, es_budget = es_res.evaluations, budget
    if "polystep" in methods and es_evals is not None and es_evals < es_budget - ESConfig().popsize:
        eq = solve_maxsat(
            instance, budget_evals=es_evals, seed=seed, device=args.device, evaluator=evaluator
        )
        eq.method = "polystep@es-evals"
        records.append(_record(instance, eq, seed=seed, budget=es_evals, **known))
    if "probsat (domain ref)" in reused:
        records.append(reused["probsat (domain ref)"])
    elif "probsat" in methods:
        cap = args.ls_max_seconds if args.ls_max_seconds is not None else (ps_wall or 60.0)
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
            f"| {_fmt([r['pct_satisfied'] for r in rs], 3)} "
            f"| {_fmt([r['pct_incumbent'] for r in rs], 3)} "
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    torch.set_num_threads(args.threads)
    seeds = _ints(args.seeds)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
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
    baselines = load_baselines(Path(args.baselines_from)) if args.baselines_from else {}
    mode = "w" if args.baselines_from else "a"
    jsonl = (out / "runs.jsonl").open(mode) if out else None

    def emit(recs: list[dict[str, Any]]) -> None:
        for r in recs:
            records.append(r)
            line = json.dumps({**r, "meta": meta}, default=float)
            if jsonl:
                jsonl.write(line + "\n")
                jsonl.flush()
            print(
                f"{r['instance']} n={r['num_vars']} {r['method']}: "
                f"{r['pct_satisfied']:.3f}% best, {r['pct_incumbent']:.3f}% final, "
                f"{r['evaluations']} evals, {r['wall_s']:.1f}s",
                flush=True,
            )

    if args.vars:
        for n in _ints(args.vars):
            for seed in seeds:
                t0 = time.perf_counter()
                inst = random_ksat(n, ratio=args.ratio, seed=seed)
                gen_s = time.perf_counter() - t0
                known = {"generate_s": round(gen_s, 3)}
                reused = baselines.get((inst.name, seed))
                emit(run_instance(inst, seed, args, known, reused))
    else:
        for path in args.cnf:
            t0 = time.perf_counter()
            inst = read_dimacs(path)
            parse_s = time.perf_counter() - t0
            known = {"parse_s": round(parse_s, 3), "path": str(path), **_known_values(Path(path))}
            for seed in seeds:
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
