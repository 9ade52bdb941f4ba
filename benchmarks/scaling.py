"""Candidate throughput of one PolyStep training step on 1, 2, ... processes (torch.distributed).

The task: the hard-LIF SNN 784-128-10 (T=15, direct-current input, weights x3 so neurons fire)
trained by ``PolyStepOptimizer(preset="snn")`` with ``step_batch`` at batch 128, on MNIST
training images from ``../shared/data/mnist`` when present, else synthetic inputs of the same
shape (the record says which). Every configuration runs the same steps: ``--warmup`` untimed
steps, then ``--steps`` timed ones. The warm-up also lets the load balance settle: the ranks'
row ranges start equal and move towards equal CPU seconds of scoring over a few steps (dear
rows sit at the end of this step: the output layer and the biases), so the timed steps show
the steady state of a long run. Each rank has ``--threads`` torch threads; world size 1 is a
plain process without a process group, the reference for the speed-up. One JSON line per
world size with candidate evaluations per second (candidates scored / wall time of the timed
steps, taken by rank 0 after a barrier), the speed-up over world size 1 of the same invocation,
per-rank seconds and candidates/s, and the bytes the loss exchange moved per step (sent by all
ranks together, mean over the timed steps; counted by each rank as it sends).
``cpu_speedup_vs_1`` = CPU seconds of world size 1 / CPU seconds of the busiest rank: the
speed-up a free core per rank would give (it leaves out waiting for the network), the figure to
read when the machine is shared and wall times measure the other jobs. ``cpu_total_vs_1`` =
CPU seconds of all ranks together / those of world size 1: the work that distribution adds
(each rank repeats the incumbent's forward, the evaluator's shared prefix, the move); world
size / ``cpu_total_vs_1`` is the speed-up of a split that gives every rank equal CPU time.

    python benchmarks/scaling.py                        # CPU: 1 and 2 processes, gloo
    python benchmarks/scaling.py --procs 1 2 4 8 --device cuda --threads 4   # one GPU a rank
    python benchmarks/scaling.py --table benchmarks/results/scaling_cpu.jsonl  # README table

This script starts its own ranks on 127.0.0.1 (one machine). On several machines run the worker
under torchrun on each: ``torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d
--rdzv-endpoint=HOST:29500 benchmarks/scaling.py --worker`` (rank 0 prints the line).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


def data(batches: int, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``batches`` batches ``(batches, batch, 784)`` of MNIST training images, or synthetic."""
    from polystep.data import read_idx

    images, labels = MNIST / "train-images-idx3-ubyte.gz", MNIST / "train-labels-idx1-ubyte.gz"
    need = batches * batch
    if images.exists() and labels.exists():
        x = torch.from_numpy(read_idx(images)[:need].reshape(need, 784).copy()).float() / 255.0
        y = torch.from_numpy(read_idx(labels)[:need].copy()).long()
        source = "mnist train images"
    else:
        gen = torch.Generator().manual_seed(0)
        x, y = torch.rand(need, 784, generator=gen), torch.randint(0, 10, (need,), generator=gen)
        source = "synthetic (no ../shared/data/mnist)"
    return x.reshape(batches, batch, 784).to(device), y.reshape(batches, batch).to(device), source


def spiking_model() -> nn.Module:
    """The hard-LIF SNN 784-128-10, T=15, weights x3 (neurons fire), from torch's RNG."""
    from polystep.nn import spiking_mlp

    model = spiking_mlp((784, 128, 10), num_steps=15)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model


