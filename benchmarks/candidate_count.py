"""Make each candidate count: PolyStep step options on the SNN row, at equal candidate budgets.

Issue 10, item 3. Every arm trains the hard-LIF SNN 784-128-10 (T=15, preset ``snn``, the
``snn_mnist`` task at scale ``cpu``: 18,000 training images, a seeded 2,000-image validation
split carved from the training split) under the SAME budget of candidate evaluations, and is
scored on VALIDATION only (the test split is read only with ``--test``, for the arm chosen on
validation; runs are deterministic on one thread, so a ``--test`` run repeats its validation
run and adds the test figures). Wall time is not compared (the machine is shared).

Budget unit: one candidate scored on 256 images (the preset's batch) counts 1, and so does the
step's pass of the current weights; a step on a batch of ``b`` images costs
``(candidates + 1) * b / 256``, so larger batches are charged for the work they do.

Arms (``ARMS``): ``base`` (the preset with every block searched each step) and changes to it: a
random subset of blocks per step, a larger batch, rank cost shaping, and an output start (each
output neuron's bias raised until it spikes on 10 % of 512 training images: no class starts
silent) and a revival (after every step, an output neuron spiking on under 2 % of the step's
batch gets its bias raised until it reaches 2 %; every pass this takes is charged as a
candidate evaluation). The first round also measured heavy-ball momentum on
the move, step-size adaptation from the fraction of improving candidates (a success rule),
covariance-adapted probe directions, an adaptive subspace and a start that makes the spiking
neurons fire; none earned its place, so their code was removed again: their records name the
commit that holds it (``code.commit``; the prototypes were wired in by a bench-only subclass
of the optimizer), and the table marks them.

Where the seed spread comes from (``--vary``): a run's ``seed`` sets three sources of
randomness, ``init`` (the model's initial weights), ``draws`` (the optimizer's ``seed``: its
probe directions, rotations and block subsets) and ``data`` (the 20,000-image training subset,
the validation split carved from it and the batch order). ``--vary all`` (the default) sets all
three from the seed; ``--vary init`` (``draws``, ``data``) sets only that one and holds the
other two at 0. Each run also records how much of the net is silent on the validation images,
at the start and at the end: the hidden and output neurons that never spike, and the images
with no output spike at all (a dead start).

One JSON line per run is appended to ``--out`` (arm, its options, seed, which sources it set,
budget, validation accuracy selected (best of 21 points) and last, steps, silent fractions,
code version); a run already there (same arm options, seed, sources and budget) is skipped, so
the script resumes. ``--table`` prints the markdown tables of the records (mean +- std over
seeds).

    python benchmarks/candidate_count.py --arms "base,rank shaping" --seeds 0,1,2 --budget 300000
    python benchmarks/candidate_count.py --vary init --seeds 0,1,2,3,4,5 --budget 300000
    python benchmarks/candidate_count.py --table > benchmarks/results/tuning/candidate_count.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polystep.bench.codeversion import code_version
from polystep.bench.selection import Selector
from polystep.bench.tasks import TASKS, load_task_data
from polystep.data import make_loaders
from polystep.engine import shaping
from polystep.optimizer import PolyStepOptimizer
from polystep.presets import PRESETS
from polystep.training import forward_passes_per_step

OUT = Path(__file__).parent / "results" / "tuning" / "candidate_count.jsonl"
TASK = "snn_mnist"
BASE_BATCH = 256
EVAL_POINTS = 20
BLANK = 0.1  # a run ending with this share of blank validation images is named in the table
SOURCES = ("init", "draws", "data")
VARY = ("all", *SOURCES)

ARMS: dict[str, dict[str, Any]] = {
    "base": {},
    "subset 1/2": {"blocks_per_step": 78},
    "subset 1/4": {"blocks_per_step": 39},
    "batch 512": {"batch": [512, 512]},
    "rank shaping": {"shaping": "rank"},
    "subset 1/2 + rank": {"blocks_per_step": 78, "shaping": "rank"},
    "subset 1/2 + output start": {"blocks_per_step": 78, "output_start": 0.1},
    "subset 1/2 + revive": {"blocks_per_step": 78, "revive": 0.02},
}


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


def seeds_of(seed: int, vary: str) -> dict[str, int]:
    """The seed of each source of randomness: ``seed`` where ``vary`` names it, else 0."""
    return {source: seed if vary in ("all", source) else 0 for source in SOURCES}


@torch.no_grad()
def silent(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Fractions of the SNN that never spike on the images ``x`` ``(N, 784)``: hidden neurons,
    output neurons, and images with no output spike."""
    hidden = nn.Sequential(model[0], model[1])(x)  # (T, N, H) spikes of the hidden layer
    counts = model(x)  # (N, C) output spike counts
    return {
        "hidden": (hidden.sum(dim=(0, 1)) == 0).float().mean().item(),
        "output": (counts.sum(dim=0) == 0).float().mean().item(),
        "images": (counts.sum(dim=1) == 0).float().mean().item(),
    }


