"""Test accuracy at a fixed forward-pass budget: MLP and hard-LIF SNN on three data sets.

Runs the user-facing path: ``PolyStepOptimizer`` (preset ``default`` for the MLP, ``snn`` for the
SNN) driven by :func:`polystep.train` with a validation loader, which restores the
best-validation weights (checked 20 times per run); the test split is scored once, at the end.
The budget counts every candidate and the incumbent of each step on one batch as one forward
pass each, so a run gets ``budget // passes_per_step`` steps. MNIST-sized data use 20,000
training images (a seeded 10 % of them for validation) and the full 10,000 test images.

    .venv/bin/python benchmarks/accuracy_at_budget.py --datasets digits,mnist,fashion \
        --mnist-dir ../shared/data/mnist --seeds 42,123,456 \
        --out benchmarks/results/accuracy_at_budget.jsonl

Prints one JSON line per run (figures and exact configuration) and appends it to ``--out``;
finished (dataset, model, seed) runs in ``--out`` are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from polystep import PolyStepOptimizer, TrainConfig, train
from polystep.baselines import accuracy
from polystep.bench.runner import machine_info
from polystep.data import (
    Splits,
    find_fashion_mnist,
    load_digits_splits,
    load_idx_splits,
    make_loaders,
)
from polystep.nn import mlp, spiking_mlp
from polystep.training import forward_passes_per_step

TRAIN_LIMIT = 20_000
HIDDEN = 128
MODELS = {
    "mlp": ("default", lambda d, c: mlp((d, HIDDEN, c))),
    "snn": ("snn", lambda d, c: spiking_mlp((d, HIDDEN, c), num_steps=15)),
}


def load(dataset: str, seed: int, mnist_dir: str | None) -> Splits:
    if dataset == "digits":
        return load_digits_splits(val_fraction=0.1, seed=seed)
    folder = mnist_dir if dataset == "mnist" else find_fashion_mnist()
    if folder is None:
        raise FileNotFoundError(f"no IDX folder for {dataset} (--mnist-dir, dataset-fashion-mnist)")
    return load_idx_splits(folder, val_fraction=0.1, seed=seed, limit=TRAIN_LIMIT)


def run(dataset: str, model_name: str, seed: int, budget: int, args: argparse.Namespace) -> dict:
    splits = load(dataset, seed, args.mnist_dir)
    preset, build = MODELS[model_name]
    torch.manual_seed(seed)
    model = build(splits.num_features, splits.num_classes)
    loaders = make_loaders(splits, args.batch_size, seed=seed, fast=True)
    optimizer = PolyStepOptimizer(model, preset=preset, seed=seed)
    per_step = forward_passes_per_step(optimizer)
    steps = budget // per_step
    if steps < 1:
        raise ValueError(f"budget {budget} is below one step ({per_step} forward passes)")
    config = TrainConfig(
        epochs=10**6, max_steps=steps, val_every=max(1, steps // 20), progress=False
    )
    started = time.perf_counter()
    history = train(
        model, loaders.train, nn.CrossEntropyLoss(), optimizer, config, val_loader=loaders.val
    )
    seconds = time.perf_counter() - started
    return {
        "dataset": dataset,
        "model": model_name,
        "seed": seed,
        "preset": preset,
        "test_acc": accuracy(model, loaders.test),
        "best_val_acc": max(r["val_accuracy"] for r in history if "val_accuracy" in r),
        "forward_passes": steps * per_step,
        "steps": steps,
        "passes_per_step": per_step,
        "wall_s": round(seconds, 1),
        "train": len(splits.train),
        "batch_size": args.batch_size,
        "hidden": HIDDEN,
        "machine": machine_info(),
        "command": " ".join(sys.argv),
    }


def report(path: Path) -> str:
    """Markdown table of ``path``'s runs: mean ± std over seeds per (dataset, model)."""
    rows: dict[tuple[str, str], list[dict]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        rows.setdefault((r["dataset"], r["model"]), []).append(r)
    out = [
        "| data set | model (preset) | seeds | test acc % (val-selected) | forward passes | steps "
        "| wall s / run |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (dataset, model), runs in rows.items():
        acc = torch.tensor([100 * r["test_acc"] for r in runs])
        wall = torch.tensor([float(r["wall_s"]) for r in runs])
        spread = f" ± {acc.std().item():.1f}" if len(runs) > 1 else ""
        out.append(
            f"| {dataset} | {model} ({runs[0]['preset']}) | {len(runs)} | "
            f"{acc.mean().item():.1f}{spread} | {runs[0]['forward_passes']:,} | "
            f"{runs[0]['steps']} | {wall.mean().item():.0f} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", default="digits")
    parser.add_argument("--models", default="mlp,snn")
    parser.add_argument("--seeds", default="42,123,456")
    parser.add_argument("--budget-mlp", type=int, default=1_000_000)
    parser.add_argument("--budget-snn", type=int, default=300_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--mnist-dir", default=None)
    parser.add_argument("--out", default="benchmarks/results/accuracy_at_budget.jsonl")
    parser.add_argument(
        "--report", action="store_true", help="print the table of --out, run nothing"
    )
    args = parser.parse_args()
    if args.report:
        print(report(Path(args.out)))
        return
    torch.set_num_threads(1)
    out = Path(args.out)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["dataset"], r["model"], r["seed"]))
    for dataset in args.datasets.split(","):
        for model_name in args.models.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                if (dataset, model_name, seed) in done:
                    continue
                budget = args.budget_mlp if model_name == "mlp" else args.budget_snn
                record = run(dataset, model_name, seed, budget, args)
                print(json.dumps(record), flush=True)
                with out.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
