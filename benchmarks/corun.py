"""This machine's own ceiling for the scaling benchmark: N copies of its one-process step at once.

``scaling.py`` measures what N ranks of one distributed run score together against one
process alone. Part of any shortfall is not polystep's: when a second process runs beside the
first, the two share the last-level cache, the memory bus and the hypervisor's scheduling of
the virtual cores, and each copy scores fewer candidates per second than it does alone. Here
the same step (``scaling.worker``: hard-LIF SNN 784-128-10, T=15, ``preset="snn"``, batch 128,
one thread a process) runs as ``--copies`` independent plain processes at the same time: no
process group, nothing exchanged, nothing repeated. The copies warm up, wait for each other at
a file gate, then time their steps together. Their summed candidates/s over one copy alone is
the ceiling no split of one step can beat on this machine.

Each round runs, one after the other: one process alone, the distributed run of ``--copies``
ranks (``scaling.launch``), then the copies side by side. One JSON line per round: candidates/s
of each; ``speedup_vs_1`` (the distributed run over one process), ``ceiling_vs_1`` (the copies'
sum over one process), ``of_ceiling`` (the first over the second: the part of the machine's
ceiling the distributed run reaches), and ``overlap`` (the fraction of the copies' timed
windows during which all of them ran: a value near 1 means they were timed together).

    python benchmarks/corun.py --copies 2 --rounds 3
    python benchmarks/corun.py --table benchmarks/results/corun_cpu_quiet.jsonl  # README table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scaling


def file_gate(folder: Path, copies: int) -> None:
    """Mark this process as ready in ``folder``, then wait until ``copies`` processes are."""
    (folder / str(os.getpid())).touch()
    while sum(1 for _ in folder.iterdir()) < copies:
        time.sleep(0.001)


def overlap(windows: list[tuple[float, float]]) -> float:
    """The time all ``(start, end)`` windows share, over the time any of them covers."""
    shared = min(end for _, end in windows) - max(start for start, _ in windows)
    covered = max(end for _, end in windows) - min(start for start, _ in windows)
    return max(shared, 0.0) / covered


def run_copies(copies: int, argv: list[str], timeout: float) -> list[dict]:
    """``copies`` plain processes of this script's worker at once; their records."""
    with tempfile.TemporaryDirectory(prefix="corun-gate-") as folder:
        gate = [f"--gate={folder}", f"--copies={copies}"]
        lines = scaling.run_ranks(Path(__file__), copies, [*argv, *gate], timeout, group=False)
    return [json.loads(line) for line in lines]


def round_record(solo: dict, group: dict, copies: list[dict]) -> dict:
    """One round's figures from its three runs' records."""
    alone, together = solo["candidate_evals_per_s"], [c["candidate_evals_per_s"] for c in copies]
    ceiling = sum(together) / alone
    speedup = group["candidate_evals_per_s"] / alone
    return {
        "copies": len(copies),
        "solo_evals_per_s": alone,
        "distributed_evals_per_s": group["candidate_evals_per_s"],
        "copies_evals_per_s": together,
        "speedup_vs_1": round(speedup, 3),
        "ceiling_vs_1": round(ceiling, 3),
        "of_ceiling": round(speedup / ceiling, 3),
        "overlap": round(
            overlap([(c["timed_from"], c["timed_from"] + c["seconds"]) for c in copies]), 3
        ),
        "copies_cpu_seconds": [c["rank_cpu_seconds"][0] for c in copies],
        "solo_cpu_seconds": solo["rank_cpu_seconds"][0],
    }


def table(records: list[dict]) -> str:
    """The markdown table of ``records`` (this script's lines, in order), for the README."""
    rows = [
        "| round | copies | one process (cand/s) | distributed run (cand/s) | copies side by "
        "side, each (cand/s) | speed-up | machine ceiling | part of ceiling | overlap | "
        "load (1 min) |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n, r in enumerate(records, start=1):
        each = " / ".join(f"{c:,.0f}" for c in r["copies_evals_per_s"])
        rows.append(
            f"| {n} | {r['copies']} | {r['solo_evals_per_s']:,.0f} | "
            f"{r['distributed_evals_per_s']:,.0f} | {each} | {r['speedup_vs_1']:.2f} | "
            f"{r['ceiling_vs_1']:.2f} | {r['of_ceiling']:.2f} | {r['overlap']:.2f} | "
            f"{r['load_average_1min']:.1f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=2, help="processes side by side (>= 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of solo, group, copies")
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--worker", action="store_true", help="run as one copy")
    parser.add_argument("--gate", type=Path, help="the copies' gate folder (worker only)")
    parser.add_argument("--table", metavar="JSONL", help="print the README table of a record")
    args = parser.parse_args(argv)
    if args.table:
        print(table(scaling.read_records(args.table)))
        return 0
    scaling.require_positive(args, ("rounds", "steps", "batch"))
    if args.copies < 2 or args.warmup < 0:
        raise SystemExit(
            f"--copies must be >= 2 and --warmup >= 0, got {args.copies}, {args.warmup}"
        )
    step_args = argparse.Namespace(
        steps=args.steps, warmup=args.warmup, batch=args.batch, threads=1, device="cpu"
    )
    if args.worker:
        released: list[float] = []

        def gate() -> None:
            if args.gate is not None:
                file_gate(args.gate, args.copies)
            released.append(time.time())

        record = scaling.worker(step_args, gate)
        print(json.dumps({**record, "timed_from": released[0]}), flush=True)
        return 0
    passed = [f"--{k}={v}" for k, v in vars(step_args).items()]  # scaling.py's options
    mine = [f"--{k}={getattr(args, k)}" for k in ("steps", "warmup", "batch")]
    for _ in range(args.rounds):
        load = round(os.getloadavg()[0], 2)
        solo = scaling.launch(1, passed, args.timeout)
        group = scaling.launch(args.copies, passed, args.timeout)
        copies = run_copies(args.copies, mine, args.timeout)
        machine = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__}
        config = {"steps": args.steps, "warmup": args.warmup, "batch": args.batch, "threads": 1}
        print(json.dumps({**round_record(solo, group, copies), **config,
                          "load_average_1min": load, **machine}), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
