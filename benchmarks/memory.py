"""Peak memory of one PolyStep training step against one BPTT step, for T = 25 ... 400.

Two hard-LIF networks (direct-current input, spike-count logits, cross-entropy, random data):

* ``snn_mlp``: ``polystep.nn.spiking_mlp((784, 128, 10))`` (101,770 parameters);
* ``snn_conv``: :func:`spiking_conv_net`, conv 1->8 -> LIF -> pool -> conv 8->16 -> LIF -> pool
  -> Linear(784 -> 4096) -> LIF -> Linear(4096 -> 10) -> LIF -> counts (3.26 M parameters).

Five modes, each measured once per (model, T) in a FRESH subprocess on the same batch:

* ``polystep``: one whole ``PolyStepOptimizer(model, preset="snn").step_batch`` (every candidate,
  the evaluator ``auto`` picks and its own chunking, as in training; the progress bar off: it is
  display, and whether it shows depends on how long the step runs);
* ``streamed``: the same step with ``evaluator="streamed"``: one time step at a time, chunks
  sized by the evaluator's default memory bound (:mod:`polystep.evaluate.streamed`);
* ``bptt``: one Adam step (lr 1e-3) on the smooth twin (sigmoid surrogate spikes), backprop
  through all T steps;
* ``forward``: one plain forward pass without grad (the authors' "forward-only" figure);
* ``forward_streamed``: the same forward one time step at a time (``stream_forward``).

Memory on CPU is the growth of the process's peak resident set during the step: the peak
(``VmHWM``) is reset through ``/proc/self/clear_refs`` right before the step and read after it,
minus the resident set before it. Everything built before the step (model, batch, optimizer
object) is excluded; what the step allocates (activations, candidates, gradients, Adam moments,
subspace bases) is included. ``tracemalloc`` would see only Python's heap, not torch's tensors,
hence the RSS. On CUDA (``--device cuda``) it is ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats``, minus the memory allocated before the step.

    .venv/bin/python benchmarks/memory.py --batch 4 --steps 25,50,100,200,400
    .venv/bin/python benchmarks/memory.py --report --readme benchmarks/README.md

Each case appends one JSON line to ``benchmarks/results/memory/runs.jsonl``, tagged with the
commit of the code it measured (finished cases of that commit are skipped); ``--report`` prints
the table from each case's newest commit and writes ``memory.png`` beside the records.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polystep import PolyStepOptimizer
from polystep.bench.runner import machine_info
from polystep.evaluate import stream_forward
from polystep.nn import LIF, OverTime, SpikeCount, smooth_twin, spiking_mlp

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "memory" / "runs.jsonl"
MODELS = ("snn_mlp", "snn_conv")
MODES = ("polystep", "streamed", "bptt", "forward", "forward_streamed")
MIB = 2**20


def spiking_conv_net(num_steps: int, *, surrogate: bool = False) -> nn.Sequential:
    """Hard-LIF conv net on ``(B, 1, 28, 28)`` -> spike counts ``(B, 10)``; 3.26 M parameters."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        LIF(num_steps=num_steps, surrogate=surrogate),
        OverTime(nn.AvgPool2d(2)),
        OverTime(nn.Conv2d(8, 16, 3, padding=1)),
        LIF(surrogate=surrogate),
        OverTime(nn.AvgPool2d(2)),
        nn.Flatten(2),
        nn.Linear(16 * 7 * 7, 4096),
        LIF(surrogate=surrogate),
        nn.Linear(4096, 10),
        LIF(surrogate=surrogate),
        SpikeCount(),
    )


def build(model_name: str, num_steps: int, batch: int) -> tuple[nn.Module, torch.Tensor]:
    """The hard model and a random input batch (seeded)."""
    torch.manual_seed(0)
    if model_name == "snn_mlp":
        return spiking_mlp((784, 128, 10), num_steps=num_steps), 3 * torch.rand(batch, 784)
    return spiking_conv_net(num_steps), 3 * torch.rand(batch, 1, 28, 28)


