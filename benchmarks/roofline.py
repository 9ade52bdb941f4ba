"""Roofline of candidate evaluation: measured candidates/s against the machine's own limit.

For every table model (``polystep.bench.tasks.TASKS``: hard-LIF SNN 784-128-10 T=15, int8 MLP,
argmax attention, staircase MLP, hard MoE, plain MLP; hidden width 128) and the search space of
the preset its task uses, one PolyStep step's candidates are scored by the layered evaluator on
``B`` real MNIST training images (random pixels where the IDX files are absent), and the run
calibrates the machine it is on, at the same thread count, at the same time:

* ``elem_rate``: elements/s of a fused elementwise kernel (``torch.addcmul`` on a cache-sized
  float32 tensor, counted as 2 operations per element);
* ``gemm_rate``: flop/s of a float32 GEMM of the shape of the model's widest layer at batch B.

Minimal work per candidate of the layered path (dense, i.e. before any sample sparsity). A
candidate moves one block of ``p`` coordinates of one parameter of layer ``i``; the layers below
``i`` are shared by all candidates and cost nothing per candidate. With ``R_l`` rows (samples ×
time steps) and ``F_l`` features at the output of layer ``l``:

* unit-sparse candidate (a Linear-like layer's weight rows, factor ``A`` rows or bias, touching
  ``k`` output units), reaching Linear ``j`` through unit-wise layers:
  ``2·R_i·p`` (its pre-activation change) + ``Σ_{i<l<j} ops_l·k/F_l`` (those units through the
  unit-wise layers) + ``2·R_j·k·F_j`` (rank-``k`` update of layer ``j``'s output) +
  ``Σ_{l>j} ops_l`` (the rest of the net, dense) + ``3·B·C`` (cross-entropy);
* any other candidate: ``ops_i + Σ_{l>i} ops_l + 3·B·C`` (its layer and the rest, dense),

where ``ops_l`` splits into GEMM flops (``2·R·F_in·F_out`` per linear map) and elementwise
operations (LIF: 4 per neuron-step; spike count, ReLU: 1 per element; staircase: 4; argmax
routing: per score and per gated element; int8 / binary weights of a perturbed row: 3 per weight).
The cross-entropy counts 3 operations per logit (maximum, exponential, sum): an ``exp`` counted
as one operation, where the float32 fused kernels' vectorized polynomial takes about 20, so for
a model whose candidates are mostly cross-entropy (the plain MLP) the limit is generous. The
limit is ``1 / (elem_ops / elem_rate + gemm_flops / gemm_rate)`` averaged over the step's
candidate mix (each segment weighted by its candidates). Event-driven evaluation skips samples
a candidate leaves unchanged, so a measured figure above 100 % is possible and says so. Each
figure is the best of 5 timing windows; on a machine whose load exceeds its free cores the
multi-thread calibration (short kernels that wait on every thread) collapses and its percentage
means nothing: the table prints the load beside each row.

``candidates_per_s`` is the default layered path (fused candidate kernels where the layers
declare them, :mod:`polystep.evaluate.fused`); ``eager_candidates_per_s`` the same evaluator
with its eager torch suffix (``fused=False``), timed in windows that alternate with the fused
path's in the same run, so ``fused_over_eager`` holds on a loaded machine where absolute
figures drift;
``fused_fraction`` is the share of the step's candidates a fused kernel scored. The
``*_per_cpu_s`` figures count candidates per second of process CPU time (all threads): on one
thread of a machine loaded past its cores, where wall-clock figures mean little, they estimate
what an idle core would do.

    python benchmarks/roofline.py                    # ~2 min on 2 CPU cores
    python benchmarks/roofline.py --report results/roofline_cpu.jsonl   # markdown table

One JSON line per model and thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from polystep.bench.tasks import TASKS
from polystep.blocks import propose_blocks
from polystep.data import find_idx_file, has_idx_files, read_idx
from polystep.evaluate import LayeredEvaluator
from polystep.evaluate.layered import sequential_layers
from polystep.evaluate.traits import is_unitwise
from polystep.nn import (
    LIF,
    ArgmaxAttention,
    BinaryLinear,
    HardMoE,
    QuantLinear,
    SpikeCount,
    Staircase,
)
from polystep.optimizer import PRESETS, build_subspace
from polystep.step import StepRule
from polystep.subspace.segments import DirectSegment, LowRankSegment
from polystep.transform import ParamLayout

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"  # optional
CLASSES = {"moe_20": 20}


def load_inputs(batch: int, classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``batch`` MNIST training images in [0, 1] and labels; uniform noise if MNIST is absent."""
    gen = torch.Generator().manual_seed(seed)
    if has_idx_files(MNIST):
        x = read_idx(find_idx_file(MNIST, "train-images-idx3-ubyte"))[:batch].reshape(batch, -1)
        y = read_idx(find_idx_file(MNIST, "train-labels-idx1-ubyte"))[:batch].astype(np.int64)
        return torch.from_numpy(x / 255.0).float(), torch.from_numpy(y) % classes, "mnist"
    x = torch.rand(batch, 784, generator=gen)
    return x, torch.randint(0, classes, (batch,), generator=gen), "uniform noise"


