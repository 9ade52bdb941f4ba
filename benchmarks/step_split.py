"""Where one PolyStep step spends its CPU time: work every rank repeats vs candidate scoring.

The step of ``benchmarks/scaling.py`` (hard-LIF SNN 784-128-10, T=15, ``preset="snn"``,
``step_batch`` at batch 128, one torch thread) is run with CPU-time timers
(``time.process_time``, so other jobs on the machine distort it little) around the parts of a
step. Scoring (the layered evaluator's chunk tasks) is what ranks split; everything else is
*shared*: each rank repeats it. One JSON line per rank: milliseconds of CPU per step for each
part, the shared total and fraction, and for one process Amdahl's 2-process speed-up
``1 / (shared + scoring / 2)`` (with no cost of the exchange or of uneven shares).

    python benchmarks/step_split.py                 # one process
    python benchmarks/step_split.py --procs 2       # each of 2 gloo ranks (Shard parts too)

Parts (nested timers are subtracted, so the parts add up to the step):

* ``incumbent forward``: the layer-by-layer forward of ``loss()`` (the center loss), which
  the candidate scoring reuses;
* ``ask``: the rotations, probes and candidates of the step; ``tell``: weights and the move
  in search coordinates; ``move``: the move mapped into the weights (``subspace.delta``) and
  the rest of ``_step``;
* ``evaluator setup``: per call of the layered evaluator, grouping the candidates by
  segment, the fused suffix tables of each moved layer, chunking;
* ``scoring``: the chunk tasks (the fused kernels, per-pair losses), split over ranks;
* ``shard``: under ``torchrun`` the cut, the loss exchange and the metrics (``Shard.score``
  less the evaluator).

``other_threads_cpu_ms``: the part of the step's CPU time spent outside the main thread
(gloo's worker and I/O threads under ``torchrun``; with one torch thread nothing else), already
inside the parts above (``process_time`` counts every thread of the process).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scaling
from polystep import distributed
from polystep.engine import Engine
from polystep.evaluate.layered import LayeredEvaluator
from polystep.optimizer import PolyStepOptimizer
from relay import relay

Seconds = defaultdict[str, float]


def timed(owner: type, name: str, part: str, spent: Seconds, stack: list[float]) -> None:
    """Wrap ``owner.name`` (where the class or a base defines it) so that its CPU time, less
    that of timed calls inside it, is added to ``spent[part]``."""
    owner = next(cls for cls in owner.__mro__ if name in cls.__dict__)
    raw = owner.__dict__[name]
    static = isinstance(raw, staticmethod)
    fn: Callable[..., Any] = raw.__func__ if static else raw

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        stack.append(0.0)
        start = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            total = time.process_time() - start
            inside = stack.pop()
            spent[part] += total - inside
            if stack:
                stack[-1] += total

    setattr(owner, name, staticmethod(inner) if static else inner)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    distributed.init()
    spent: Seconds = defaultdict(float)
    stack: list[float] = []
    parts = [
        (PolyStepOptimizer, "step_batch", "move"),  # what no inner timer claims: the move
        (LayeredEvaluator, "loss", "incumbent forward"),
        (LayeredEvaluator, "_evaluate", "evaluator setup"),
        (LayeredEvaluator, "_run", "scoring"),
        (Engine, "ask", "ask"),
        (Engine, "tell", "tell"),
        (distributed.Shard, "score", "shard"),
    ]
    for owner, name, part in parts:
        timed(owner, name, part, spent, stack)
    torch.manual_seed(0)
    model = scaling.spiking_model()
    opt = PolyStepOptimizer(model, preset="snn", seed=0)
    opt.progress = False
    opt.set_horizon(steps=args.warmup + args.steps)  # the preset's schedules over the run
    x, y, source = scaling.data(8, args.batch, torch.device("cpu"))
    loss_fn = nn.CrossEntropyLoss()
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            spent.clear()
            process, thread = time.process_time(), time.thread_time()
        opt.step_batch(x[step % len(x)], y[step % len(y)], loss_fn)
    # CPU of every thread but this one (gloo's worker and I/O threads under torchrun)
    others = (time.process_time() - process) - (time.thread_time() - thread)
    ms = {part: round(1000 * spent[part] / args.steps, 3) for part in sorted(spent)}
    total = sum(ms.values())
    shared = total - ms["scoring"]
    record: dict[str, Any] = {
        "task": "hard-LIF SNN 784-128-10, T=15, preset snn, step_batch",
        "data": source,
        "world_size": distributed.world_size(),
        "rank": int(os.environ.get("RANK", "0")),
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "cpu_ms_per_step": ms,
        "step_cpu_ms": round(total, 3),
        "shared_cpu_ms": round(shared, 3),
        "shared_fraction": round(shared / total, 4),
        "other_threads_cpu_ms": round(1000 * others / args.steps, 3),
    }
    if distributed.world_size() == 1:
        fraction = shared / total
        record["amdahl_speedup_2"] = round(1 / (fraction + (1 - fraction) / 2), 3)
    else:
        record["rank_candidates_last_step"] = opt.shard.metrics["rank_candidates"]
    record["load_average_1min"] = round(os.getloadavg()[0], 2)
    record["torch"] = torch.__version__
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--procs", type=int, default=1, help="ranks (gloo on 127.0.0.1)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--worker", action="store_true", help="run as one rank")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.procs < 1:
        raise SystemExit("--steps, --batch and --procs must be >= 1 and --warmup >= 0")
    if args.worker or args.procs == 1:
        print(json.dumps(measure(args)), flush=True)
        return 0
    return relay(__file__, args, ["steps", "warmup", "batch"], timeout=1800)


if __name__ == "__main__":
    raise SystemExit(main())
