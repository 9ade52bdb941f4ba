"""A spiking net written as users write it vs :class:`~polystep.nn.SpikingMLP`: candidates/s.

``UserSNN`` is the hard-LIF 784-128-10 network as a plain ``nn.Module``: two ``nn.Linear``, a
Python loop over ``T`` in ``forward`` with leak, threshold ``(v >= θ).float()``, reset to 0 and
a spike count (the authors' ``SpikingMNISTNet`` shape). It gets the SAME weights as a
``SpikingMLP((784, 128, 10), num_steps=T)``, so both compute the same function (checked in the
run). One PolyStep step's candidates (the ``snn`` preset's space: factored rank 8, weights of at
most 1,024 entries direct; its radii and polytope) are scored on the same batch of MNIST
training images (uniform noise where ``../shared/data/mnist`` is absent) by:

* ``spiking_mlp``: ``evaluator="auto"`` on the ``SpikingMLP`` (the layered path);
* ``user_snn``: ``evaluator="auto"`` on the ``UserSNN`` (whatever path ``auto`` picks for it:
  the captured path, whose hard-LIF loop is handed to the fused kernel ``SpikingMLP`` gets; the
  notice ``auto`` gives, recorded, names the path);

alternating, ``--repeats`` times, one thread, in this one process. Prints one JSON line: the
candidates/s of each side per repeat (per wall second and per CPU second of this thread), the
evaluator each got, the ratios of the medians and the load average.

    python benchmarks/user_models.py                 # ~1 min on a loaded 2-core CPU
    python benchmarks/user_models.py --report results/user_models/*.jsonl   # markdown table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from polystep.blocks import propose_blocks
from polystep.data import find_idx_file, has_idx_files, read_idx
from polystep.evaluate import make_evaluator
from polystep.nn import SpikingMLP
from polystep.optimizer import PRESETS, build_subspace
from polystep.step import StepRule
from polystep.transform import ParamLayout

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"  # optional


class UserSNN(nn.Module):
    """Hard-LIF 784-128-10 as a user writes it (``fc1(x)`` recomputed every step)."""

    def __init__(self, num_steps: int = 15, beta: float = 0.95, threshold: float = 1.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 10)
        self.num_steps, self.beta, self.threshold = num_steps, beta, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v1 = torch.zeros(x.shape[0], 128, dtype=x.dtype)
        v2 = torch.zeros(x.shape[0], 10, dtype=x.dtype)
        count = torch.zeros(x.shape[0], 10, dtype=x.dtype)
        for _ in range(self.num_steps):
            v1 = self.beta * v1 + self.fc1(x)
            s1 = (v1 >= self.threshold).float()
            v1 = v1 * (1.0 - s1)
            v2 = self.beta * v2 + self.fc2(s1)
            s2 = (v2 >= self.threshold).float()
            v2 = v2 * (1.0 - s2)
            count = count + s2
        return count


def load_inputs(batch: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    if has_idx_files(MNIST):
        x = read_idx(find_idx_file(MNIST, "train-images-idx3-ubyte"))[:batch].reshape(batch, -1)
        y = read_idx(find_idx_file(MNIST, "train-labels-idx1-ubyte"))[:batch].astype(np.int64)
        return torch.from_numpy(x / 255.0).float(), torch.from_numpy(y), "mnist"
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 784, generator=gen)
    return x, torch.randint(0, 10, (batch,), generator=gen), "uniform noise"


def timed(fn, min_time: float) -> tuple[float, float]:
    """Wall and CPU (this thread) seconds per call of ``fn`` (after one warm-up call),
    repeated for at least ``min_time`` wall seconds. On a loaded machine the CPU time is the
    steadier figure: waiting for a core does not count."""
    fn()
    calls, start, cpu = 0, time.perf_counter(), time.thread_time()
    while True:
        fn()
        calls += 1
        if time.perf_counter() - start >= min_time:
            wall = time.perf_counter() - start
            return wall / calls, (time.thread_time() - cpu) / calls


def report(paths: list[str]) -> int:
    """A markdown table of the records in ``paths`` (one JSON line each)."""
    print(
        "| record | user class got | SpikingMLP cand/s | user class cand/s | ratio (wall) "
        "| ratio (CPU time) | load |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for path in paths:
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            got = r["user_snn_evaluator"].split(" ")[0]
            got += " + fused kernel" if "fused hard-LIF kernel" in r["user_snn_evaluator"] else ""
            mlp = statistics.median(r["spiking_mlp_candidates_per_s"])
            user = statistics.median(r["user_snn_candidates_per_s"])
            ratio = r["ratio_user_to_spiking_mlp"]
            cpu, load = r.get("ratio_cpu_time", "-"), r.get("load_average_1min", "-")
            row = f"| `{Path(path).name}` | {got} | {mlp:,.0f} | {user:,.0f} | {ratio} | {cpu} "
            print(row + f"| {load} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--num-steps", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--report", nargs="+", metavar="JSONL", help="print records as a table")
    args = parser.parse_args(argv)
    if args.report:
        return report(args.report)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    reference = SpikingMLP((784, 128, 10), num_steps=args.num_steps)
    user = UserSNN(args.num_steps)
    with torch.no_grad():
        for p in reference.parameters():
            p.mul_(3.0)  # neurons fire at init (as in the demo and benchmarks/throughput.py)
        for mine, theirs in ((user.fc1, reference[0]), (user.fc2, reference[2])):
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)
    x, y, source = load_inputs(args.batch)
    with torch.no_grad():
        if not torch.equal(user(x), reference(x)):
            raise SystemExit("UserSNN and SpikingMLP disagree: the comparison would be unfair")
    preset = PRESETS["snn"]
    loss_fn = nn.CrossEntropyLoss()
    rule = StepRule.build(
        epsilon=preset["epsilon"],
        step_radius=preset["step_radius"],
        probe_radius=preset["probe_radius"],
        polytope=preset["polytope"],
        num_probe=preset["num_probe"],
    )
    sides: dict[str, dict[str, object]] = {}
    for name, model in (("spiking_mlp", reference), ("user_snn", user)):
        space = build_subspace("factored", ParamLayout.from_module(model), preset, seed=0)
        z = torch.zeros(space.dim)
        cands = propose_blocks(rule, z, space.block_dim, 0, torch.Generator().manual_seed(0))[1]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ev = make_evaluator("auto", model, loss_fn, space)
        notes = [str(w.message) for w in caught]
        sides[name] = {"ev": ev, "cands": cands, "notes": notes, "per_s": [], "per_cpu_s": []}
    for _ in range(args.repeats):
        for side in sides.values():
            ev, cands = side["ev"], side["cands"]
            wall, cpu = timed(lambda ev=ev, c=cands: ev.evaluate(c, (x, y)), args.min_time)
            side["per_s"].append(round(len(cands) / wall, 1))
            side["per_cpu_s"].append(round(len(cands) / cpu, 1))
    median = {k: statistics.median(v["per_s"]) for k, v in sides.items()}
    median_cpu = {k: statistics.median(v["per_cpu_s"]) for k, v in sides.items()}
    record = {
        "task": f"hard-LIF SNN 784-128-10, T={args.num_steps}, user nn.Module vs SpikingMLP",
        "inputs": source,
        "batch": args.batch,
        "threads": 1,
        "repeats": args.repeats,
        "space": "snn preset: factored rank 8, direct_max 1024, orthoplex p=8",
        "candidates_per_step": len(sides["user_snn"]["cands"]),
        **{
            f"{k}_evaluator": type(v["ev"]).__name__
            + (f" ({'; '.join(v['notes'])})" if v["notes"] else "")
            for k, v in sides.items()
        },
        **{f"{k}_candidates_per_s": v["per_s"] for k, v in sides.items()},
        **{f"{k}_candidates_per_cpu_s": v["per_cpu_s"] for k, v in sides.items()},
        "ratio_user_to_spiking_mlp": round(median["user_snn"] / median["spiking_mlp"], 3),
        "ratio_cpu_time": round(median_cpu["user_snn"] / median_cpu["spiking_mlp"], 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