@torch.no_grad()
def output_start(model: nn.Module, x: torch.Tensor, share: float, iterations: int = 20) -> int:
    """Raise each output neuron's bias just enough (bisection) that it spikes on at least
    ``share`` of the images ``x`` ``(N, 784)``; neurons already there keep their bias. A start
    with no silent class. Returns the passes of the output layer it took (1: nothing to do)."""
    hidden = nn.Sequential(model[0], model[1])(x)  # (T, N, H)
    head, bias = nn.Sequential(model[2], model[3], model[4]), model[2].bias.clone()
    passes = 0

    def firing(shift: torch.Tensor) -> torch.Tensor:  # (C,) share of images each spikes on
        nonlocal passes
        passes += 1
        model[2].bias.copy_(bias + shift)
        return (head(hidden) > 0).float().mean(dim=0)

    there = firing(torch.zeros_like(bias)) >= share
    if there.all():
        return passes
    low, high = torch.zeros_like(bias), torch.ones_like(bias)
    while not (reached := firing(high) >= share).all():  # a large enough shift fires on all
        high = torch.where(reached, high, 2 * high)
    for _ in range(iterations):
        middle = (low + high) / 2
        ok = firing(middle) >= share
        low, high = torch.where(ok, low, middle), torch.where(ok, middle, high)
    model[2].bias.copy_(bias + torch.where(there, 0.0, high))
    return passes


def build(options: dict[str, Any], model: nn.Module, seed: int) -> PolyStepOptimizer:
    """The ``snn`` preset's optimizer with the arm's ``shaping`` and ``blocks_per_step`` (every
    block unless the arm says otherwise)."""
    # the snn preset with epsilon and step radius constant at its schedules' start values: what
    # this probe measured (the preset decays both over the run since benchmarks/snn_schedules.py)
    constant = {k: PRESETS["snn"][k]["init"] for k in ("epsilon", "step_radius")}
    opt = PolyStepOptimizer(model, preset={**PRESETS["snn"], **constant}, seed=seed)
    if "shaping" in options:
        opt.shaping = shaping(options["shaping"])
    opt.blocks_per_step = options.get("blocks_per_step")
    opt.progress = False
    return opt


def run(
    arm: str, seed: int, budget: int, mnist_dir: str, test: bool = False, vary: str = "all"
) -> dict[str, Any]:
    """One run of ``arm``, the sources ``vary`` names seeded by ``seed`` (the others by 0);
    validation figures (and test ones only when ``test``)."""
    options = ARMS[arm]
    task = TASKS[TASK]
    seeds = seeds_of(seed, vary)
    splits = load_task_data(task, "cpu", seeds["data"], mnist_dir=mnist_dir)
    torch.manual_seed(seeds["init"])
    model = task.model(splits.num_features, splits.num_classes, "cpu")
    loaders = make_loaders(splits, BASE_BATCH, seed=seeds["data"], fast=True)
    stream = Stream(*splits.train.tensors, seed=seeds["data"])
    if "output_start" in options:
        output_start(model, splits.train.tensors[0][:512], options["output_start"])
    opt = build(options, model, seeds["draws"])
    val_x = splits.val.tensors[0]
    silent_start = silent(model, val_x)
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
        x, y = stream.next(size)
        opt.step_batch(x, y, loss_fn)
        spent += cost
        if "revive" in options:  # charged as full passes: one for the hidden layer, and each
            spent += (1 + output_start(model, x, options["revive"])) * size / BASE_BATCH
        selector.observe(model, int(spent), opt.iteration, 0.0)
    selector.observe(model, int(spent), opt.iteration, 0.0, force=True)
    record = {
        "arm": arm,
        "options": options,
        "seed": seed,
        "vary": vary,
        "seeds": seeds,
        "budget": budget,
        "spent": round(spent),
        "steps": opt.iteration,
        "candidates_per_step": per_step - 1,
        "val_selected": selector.best_val,
        "val_last": selector.curve[-1]["val_acc"],
        "selected_step": selector.best_step,
        "silent_start": silent_start,
        "silent_end": silent(model, val_x),
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


def _mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} +- {100 * sd:.1f}"