# -- counting --------------------------------------------------------------------------------
def layer_ops(layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """``(gemm_flops, elementwise_ops)`` of one dense forward of ``layer`` on ``x -> y``."""
    rows = y.numel() // y.shape[-1]
    if isinstance(layer, nn.Linear):
        return 2.0 * rows * layer.in_features * layer.out_features, float(y.numel())
    if isinstance(layer, LIF):
        return 0.0, 4.0 * y.numel()
    if isinstance(layer, Staircase):
        return 0.0, 4.0 * y.numel()
    if isinstance(layer, SpikeCount):
        return 0.0, float(x.numel())
    if isinstance(layer, ArgmaxAttention):
        keys, dim = layer.keys.shape
        return 2.0 * rows * dim * (keys + dim), float(rows * (keys + 3 * dim))
    if isinstance(layer, HardMoE):
        n_exp, dim = len(layer.experts), layer.gate.in_features
        hid = layer.experts[0][0].out_features
        return 2.0 * rows * (dim * n_exp + n_exp * 2 * dim * hid), float(
            rows * n_exp * (hid + 2 * dim)
        )
    return 0.0, float(y.numel())


def block_units(seg: object, block: int, p: int) -> int:
    """Output units one block of a Linear layer's weight or bias segment touches."""
    cols = [block * p - seg.start + q for q in range(p)]
    if isinstance(seg, LowRankSegment):
        r = seg.right.shape[0]
        return len({c // r for c in cols if c < seg.a_size})
    d_in = seg.numel // int(seg.shape[0]) if len(seg.shape) > 1 else 1
    return len({c // d_in for c in cols if c < seg.numel})


def candidate_ops(model: nn.Module, space: object, x: torch.Tensor) -> dict[str, float]:
    """Mean minimal ``(gemm_flops, elem_ops)`` per candidate over one step's candidate mix."""
    layers = sequential_layers(model)
    acts = [x]
    with torch.no_grad():
        for layer in layers:
            acts.append(layer(acts[-1]))
    ops = [layer_ops(layer, acts[k], acts[k + 1]) for k, layer in enumerate(layers)]
    batch, classes = acts[-1].shape
    loss = 3.0 * batch * classes
    canon = {id(p): k for k, p in space.layout.parameters(model).items()}
    site = {
        canon[id(p)]: (i, local)
        for i, layer in enumerate(layers)
        for local, p in layer.named_parameters()
        if id(p) in canon
    }
    p = space.block_dim
    total_g = total_e = weight = 0.0
    for seg in space.segments:
        i, local = site[seg.name]
        layer = layers[i]
        j = i + 1
        while j < len(layers) and is_unitwise(layers[j]):
            j += 1
        rowwise = isinstance(layer, nn.Linear) and local in ("weight", "bias")
        reaches = j == len(layers) or isinstance(layers[j], nn.Linear)
        unit_ok = rowwise and isinstance(seg, DirectSegment | LowRankSegment) and reaches
        for block in range(seg.start // p, (seg.start + seg.size) // p):
            if unit_ok:
                k = block_units(seg, block, p)
                rows_i = acts[i + 1].numel() // acts[i + 1].shape[-1]
                e = 2.0 * rows_i * p
                if isinstance(layer, QuantLinear | BinaryLinear):
                    e += 3.0 * k * layer.in_features
                e += sum(ops[m][1] * k / acts[m + 1].shape[-1] for m in range(i + 1, j))
                g = 0.0
                if j < len(layers):
                    rows_j = acts[j + 1].numel() // acts[j + 1].shape[-1]
                    e += 2.0 * rows_j * k * acts[j + 1].shape[-1]
                    g += sum(ops[m][0] for m in range(j + 1, len(layers)))
                    e += sum(ops[m][1] for m in range(j + 1, len(layers)))
            else:
                g = sum(ops[m][0] for m in range(i, len(layers)))
                e = sum(ops[m][1] for m in range(i, len(layers)))
            total_g += g
            total_e += e + loss
            weight += 1
    return {"gemm_flops": total_g / weight, "elem_ops": total_e / weight}


# -- calibration -----------------------------------------------------------------------------
def windows(
    fns: list[Callable[[], object]],
    min_time: float,
    device: torch.device,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Seconds of ``clock`` per call of each of ``fns``: the best of 5 rounds, each round a
    window of at least ``min_time / 5`` of every fn in turn (so a load that drifts meets them
    alike), after one warm-up call each (a shared machine slows some windows; the best one is
    the machine's)."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(5):
        for k, fn in enumerate(fns):
            calls, start = 0, clock()
            while True:
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                calls += 1
                elapsed = clock() - start
                if elapsed >= min_time / 5:
                    best[k] = min(best[k], elapsed / calls)
                    break
    return best


def timed(fn: Callable[[], object], min_time: float, device: torch.device) -> float:
    """Wall seconds per call of ``fn`` (:func:`windows`)."""
    return windows([fn], min_time, device)[0]


def calibrate(
    model: nn.Module, batch: int, min_time: float, device: torch.device
) -> dict[str, float]:
    """Elementwise ops/s (fused multiply-add) and GEMM flop/s of the model's widest layer."""
    n = 1 << 16 if device.type == "cpu" else 1 << 24  # cache-sized on CPU, saturating on GPU
    a, b, c, out = (torch.rand(n, device=device) for _ in range(4))
    elem = 2.0 * n / timed(lambda: torch.addcmul(a, b, c, out=out), min_time, device)
    widest = max(
        (m for m in model.modules() if isinstance(m, nn.Linear)),
        key=lambda m: m.in_features * m.out_features,
    )
    x = torch.rand(batch, widest.in_features, device=device)
    w = torch.rand(widest.in_features, widest.out_features, device=device)
    res = torch.empty(batch, widest.out_features, device=device)
    flops = 2.0 * batch * widest.in_features * widest.out_features
    gemm = flops / timed(lambda: torch.mm(x, w, out=res), min_time, device)
    return {"elem_rate": elem, "gemm_rate": gemm}


# -- measurement -----------------------------------------------------------------------------
def measure(
    name: str, batch: int, threads: int, min_time: float, device: torch.device
) -> dict[str, object]:
    task = TASKS[name]
    classes = CLASSES.get(name, 10)
    torch.manual_seed(0)
    model = task.build(784, 128, classes, False).to(device)
    x, y, source = load_inputs(batch, classes)
    x, y = x.to(device), y.to(device)
    preset = PRESETS[task.preset]
    space = build_subspace("auto", ParamLayout.from_module(model), preset, seed=0).to(device)
    rule = StepRule.build(
        epsilon=preset["epsilon"],
        step_radius=preset["step_radius"],
        probe_radius=preset["probe_radius"],
        polytope=preset["polytope"],
        num_probe=preset["num_probe"],
    )
    gen = torch.Generator().manual_seed(0)
    z = torch.zeros(space.dim, device=device)
    cands = propose_blocks(rule, z, space.block_dim, 0, gen)[1]
    ev = LayeredEvaluator(model, nn.CrossEntropyLoss(), space, strict=True)
    eager = LayeredEvaluator(model, nn.CrossEntropyLoss(), space, strict=True, fused=False)
    torch.set_num_threads(threads)
    runs = [lambda: ev.evaluate(cands, (x, y)), lambda: eager.evaluate(cands, (x, y))]
    per_s, eager_per_s = (len(cands) / t for t in windows(runs, min_time, device))
    cpu = windows(runs, min_time, device, clock=time.process_time)
    per_cpu_s, eager_per_cpu_s = (len(cands) / t for t in cpu)
    probe = LayeredEvaluator(model, nn.CrossEntropyLoss(), space, strict=True)
    probe.evaluate(cands, (x, y))
    cal = calibrate(model, batch, min_time, device)
    work = candidate_ops(model, space, x)
    limit = 1.0 / (work["elem_ops"] / cal["elem_rate"] + work["gemm_flops"] / cal["gemm_rate"])
    return {
        "model": name,
        "preset": task.preset,
        "subspace": f"{space.kind} rank {getattr(space, 'rank', '-')}, "
        f"direct_max {getattr(space, 'direct_max', '-')}",
        "batch": batch,
        "threads": threads,
        "inputs": source,
        "candidates_per_step": len(cands),
        "candidates_per_s": round(per_s, 1),
        "eager_candidates_per_s": round(eager_per_s, 1),
        "fused_over_eager": round(per_s / eager_per_s, 2),
        "fused_fraction": round(probe.fused_candidates / len(cands), 4),
        "candidates_per_cpu_s": round(per_cpu_s, 1),
        "eager_candidates_per_cpu_s": round(eager_per_cpu_s, 1),
        "limit_per_s": round(limit, 1),
        "percent_of_limit": round(100.0 * per_s / limit, 1),
        "elem_ops_per_candidate": round(work["elem_ops"]),
        "gemm_flops_per_candidate": round(work["gemm_flops"]),
        "elem_rate_per_s": round(cal["elem_rate"]),
        "gemm_flop_per_s": round(cal["gemm_rate"]),
        "pairs_rerun_fraction": (
            round(probe.pairs_run / probe.pairs_dense, 4) if probe.pairs_dense else None
        ),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }


def report(path: str) -> str:
    """Markdown table of a roofline JSONL file: one row per model and thread count, the median
    of its repeated runs (with the range of measured candidates/s and the number of runs)."""
    groups: dict[tuple[str, int], list[dict[str, object]]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            groups.setdefault((rec["model"], rec["threads"]), []).append(rec)
    out = [
        "| model | preset / space | threads | measured cand/s (median) | range over runs "
        "| limit cand/s | % of limit | fused / eager | per CPU-second fused / eager "
        "| samples re-run | load avg / cores | runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (_, _), recs in sorted(groups.items()):
        r = recs[0]
        rates = sorted(float(x["candidates_per_s"]) for x in recs)
        limits = [float(x["limit_per_s"]) for x in recs]
        percents = [float(x["percent_of_limit"]) for x in recs]
        loads = [x.get("load_average_1min") for x in recs if x.get("load_average_1min") is not None]
        frac = r["pairs_rerun_fraction"]
        ratios = [float(x["fused_over_eager"]) for x in recs if "fused_over_eager" in x]
        ratio = f"{statistics.median(ratios):.2f}" if ratios else "-"
        cpu = [x for x in recs if "candidates_per_cpu_s" in x]
        per_cpu = "-"
        if cpu:
            fused_cpu = statistics.median(float(x["candidates_per_cpu_s"]) for x in cpu)
            eager_cpu = statistics.median(float(x["eager_candidates_per_cpu_s"]) for x in cpu)
            per_cpu = f"{fused_cpu:,.0f} / {eager_cpu:,.0f}"
        load = f"{statistics.median(loads):.2f}" if loads else "?"
        out.append(
            f"| {r['model']} | {r['preset']} / {r['subspace']} | {r['threads']} "
            f"| {statistics.median(rates):,.0f} | {rates[0]:,.0f}-{rates[-1]:,.0f} "
            f"| {statistics.median(limits):,.0f} | {statistics.median(percents):.1f} | {ratio} "
            f"| {per_cpu} "
            f"| {'-' if frac is None else f'{100 * frac:.0f} %'} "
            f"| {load} / {r.get('cpu_count', '?')} | {len(recs)} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--models", default=",".join(TASKS))
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per measurement")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--report", metavar="JSONL", help="print the table of a results file")
    args = parser.parse_args(argv)
    if args.report:
        print(report(args.report))
        return 0
    for name in args.models.split(","):
        if name not in TASKS:
            raise SystemExit(f"--models: {name!r} is not one of {sorted(TASKS)}")
        for threads in (int(t) for t in args.threads.split(",")):
            rec = measure(name, args.batch, threads, args.min_time, torch.device(args.device))
            print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
