"""Candidate evaluations per second: reference, vmap and layered evaluators vs a plain forward.

For each model (MLP 784-128-10; hard-LIF SNN 784-128-10 and 64-64-10, T=15, direct-current
input) and search space (hybrid rank 8, the seed-snippet space; factored rank 8 with a direct
output layer), one PolyStep step's candidates are drawn and scored by each evaluator on the same
batch of random inputs. A plain forward of the same model and batch gives forwards per second;
the ratio ``candidate evals/s / plain forwards/s`` says how many candidates cost one ordinary
forward. Slow evaluators score an evenly spaced subset of the candidates. One JSON line per
measurement.

    python benchmarks/throughput.py                 # < 2 min on 2 CPU cores
    python benchmarks/throughput.py --batch 512 --device cuda
    python benchmarks/throughput.py --versus-authors /work/venvs/orig/bin/python

``--versus-authors PYTHON`` instead runs whole optimizer steps side by side with the authors'
package 1.1.0 (installed for ``PYTHON``, never imported here): the hard-LIF SNN 784-128-10, T=15,
on the same MNIST training images, one thread, each package in its own process started by this
one invocation, alternating, each with its recommended SNN configuration (ours: preset ``snn``;
theirs: the paper runner's ``PSTORCH_CONFIGS["snn"]``: hybrid rank 4, orthoplex, epsilon 0.5,
step radius 2, probe radius 1, random rotations, absorb every 20 steps, chunk 1024, biased
rotation). Candidate evaluations/s = candidates scored / wall time of the steps after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from polystep.blocks import BlockCandidates, propose_blocks
from polystep.evaluate import make_evaluator
from polystep.nn import SpikingMLP
from polystep.step import StepRule
from polystep.subspace import FactoredSubspace, HybridSubspace
from polystep.transform import ParamLayout

SUBSET = {"reference": 24, "vmap": 192, "layered": None}


def models(num_steps: int) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    snn = SpikingMLP((784, 128, 10), num_steps=num_steps)
    small_snn = SpikingMLP((64, 64, 10), num_steps=num_steps)  # the digits-sized anchor
    with torch.no_grad():
        for p in [*snn.parameters(), *small_snn.parameters()]:
            p.mul_(3.0)  # neurons fire at init (as in the demo)
    mlp = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    return {
        "mlp_784_128_10": mlp,
        f"snn_lif_784_128_10_T{num_steps}": snn,
        f"snn_lif_64_64_10_T{num_steps}": small_snn,
    }


def spaces(layout: ParamLayout) -> dict[str, object]:
    return {
        "hybrid_r8": HybridSubspace.from_layout(layout, rank=8, seed=0),
        "factored_r8_direct_out": FactoredSubspace.from_layout(
            layout, rank=8, direct_max=2048, seed=0
        ),
    }


def subset(cands: BlockCandidates, keep: int | None) -> BlockCandidates:
    if keep is None or keep >= len(cands):
        return cands
    idx = torch.linspace(0, len(cands) - 1, keep).long()
    return BlockCandidates(block=cands.block[idx], offset=cands.offset[idx], dim=cands.dim)


def timed(fn, min_time: float) -> float:
    """Seconds per call of ``fn`` (after one warm-up), repeated for at least ``min_time``."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / calls


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"

# Run in a child process: argv = [package, batch, min_time, mnist_dir]; prints one JSON line.
SIDE = r"""
import gzip, json, sys, time
import torch
from torch import nn
package, batch, min_time, mnist = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
torch.set_num_threads(1)
torch.manual_seed(0)
def idx(name, skip, count, width):  # MNIST IDX (gzip): header, then unsigned bytes
    data = gzip.open(f"{mnist}/{name}.gz").read()[skip : skip + count * width]
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).reshape(count, width)
x = idx("train-images-idx3-ubyte", 16, 8 * batch, 784).float() / 255.0
y = idx("train-labels-idx1-ubyte", 8, 8 * batch, 1).flatten().long()
loss_fn = nn.CrossEntropyLoss()
if package == "ours":
    from polystep.nn import spiking_mlp
    from polystep.optimizer import PolyStepOptimizer
    model = spiking_mlp((784, 128, 10), num_steps=15)
    opt = PolyStepOptimizer(model, preset="snn", seed=0)
    opt.set_horizon(steps=1_000)  # the preset's schedules over the run; a step costs the same
    ev = opt.evaluator(loss_fn)
    count = [0]
    plain = ev.evaluate
    def counted(cands, b):
        count[0] += len(cands)
        return plain(cands, b)
    ev.evaluate = counted
    evals = lambda: count[0]
    config = "preset snn (factored rank 8, direct_max 1024, orthoplex p=8)"
else:
    from polystep import HybridSubspace, ParamLayout, PolyStepOptimizer
    class SNN(nn.Module):  # the paper's SpikingMNISTNet: fc1(x) recomputed every step
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(784, 128), nn.Linear(128, 10)
        def forward(self, x):
            m1 = torch.zeros(x.shape[0], 128, dtype=x.dtype)
            m2 = torch.zeros(x.shape[0], 10, dtype=x.dtype)
            count = torch.zeros(x.shape[0], 10, dtype=x.dtype)
            for _ in range(15):
                m1 = 0.95 * m1 + self.fc1(x)
                s1 = (m1 >= 1.0).to(x.dtype)
                m1 = m1 * (1 - s1)
                m2 = 0.95 * m2 + self.fc2(s1)
                s2 = (m2 >= 1.0).to(x.dtype)
                m2 = m2 * (1 - s2)
                count = count + s2
            return count
    model = SNN()
    space = HybridSubspace.from_layout(
        ParamLayout.from_module(model), rank=4, seed=0, rotation_mode="random",
        rotation_interval=0, absorb_mode="periodic", absorb_interval=20,
    )
    opt = PolyStepOptimizer(
        model, subspace=space, epsilon=0.5, step_radius=2.0, probe_radius=1.0, num_probe=1,
        polytope_type="orthoplex", chunk_size=1024, biased_rotation=True, solver="softmax", seed=0,
    )
    evals = lambda: opt.candidate_evals
    config = "paper SNN config (hybrid rank 4, orthoplex p=8, eps 0.5, r_s 2, r_p 1, chunk 1024)"
def step(k):
    sl = slice((k % 8) * batch, (k % 8 + 1) * batch)
    opt.step_batch(x[sl], y[sl], loss_fn=loss_fn)
step(0)
start, before, k = time.perf_counter(), evals(), 1
while time.perf_counter() - start < min_time or k < 3:
    step(k)
    k += 1
elapsed = time.perf_counter() - start
print(json.dumps({"package": package, "config": config, "steps": k - 1,
                  "candidates": evals() - before, "seconds": round(elapsed, 2),
                  "candidate_evals_per_s": round((evals() - before) / elapsed, 1)}))
"""


