"""What the memory of one streamed PolyStep step is made of: phase by phase, tensor by tensor.

For one case (model, batch, T) of ``benchmarks/memory.py``'s ``streamed`` mode, three fresh
subprocesses run the same step (same warm-up, same batch):

* ``rss``: the peak resident set growth exactly as ``memory.py`` measures it, read at the end
  of each phase: the incumbent's loss, ``ask()`` (every candidate of the step drawn), the
  scoring (the evaluator's chunks), ``tell()`` and the move written into the weights;
* ``torch``: torch's own CPU allocations (the profiler's allocation events): the most bytes of
  tensors alive at once, and what was alive then, summed by the innermost polystep function
  that allocated it (shown as ``file(line of its def): name``);
* ``python``: ``tracemalloc``'s peak of Python's own heap (objects, lists, frames) in the step.

What the resident set holds beyond the two peaks is the allocator's: glibc keeps freed heap
pages and rounds to pages, and the process's first touch of code and buffers after the
warm-up's ``malloc_trim``.

    .venv/bin/python benchmarks/memory_breakdown.py --batch 64 --steps 25
    .venv/bin/python benchmarks/memory_breakdown.py --report

Each case appends one JSON line to ``benchmarks/results/memory/breakdown.jsonl`` (tagged with
the commit, as ``memory.py`` does); ``--report`` writes ``breakdown.md`` beside it.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import memory  # the sibling benchmark: its step and its measurement
from polystep.engine import Engine

OUT = memory.OUT.parent / "breakdown.jsonl"
PARTS = ("rss", "torch", "python")
TOP = 12  # sources listed from the live set at the torch peak


def prepared_step(batch: int, num_steps: int) -> Callable[[], None]:
    """The ``streamed`` step of ``memory.measure``, after its warm-up and ``malloc_trim``."""
    warm, _ = memory.make_step("snn_mlp", "streamed", 2, batch, "cpu")
    warm()
    step, _ = memory.make_step("snn_mlp", "streamed", num_steps, batch, "cpu")
    del warm
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return step


def rss_phases(step: Callable[[], None]) -> dict[str, float]:
    """Peak resident set growth (MiB) at the end of each phase of the step."""
    marks: dict[str, float] = {}
    before = 0

    def mark(name: str) -> None:
        marks[name] = round((memory._status("VmHWM") - before) / memory.MIB, 2)

    ask, tell = Engine.ask, Engine.tell

    def asking(self: Engine, state: Any) -> Any:
        mark("incumbent loss")
        out = ask(self, state)
        mark("ask")
        return out

    def telling(self: Engine, state: Any, losses: torch.Tensor, **kw: Any) -> Any:
        mark("scoring")
        out = tell(self, state, losses, **kw)
        mark("tell")
        return out

    Engine.ask, Engine.tell = asking, telling  # type: ignore[method-assign]
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = memory._status("VmRSS")
        step()
        mark("move written")
    finally:
        Engine.ask, Engine.tell = ask, tell  # type: ignore[method-assign]
    return marks


def torch_peak(step: Callable[[], None]) -> dict[str, Any]:
    """The peak of live torch CPU bytes in the step and the live set then, by function."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, with_stack=True) as prof:
        step()
    allocations: list[tuple[int, int, int, str]] = []

    def walk(node: Any, source: str) -> None:
        if node.tag == _EventType.Allocation:
            fields = node.extra_fields
            allocations.append((node.start_time_ns, fields.ptr, fields.alloc_size, source))
        elif "polystep/" in node.name and ".py(" in node.name:
            source = node.name.split("polystep/", 1)[1]
        for child in node.children:
            walk(child, source)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root, "?")
    live: dict[int, tuple[int, str]] = {}
    total = peak = 0
    at_peak: dict[int, tuple[int, str]] = {}
    for _, ptr, size, source in sorted(allocations):
        if size > 0:
            live[ptr] = (size, source)
        else:
            live.pop(ptr, None)
        total += size
        if total > peak:
            peak, at_peak = total, dict(live)
    by_source: dict[str, int] = {}
    for size, source in at_peak.values():
        by_source[source] = by_source.get(source, 0) + size
    top = sorted(by_source.items(), key=lambda kv: -kv[1])
    return {
        "torch_peak_mib": round(peak / memory.MIB, 3),
        "live_tensors": len(at_peak),
        "sources_kib": {k: round(v / 1024, 1) for k, v in top[:TOP]},
        "other_sources_kib": round(sum(v for _, v in top[TOP:]) / 1024, 1),
    }


def python_peak(step: Callable[[], None]) -> dict[str, float]:
    tracemalloc.start()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"python_peak_mib": round(peak / memory.MIB, 3)}


def measure(part: str, batch: int, num_steps: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    step = prepared_step(batch, num_steps)
    if part == "rss":
        return {"rss_phases_mib": rss_phases(step)}
    return torch_peak(step) if part == "torch" else python_peak(step)


def report(records: list[dict[str, Any]]) -> str:
    """One block per (batch, T), from its last record: phases, then the torch live set."""
    last = {(r["batch"], r["T"]): r for r in records}
    lines = []
    for (batch, t), r in sorted(last.items()):
        lines.append(f"#### snn_mlp, batch {batch}, T={t} (code {r['commit']})\n")
        phases = r.get("rss_phases_mib", {})
        if phases:
            steps = " → ".join(f"{name} {value:.2f}" for name, value in phases.items())
            lines.append(f"Peak RSS growth (MiB) at the end of each phase: {steps}.\n")
        if "torch_peak_mib" in r:
            lines.append(
                f"Torch tensors alive at once, at most: {r['torch_peak_mib']:.2f} MiB "
                f"({r['live_tensors']} tensors); Python's own heap (tracemalloc) peaked at "
                f"{r.get('python_peak_mib', float('nan')):.2f} MiB. The torch live set at its "
                "peak, by the polystep function that allocated it:\n"
            )
            lines += ["| allocated in | KiB |", "|---|---|"]
            lines += [f"| `{k}` | {v:,.1f} |" for k, v in r["sources_kib"].items()]
            lines.append(f"| (elsewhere) | {r['other_sources_kib']:,.1f} |\n")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", default="25")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--report", action="store_true", help="write breakdown.md")
    parser.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    if args.child:
        print(json.dumps(measure(args.child, args.batch, int(args.steps))))
        return
    if args.report:
        text = report(memory.load_records(out))
        (out.parent / "breakdown.md").write_text(text)
        print(text)
        return
    commit = memory.code_commit()
    for t in (int(s) for s in args.steps.split(",")):
        record: dict[str, Any] = {"model": "snn_mlp", "batch": args.batch, "T": t}
        for part in PARTS:
            cmd = [sys.executable, __file__, "--child", part, "--batch", str(args.batch)]
            child = subprocess.run([*cmd, "--steps", str(t)], capture_output=True, text=True)
            if child.returncode:
                raise SystemExit(child.stderr)
            record.update(json.loads(child.stdout.strip().splitlines()[-1]))
        record["commit"] = commit
        with out.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