def _status(key: str) -> int:
    """``key`` of ``/proc/self/status`` in bytes."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+)", text).group(1)) * 1024


def make_step(
    model_name: str, mode: str, num_steps: int, batch: int, device: str
) -> tuple[Callable[[], None], Callable[[], dict[str, Any]]]:
    """A closure running one ``mode`` step, and one describing it afterwards."""
    model, x = build(model_name, num_steps, batch)
    y = torch.randint(0, 10, (batch,))
    model, x, y = model.to(device), x.to(device), y.to(device)
    loss_fn = nn.CrossEntropyLoss()
    params = sum(p.numel() for p in model.parameters())

    def describe() -> dict[str, Any]:
        return {"params": params}

    if mode in ("polystep", "streamed"):
        kind = "streamed" if mode == "streamed" else "auto"
        opt = PolyStepOptimizer(model, preset="snn", seed=0, evaluator=kind)
        opt.progress = False
        opt.set_horizon(steps=1)  # the preset's schedules over the run: one step here

        def step() -> None:
            opt.step_batch(x, y, loss_fn)

        def describe() -> dict[str, Any]:
            ev = opt.evaluator(loss_fn)
            return {
                "params": params,
                "evaluator": type(ev).__name__,
                "fallback": getattr(ev, "fallback_reason", None),
                "candidates": opt.evaluations,
                **({"memory_bytes": ev.memory_bytes} if mode == "streamed" else {}),
            }

    elif mode == "bptt":
        model = smooth_twin(model)
        adam = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step() -> None:
            adam.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            adam.step()

    elif mode == "forward":

        def step() -> None:
            with torch.no_grad():
                model(x)

    else:

        def step() -> None:
            with torch.no_grad():
                stream_forward(model, x)

    return step, describe


def measure(model_name: str, mode: str, num_steps: int, batch: int, device: str) -> dict:
    """Peak memory growth of one ``mode`` step (run in a fresh process; see the docstring).

    A warm-up step of the same mode at ``T = 2`` first loads code and thread buffers; freed
    heap memory is then handed back to the system (``malloc_trim``), so the measured step pays
    for every page it touches.
    """
    warm, _ = make_step(model_name, mode, 2, batch, device)
    warm()
    step, describe = make_step(model_name, mode, num_steps, batch, device)
    del warm
    gc.collect()
    cuda = device.startswith("cuda")
    if not cuda:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set
        before = _status("VmRSS")
    start = time.perf_counter()
    step()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _status("VmHWM")
    seconds = round(time.perf_counter() - start, 2)
    return {
        "model": model_name,
        "mode": mode,
        "T": num_steps,
        "batch": batch,
        "device": device,
        "peak_mib": round((peak - before) / MIB, 2),
        "method": "cuda max_memory_allocated" if cuda else "peak RSS growth (VmHWM reset)",
        "step_s": seconds,
        **describe(),
    }


def load_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def code_commit() -> str:
    """Short hash of HEAD, ``+dirty`` when the library or this script has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    dirty = git("status", "--porcelain", "--", "src", "benchmarks/memory.py")
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")


@functools.cache
def code_of(commit: str | None) -> str | None:
    """The library's code at ``commit``: the git tree of ``src`` (commits that changed only
    other files measured the same code). An unknown or ``+dirty`` commit is its own code."""
    if commit is None or commit.endswith("+dirty"):
        return commit
    found = subprocess.run(
        ["git", "rev-parse", f"{commit}:src"], cwd=ROOT, capture_output=True, text=True
    )
    return found.stdout.strip() if found.returncode == 0 else commit


def case_key(r: dict[str, Any]) -> tuple[str, int, int, str]:
    return r["model"], r["batch"], r["T"], r["mode"]