def _commits(rows: list[dict[str, Any]]) -> str:
    return ", ".join(sorted({str(r["code"]["commit"])[:7] for r in rows}))


def table(records: list[dict[str, Any]]) -> str:
    """Markdown: one row per (arm, budget), validation mean +- std over seeds; then the test
    figures of the runs made with ``--test`` (the arm chosen on validation)."""
    spread = [r for r in records if r.get("vary", "all") != "all"]
    records = [r for r in records if r.get("vary", "all") == "all"]
    groups: dict[tuple[str, int, bool], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["arm"], r["budget"], "test_acc_selected" in r), []).append(r)
    order = {name: i for i, name in enumerate(ARMS)}
    lines = [
        f"Hard-LIF SNN 784-128-10 (T=15), preset snn, task {TASK} at scale cpu (18,000 training "
        "images, 2,000 validation images carved from them); budget in candidate evaluations at "
        f"batch {BASE_BATCH}; one thread per run on a shared, loaded machine (wall time not "
        "compared). Validation accuracy in %, mean +- std over seeds; 'vs base' is the mean "
        "paired difference to base on the same seeds (val last), with the seeds ahead of base "
        "out of the seeds paired.",
        "",
        "| arm | options | budget | seeds | val selected | val last | vs base | steps | commit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = {
        (r["seed"], r["budget"]): r["val_last"]
        for r in records
        if r["arm"] == "base" and "test_acc_selected" not in r
    }
    tests = []
    for (arm, budget, test), rows in sorted(
        groups.items(), key=lambda g: (g[0][2], g[0][1], order.get(g[0][0], 99))
    ):
        if test:
            tests.append((arm, budget, rows))
            continue
        name = arm if arm in ARMS else f"{arm} (removed)"
        paired = [
            r["val_last"] - base[r["seed"], budget] for r in rows if (r["seed"], budget) in base
        ]
        ahead = sum(d > 0 for d in paired)
        versus = f"{100 * statistics.mean(paired):+.1f} ({ahead}/{len(paired)})" if paired else "-"
        lines.append(
            f"| {name} | `{json.dumps(rows[0]['options'])}` | {budget:,} | {len(rows)} | "
            f"{_mean_std([r['val_selected'] for r in rows])} | "
            f"{_mean_std([r['val_last'] for r in rows])} | {versus} | "
            f"{statistics.mean(r['steps'] for r in rows):.0f} | {_commits(rows)} |"
        )
    for arm, budget, rows in tests:
        lines.append(
            f"\nTest split, read once for the arm chosen on validation ({arm}, budget "
            f"{budget:,}, seeds {sorted(r['seed'] for r in rows)}): validation-selected model "
            f"{_mean_std([r['test_acc_selected'] for r in rows])} %, last "
            f"{_mean_std([r['test_acc_last'] for r in rows])} % (validation selected "
            f"{_mean_std([r['val_selected'] for r in rows])} %)."
        )
    if spread:
        lines += ["", spread_table(records + spread)]
    if any("silent_end" in r for r in records + spread):
        lines += ["", silent_finding(records + spread)]
    return "\n".join(lines)


