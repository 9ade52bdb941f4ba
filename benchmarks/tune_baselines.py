"""Tune the gradient-free baselines' defaults on digits, selecting on validation only.

Small grid per method over the digits MLP (64-32-10) and hard-LIF SNN (64-32-10, T=8) at a fixed
forward-pass budget; every configuration is scored by the best validation accuracy of its
*mean* (ES/SPSA/CMA-ES) or its weights (Adam on the smooth twin, scored as the smooth twin),
checked every ``--eval-every`` forward passes. The test split is never read.

    .venv/bin/python benchmarks/tune_baselines.py --budget 20000 \
        --out benchmarks/results/baseline_tuning.json

Adam gets ``--adam-budget`` steps (one forward pass each; default 3,000, about 150 epochs of
digits), far more than it needs, so the grid stays cheap.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

from polystep.baselines import Budget, ModuleObjective, accuracy, make_baseline
from polystep.data import load_digits_splits, make_loaders
from polystep.nn import mlp, smooth_twin, spiking_mlp
from polystep.training import TrainConfig, TrainState, train

GRIDS: dict[str, list[dict]] = {
    "openai_es": [
        {"popsize": 50, "sigma": s, "learning_rate": lr}
        for s, lr in itertools.product([0.01, 0.03, 0.1], [0.01, 0.03, 0.1])
    ],
    "spsa": [
        {"a": a, "c": c, "num_directions": 8}
        for a, c in itertools.product([0.3, 1.0, 3.0], [0.01, 0.05])
    ],
    "cmaes": [
        {"sigma0": s, "popsize": p} for s, p in itertools.product([0.01, 0.03, 0.1], [16, 50])
    ],
    "adam": [{"lr": lr} for lr in (1e-3, 3e-3, 1e-2, 3e-2)],
}
MODELS = {
    "mlp": lambda: mlp((64, 32, 10)),
    "snn": lambda: spiking_mlp((64, 32, 10), num_steps=8),
}


def run_one(model_name: str, method: str, config: dict, budget_evals: int, eval_every: int) -> dict:
    torch.manual_seed(0)
    splits = load_digits_splits(val_fraction=0.1, seed=0)
    loaders = make_loaders(splits, 128, seed=0)
    model = MODELS[model_name]()
    loss = nn.CrossEntropyLoss()
    budget = Budget(max_evals=budget_evals)
    curve: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    if method == "adam":
        twin = smooth_twin(model)

        class Curve:
            def on_step_end(self, state: TrainState, metrics: dict) -> None:
                if metrics["evaluations"] % max(eval_every // 50, 1) == 0:
                    curve.append((metrics["evaluations"], accuracy(twin, loaders.val)))

        adam = torch.optim.Adam(twin.parameters(), lr=config["lr"])
        cfg = TrainConfig(
            epochs=None, max_evaluations=budget_evals, restore_best=False, callbacks=[Curve()],
            progress=False,
        )  # fmt: skip
        budget.charge(train(twin, loaders.train, loss, adam, cfg)[-1]["evaluations"])
    else:
        objective = ModuleObjective(model, loss, loaders.train)
        opt = make_baseline(method, objective.dim, x0=objective.x0, seed=0, **config)
        probe = MODELS[model_name]()
        last = 0

        def on_gen(record: dict) -> None:
            nonlocal last
            if record["evaluations"] - last >= eval_every or not budget.allows(opt.popsize):
                last = int(record["evaluations"])
                acc = accuracy(objective.load(opt.mean.float(), probe), loaders.val)
                curve.append((last, acc))

        opt.run(objective, budget, callback=on_gen)
    best = max(curve, key=lambda c: c[1]) if curve else (0, 0.0)
    return {
        "model": model_name,
        "method": method,
        "config": config,
        "budget": budget_evals,
        "evaluations": budget.evaluations,
        "seconds": time.perf_counter() - t0,
        "best_val_acc": best[1],
        "best_at": best[0],
        "last_val_acc": curve[-1][1] if curve else 0.0,
        "curve": curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=int, default=20000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--adam-budget", type=int, default=3000)
    parser.add_argument("--methods", default="openai_es,spsa,cmaes,adam")
    parser.add_argument("--models", default="mlp,snn")
    parser.add_argument("--out", default="benchmarks/results/baseline_tuning.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text())["runs"] if out.exists() else []
    done = {(r["model"], r["method"], json.dumps(r["config"], sort_keys=True)) for r in results}
    for model_name in args.models.split(","):
        for method in args.methods.split(","):
            for config in GRIDS[method]:
                key = (model_name, method, json.dumps(config, sort_keys=True))
                if key in done:
                    continue
                budget = args.adam_budget if method == "adam" else args.budget
                r = run_one(model_name, method, config, budget, args.eval_every)
                print(
                    f"{model_name:4s} {method:9s} {json.dumps(config):60s} "
                    f"val {r['best_val_acc']:.3f} (last {r['last_val_acc']:.3f}) "
                    f"{r['seconds']:.1f}s",
                    flush=True,
                )
                results.append(r)
                meta = {
                    "machine": platform.processor() or platform.machine(),
                    "torch": torch.__version__,
                    "command": " ".join(sys.argv),
                }
                tmp = out.with_suffix(".tmp")
                tmp.write_text(json.dumps({"meta": meta, "runs": results}, indent=1))
                tmp.replace(out)


if __name__ == "__main__":
    main()
