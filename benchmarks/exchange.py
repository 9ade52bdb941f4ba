"""CPU cost of one loss exchange: a bare ``all_to_all_single`` vs the whole ``Shard.score`` path.

Each of ``--procs`` gloo ranks (one torch thread) scores a step of ``--candidates``
:class:`BlockCandidates` with a scorer that does nothing but return a slice of float64 losses
that float32 would round (as a network step's means: they travel as float64), so what is timed
is the cut, the slice, the exchange and the balancer's bookkeeping of
:class:`polystep.distributed.Shard`; the bare collective sends the same sizes (header plus
losses of each rank). One JSON line per rank:
CPU microseconds per call of the process (every thread: gloo's worker and I/O threads too) and
of the main thread alone.

    python benchmarks/exchange.py --procs 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from polystep import distributed
from polystep.blocks import BlockCandidates
from relay import relay


def cpu_us(fn: Callable[[], Any], calls: int) -> tuple[float, float]:
    """CPU microseconds per call of ``fn``: the process's and this thread's."""
    dist.barrier()
    process, thread = time.process_time(), time.thread_time()
    for _ in range(calls):
        fn()
    return (
        round(1e6 * (time.process_time() - process) / calls, 1),
        round(1e6 * (time.thread_time() - thread) / calls, 1),
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    distributed.init()
    world, rank = dist.get_world_size(), dist.get_rank()
    n = args.candidates
    cands = BlockCandidates(torch.zeros(n, dtype=torch.long), torch.randn(n, 16), 16)
    shard = distributed.Shard(check_every=10**9)
    state = torch.zeros(4)

    losses = torch.full((n,), 0.1, dtype=torch.float64)  # 0.1 is no float32 number

    def scorer(part: BlockCandidates) -> torch.Tensor:
        return losses[: len(part)]

    def whole() -> None:
        shard.score(scorer, cands, state=state)

    whole()  # the first call checks digests and widens the wire to float64
    bounds = [lo for lo, _ in shard.metrics["rank_rows"]] + [n]
    sizes = [distributed.HEADER + hi - lo for lo, hi in itertools.pairwise(bounds)]
    send = torch.zeros(sizes[rank] * world)
    out = torch.empty(sum(sizes))

    def bare() -> None:
        dist.all_to_all_single(out, send, sizes, [sizes[rank]] * world)

    timings: dict[str, list[tuple[float, float]]] = {"bare": [], "shard_score": []}
    for _ in range(args.repeats):  # alternate, so that drift in the load hits both alike
        timings["bare"].append(cpu_us(bare, args.calls))
        timings["shard_score"].append(cpu_us(whole, args.calls))
    best = {k: min(v) for k, v in timings.items()}
    return {
        "what": "CPU us per call: bare all_to_all_single vs Shard.score (no-op scorer)",
        "world_size": world,
        "rank": rank,
        "candidates": n,
        "wire_dtype": shard.metrics["wire_dtype"],
        "calls": args.calls,
        "repeats": args.repeats,
        "process_cpu_us": {k: v[0] for k, v in best.items()},
        "main_thread_cpu_us": {k: v[1] for k, v in best.items()},
        "load_average_1min": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--procs", type=int, default=2, help="ranks (gloo on 127.0.0.1), >= 2")
    parser.add_argument("--candidates", type=int, default=2496)
    parser.add_argument("--calls", type=int, default=300, help="calls per timing")
    parser.add_argument("--repeats", type=int, default=5, help="timings of each (best kept)")
    parser.add_argument("--worker", action="store_true", help="run as one rank")
    args = parser.parse_args(argv)
    if args.procs < 2 or args.candidates < args.procs or args.calls < 1 or args.repeats < 1:
        raise SystemExit("--procs >= 2, --candidates >= --procs, --calls and --repeats >= 1")
    if args.worker:
        print(json.dumps(measure(args)), flush=True)
        return 0
    return relay(__file__, args, ["candidates", "calls", "repeats"], timeout=600)


if __name__ == "__main__":
    raise SystemExit(main())
