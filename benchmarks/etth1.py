"""ETTh1 univariate forecasting (OT, lookback 96, horizon 96) with an LSTM: test MSE and MAE.

Model: ``lstm_forecaster()`` = vmap-safe LSTM(1 -> 64), last hidden state -> Linear(64 -> 96),
23,392 parameters. Data:
``polystep.timeseries.load_etth1`` (Informer split 8,640 / 2,880 / 2,880 hours, z-scored with
train statistics, stride 1: 8,449 / 2,785 / 2,785 windows). Methods:

* ``persistence``: the last input value repeated (no training);
* ``adam`` / ``adam_hard``: Adam (lr 1e-3, batch 64) through autograd (on the hard model the
  gate weights get zero gradient);
* ``polystep`` / ``polystep_hard``: ``PolyStepOptimizer.step_batch`` on batches of 16 with the
  layered evaluator; the search space (:class:`ForecastSpace`) is the Linear head direct plus a
  small sparse random projection of the LSTM weights redrawn every step, so a step re-runs the
  recurrence for only ``6 x 16 = 96`` candidates (head candidates re-run the head only);
* ``openai_es``: OpenAI-ES (``polystep.baselines.OpenAIES``, library NN preset: popsize 50,
  sigma 0.03, Adam update lr 0.03) over all 23,392 parameters, one batch of 16 per generation.

Budget: PolyStep and OpenAI-ES get the same number of LSTM passes (one run of the recurrence over
one batch of 16 windows: PolyStep's LSTM candidates plus its incumbent, OpenAI-ES's population);
Adam gets ``--adam-epochs`` epochs of batch-64 steps. The budgets are small because the 2-core
machine was shared (see the records' ``load_avg_1min``). Every run is checked on the whole
validation split at 10 evenly spaced points (the last at the end); the best-validation weights
are scored once on test. ``hard`` variants use binary (Heaviside) gates.

Tuning, the same for every method: ``GRIDS`` gives each method two configurations (the base
settings in this file and one alternative, fixed before any run); both run at the full budget on
seed 0, the one with the lower best validation MSE is selected, and seeds 1 and 2 run only the
selected one. The table reports the selected configuration's three seeds; ``--report`` also
prints the tuning log. The test split is never used for selection.

    .venv/bin/python benchmarks/etth1.py --data ../shared/data/etth1/ETTh1.csv \
        --methods persistence,adam,polystep,openai_es,polystep_hard,adam_hard --seeds 0,1,2
    .venv/bin/python benchmarks/etth1.py --report

Each finished (method, seed) appends one JSON line to ``benchmarks/results/etth1/runs.jsonl``
(figures and exact configuration) and prints it; finished runs are skipped, so a killed run
resumes. ``--report`` prints the markdown table from the records.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from polystep import PolyStepOptimizer
from polystep.baselines import OpenAIES
from polystep.baselines.presets import NN_PRESETS
from polystep.bench.runner import machine_info
from polystep.data import TensorBatches
from polystep.epsilon import CosineEpsilon
from polystep.nn.recurrent import lstm_forecaster
from polystep.subspace import Subspace
from polystep.subspace.segments import DirectSegment, Segment, seeded_generator
from polystep.subspace.sparse import sparse_segment
from polystep.timeseries import ForecastSplits, load_etth1, persistence
from polystep.transform import ParamLayout

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "etth1" / "runs.jsonl"
METHODS = ("persistence", "adam", "adam_hard", "polystep", "polystep_hard", "openai_es")
HORIZON, LOOKBACK = 96, 96
ADAM_BATCH, SEARCH_BATCH = 64, 16  # windows per step: Adam; PolyStep and OpenAI-ES
EVAL_POINTS = 10
LSTM_COORDS = {"0.weight_ih_l0": 8, "0.weight_hh_l0": 24, "0.bias_ih_l0": 8, "0.bias_hh_l0": 8}
POLYSTEP = {
    "epsilon": 0.5,
    "scale_cost": "mean",
    "polytope": "orthoplex",
    "step_radius": (0.3, 0.03),  # cosine from init to target over the run
    "probe_radius": (1.0, 0.1),
    "evaluator": "auto",
    "chunk_size": 64,
}
ADAM = {"lr": 1e-3}
OPENAI_ES = dict(NN_PRESETS["openai_es"])
BASE = {"adam": ADAM, "polystep": POLYSTEP, "openai_es": OPENAI_ES}
GRIDS: dict[str, list[dict[str, Any]]] = {
    "adam": [{"lr": 1e-3}, {"lr": 3e-3}],
    "polystep": [
        {"step_radius": [0.3, 0.03], "probe_radius": [1.0, 0.1]},
        {"step_radius": [0.05, 0.005], "probe_radius": [0.2, 0.05]},
    ],
    "openai_es": [{"learning_rate": 0.03}, {"learning_rate": 0.01}],
}


class ForecastSpace(Subspace):
    """Head ``1.*`` searched directly; each LSTM tensor through ``LSTM_COORDS[name]`` sparse
    random directions (``nnz = sqrt(numel)`` entries of ``+-1/sqrt(nnz)`` each), redrawn by
    ``(seed, draw)``."""

    kind = "forecast"

    def _build(self, seed: int, draw: int, *, sizes_only: bool = False) -> list[Segment]:
        out: list[Segment] = []
        start = 0
        for index, e in enumerate(self.layout.entries):
            if e.name not in LSTM_COORDS:
                size = -(-e.numel // self.block_dim) * self.block_dim
                out.append(DirectSegment(e.name, e.shape, start, size))
            else:
                k = LSTM_COORDS[e.name]
                nnz = max(1, round(math.sqrt(e.numel)))
                gen = None if sizes_only else seeded_generator(seed, "forecast", index, draw)
                out.append(sparse_segment(e, start, k, nnz, gen))
                size = k
            start += size
        return out


@torch.no_grad()
def scores(model: nn.Module, data: torch.utils.data.TensorDataset) -> dict[str, float]:
    """MSE and MAE of ``model`` over a whole split (batches of 512 windows)."""
    was = model.training
    model.eval()
    se = ae = 0.0
    x_all, y_all = data.tensors
    for lo in range(0, len(data), 512):
        err = model(x_all[lo : lo + 512]) - y_all[lo : lo + 512]
        se += float(err.double().pow(2).sum())
        ae += float(err.double().abs().sum())
    model.train(was)
    n = y_all.numel()
    return {"mse": se / n, "mae": ae / n}


class Selector:
    """Keeps the best-validation weights seen at the checkpoints of one run."""

    def __init__(self, model: nn.Module, splits: ForecastSplits) -> None:
        self.model, self.splits = model, splits
        self.best = math.inf
        self.state: dict[str, torch.Tensor] | None = None
        self.curve: list[dict[str, float]] = []

    def check(self, progress: int, train_loss: float) -> None:
        val = scores(self.model, self.splits.val)["mse"]
        self.curve.append({"progress": progress, "train_loss": train_loss, "val_mse": val})
        if val < self.best:
            self.best = val
            self.state = copy.deepcopy(self.model.state_dict())

    def finish(self) -> dict[str, Any]:
        last = scores(self.model, self.splits.test)
        if self.state is not None:
            self.model.load_state_dict(self.state)
        test = scores(self.model, self.splits.test)
        return {
            "val_mse": self.best,
            "test_mse": test["mse"],
            "test_mae": test["mae"],
            "last_test_mse": last["mse"],
            "curve": self.curve,
        }


def checkpoints(total: int) -> set[int]:
    return {round(total * (k + 1) / EVAL_POINTS) for k in range(EVAL_POINTS)}


def run_adam(
    model: nn.Module, splits: ForecastSplits, seed: int, args: argparse.Namespace, cfg: dict
) -> dict[str, Any]:
    batches = TensorBatches(splits.train, ADAM_BATCH, shuffle=True, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    loss_fn = nn.MSELoss()
    total = args.adam_epochs * len(batches)
    marks, sel, step, loss = checkpoints(total), Selector(model, splits), 0, math.nan
    for _ in range(args.adam_epochs):
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            out = loss_fn(model(x), y)
            out.backward()
            opt.step()
            step, loss = step + 1, float(out.detach())
            if step in marks:
                sel.check(step, loss)
    config = {**cfg, "batch": ADAM_BATCH, "epochs": args.adam_epochs}
    return {**sel.finish(), "steps": step, "lstm_passes": step, "config": config}


def run_polystep(
    model: nn.Module, splits: ForecastSplits, seed: int, args: argparse.Namespace, cfg: dict
) -> dict[str, Any]:
    space = ForecastSpace(ParamLayout.from_module(model), block_dim=8, seed=seed, redraw_every=1)
    lstm_cands = sum(LSTM_COORDS.values()) // 8 * 16
    steps = args.passes // (lstm_cands + 1)
    opt = PolyStepOptimizer(
        model,
        subspace=space,
        epsilon=cfg["epsilon"],
        scale_cost=cfg["scale_cost"],
        polytope=cfg["polytope"],
        step_radius=CosineEpsilon(init=cfg["step_radius"][0], target=cfg["step_radius"][1],
                                  total_steps=steps),
        probe_radius=CosineEpsilon(init=cfg["probe_radius"][0], target=cfg["probe_radius"][1],
                                   total_steps=steps),
        evaluator=cfg["evaluator"],
        chunk_size=cfg["chunk_size"],
        seed=seed,
    )  # fmt: skip
    loss_fn = nn.MSELoss()
    evaluator = type(opt.evaluator(loss_fn)).__name__
    batches = TensorBatches(splits.train, SEARCH_BATCH, shuffle=True, seed=seed)
    marks, sel, step, loss = checkpoints(steps), Selector(model, splits), 0, math.nan
    while step < steps:
        for x, y in batches:
            loss = opt.step_batch(x, y, loss_fn)
            step += 1
            if step in marks:
                sel.check(step, loss)
            if step >= steps:
                break
    return {
        **sel.finish(),
        "steps": step,
        "lstm_passes": step * (lstm_cands + 1),
        "candidates": opt.evaluations,
        "evaluator": evaluator,
        "config": {
            **cfg,
            "batch": SEARCH_BATCH,
            "lstm_coords": LSTM_COORDS,
            "head": "direct",
            "redraw_every": 1,
        },
    }


def run_openai_es(
    model: nn.Module, splits: ForecastSplits, seed: int, args: argparse.Namespace, cfg: dict
) -> dict[str, Any]:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    x0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    es = OpenAIES(x0.numel(), x0=x0, seed=seed, **cfg)
    loss_fn = nn.MSELoss()

    def loss(vec: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        parts = torch.split(vec, sizes)
        params = {n: t.view(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return loss_fn(functional_call(model, params, (x,)), y)

    batched = torch.vmap(loss, in_dims=(0, None, None))

    def load(vec: torch.Tensor) -> None:
        with torch.no_grad():
            for p, t in zip(model.parameters(), torch.split(vec, sizes), strict=True):
                p.copy_(t.view_as(p))

    gens = args.passes // es.popsize
    batches = TensorBatches(splits.train, SEARCH_BATCH, shuffle=True, seed=seed)
    marks, sel, gen, value = checkpoints(gens), Selector(model, splits), 0, math.nan
    with torch.no_grad():
        while gen < gens:
            for x, y in batches:
                pop = es.ask()
                fit = torch.cat([batched(c, x, y) for c in torch.split(pop, 25)])
                es.tell(fit)
                gen, value = gen + 1, float(fit.mean())
                if gen in marks:
                    load(es.mean)
                    sel.check(gen, value)
                if gen >= gens:
                    break
    load(es.mean)
    return {
        **sel.finish(),
        "steps": gen,
        "lstm_passes": gen * es.popsize,
        "config": {**cfg, "update": "adam", "params": "all", "batch": SEARCH_BATCH},
    }


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "adam": run_adam,
    "adam_hard": run_adam,
    "polystep": run_polystep,
    "polystep_hard": run_polystep,
    "openai_es": run_openai_es,
}


def family(method: str) -> str:
    """The tuning grid a method uses (a hard-gated variant tunes like its soft twin)."""
    return method.removesuffix("_hard")


def grid_index(record: dict[str, Any]) -> int:
    """Which ``GRIDS`` entry a record ran (records before the grid ran its first entry)."""
    if "grid_index" in record:
        return int(record["grid_index"])
    for index, entry in enumerate(GRIDS[family(record["method"])]):
        if all(record["config"].get(k) == v for k, v in entry.items()):
            return index
    raise ValueError(f"record {record['method']} seed {record['seed']} matches no grid entry")


def selected(method: str, records: list[dict[str, Any]]) -> int | None:
    """The grid entry with the lowest seed-0 validation MSE, once every entry has run."""
    val = {grid_index(r): r["val_mse"] for r in records if r["method"] == method and r["seed"] == 0}
    if len(val) < len(GRIDS[family(method)]):
        return None
    return min(val, key=val.__getitem__)


def run_one(
    method: str, seed: int, splits: ForecastSplits, args: argparse.Namespace, index: int = 0
) -> dict:
    record: dict[str, Any] = {"method": method, "seed": seed}
    if method == "persistence":
        for part in ("val", "test"):
            x, y = getattr(splits, part).tensors
            err = (persistence(x, HORIZON) - y).double()
            record[f"{part}_mse"] = float(err.pow(2).mean())
            record[f"{part}_mae"] = float(err.abs().mean())
        return record
    torch.manual_seed(seed)
    model = lstm_forecaster(HORIZON, hard_gates=method.endswith("_hard"))
    wall, cpu = time.perf_counter(), time.process_time()
    cfg = {**BASE[family(method)], **GRIDS[family(method)][index]}
    record.update(RUNNERS[method](model, splits, seed, args, cfg))
    record["grid_index"] = index
    record["wall_s"] = round(time.perf_counter() - wall, 1)
    record["cpu_s"] = round(time.process_time() - cpu, 1)
    record["hard_gates"] = method.endswith("_hard")
    record["budget_passes"] = args.passes
    record["load_avg_1min"] = os.getloadavg()[0]
    record["machine"] = machine_info()
    return record


def load_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def budget(r: dict[str, Any]) -> str:
    """What one run of ``r`` cost, in the units of its method."""
    batch = r["config"]["batch"]
    if r["method"].startswith("adam"):
        return f"{r['steps']:,} Adam steps × {batch} windows"
    passes = f"{r['lstm_passes']:,} LSTM passes × {batch} windows"
    if r["method"].startswith("polystep"):
        return f"{r['steps']} steps, {passes}, {r['candidates'] / 1e6:.2f} M candidates"
    return f"{r['steps']} generations × {r['config']['popsize']}, {passes}"


def report(path: Path) -> str:
    """Markdown table (mean ± std over seeds) from the records at ``path``."""
    recs = load_records(path)
    label = {
        "persistence": "persistence (last value)",
        "adam": "Adam (sigmoid gates)",
        "adam_hard": "Adam, binary gates",
        "polystep": "PolyStep (sigmoid gates)",
        "polystep_hard": "PolyStep, binary gates",
        "openai_es": "OpenAI-ES (sigmoid gates)",
    }
    lines = [
        "| method | seeds | test MSE (val-selected) | test MAE | last-iterate test MSE "
        "| val MSE | budget per run | wall s | CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        rows = [r for r in recs if r["method"] == method]
        if not rows:
            continue
        if method != "persistence":
            chosen = selected(method, recs)
            rows = [r for r in rows if grid_index(r) == chosen]
            if not rows:
                continue
        if method == "persistence":
            r = rows[0]
            lines.append(
                f"| {label[method]} | — | {r['test_mse']:.3f} | {r['test_mae']:.3f} | — "
                f"| {r['val_mse']:.3f} | none | 0 | 0 |"
            )
            continue
        col = {k: [r[k] for r in rows] for k in ("test_mse", "test_mae", "last_test_mse")}
        seeds = ",".join(str(r["seed"]) for r in rows)
        lines.append(
            f"| {label[method]} | {seeds} | {mean_std(col['test_mse'])} "
            f"| {mean_std(col['test_mae'])} | {mean_std(col['last_test_mse'])} "
            f"| {mean_std([r['val_mse'] for r in rows])} | {budget(rows[0])} "
            f"| {statistics.mean(r['wall_s'] for r in rows):,.0f} "
            f"| {statistics.mean(r['cpu_s'] for r in rows):,.0f} |"
        )
    return "\n".join(lines)


def tuning_log(path: Path) -> str:
    """Markdown: every grid entry's seed-0 validation MSE and which one each method selected."""
    recs = load_records(path)
    lines = ["| method | configuration | seed-0 val MSE | selected |", "|---|---|---|---|"]
    for method in METHODS[1:]:
        chosen = selected(method, recs)
        for index, entry in enumerate(GRIDS[family(method)]):
            val = [r["val_mse"] for r in recs if r["method"] == method and r["seed"] == 0
                   and grid_index(r) == index]  # fmt: skip
            shown = f"{val[0]:.4f}" if val else "not run"
            mark = "yes" if index == chosen else ""
            lines.append(f"| {method} | {json.dumps(entry)} | {shown} | {mark} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/etth1/ETTh1.csv"))
    parser.add_argument("--methods", default="persistence,adam,polystep,openai_es")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--passes", type=int, default=14_550, help="LSTM passes (PolyStep, ES)")
    parser.add_argument("--adam-epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--report", action="store_true", help="print the table and exit")
    args = parser.parse_args()
    out = Path(args.out)
    if args.report:
        print(report(out))
        print("\nTuning log (seed 0, full budget, validation MSE):\n")
        print(tuning_log(out))
        return
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"--methods must be among {METHODS}, got {bad}")
    torch.set_num_threads(args.threads)
    splits = load_etth1(args.data, lookback=LOOKBACK, horizon=HORIZON)
    for seed in (int(s) for s in args.seeds.split(",")):
        for method in methods:
            for index in runs_owed(method, seed, load_records(out)):
                record = run_one(method, seed, splits, args, index)
                out.parent.mkdir(parents=True, exist_ok=True)
                with out.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
                print(json.dumps({k: v for k, v in record.items() if k != "curve"}), flush=True)


def runs_owed(method: str, seed: int, records: list[dict[str, Any]]) -> list[int]:
    """Grid entries still to run for ``(method, seed)``: all of them on seed 0, the selected one
    on other seeds (none until seed 0's tuning is complete)."""
    if method == "persistence":
        return [0] if seed == 0 and not any(r["method"] == method for r in records) else []
    done = {grid_index(r) for r in records if r["method"] == method and r["seed"] == seed}
    if seed == 0:
        return [i for i in range(len(GRIDS[family(method)])) if i not in done]
    chosen = selected(method, records)
    return [] if chosen is None or chosen in done else [chosen]


if __name__ == "__main__":
    main()
