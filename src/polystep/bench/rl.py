"""``polystep bench rl``: PolyStep against OpenAI-ES at equal evaluations on CartPole / Acrobot.

For every environment x policy x seed x method it searches the policy's flat parameter vector
with :func:`~polystep.problems.rl.search_policy` (the torch environments, common random numbers
per step) and scores the returned iterate (the final one, or with the preset's ``keep_best`` the
best incumbent by search score) on ``--episodes`` fresh held-out episodes (a seed stream never
used during search). Both methods get the same budget of candidate evaluations (one
evaluation = one parameter vector played on ``rollouts`` episodes).

Appends to ``runs.jsonl`` in ``--out`` (one JSON line per run, with the exact configuration;
never truncated) and writes ``table.md`` (mean +- std over seeds of the held-out mean return, wall
time, evaluations), and prints the table. A run already in ``runs.jsonl`` under the same
configuration is skipped (its record joins the table); one under another configuration (budget,
episodes, scale, preset) stops the bench before anything runs. This bench runs no SB3 PPO
baseline (the table notes when ``stable_baselines3`` is not installed).

Example (the committed results)::

    polystep bench rl --env cartpole,acrobot --policy tanh,binary,int8,int8w \\
        --seeds 42,123,456 --out benchmarks/results/rl
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from polystep.bench.outdir import StaleRecordError, config_mismatch, ensure_writable, refuse_stale
from polystep.cliargs import choice_list, existing_dir, int_list, parser, positive_int
from polystep.problems.rl.envs import ENVS, make_env
from polystep.problems.rl.policies import POLICIES, make_policy
from polystep.problems.rl.search import (
    OpenAIESPreset,
    PolicySearchPreset,
    evaluate_policy,
    openai_es_preset,
    polystep_preset,
    search_policy,
)

METHODS = ("polystep", "openai_es")
# The authors' budgets (candidate evaluations): 3,216 for CartPole, 9,600 for Acrobot.
DEFAULT_BUDGET = {"cartpole": 3216, "acrobot": 9600}
TARGETS = {"cartpole": 500.0, "acrobot": -80.0}
SMOKE = {"budget": 96, "rollouts": 4, "horizon": 100, "episodes": 8}


def build_parser() -> argparse.ArgumentParser:
    ap = parser("polystep bench rl", __doc__)
    envs = choice_list(tuple(ENVS))
    ap.add_argument("--env", type=envs, default=",".join(ENVS), help="comma list")
    ap.add_argument(
        "--policy", type=choice_list(tuple(POLICIES)), default="tanh,binary,int8,int8w",
        help=f"comma list of {', '.join(POLICIES)}",
    )  # fmt: skip
    ap.add_argument(
        "--method", type=choice_list(METHODS), default=",".join(METHODS), help="comma list"
    )
    ap.add_argument("--seeds", type=int_list(), default="42,123,456", help="search seeds")
    ap.add_argument(
        "--budget",
        type=positive_int,
        default=None,
        help="candidate evaluations per run (default: 3216 for CartPole, 9600 for Acrobot)",
    )
    ap.add_argument("--episodes", type=positive_int, default=100, help="held-out episodes per run")
    ap.add_argument("--out", type=Path, default=None, help="folder for runs.jsonl and table.md")
    ap.add_argument("--scale", choices=("full", "smoke"), default="full", help="smoke: plumbing")
    ap.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    ap.add_argument(
        "--collect",
        type=existing_dir,
        default=None,
        metavar="DIR",
        help="run nothing: merge every runs.jsonl under DIR into DIR/table.md",
    )
    return ap


def make_preset(
    env_name: str, policy_name: str, method: str, smoke: bool
) -> PolicySearchPreset | OpenAIESPreset:
    """The method's preset for this env and policy (shrunk to a plumbing check at smoke)."""
    preset: PolicySearchPreset | OpenAIESPreset
    if method == "polystep":
        preset = polystep_preset(env_name, policy_name)
    else:
        preset = openai_es_preset(env_name, policy_name)
    if smoke:
        # Plumbing check only: few short episodes, and populations that fit the tiny budget.
        preset = replace(preset, rollouts=SMOKE["rollouts"], horizon=SMOKE["horizon"])
        if isinstance(preset, PolicySearchPreset):
            preset = replace(preset, subspace_dim=24, block_dim=4)
        else:
            preset = replace(preset, popsize=48)
    return preset