def silent_finding(records: list[dict[str, Any]]) -> str:
    """A paragraph: the runs (any arm and budget, no test runs) that end with a silent output
    neuron or with many blank validation images, against the others."""
    rows = [r for r in records if "silent_end" in r and "test_acc_selected" not in r]
    dead = [r for r in rows if r["silent_end"]["output"] > 0]
    blank = [r for r in rows if r not in dead and r["silent_end"]["images"] >= BLANK]
    rest = [r for r in rows if r not in dead and r not in blank]

    def runs(group: list[dict[str, Any]]) -> str:
        return ", ".join(
            f"{r['arm']} {r['budget'] // 1000}k {r.get('vary', 'all')} {r['seed']}: "
            f"{100 * r['val_last']:.1f}"
            for r in sorted(group, key=lambda r: r["val_last"])
        )

    return (
        f"Silent outputs: of the {len(rows)} runs that record silence, {len(dead)} end with an "
        f"output neuron that spikes on no validation image, a class never predicted (val last: "
        f"{runs(dead) or '-'}); {len(blank)} more end with {100 * BLANK:.0f} % or more of the "
        f"validation images blank, no output spike at all ({runs(blank) or '-'}); the other "
        f"{len(rest)} end at val last "
        f"{_mean_std([r['val_last'] for r in rest]) if rest else '-'} %."
    )


def _silent(rows: list[dict[str, Any]], when: str, what: str) -> str:
    """Mean and range over ``rows`` of the fraction ``what`` silent at ``when``, in % ("-"
    when a run did not record it)."""
    if any(when not in r for r in rows):
        return "-"
    values = [100 * r[when][what] for r in rows]
    return f"{statistics.mean(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def spread_table(records: list[dict[str, Any]]) -> str:
    """Markdown: per arm and budget whose runs record silence or vary one source, the
    validation spread over seeds for each varied source and how silent the net was at the start
    and at the end (no test runs). The run with every seed 0 belongs to each source's row."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in records:
        if "test_acc_selected" not in r:
            groups.setdefault((r["arm"], r["budget"], r.get("vary", "all")), []).append(r)
    studied = {
        key[:2]
        for key, rows in groups.items()
        if key[2] != "all" or all("silent_start" in r for r in rows)
    }
    groups = {key: rows for key, rows in groups.items() if key[:2] in studied}
    for (arm, budget, vary), rows in list(groups.items()):
        zero = [r for r in rows if vary != "all" and not any(r["seeds"].values())]
        for source in SOURCES if zero else ():
            others = groups.setdefault((arm, budget, source), [])
            if not any(r["seed"] == 0 for r in others):
                others.append(zero[0])
    lines = [
        "Where the seed spread comes from: 'varied' names the source the seed sets (init: "
        "initial weights; draws: the optimizer's seed; data: training subset, validation split "
        "and batch order; all: the three), the other sources held at seed 0. Silent: % of "
        "hidden neurons / of validation images with no output spike, mean (min-max) over seeds.",
        "",
        "| arm | budget | varied | seeds | val selected | val last | val last per seed "
        "| silent hidden start | blank images start | blank images end |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {name: i for i, name in enumerate(ARMS)}
    for (arm, budget, vary), rows in sorted(
        groups.items(), key=lambda g: (g[0][1], order.get(g[0][0], 99), VARY.index(g[0][2]))
    ):
        rows = sorted(rows, key=lambda r: r["seed"])
        per_seed = " ".join(f"{100 * r['val_last']:.1f}" for r in rows)
        lines.append(
            f"| {arm} | {budget:,} | {vary} | {len(rows)} | "
            f"{_mean_std([r['val_selected'] for r in rows])} | "
            f"{_mean_std([r['val_last'] for r in rows])} | {per_seed} | "
            f"{_silent(rows, 'silent_start', 'hidden')} | "
            f"{_silent(rows, 'silent_start', 'images')} | {_silent(rows, 'silent_end', 'images')} |"
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
    ap.add_argument(
        "--vary", default="all", choices=VARY, help="the sources the seed sets (others: 0)"
    )
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
                and r.get("vary", "all") == args.vary
                for r in read(args.out)
            )  # fmt: skip
            if done:
                print(f"skip {arm} seed {seed} vary {args.vary} (recorded)", flush=True)
                continue
            record = run(arm, seed, args.budget, args.mnist_dir, test=args.test, vary=args.vary)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            print(json.dumps({k: v for k, v in record.items() if k != "code"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