def versus_authors(python: str, batch: int, min_time: float, rounds: int) -> int:
    """Side by side with the authors' package (module docstring); one JSON line at the end."""
    if not Path(python).exists():
        raise SystemExit(f"--versus-authors: no interpreter at {python}")
    runs: dict[str, list[dict]] = {"ours": [], "authors": []}
    for _ in range(rounds):
        for package, exe in (("ours", sys.executable), ("authors", python)):
            args = [exe, "-c", SIDE, package, str(batch), str(min_time), str(MNIST)]
            done = subprocess.run(args, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{package} run failed:\n{done.stderr[-2000:]}")
            runs[package].append(json.loads(done.stdout.strip().splitlines()[-1]))
    best = {k: max(r["candidate_evals_per_s"] for r in v) for k, v in runs.items()}
    record = {
        "task": "hard-LIF SNN 784-128-10, T=15, MNIST train images",
        "batch": batch,
        "threads": 1,
        "rounds": rounds,
        "ours": runs["ours"],
        "authors": runs["authors"],
        "ratio_best_of_rounds": round(best["ours"] / best["authors"], 1),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    print(json.dumps(record), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--num-steps", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per measurement")
    parser.add_argument("--evaluators", default="reference,vmap,layered")
    parser.add_argument("--versus-authors", metavar="PYTHON", help="see the module docstring")
    parser.add_argument("--rounds", type=int, default=2, help="--versus-authors: alternations")
    args = parser.parse_args(argv)
    if args.versus_authors:
        return versus_authors(args.versus_authors, args.batch, args.min_time, args.rounds)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    machine = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
    }
    loss_fn = nn.CrossEntropyLoss()
    for name, model in models(args.num_steps).items():
        model = model.to(device)
        x = torch.rand(args.batch, model[0].in_features, device=device)
        y = torch.randint(0, 10, (args.batch,), device=device)

        def plain(model: nn.Module = model, x: torch.Tensor = x, y: torch.Tensor = y) -> None:
            with torch.no_grad():
                loss_fn(model(x), y)
            sync(device)

        plain_per_s = 1.0 / timed(plain, args.min_time)
        for space_name, space in spaces(ParamLayout.from_module(model)).items():
            space.to(device)
            rule = StepRule.build(epsilon=0.1, step_radius=0.05, probe_radius=0.1)
            z = torch.zeros(space.dim, device=device)
            gen = torch.Generator().manual_seed(0)
            cands = propose_blocks(rule, z, space.block_dim, 0, gen)[1]
            for kind in args.evaluators.split(","):
                ev = make_evaluator(kind, model, loss_fn, space)
                some = subset(cands, SUBSET[kind])

                def run(ev=ev, some=some, batch=(x, y)) -> None:
                    ev.evaluate(some, batch)
                    sync(device)

                per_s = len(some) / timed(run, args.min_time)
                record = {
                    "model": name,
                    "subspace": space_name,
                    "evaluator": kind,
                    "batch": args.batch,
                    "dim": space.dim,
                    "candidates_per_step": len(cands),
                    "candidates_measured": len(some),
                    "candidate_evals_per_s": round(per_s, 1),
                    "plain_forwards_per_s": round(plain_per_s, 1),
                    "ratio_candidate_to_plain": round(per_s / plain_per_s, 3),
                    "fallback": getattr(ev, "fallback_reason", None),
                    **machine,
                }
                print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