def run_config(
    env_name: str, policy_name: str, method: str, budget: int, episodes: int, smoke: bool
) -> dict[str, Any]:
    """What defines a run (a stored run counts as done only under an equal one), as JSON."""
    preset = make_preset(env_name, policy_name, method, smoke)
    config = {
        "budget": budget,
        "episodes": episodes,
        "scale": "smoke" if smoke else "full",
        "preset": {"name": type(preset).__name__, **asdict(preset)},
    }
    return json.loads(json.dumps(config))


def run_one(
    env_name: str, policy_name: str, method: str, seed: int, budget: int, episodes: int, smoke: bool
) -> dict[str, Any]:
    """One search + held-out evaluation; returns the JSON record."""
    env = make_env(env_name)
    policy = make_policy(policy_name, env)
    preset = make_preset(env_name, policy_name, method, smoke)
    cpu_start = time.process_time()
    result = search_policy(
        env, policy, budget_evals=budget, seed=seed, method=method, preset=preset
    )
    cpu_s = time.process_time() - cpu_start
    start = time.perf_counter()
    horizon = SMOKE["horizon"] if smoke else None
    returns = evaluate_policy(
        env, policy, result.params, seed=seed, episodes=episodes, horizon=horizon
    )
    return {
        "env": env_name,
        "policy": policy_name,
        "method": method,
        "seed": seed,
        "budget": budget,
        "evaluations": result.evaluations,
        "steps": result.steps,
        "wall_s": round(result.wall_s, 3),
        "cpu_s": round(cpu_s, 3),
        "eval_wall_s": round(time.perf_counter() - start, 3),
        "heldout_mean": float(returns.mean()),
        "heldout_std": float(returns.std()) if episodes > 1 else 0.0,
        "heldout_min": float(returns.min()),
        "episodes": episodes,
        "heldout_horizon": horizon or env.max_steps,
        "search_best_return": max(result.history),
        "num_params": policy.dim,
        "config": {"preset": type(preset).__name__, **asdict(preset), **result.config},
        "run_config": run_config(env_name, policy_name, method, budget, episodes, smoke),
        "params": [round(float(v), 6) for v in result.params],
    }


