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
"""

from __future__ import annotations

import argparse
import json
import platform
import time

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--num-steps", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per measurement")
    parser.add_argument("--evaluators", default="reference,vmap,layered")
    args = parser.parse_args(argv)
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
