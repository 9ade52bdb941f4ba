"""Make each candidate count: PolyStep step options on the SNN row, at equal candidate budgets.

Issue 10, item 3. Every arm trains the hard-LIF SNN 784-128-10 (T=15, preset ``snn``, the
``snn_mnist`` task at scale ``cpu``: 18,000 training images, a seeded 2,000-image validation
split carved from the training split) under the SAME budget of candidate evaluations, and is
scored on VALIDATION only (the test split is read only with ``--test ARM``, for the arm chosen
on validation). Wall time is not compared (the machine is shared).

Budget unit: one candidate scored on 256 images (the preset's batch) counts 1, and so does the
step's pass of the current weights; a step on a batch of ``b`` images costs
``(candidates + 1) * b / 256``, so larger batches are charged for the work they do.

Arms (``ARMS``): ``base`` (the preset as it is) and one change each: a random subset of blocks
per step, larger or growing batches, rank cost shaping, heavy-ball momentum on the move,
step-size adaptation from the fraction of improving candidates, covariance-adapted probe
directions, an adaptive subspace, and a start that makes the spiking neurons fire.

One JSON line per run is appended to ``--out`` (arm, its options, seed, budget, validation
accuracy selected (best of 21 points) and last, steps, code version); a run already there
(same arm options, seed and budget) is skipped, so the script resumes. ``--table`` prints the
markdown table of the records (mean +- std over seeds).

    python benchmarks/candidate_count.py --arms base,momentum --seeds 0,1,2 --budget 400000
    python benchmarks/candidate_count.py --table > benchmarks/results/tuning/candidate_count.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polystep.adapted_directions import AdaptedDirections, ShearedRule
from polystep.bench.codeversion import code_version
from polystep.bench.selection import Selector
from polystep.bench.tasks import TASKS, load_task_data
from polystep.blocks import to_blocks
from polystep.data import make_loaders
from polystep.engine import shaping
from polystep.epsilon import Constant
from polystep.momentum import Momentum
from polystep.nn.firing_start import firing_start
from polystep.optimizer import PRESETS, PolyStepOptimizer
from polystep.spaces import Blocks
from polystep.step import StepRule
from polystep.subspace.adaptive import AdaptiveFactoredSubspace
from polystep.success_radius import SuccessRadius, improving_fraction
from polystep.training import forward_passes_per_step
from polystep.transform import ParamLayout

OUT = Path(__file__).parent / "results" / "tuning" / "candidate_count.jsonl"
TASK = "snn_mnist"
BASE_BATCH = 256
EVAL_POINTS = 20

ARMS: dict[str, dict[str, Any]] = {
    "base": {},
    "subset 1/2": {"blocks_per_step": 78},
    "batch 512": {"batch": [512, 512]},
    "rank shaping": {"shaping": "rank"},
    "momentum 0.5": {"momentum": 0.5},
    "success radius": {"success": 0.2},
    "success radius 0.45": {"success": 0.45},
    "adapted directions": {"cma": 0.3},
    "adaptive subspace": {"keep": 2},
    "firing start": {"firing": 0.1},
    "subset 1/2 + rank": {"blocks_per_step": 78, "shaping": "rank"},
}


@dataclass(frozen=True)
class Recording(Blocks):
    """:class:`Blocks` that hands every new ``x`` to ``seen`` (the prototype's hook)."""

    seen: Any = field(default=None, compare=False)

    def write(self, state: Any, asked: Any, moved: torch.Tensor) -> torch.Tensor:
        x = super().write(state, asked, moved)
        self.seen(x)
        return x


class Prototype(PolyStepOptimizer):
    """PolyStepOptimizer with the measured options wired in around its step (bench only)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        momentum: float | None = None,
        success: float | None = None,
        cma: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.momentum = None if momentum is None else Momentum.build(beta=momentum)
        self.success = None if success is None else SuccessRadius.build(target=success)
        self.adapted = None if cma is None else AdaptedDirections.build(rate=cma)
        self.velocity: torch.Tensor | None = None
        self.radius_scale = 1.0
        self.covariance: torch.Tensor | None = None
        self.seen_x: torch.Tensor | None = None
        self.last_losses: torch.Tensor | None = None

    def step_rule(self) -> StepRule:
        rule, it = super().step_rule(), self.iteration
        if self.success is not None:
            scale = self.radius_scale
            rule = replace(
                rule,
                step_radius=Constant(value=scale * float(rule.step_radius(it))),
                probe_radius=Constant(value=scale * float(rule.probe_radius(it))),
            )
        if self.adapted is not None:
            if self.covariance is None:
                blocks = -(-self.subspace.dim // self.subspace.block_dim)
                self.covariance = AdaptedDirections.identity(blocks, self.subspace.block_dim)
            factors = torch.linalg.cholesky(self.covariance)
            plain = {f.name: getattr(rule, f.name) for f in fields(StepRule)}
            rule = ShearedRule(**plain, factors=factors)
        return rule

    def engine(self) -> Any:
        engine = super().engine()
        space = engine.space
        if type(space) is Blocks:
            space = Recording(space.dim, space.block_dim, space.active, seen=self._seen)
        return replace(engine, space=space)

    def _seen(self, x: torch.Tensor) -> None:
        self.seen_x = x
        if isinstance(self.subspace, AdaptiveFactoredSubspace):
            self.subspace.observe(x)

    def candidate_losses(self, score: Any, cands: Any) -> torch.Tensor:
        self.last_losses = super().candidate_losses(score, cands)
        return self.last_losses

    def _step(self, score: Any) -> None:
        z0, draw0 = self.search.x.clone(), self.subspace.draw
        super()._step(score)
        if self.adapted is not None and self.covariance is not None:
            if self.subspace.draw != draw0 or self.seen_x is None:
                self.covariance = None
            else:
                moves = to_blocks(self.seen_x - z0, self.subspace.block_dim)
                self.covariance = self.adapted.update(self.covariance, moves)

    def step_batch(self, inputs: Any, targets: Any = None, loss_fn: Any = None) -> float:
        params = list(self.model.parameters())
        before = nn.utils.parameters_to_vector(params).clone() if self.momentum else None
        center = super().step_batch(inputs, targets, loss_fn)
        if self.momentum is not None and before is not None:
            delta = nn.utils.parameters_to_vector(params) - before
            self.velocity = self.momentum(self.velocity, delta)
            nn.utils.vector_to_parameters(before + self.velocity, params)
        if self.success is not None and self.last_losses is not None:
            fraction = improving_fraction(self.last_losses, center)
            self.radius_scale = self.success(self.radius_scale, fraction)
        return center


class Stream:
    """Seeded batches of any size from the training split (a fresh permutation per epoch)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> None:
        self.x, self.y = x, y
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(x), generator=self.generator)
        self.at = 0

    def next(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.at + size > len(self.order):
            self.order, self.at = torch.randperm(len(self.x), generator=self.generator), 0
        rows = self.order[self.at : self.at + size]
        self.at += size
        return self.x[rows], self.y[rows]


def build(options: dict[str, Any], model: nn.Module, seed: int) -> Prototype:
    preset = PRESETS["snn"]
    kw: dict[str, Any] = {"preset": "snn", "seed": seed}
    redraw = options.get("redraw_every", preset["redraw_every"])
    if "keep" in options:
        kw["subspace"] = AdaptiveFactoredSubspace(
            ParamLayout.from_module(model), keep=options["keep"], rank=preset["rank"],
            direct_max=preset["direct_max"], block_dim=8, seed=seed, redraw_every=redraw,
        )  # fmt: skip
    opt = Prototype(
        model,
        momentum=options.get("momentum"),
        success=options.get("success"),
        cma=options.get("cma"),
        **kw,
    )
    if "redraw_every" in options and "keep" not in options:
        opt.subspace.redraw_every = redraw
    if "shaping" in options:
        opt.shaping = shaping(options["shaping"])
    if "blocks_per_step" in options:
        opt.blocks_per_step = options["blocks_per_step"]
    opt.progress = False
    return opt


def run(arm: str, seed: int, budget: int, mnist_dir: str, test: bool = False) -> dict[str, Any]:
    """One run of ``arm``; validation figures (and test ones only when ``test``)."""
    options = ARMS[arm]
    task = TASKS[TASK]
    splits = load_task_data(task, "cpu", seed, mnist_dir=mnist_dir)
    torch.manual_seed(seed)
    model = task.model(splits.num_features, splits.num_classes, "cpu")
    loaders = make_loaders(splits, BASE_BATCH, seed=seed, fast=True)
    stream = Stream(*splits.train.tensors, seed=seed)
    if "firing" in options:
        firing_start(model, stream.next(BASE_BATCH)[0], rate=options["firing"])
        stream = Stream(*splits.train.tensors, seed=seed)
    opt = build(options, model, seed)
    per_step = forward_passes_per_step(opt)
    low, high = options.get("batch", [BASE_BATCH, BASE_BATCH])
    selector = Selector(loaders.val, eval_every=max(1, budget // EVAL_POINTS))
    selector.observe(model, 0, 0, 0.0, force=True)
    loss_fn, spent, started = nn.CrossEntropyLoss(), 0.0, time.perf_counter()
    while True:
        size = round(low + (high - low) * spent / budget)
        cost = per_step * size / BASE_BATCH
        if spent + cost > budget:
            break
        opt.step_batch(*stream.next(size), loss_fn)
        spent += cost
        selector.observe(model, int(spent), opt.iteration, 0.0)
    selector.observe(model, int(spent), opt.iteration, 0.0, force=True)
    record = {
        "arm": arm,
        "options": options,
        "seed": seed,
        "budget": budget,
        "spent": round(spent),
        "steps": opt.iteration,
        "candidates_per_step": per_step - 1,
        "val_selected": selector.best_val,
        "val_last": selector.curve[-1]["val_acc"],
        "selected_step": selector.best_step,
        "task": TASK,
        "preset": "snn",
        "threads": torch.get_num_threads(),
        "wall_seconds_loaded_machine": round(time.perf_counter() - started, 1),
        "code": code_version(),
    }
    if test:
        record.update(
            {k: v for k, v in selector.finish(model, loaders.test).items() if k != "curve"}
        )
    return record


def read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(records: list[dict[str, Any]]) -> str:
    """Markdown: one row per (arm, budget), validation mean +- std over seeds."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in records:
        if "test_acc_selected" not in r:
            groups.setdefault((r["arm"], r["budget"]), []).append(r)

    def ms(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{100 * statistics.mean(values):.1f} +- {100 * sd:.1f}"

    lines = [
        "| arm | options | budget | seeds | val selected % | val last % | steps |",
        "|---|---|---|---|---|---|---|",
    ]
    order = {name: i for i, name in enumerate(ARMS)}
    for (arm, budget), rows in sorted(
        groups.items(), key=lambda g: (g[0][1], order.get(g[0][0], 99))
    ):
        steps = statistics.mean(r["steps"] for r in rows)
        lines.append(
            f"| {arm} | `{json.dumps(rows[0]['options'])}` | {budget:,} | {len(rows)} | "
            f"{ms([r['val_selected'] for r in rows])} | {ms([r['val_last'] for r in rows])} | "
            f"{steps:.0f} |"
        )
    tests = [r for r in records if "test_acc_selected" in r]
    for r in tests:
        lines.append(
            f"\nTest (arm chosen on validation): {r['arm']} seed {r['seed']}, budget "
            f"{r['budget']:,}: test {100 * r['test_acc_selected']:.1f} % (selected), "
            f"{100 * r['test_acc_last']:.1f} % (last)"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arms", default="base", help=f"comma list of: {', '.join(ARMS)}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=int, default=400_000)
    ap.add_argument("--mnist-dir", default=str(Path(__file__).parents[1] / "../shared/data/mnist"))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--table", action="store_true", help="print the table of --out and stop")
    ap.add_argument("--test", action="store_true", help="also score the test split")
    args = ap.parse_args(argv)
    if args.table:
        print(table(read(args.out)))
        return 0
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        ap.error(f"--arms must be among {list(ARMS)}, got {unknown}")
    torch.set_num_threads(1)
    for arm in arms:
        for seed in (int(s) for s in args.seeds.split(",")):
            done = any(
                r["arm"] == arm and r["options"] == ARMS[arm] and r["seed"] == seed
                and r["budget"] == args.budget and ("test_acc_selected" in r) == args.test
                for r in read(args.out)
            )  # fmt: skip
            if done:
                print(f"skip {arm} seed {seed} (recorded)", flush=True)
                continue
            record = run(arm, seed, args.budget, args.mnist_dir, test=args.test)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            print(json.dumps({k: v for k, v in record.items() if k != "code"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
