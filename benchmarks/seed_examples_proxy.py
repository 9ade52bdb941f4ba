"""A fast proxy of the README network snippet (issue 15): which search space makes it learn?

The snippet's optimizer, argument for argument, on scikit-learn's 8x8 digits (standardised,
stratified 80/20 test split, 10 % of the rest held out and unused; a 64-64-10 MLP; batch 128
shuffled after ``torch.manual_seed(seed)``; 5 epochs = 55 steps), test accuracy on the 359 test
images. A run takes seconds instead of the ~8 minutes of the MNIST snippet, so search spaces can
be compared over seeds:

* ``hybrid``: ``HybridSubspace.from_layout(layout, rank=8)`` of the package running it;
* ``unit_and_mix`` / ``unit_only`` / ``dense_qr``: spaces defined HERE with our segment classes,
  all with the rank-8 LoRA coordinate count per weight: the hybrid space polystep had before
  issue 15 (``dW = A B + C E``: half its coordinates move one unit's weights), only
  coordinates that move one unit (``dW = A B``), and a dense QR-orthonormal random map per
  weight (the authors' construction for layers that fit in memory).

With ``--against VENV`` the authors' package runs its own ``hybrid`` too (with its default
``restore_best=True``, which keeps the weights of lowest loss on the first training batch, and
with ``restore_best=False``). Records: ``results/seed_examples/proxy.jsonl``; ``--report``
prints the table.

    python benchmarks/seed_examples_proxy.py --against /work/venvs/orig
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_examples import (
    OUT,
    append_record,
    collect,
    git_commit,
    load_average,
    package_version,
    read_records,
)

OURS_SPACES = ("hybrid", "unit_and_mix", "unit_only", "dense_qr")
# Runs of our HybridSubspace as rebuilt after the "hybrid" rows (which are dW = C E, commit
# 4d40e85): the paper package's dense orthonormal map per weight, with extra optimizer keywords
# and/or the paper's keep-best rule (polystep.keep_best.KeepBestOnBatch).
PAPER_VARIANTS: dict[str, dict[str, Any]] = {
    "hybrid_paper": {},
    "hybrid_paper_simplex": {"optimizer": {"polytope": "simplex"}},
    "hybrid_paper_keep_best": {"keep_best": True},
    "hybrid_paper_simplex_keep_best": {"optimizer": {"polytope": "simplex"}, "keep_best": True},
}
RANK, BLOCK = 8, 8


def variant_space(name: str, layout: Any) -> Any:
    """One of the spaces defined here (our package only; see the module docstring)."""
    from dataclasses import dataclass

    import torch

    from polystep.subspace.base import Subspace
    from polystep.subspace.segments import (
        DirectSegment,
        LowRankSegment,
        Segment,
        orthonormal_rows,
        round_up,
        seeded_generator,
    )

    @dataclass
    class DenseSegment(Segment):
        """``dW = P @ coords`` with ``P (numel, k)`` orthonormal columns."""

        basis: torch.Tensor | None = None

        def delta(self, coords: torch.Tensor) -> torch.Tensor:
            k = self.basis.shape[1]
            return (coords[:, :k] @ self.basis.T.to(coords)).reshape(-1, *self.shape)

    class Variant(Subspace):
        kind = name

        def _build(self, seed: int, draw: int, *, sizes_only: bool = False) -> list[Segment]:
            out: list[Segment] = []
            start = 0
            for index, e in enumerate(self.layout.entries):
                d_out, d_in = e.rows_cols
                r = min(RANK, d_out, d_in)
                count = r * (d_out + d_in)
                gen = seeded_generator(seed, name, index, draw)
                if not e.is_matrix or count >= e.numel:
                    size = round_up(e.numel, BLOCK)
                    seg: Segment = DirectSegment(e.name, e.shape, start, size)
                elif name == "unit_and_mix":
                    size = round_up(count, BLOCK)
                    right = orthonormal_rows(r, d_in, gen)
                    left = orthonormal_rows(r, d_out, gen).T.contiguous()
                    seg = LowRankSegment(e.name, e.shape, start, size, right=right, left=left)
                elif name == "unit_only":
                    rows = min(d_in, -(-count // d_out))
                    size = round_up(rows * d_out, BLOCK)
                    seg = LowRankSegment(
                        e.name, e.shape, start, size, right=orthonormal_rows(rows, d_in, gen)
                    )
                else:  # dense_qr
                    size = round_up(count, BLOCK)
                    basis, _ = torch.linalg.qr(torch.randn(e.numel, count, generator=gen))
                    seg = DenseSegment(e.name, e.shape, start, size, basis=basis)
                out.append(seg)
                start += size
            return out

    return Variant(layout, block_dim=BLOCK)


def run_digits(seed: int, space: str, data_file: Path, restore_best: bool | None) -> dict:
    import torch
    import torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset

    from polystep import PolyStepOptimizer, TrainConfig, train
    from polystep.epsilon import CosineEpsilon
    from polystep.hybrid_subspace import HybridSubspace
    from polystep.transform import ParamLayout

    torch.set_num_threads(1)
    data = torch.load(data_file)
    torch.manual_seed(seed)
    loader = DataLoader(TensorDataset(*data["train"]), batch_size=128, shuffle=True)
    start = time.perf_counter()
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    layout = ParamLayout.from_module(model)
    variant = PAPER_VARIANTS.get(space, {})
    if space == "hybrid" or space in PAPER_VARIANTS:
        subspace = HybridSubspace.from_layout(layout, rank=RANK)
    else:
        subspace = variant_space(space, layout)
    optimizer = PolyStepOptimizer(
        model,
        subspace=subspace,
        solver="softmax",
        epsilon=CosineEpsilon(init=10.0, target=0.1, decay=0.02),
        step_radius=CosineEpsilon(init=5.0, target=1.0, decay=0.008),
        probe_radius=CosineEpsilon(init=10.0, target=2.0, decay=0.016),
        **variant.get("optimizer", {}),
    )
    extra: dict[str, Any] = {} if restore_best is None else {"restore_best": restore_best}
    if variant.get("keep_best"):
        from polystep.keep_best import KeepBestOnBatch, first_batch

        keep = KeepBestOnBatch(model, nn.CrossEntropyLoss(), first_batch(loader), optimizer)
        extra["callbacks"] = [keep]
    train(model, loader, nn.CrossEntropyLoss(), optimizer, TrainConfig(epochs=5, **extra))
    wall = time.perf_counter() - start
    x_test, y_test = data["test"]
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    return {"test_accuracy": round(accuracy, 4), "wall_s": round(wall, 2)}


def save_digits(path: Path) -> None:
    """The digits splits of ``polystep.data`` as plain tensors (no sklearn in the other venv)."""
    import torch

    from polystep.data import load_digits_splits

    splits = load_digits_splits(val_fraction=0.1, seed=0, normalize="standard")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"train": splits.train.tensors, "test": splits.test.tensors}, path)


def start(python: str, seed: int, space: str, data: Path, restore: bool | None, log: Path) -> Any:
    import os
    import subprocess

    cmd = [python, str(Path(__file__).resolve()), "--worker", space, "--seed", str(seed)]
    cmd += ["--data", str(data), "--restore-best", json.dumps(restore)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, cwd="/", env=env
    )


def run_all(args: argparse.Namespace) -> None:
    """Every (package, space, restore_best) of this invocation for each seed, all of one seed
    at the same time (one thread each), so that both packages see the same machine load."""
    path = args.out / "proxy.jsonl"
    data = args.out / "logs" / "digits.pt"
    save_digits(data)
    done = {
        (r["package"], r["space"], r["restore_best"], r["seed"], r.get("tag", ""))
        for r in read_records(path)
    }
    runs: list[tuple[str, str, str, bool | None]] = [
        ("ours", sys.executable, space, None) for space in args.spaces
    ]
    if args.against and not args.ours_only:
        theirs = str(Path(args.against) / "bin" / "python")
        runs += [("theirs", theirs, "hybrid", None), ("theirs", theirs, "hybrid", False)]
    for seed in args.seeds:
        todo = [r for r in runs if (r[0], r[2], r[3], seed, args.tag) not in done]
        load0, commit = load_average(), git_commit()
        procs = []
        for side, python, space, restore in todo:
            log = args.out / "logs" / f"proxy_{side}_{space}_{restore}_seed{seed}.log"
            procs.append(
                (side, space, restore, log, start(python, seed, space, data, restore, log))
            )
        for side, space, restore, log, proc in procs:
            record = {
                "package": side,
                "space": space,
                "restore_best": restore,
                "seed": seed,
                "tag": args.tag,
                **collect(proc, log),
                "load_average_start": load0,
                "concurrent_runs": len(procs),
                "commit": commit,
            }
            append_record(path, record)
            print(json.dumps(record), flush=True)


def report(out: Path) -> str:
    rows = read_records(out / "proxy.jsonl")
    groups: dict[tuple[str, str, str, Any], list[dict]] = {}
    for r in rows:
        key = (r.get("tag", ""), r["package"], r["space"], r["restore_best"])
        groups.setdefault(key, []).append(r)
    lines = [
        "| runs | package | space | restore_best | test accuracy by seed | mean | wall_s mean "
        "| commits |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (tag, side, space, restore), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        accs = [r["test_accuracy"] for r in rs]
        by_seed = " / ".join(f"{a:.3f} (s{r['seed']})" for a, r in zip(accs, rs, strict=True))
        wall = statistics.mean(r["wall_s"] for r in rs)
        restore_text = "default" if restore is None else str(restore)
        commits = ", ".join(dict.fromkeys(r["commit"] for r in rs))
        lines.append(
            f"| {tag or 'untagged'} | {side} | {space} | {restore_text} | {by_seed} | "
            f"{statistics.mean(accs):.3f} | {wall:.1f} | {commits} |"
        )
    return "\n".join([*lines, "", *paired_lines(rows)])


def paired_lines(rows: list[dict]) -> list[str]:
    """Ours ``hybrid`` of each tag against theirs (``hybrid``, their default restore_best) on
    the same seeds: the mean of the per-seed differences and its standard error. Theirs is the
    fixed 1.1.0 release, so its run of a seed under any tag serves (the same tag's first)."""
    theirs: dict[int, float] = {}
    for r in sorted(rows, key=lambda r: r.get("tag", "") == ""):  # tagged (concurrent) first
        if r["package"] == "theirs" and r["space"] == "hybrid" and r["restore_best"] is None:
            theirs.setdefault(r["seed"], r["test_accuracy"])
    lines = []
    tags = dict.fromkeys(r.get("tag", "") for r in rows)
    for tag in tags:
        mine = [
            r
            for r in rows
            if r.get("tag", "") == tag and r["package"] == "ours" and r["space"] == "hybrid"
        ]
        ours = {r["seed"]: r["test_accuracy"] for r in mine}
        commits = ", ".join(dict.fromkeys(r["commit"] for r in mine))
        diffs = [ours[s] - theirs[s] for s in sorted(ours) if s in theirs]
        if len(diffs) < 2:
            continue
        se = statistics.stdev(diffs) / math.sqrt(len(diffs))
        lines.append(
            f"- ours `hybrid` (runs {tag or 'untagged'}, commits {commits}) - theirs, paired over "
            f"{len(diffs)} seeds: "
            f"{statistics.mean(diffs):+.4f} (standard error {se:.4f}); ours mean "
            f"{statistics.mean(ours[s] for s in ours if s in theirs):.4f}, theirs "
            f"{statistics.mean(theirs[s] for s in ours if s in theirs):.4f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", help="a venv holding the authors' polystep==1.1.0")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--report", action="store_true")
    spaces = [*OURS_SPACES, *PAPER_VARIANTS]
    parser.add_argument("--spaces", nargs="+", choices=spaces, default=spaces)
    parser.add_argument("--ours-only", action="store_true", help="skip the authors' runs")
    parser.add_argument(
        "--tag", default="", help="label of a set of runs (a seed is rerun under a new tag)"
    )
    parser.add_argument("--worker", choices=spaces, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--restore-best", default="null", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = run_digits(args.seed, args.worker, args.data, json.loads(args.restore_best))
        print(json.dumps({**result, "package_path": package_version()}))
    elif args.report:
        print(report(args.out))
    else:
        run_all(args)


if __name__ == "__main__":
    main()