def _fmt(values: list[float], digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _target(env: str, recs: list[dict[str, Any]]) -> str:
    """Issue 5: CartPole 500 on every seed; Acrobot mean return >= -80."""
    means = [r["heldout_mean"] for r in recs]
    target = TARGETS.get(env, math.nan)
    if not means or math.isnan(target):
        return "—"
    if env == "cartpole":
        return f"500 on every seed: {'yes' if all(m >= target for m in means) else 'no'}"
    return f"mean ≥ {target:g}: {'yes' if statistics.mean(means) >= target else 'no'}"


def table(records: list[dict[str, Any]]) -> str:
    """Markdown table: one row per env x policy x method, aggregated over seeds."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["env"], rec["policy"], rec["method"]), []).append(rec)
    lines = [
        "| env | policy | method | held-out return (mean ± std over seeds) | per seed | "
        "target | evaluations | wall s / run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (env, pol, method), recs in groups.items():
        means = [r["heldout_mean"] for r in recs]
        per_seed = ", ".join(f"{r['seed']}: {r['heldout_mean']:.1f}" for r in recs)
        walls = [r["wall_s"] for r in recs]
        lines.append(
            f"| {env} | {pol} | {method} | {_fmt(means)} | {per_seed} | {_target(env, recs)} | "
            f"{recs[0]['evaluations']} | {_fmt(walls)} |"
        )
    if importlib.util.find_spec("stable_baselines3") is None:
        lines.append("")
        lines.append("SB3 PPO: skipped (stable_baselines3 is not installed).")
    return "\n".join(lines)


def comparison(records: list[dict[str, Any]]) -> str:
    """PolyStep next to OpenAI-ES per env x policy (held-out return, wall time, evaluations)."""
    cell: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for rec in records:
        cell.setdefault((rec["env"], rec["policy"], rec["method"]), []).append(rec)
    order = list(POLICIES)
    pairs = sorted(
        {(e, p) for e, p, _ in cell},
        key=lambda k: (k[0] != "cartpole", k[0], order.index(k[1]) if k[1] in order else 99),
    )
    lines = [
        "| env | policy | PolyStep held-out | OpenAI-ES held-out | target (PolyStep) | "
        "PolyStep evals, wall s/run | OpenAI-ES evals, wall s/run |",
        "|---|---|---|---|---|---|---|",
    ]
    for env, pol in pairs:
        ps, es = cell.get((env, pol, "polystep"), []), cell.get((env, pol, "openai_es"), [])

        def ret(recs: list[dict[str, Any]]) -> str:
            return _fmt([r["heldout_mean"] for r in recs]) if recs else "—"

        def cost(recs: list[dict[str, Any]]) -> str:
            if not recs:
                return "—"
            text = f"{recs[0]['evaluations']}, {_fmt([r['wall_s'] for r in recs])}"
            if all("cpu_s" in r for r in recs):
                text += f" (CPU {_fmt([r['cpu_s'] for r in recs])})"
            return text

        lines.append(
            f"| {env} | {pol} | {ret(ps)} | {ret(es)} | {_target(env, ps)} | {cost(ps)} | "
            f"{cost(es)} |"
        )
    return "\n".join(lines)


def collect(root: Path) -> str:
    """Merge every ``runs.jsonl`` under ``root`` into ``root/table.md``; returns the text."""
    records: list[dict[str, Any]] = []
    commands: list[str] = []
    for path in sorted(root.rglob("runs.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                records.append(rec)
                if rec.get("command") not in commands:
                    commands.append(rec.get("command"))
    if not records:
        raise SystemExit(f"--collect: no runs.jsonl with records under {root}")
    machine = records[0].get("machine", "?")
    text = (
        "Commands:\n\n"
        + "\n".join(f"    {c}" for c in commands)
        + f"\n\nMachine: {machine}, torch {records[0].get('torch')}, "
        + f"{records[0].get('threads')} thread(s) per run\n\n"
        + "Held-out return: mean over seeds ± std over seeds of each run's mean return on "
        + f"{records[0]['episodes']} fresh episodes "
        + f"(horizon {records[0].get('heldout_horizon')}).\n\n"
        + comparison(records)
        + "\n\nPer method:\n\n"
        + table(records)
        + "\n"
    )
    (root / "table.md").write_text(text)
    return text


def stored_run_config(rec: dict[str, Any]) -> dict[str, Any]:
    """A record's :func:`run_config`; records written before it existed give their budget,
    episodes and preset (read from ``config``), enough to tell a stale run from a finished one."""
    if "run_config" in rec:
        return rec["run_config"]
    config = rec.get("config", {})
    preset = {"name": config.get("preset"), **{k: v for k, v in config.items() if k != "preset"}}
    return {"budget": rec.get("budget"), "episodes": rec.get("episodes"), "preset": preset}


def _stored(path: Path) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    """``(env, policy, method, seed) -> record`` of an existing ``runs.jsonl`` (last wins)."""
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                out[(rec["env"], rec["policy"], rec["method"], int(rec["seed"]))] = rec
    return out


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.collect is not None:
        print(collect(args.collect))
        return 0
    torch.set_num_threads(args.threads)
    smoke = args.scale == "smoke"
    episodes = SMOKE["episodes"] if smoke else args.episodes
    budgets = {
        env: args.budget or (SMOKE["budget"] if smoke else DEFAULT_BUDGET[env]) for env in args.env
    }
    plan = [
        (env, pol, method, seed)
        for env in args.env
        for pol in args.policy
        for method in args.method
        for seed in args.seeds
    ]
    stored: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    if args.out is not None:
        try:
            ensure_writable(args.out)
            stored = _stored(args.out / "runs.jsonl")
            for env, pol, method, seed in plan:
                if (env, pol, method, seed) in stored:
                    wanted = run_config(env, pol, method, budgets[env], episodes, smoke)
                    have = stored_run_config(stored[(env, pol, method, seed)])
                    refuse_stale(
                        str(args.out / "runs.jsonl"),
                        f"{env}/{pol}/{method} seed {seed}",
                        config_mismatch(have, {k: wanted[k] for k in have}),
                    )
        except (ValueError, StaleRecordError) as err:
            ap.error(f"argument --out: {err}")
    header = {
        "command": "polystep bench rl " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    records = []
    for env_name, policy_name, method, seed in plan:
        if (env_name, policy_name, method, seed) in stored:
            records.append(stored[(env_name, policy_name, method, seed)])
            print(f"skip {env_name} {policy_name} {method} seed {seed} (done, same configuration)")
            continue
        rec = run_one(env_name, policy_name, method, seed, budgets[env_name], episodes, smoke)
        rec.update(header)
        records.append(rec)
        print(
            f"{rec['env']:8s} {rec['policy']:6s} {rec['method']:9s} seed {seed:4d}: "
            f"held-out {rec['heldout_mean']:7.1f}  evals {rec['evaluations']:5d}  "
            f"{rec['wall_s']:6.1f} s",
            flush=True,
        )
        if args.out is not None:
            with (args.out / "runs.jsonl").open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
    text = table(records)
    print(text)
    if args.out is not None:
        (args.out / "table.md").write_text(
            f"Command: `{header['command']}`\n\nMachine: {header['machine']}, "
            f"torch {header['torch']}, {header['threads']} thread(s)\n\n{text}\n"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