def worker(args: argparse.Namespace, gate: Callable[[], None] | None = None) -> dict | None:
    """One rank (or the lone process) runs the steps; rank 0 returns the record. ``gate``, when
    given, is called once the warm-up is done, just before the timed steps start."""
    import torch.distributed as dist

    from polystep import distributed
    from polystep.optimizer import PolyStepOptimizer

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    distributed.init()
    world, rank = distributed.world_size(), dist.get_rank() if dist.is_initialized() else 0
    torch.manual_seed(0)
    model = spiking_model().to(device)
    opt = PolyStepOptimizer(model, preset="snn", seed=0)
    opt.progress = False
    total = args.warmup + args.steps
    opt.set_horizon(steps=total)  # the preset's schedules over the run
    x, y, source = data(min(total, 8), args.batch, device)
    loss_fn = nn.CrossEntropyLoss()
    per_rank: list[list[float]] = []
    sent = 0  # bytes this rank sent in the timed steps
    for step in range(total):
        if step == args.warmup:
            if gate is not None:
                gate()
            if world > 1:
                dist.barrier()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start, cpu, before = time.perf_counter(), time.process_time(), opt.evaluations
        opt.step_batch(x[step % len(x)], y[step % len(y)], loss_fn)
        if step >= args.warmup and world > 1:
            per_rank.append(opt.shard.metrics["rank_seconds"])
            sent += opt.shard.metrics["bytes_sent"]
    if world > 1:
        dist.barrier()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    mine = torch.tensor([time.process_time() - cpu, sent], dtype=torch.float64)
    if world > 1:  # every rank's CPU time (for the speed-up a core per rank would give), bytes
        every = torch.empty(2 * world, dtype=torch.float64, device=device)
        dist.all_gather_single(every, mine.to(device))
        mine = every.cpu()
    cpu_seconds, sent_by_rank = mine[0::2], mine[1::2]
    candidates = opt.evaluations - before
    if rank != 0:
        return None
    record = {
        "task": "hard-LIF SNN 784-128-10, T=15, preset snn, step_batch",
        "data": source,
        "world_size": world,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "device": str(device),
        "threads_per_rank": args.threads,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "candidates_per_step": candidates // args.steps,
        "seconds": round(seconds, 3),
        "candidate_evals_per_s": round(candidates / seconds, 1),
        "rank_cpu_seconds": [round(float(c), 3) for c in cpu_seconds],
    }
    if world > 1:
        rank_seconds = torch.tensor(per_rank).sum(dim=0)
        counts = opt.shard.metrics["rank_candidates"]
        record.update(
            {
                "rank_scoring_seconds": [round(float(s), 3) for s in rank_seconds],
                "rank_candidates_last_step": counts,
                "rank_evals_per_s_last_step": opt.shard.metrics["rank_evals_per_s"],
                "wire_dtype": opt.shard.metrics["wire_dtype"],
                "bytes_moved_per_step": round(float(sent_by_rank.sum()) / args.steps, 1),
            }
        )
    return record


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_ranks(
    script: Path, world: int, argv: list[str], timeout: float, group: bool = True
) -> list[str]:
    """Run ``world`` ranks of ``script --worker`` on 127.0.0.1 (a plain process for one;
    ``group=False``: ``world`` plain processes, no process group); every rank's stdout lines.
    A rank that fails stops the others at once."""
    port, procs = str(free_port()), []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if world > 1 and group:
            env.update(
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE=str(world),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
            )
        cmd = [sys.executable, str(script), "--worker", *argv]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    deadline = time.monotonic() + timeout
    try:
        while any(proc.poll() is None for proc in procs):
            failed = [r for r, proc in enumerate(procs) if proc.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                why = f"failed (exit {procs[failed[0]].returncode})" if failed else "timed out"
                raise SystemExit(f"rank {failed[0] if failed else '?'} of {world} {why}")
            time.sleep(0.05)
        outputs = [proc.communicate()[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for rank, proc in enumerate(procs):
        if proc.returncode != 0:
            raise SystemExit(f"rank {rank} of {world} failed (exit {proc.returncode})")
    return [line for text in outputs for line in text.splitlines() if line.strip()]


def launch(world: int, argv: list[str], timeout: float) -> dict:
    """Run ``world`` ranks of this script's worker on 127.0.0.1; rank 0's record."""
    return json.loads(run_ranks(Path(__file__), world, argv, timeout)[-1])


def read_records(path: str | Path) -> list[dict]:
    """The JSON lines of a record file (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def require_positive(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """Exit naming the first of the options ``names`` that is below 1."""
    for name in names:
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be >= 1, got {getattr(args, name)}")


def table(records: list[dict]) -> str:
    """The markdown table of ``records`` (this script's lines, in order), for the README."""
    rows = [
        "| run | world size | candidates/s | speed-up (wall) | speed-up (CPU time) | CPU of all "
        "ranks / 1 process | rows per rank (last step) | bytes moved per step, all ranks "
        "(wire) | load (1 min) |",
        "|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    run = 0
    for r in records:
        run += r["world_size"] == 1
        sent = (
            f"{r['bytes_moved_per_step']:,.0f} ({r['wire_dtype']})" if r["world_size"] > 1 else "-"
        )
        ranks = " / ".join(f"{c:,}" for c in r.get("rank_candidates_last_step", [])) or "-"
        rows.append(
            f"| {run} | {r['world_size']} | {r['candidate_evals_per_s']:,.0f} | "
            f"{r['speedup_vs_1']:.2f} | {r['cpu_speedup_vs_1']:.2f} | {r['cpu_total_vs_1']:.2f} | "
            f"{ranks} | {sent} | {r['load_average_1min']:.1f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="world sizes")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument(
        "--warmup", type=int, default=10, help="untimed steps first (the cuts settle in ~8)"
    )
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per config")
    parser.add_argument("--worker", action="store_true", help="run as one rank (torchrun)")
    parser.add_argument("--table", metavar="JSONL", help="print the README table of a record")
    args = parser.parse_args(argv)
    if args.table:
        print(table(read_records(args.table)))
        return 0
    require_positive(args, ("steps", "batch", "threads"))
    if args.warmup < 0 or any(w < 1 for w in args.procs):
        raise SystemExit("--warmup must be >= 0 and every --procs >= 1")
    if args.worker:
        record = worker(args)
        if record is not None:
            print(json.dumps(record), flush=True)
        return 0
    passed = [
        f"--{k}={getattr(args, k)}" for k in ("steps", "warmup", "batch", "threads", "device")
    ]
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
    }
    base = None
    for world in args.procs:
        record = launch(world, passed, args.timeout)
        if world == 1:
            base = record
        speedups = {"speedup_vs_1": None, "cpu_speedup_vs_1": None, "cpu_total_vs_1": None}
        if base is not None:
            speedups = {
                "cpu_total_vs_1": round(
                    sum(record["rank_cpu_seconds"]) / base["rank_cpu_seconds"][0], 3
                ),
                "speedup_vs_1": round(
                    record["candidate_evals_per_s"] / base["candidate_evals_per_s"], 3
                ),
                "cpu_speedup_vs_1": round(
                    base["rank_cpu_seconds"][0] / max(record["rank_cpu_seconds"]), 3
                ),
            }
        print(json.dumps({**record, **speedups, **machine}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