def newest(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each case's records of the newest code that measured it (:func:`code_of` the commit
    of its last line; lines written before records were tagged count as one older code)."""
    last = {case_key(r): code_of(r.get("commit")) for r in records}
    return [r for r in records if code_of(r.get("commit")) == last[case_key(r)]]


def medians(records: list[dict[str, Any]]) -> dict[tuple[str, int, int, str], float]:
    """Median peak (MiB) of every ``(model, batch, T, mode)`` over its repeated records of
    its newest code (:func:`newest`; RSS growth of small steps varies by 1–2 MiB between
    identical runs)."""
    runs: dict[tuple[str, int, int, str], list[float]] = {}
    for r in newest(records):
        runs.setdefault(case_key(r), []).append(r["peak_mib"])
    return {key: statistics.median(values) for key, values in runs.items()}


def table(records: list[dict[str, Any]]) -> str:
    """Markdown table: one row per (model, batch, T); ratios are BPTT over each PolyStep step
    (medians of the repeats, see :func:`medians`)."""
    peak = medians(records)
    runs: dict[tuple[str, int, int, str], list[str]] = {}
    for r in newest(records):
        runs.setdefault(case_key(r), []).append(r.get("commit") or "untagged")
    lines = [
        "| model | batch | T | BPTT step MiB | PolyStep streamed MiB | BPTT / streamed "
        "| PolyStep default MiB | BPTT / default | forward MiB | streamed forward MiB "
        "| streamed: code, runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def code(key: tuple[str, int, int, str]) -> str:
        tags = runs.get(key)
        return "—" if not tags else f"{tags[0]}, {len(tags)}"

    def cell(v: float | None) -> str:
        return "—" if v is None else f"{v:,.2f}"

    def ratio(num: float | None, den: float | None) -> str:
        if num is None or not den:
            return "—"
        return f"{num / den:.2f}×" if num < den else f"{num / den:.1f}×"

    for model in MODELS:
        for batch in sorted({r["batch"] for r in records if r["model"] == model}):
            steps = sorted({r["T"] for r in records if (r["model"], r["batch"]) == (model, batch)})
            for t in steps:
                p, st, b, f, fs = (peak.get((model, batch, t, m)) for m in MODES)
                lines.append(
                    f"| {model} | {batch} | {t} | {cell(b)} | {cell(st)} | {ratio(b, st)} "
                    f"| {cell(p)} | {ratio(b, p)} | {cell(f)} | {cell(fs)} "
                    f"| {code((model, batch, t, 'streamed'))} |"
                )
    return "\n".join(lines)


GOAL_RATIO = 30.0  # BPTT over the whole PolyStep step at the longest T (issue 13)
FLAT_SLACK = 1.25  # "flat in T": the largest streamed step at most this times the smallest


def summary(records: list[dict[str, Any]]) -> str:
    """One sentence per (model, batch) against the goals, from the records alone."""
    peak = medians(records)
    lines = []
    for model in MODELS:
        for batch in sorted({r["batch"] for r in records if r["model"] == model}):
            mine = {
                t: v
                for (m, b, t, mode), v in peak.items()
                if (m, b, mode) == (model, batch, "streamed")
            }
            both = [t for t in mine if (model, batch, t, "bptt") in peak]
            if not both:
                continue
            t = max(both)
            ratio = peak[(model, batch, t, "bptt")] / mine[t]
            need = peak[(model, batch, t, "bptt")] / GOAL_RATIO
            verdict = "met" if ratio >= GOAL_RATIO else f"missed: it needs ≤ {need:,.2f} MiB"
            lo, hi = min(mine.values()), max(mine.values())
            flat = "flat" if hi <= FLAT_SLACK * lo else "not flat"
            lines.append(
                f"- {model}, batch {batch}: at T={t} one BPTT step takes {ratio:.1f}× the memory "
                f"of one streamed PolyStep step ({peak[(model, batch, t, 'bptt')]:,.1f} vs "
                f"{mine[t]:,.1f} MiB; goal ≥ {GOAL_RATIO:.0f}×: {verdict}); the streamed step "
                f"spans {lo:,.1f}–{hi:,.1f} MiB over T = {min(mine)}–{max(mine)} ({flat}: "
                f"≤ {FLAT_SLACK}× asked)."
            )
    return "\n".join(lines)


def plot(records: list[dict[str, Any]], path: Path) -> None:
    """Median peak memory against T, one panel per (model, batch), every mode a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted(
        {(r["model"], r["batch"]) for r in records}, key=lambda k: (MODELS.index(k[0]), k[1])
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    styles = {
        "polystep": "o-",
        "streamed": "D-",
        "bptt": "s-",
        "forward": "^--",
        "forward_streamed": "v--",
    }
    colors = dict(zip(MODES, ("C0", "C1", "C2", "C3", "C4"), strict=True))
    peak = medians(records)
    for ax, (model, batch) in zip(axes[0], panels, strict=True):
        for mode in MODES:
            pts = sorted(
                (t, max(v, 0.01))
                for (m, b, t, md), v in peak.items()
                if (m, b, md) == (model, batch, mode)
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), styles[mode], color=colors[mode], label=mode)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("time steps T")
        ax.set_ylabel("peak memory growth of one step (MiB)")
        ax.set_title(f"{model}, batch {batch}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


README_BEGIN, README_END = "<!-- memory begin -->", "<!-- memory end -->"


def into_readme(readme: str, text: str) -> str:
    """``readme`` with the block between :data:`README_BEGIN` and :data:`README_END` replaced
    by ``text`` (the table, the goals, the breakdown: all generated from the records)."""
    head, begin, rest = readme.partition(README_BEGIN)
    _, end, tail = rest.partition(README_END)
    if not (begin and end):
        raise SystemExit(f"--readme: no {README_BEGIN} ... {README_END} block")
    return f"{head}{begin}\n{text.strip()}\n{end}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--steps", default="25,50,100,200,400")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--repeats", type=int, default=1, help="records wanted per case (of the current code)"
    )
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--report", action="store_true", help="print the table, write the plot")
    parser.add_argument("--readme", help="with --report: rewrite this file's memory block")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # model,mode,T: measure one case
    args = parser.parse_args()
    out = Path(args.out)
    if args.child:
        torch.set_num_threads(args.threads)
        model, mode, t = args.child.split(",")
        print(json.dumps(measure(model, mode, int(t), args.batch, args.device)))
        return
    if args.report:
        records = load_records(out)
        text = table(records) + "\n\n" + summary(records) + "\n"
        (out.parent / "table.md").write_text(text)
        print(text, end="")
        plot(records, out.parent / "memory.png")
        if args.readme:
            parts = [text] + [p.read_text() for p in [out.parent / "breakdown.md"] if p.is_file()]
            path = Path(args.readme)
            path.write_text(into_readme(path.read_text(), "\n".join(parts)))
        return
    models, modes = args.models.split(","), args.modes.split(",")
    for name, values, allowed in (("--models", models, MODELS), ("--modes", modes, MODES)):
        if any(v not in allowed for v in values):
            raise SystemExit(f"{name} must be among {allowed}, got {values}")
    out.parent.mkdir(parents=True, exist_ok=True)
    commit = code_commit()
    code = code_of(commit)
    cases = [(m, int(t), mode) for m in models for t in args.steps.split(",") for mode in modes]
    for _ in range(args.repeats):  # passes over every case: repeats spread out in time
        for model, t, mode in cases:
            done = [case_key(r) for r in load_records(out) if code_of(r.get("commit")) == code]
            if done.count((model, args.batch, t, mode)) >= args.repeats:
                continue
            cmd = [sys.executable, __file__, "--child", f"{model},{mode},{t}"]
            cmd += ["--batch", str(args.batch), "--device", args.device]
            cmd += ["--threads", str(args.threads)]
            child = subprocess.run(cmd, capture_output=True, text=True, check=True)
            record = json.loads(child.stdout.strip().splitlines()[-1])
            record["commit"] = commit
            record["load_avg_1min"] = os.getloadavg()[0]
            record["machine"] = machine_info()
            with out.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
