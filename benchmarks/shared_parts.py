"""CPU cost of the parts of a step that every rank repeats, each timed alone over many calls.

``step_split.py`` times the parts inside whole steps, where one reading of a part of a
millisecond moves by tens of percent on a shared machine. Here the scaling benchmark's step
(hard-LIF SNN 784-128-10, T=15, ``preset="snn"``, batch 128, one torch thread) is run for
``--warmup`` steps, then each part is called ``--calls`` times on that state, with CPU-time
clocks (``time.process_time``):

* ``ask``: drawing a step's candidates (rotations, probes, block candidates);
* ``tell``: the weights and the barycentric move (one ask told again and again);
* ``move``: a step's move written into the parameters (``Subspace.add_to``, the parameters
  looked up by name as a step does);
* ``schedules``: the step's engine configuration and the schedules' values for the next step
  (``engine()`` and the parameter group's refresh);
* ``evaluator setup``: the layered evaluator's work before and after the scoring (the
  groups, the fused suffix tables, the chunks, the losses written back), on every row and on
  each rank's rows of a two-rank cut (``--cut``); the scoring itself is computed once and
  replayed, so it is not timed.

One JSON line: milliseconds of CPU per call of each part (``--parts ask tell``: only those;
a part is named by its first word, so ``evaluator`` takes the three setups). Run it on two
versions of the code alternately (``PYTHONPATH=other/src python benchmarks/shared_parts.py``)
to compare them.

    python benchmarks/shared_parts.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scaling
from polystep import distributed
from polystep.evaluate.layered import LayeredEvaluator
from polystep.optimizer import PolyStepOptimizer


def cpu_ms(fn: Callable[[], Any], calls: int) -> float:
    """CPU milliseconds per call of ``fn`` (one untimed call first)."""
    fn()
    start = time.process_time()
    for _ in range(calls):
        fn()
    return round(1e3 * (time.process_time() - start) / calls, 4)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = scaling.spiking_model()
    opt = PolyStepOptimizer(model, preset="snn", seed=0)
    opt.progress = False
    opt.set_horizon(steps=args.warmup + 1)  # the preset's schedules over the run
    x, y, source = scaling.data(8, args.batch, torch.device("cpu"))
    loss_fn = nn.CrossEntropyLoss()
    for step in range(args.warmup):
        opt.step_batch(x[step % len(x)], y[step % len(y)], loss_fn)
    ev = opt.evaluator(loss_fn)
    batch = (x[0], y[0])
    ev.loss(batch)
    base = ev._base(batch)
    engine, state = opt.engine(), opt.search
    drawn_from = state.generator.get_state()
    candidates = engine.ask(state)
    state.pending = None
    total = len(candidates)
    if not 0 < args.cut < total:
        raise SystemExit(f"--cut must be in 1..{total - 1}, got {args.cut}")

    scored: dict[int, Any] = {}  # the scoring of each set of rows, computed once
    run = LayeredEvaluator._run

    def replay(tasks: list, pooled: list, device: Any, sizes: list, progress: Any) -> Any:
        key = sum(sizes)
        if key not in scored:
            scored[key] = run(tasks, pooled, device, sizes, progress)
        return scored[key]

    ev._run = replay  # type: ignore[method-assign]
    ev._base = lambda batch: base  # type: ignore[method-assign]

    def ask() -> None:
        state.generator.set_state(drawn_from)
        engine.ask(state)
        state.pending = None

    losses = torch.rand(total, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    keep = (state.x, state.iteration, state.evaluations, state.duals)
    state.generator.set_state(drawn_from)
    engine.ask(state)
    asked = state.pending  # one ask, told again and again

    def tell() -> None:
        state.pending = asked
        engine.tell(state, losses)
        state.x, state.iteration, state.evaluations, state.duals = keep

    state.pending = asked  # a step's move in search coordinates
    engine.tell(state, losses)
    move = state.x - keep[0]
    state.x, state.iteration, state.evaluations, state.duals = keep
    params = opt.layout.parameters(model)
    weights = {name: p.detach().clone() for name, p in params.items()}

    @torch.no_grad()
    def write_move() -> None:
        opt.subspace.add_to(opt.layout.parameters(model), move)

    def schedules() -> None:
        opt.engine()
        opt._refresh_group()

    rows = [distributed.take(candidates, lo, hi) for lo, hi in ((0, args.cut), (args.cut, total))]
    parts: dict[str, Callable[[], Any]] = {
        "ask": ask,
        "evaluator setup, all rows": lambda: ev._evaluate(candidates, batch),
        "evaluator setup, rank 0 rows": lambda: ev._evaluate(rows[0], batch),
        "evaluator setup, rank 1 rows": lambda: ev._evaluate(rows[1], batch),
        "tell": tell,
        "move": write_move,
        "schedules": schedules,
    }
    wanted = args.parts or list(parts)
    ms = {
        name: cpu_ms(fn, args.calls)
        for name, fn in parts.items()
        if any(name.startswith(word) for word in wanted)
    }
    with torch.no_grad():  # the weights as they were (the moves piled up)
        for name, p in params.items():
            p.copy_(weights[name])
    return {
        "task": "hard-LIF SNN 784-128-10, T=15, preset snn: parts every rank repeats",
        "data": source,
        "batch": args.batch,
        "warmup": args.warmup,
        "calls": args.calls,
        "candidates": total,
        "cut": args.cut,
        "cpu_ms_per_call": ms,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warmup", type=int, default=10, help="steps before the timing")
    parser.add_argument("--calls", type=int, default=400, help="timed calls of each part")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--cut", type=int, default=1972, help="rank 0's rows of a 2-rank cut")
    parser.add_argument(
        "--parts", nargs="+", metavar="WORD", help="time only the parts named so (first words)"
    )
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.calls < 1 or args.batch < 1:
        raise SystemExit("--warmup, --calls and --batch must be >= 1")
    print(json.dumps(measure(args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
