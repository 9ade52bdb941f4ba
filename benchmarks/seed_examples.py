"""The paper's README examples, run with polystep and, side by side, with the authors' package.

Three examples, each run exactly as the paper's README writes it (same calls, same arguments):

* ``nn``: the README's network snippet (784-128-10 MLP, ``HybridSubspace.from_layout(rank=8)``,
  softmax, cosine schedules for epsilon and both radii, ``train(..., TrainConfig(epochs=5))``) on
  the first 2,560 MNIST training images (normalised with 0.1307/0.3081), batch 256 shuffled after
  ``torch.manual_seed(seed)``: 10 batches x 5 epochs = 50 steps. Test accuracy on the first 2,000
  MNIST test images (never seen in training, never used to choose anything).
* ``ackley``: the low-level quick start, ``PolyStep.create(Ackley(dim=10), epsilon=0.5,
  max_iterations=50).run(torch.randn(100, 10))``; figure: best Ackley value among the final
  particles (the same formula evaluates both packages' particles).
* ``ask_tell``: the README ask/tell loop, ``PolyStepES(dim=20, epsilon=0.1, step_radius=0.3)``,
  300 ask/tell rounds on ``sum((x - 1)^2)``; figures: best fitness and the value at the mean.

Every example runs in its own process with one torch thread. With ``--against VENV`` (a venv
holding polystep==1.1.0) the same worker runs under that venv's python at the same time as ours,
on the same data and seed, so both see the same machine load; the record holds both results and
the ratios. Records (one JSON line per example and seed) are appended to
``results/seed_examples/runs.jsonl`` as each pair finishes; finished pairs are skipped on rerun.

``--tag NAME`` labels a set of runs (a seed already run under another tag runs again);
Our ``train()`` applies the authors' ``restore_best`` rule itself (without a validation loader,
the weights of lowest loss on the first training batch; the ``seed-gap`` records ran it as a
callback, variant ``keep_best``, before it did). ``--probe NAME...`` runs named variants of the
network snippet with our package only, or theirs for a ``theirs_`` name (the diagnosis of issue
15, records in ``probes.jsonl``; the ``draw_seed_N`` probes change only the optimizer's seed);
``--report`` prints markdown tables of both record files; ``--readme PATH`` rewrites the runs'
tables between the ``<!-- seed_examples begin -->`` and ``<!-- seed_examples end -->`` lines
of PATH.

    python benchmarks/seed_examples.py --against /work/venvs/orig --tag seed-gap
    python benchmarks/seed_examples.py --readme benchmarks/README.md
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "seed_examples"
DATA = HERE.parent.parent / "shared" / "data" / "mnist"
EXAMPLES = ("nn", "ackley", "ask_tell")
N_TRAIN, N_TEST, BATCH, EPOCHS = 2560, 2000, 256, 5

# Variants of the network snippet used to find the cause of issue 15 (our package only).
# "optimizer" entries are extra PolyStepOptimizer keywords, "subspace" extra from_layout ones,
# "train" extra TrainConfig ones; a "theirs_" probe runs under the --against venv instead.
PROBES: dict[str, dict[str, dict[str, Any]]] = {
    "snippet": {},
    "as_written": {},  # the snippet with the code of a later commit (see the commit column)
    "row_scaled": {"optimizer": {"scale_cost": "row"}},
    "raw_units": {"optimizer": {"scale_cost": None}},
    "raw_units_simplex": {"optimizer": {"scale_cost": None, "polytope": "simplex"}},
    "theirs_no_restore_best": {"train": {"restore_best": False}},
    "keep_best": {"keep_best": True},  # train()'s own rule now: runs as "snippet" does
    "orthoplex": {"optimizer": {"polytope": "orthoplex"}},
    "orthoplex_keep_best": {"optimizer": {"polytope": "orthoplex"}, "keep_best": True},
    # The random draws alone (rotations and subspace; data order and model init stay those of
    # the seed): ours and theirs with an explicit optimizer seed.
    "draw_seed_1": {"optimizer": {"seed": 1}},
    "draw_seed_2": {"optimizer": {"seed": 2}},
    "theirs_draw_seed_0": {"optimizer": {"seed": 0}},
    "theirs_draw_seed_1": {"optimizer": {"seed": 1}},
    "draw_seed_3": {"optimizer": {"seed": 3}},
    "draw_seed_4": {"optimizer": {"seed": 4}},
    "draw_seed_5": {"optimizer": {"seed": 5}},
    "theirs_draw_seed_3": {"optimizer": {"seed": 3}},
    "draw_seed_6": {"optimizer": {"seed": 6}},
    "theirs_draw_seed_4": {"optimizer": {"seed": 4}},
    "draw_seed_7": {"optimizer": {"seed": 7}},
    "theirs_draw_seed_5": {"optimizer": {"seed": 5}},
    # the snippet as written once train() applies restore_best itself (commit 727d1e2 on)
    "as_written_restore_best": {},
    "theirs_draw_seed_2": {"optimizer": {"seed": 2}},
}
# Not a training run: the snippet's three schedules evaluated at the steps a 50-step run uses,
# by each package (run with --against to see both).
SCHEDULE_PROBE = "schedules"
SCHEDULE_STEPS = (0, 1, 10, 25, 49, 50, 495, 500)
# Not a training run either: the share ||P^T g||^2 / ||g||^2 of the first batch's loss gradient
# g (at the snippet's initial weights) that HybridSubspace.from_layout(rank=8) can see, per
# weight; the first-order progress of a step is proportional to it.
CAPTURE_PROBE = "capture"
CAPTURE_COLUMNS = ("0.weight", "2.weight")


# -- data (no polystep import: the same code runs under both packages) --------------------------
def read_idx(path: Path) -> Any:
    """An IDX file (plain or gzip) as a uint8 tensor of its stored shape."""
    import torch

    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8)
    return data.reshape(shape)


def load_mnist(root: Path) -> tuple[Any, Any, Any, Any]:
    """First ``N_TRAIN`` train and ``N_TEST`` test images, flattened, normalised; labels long."""

    def images(name: str, n: int) -> Any:
        x = read_idx(root / f"{name}-images-idx3-ubyte.gz")[:n].reshape(n, -1).float() / 255.0
        return (x - 0.1307) / 0.3081

    def labels(name: str, n: int) -> Any:
        return read_idx(root / f"{name}-labels-idx1-ubyte.gz")[:n].long()

    return (
        images("train", N_TRAIN),
        labels("train", N_TRAIN),
        images("t10k", N_TEST),
        labels("t10k", N_TEST),
    )


def ackley(x: Any) -> Any:
    """Ackley (a=20, b=0.2, c=2 pi) of rows ``(N, d) -> (N,)``: the one formula both sides use."""
    import torch

    d = x.shape[1]
    first = -20.0 * torch.exp(-0.2 * torch.sqrt((x * x).sum(1) / d))
    second = -torch.exp(torch.cos(2 * math.pi * x).sum(1) / d)
    return first + second + 20.0 + math.e


# -- workers: one example, one seed, whichever polystep this interpreter imports -----------------
def package_version() -> str:
    import polystep

    return f"polystep {getattr(polystep, '__version__', '?')} ({Path(polystep.__file__).parent})"


def run_nn(seed: int, data: Path, variant: dict[str, dict[str, Any]]) -> dict[str, Any]:
    import torch
    import torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset

    from polystep import PolyStepOptimizer, TrainConfig, train
    from polystep.epsilon import CosineEpsilon
    from polystep.hybrid_subspace import HybridSubspace
    from polystep.transform import ParamLayout

    x_train, y_train, x_test, y_test = load_mnist(data)
    torch.manual_seed(seed)
    train_loader = DataLoader(TensorDataset(x_train, y_train), batch_size=BATCH, shuffle=True)
    start = time.perf_counter()
    # ---- the README snippet, unchanged (plus the probe's extra keywords, none by default) ----
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    layout = ParamLayout.from_module(model)
    subspace = HybridSubspace.from_layout(layout, rank=8, **variant.get("subspace", {}))
    optimizer = PolyStepOptimizer(
        model,
        subspace=subspace,
        solver="softmax",
        epsilon=CosineEpsilon(init=10.0, target=0.1, decay=0.02),
        step_radius=CosineEpsilon(init=5.0, target=1.0, decay=0.008),
        probe_radius=CosineEpsilon(init=10.0, target=2.0, decay=0.016),
        **variant.get("optimizer", {}),
    )
    extra = dict(variant.get("train", {}))
    config = TrainConfig(epochs=EPOCHS, **extra)
    train(model, train_loader, nn.CrossEntropyLoss(), optimizer, config)
    # ---- end of the snippet ----
    wall = time.perf_counter() - start
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    state = getattr(optimizer, "state", None)
    steps = getattr(optimizer, "iteration", None)
    if steps is None or not isinstance(steps, int):
        steps = getattr(state, "iteration_count", None)
    evals = getattr(optimizer, "evaluations", None)
    if evals is None:
        evals = getattr(optimizer, "candidate_evals", None)
    return {
        "test_accuracy": round(accuracy, 4),
        "wall_s": round(wall, 1),
        "steps": steps,
        "candidate_evals": int(evals) if evals is not None else None,
        "subspace_dim": int(getattr(subspace, "dim", getattr(subspace, "subspace_dim", 0))),
    }


def run_ackley(seed: int) -> dict[str, Any]:
    import torch

    from polystep import Ackley
    from polystep.solver import PolyStep

    torch.manual_seed(seed)
    start = time.perf_counter()
    solver = PolyStep.create(Ackley(dim=10), epsilon=0.5, max_iterations=50)
    state = solver.run(torch.randn(100, 10))
    wall = time.perf_counter() - start
    final = getattr(state, "positions", getattr(state, "X", None))
    return {
        "best_final_value": round(float(ackley(final.double()).min()), 6),
        "mean_final_value": round(float(ackley(final.double()).mean()), 6),
        "wall_s": round(wall, 3),
    }


def run_ask_tell(seed: int) -> dict[str, Any]:
    import torch

    from polystep import PolyStepES

    torch.manual_seed(seed)
    start = time.perf_counter()
    es = PolyStepES(dim=20, epsilon=0.1, step_radius=0.3)
    for _ in range(300):
        candidates = es.ask()
        es.tell((candidates - 1).square().sum(dim=1))
    wall = time.perf_counter() - start
    return {
        "best_fitness": round(float(es.best_fitness), 6),
        "value_at_mean": round(float((es.mean - 1).square().sum()), 6),
        "wall_s": round(wall, 3),
    }


def run_schedules() -> dict[str, Any]:
    from polystep.epsilon import CosineEpsilon

    schedules = {
        "epsilon": CosineEpsilon(init=10.0, target=0.1, decay=0.02),
        "step_radius": CosineEpsilon(init=5.0, target=1.0, decay=0.008),
        "probe_radius": CosineEpsilon(init=10.0, target=2.0, decay=0.016),
    }

    def value(schedule: Any, t: int) -> float:
        return float(schedule.at(t) if hasattr(schedule, "at") else schedule(t))

    return {
        name: {str(t): round(value(s, t), 4) for t in SCHEDULE_STEPS}
        for name, s in schedules.items()
    }


def run_capture(seed: int, data: Path) -> dict[str, Any]:
    import torch
    import torch.nn as nn
    from torch.func import functional_call

    from polystep.hybrid_subspace import HybridSubspace
    from polystep.transform import ParamLayout

    x_train, y_train, _, _ = load_mnist(data)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    layout = ParamLayout.from_module(model)
    subspace = HybridSubspace.from_layout(layout, rank=8, seed=seed)
    x, y = x_train[:BATCH], y_train[:BATCH]
    base = {k: v.detach() for k, v in model.named_parameters()}
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    grads = {k: v.grad.detach().clone() for k, v in model.named_parameters()}
    if hasattr(subspace, "init_projections"):  # the authors' package
        projections = subspace.init_projections(torch.device("cpu"), torch.float32)
        z = torch.zeros(subspace.subspace_dim, requires_grad=True)
        params = subspace.apply_perturbation(projections, base, z)
        ranges = {s.entry_key: (s.flat_start, s.flat_end) for s in subspace.specs}
    else:
        z = torch.zeros(subspace.dim, requires_grad=True)
        delta = layout.unflatten(subspace.delta(z))
        params = {k: base[k] + delta[k] for k in base}
        ranges = {s.name: (s.start, s.start + s.size) for s in subspace.segments}
    nn.functional.cross_entropy(functional_call(model, params, (x,)), y).backward()
    out = {}
    for name, g in grads.items():
        lo, hi = ranges[name]
        out[name] = round(float(z.grad[lo:hi].square().sum() / g.square().sum()), 4)
        out[f"{name} coords"] = hi - lo
    return out


def worker(example: str, seed: int, data: Path, variant: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    if example == "nn":
        result = run_nn(seed, data, variant)
    elif example == "ackley":
        result = run_ackley(seed)
    elif example == SCHEDULE_PROBE:
        result = run_schedules()
    elif example == CAPTURE_PROBE:
        result = run_capture(seed, data)
    else:
        result = run_ask_tell(seed)
    return {**result, "package": package_version()}


# -- driver ------------------------------------------------------------------------------------
def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def git_commit() -> str:
    try:
        # from the repository root: "src" is the library (from benchmarks/ it named nothing,
        # so records of uncommitted library code were not marked +dirty before 2026-11-30)
        root = HERE.parent
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"], cwd=root, capture_output=True, text=True
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def start_worker(
    python: str, example: str, seed: int, data: Path, variant: dict[str, Any], log: Path
) -> subprocess.Popen:
    cmd = [python, str(Path(__file__).resolve()), "--worker", example, "--seed", str(seed)]
    cmd += ["--data", str(data), "--variant", json.dumps(variant)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    log.parent.mkdir(parents=True, exist_ok=True)
    # cwd outside the repository: the authors' python must import its own polystep, not ours.
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, cwd="/")


def collect(proc: subprocess.Popen, log: Path) -> dict[str, Any]:
    out, _ = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"worker failed (exit {proc.returncode}); log {log}:\n{tail}")
    return json.loads(lines[-1])


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_record(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float]:
    """``ours / theirs`` for every shared positive number."""
    out = {}
    for key, value in ours.items():
        other = theirs.get(key)
        if isinstance(value, int | float) and isinstance(other, int | float) and other > 0:
            out[key] = round(value / other, 3)
    return out


def run_pairs(args: argparse.Namespace) -> None:
    path = args.out / "runs.jsonl"
    done = {(r["example"], r["seed"], r.get("tag", "")) for r in read_records(path)}
    theirs_python = str(Path(args.against) / "bin" / "python") if args.against else None
    for example in args.examples:
        for seed in args.seeds:
            if (example, seed, args.tag) in done:
                continue
            ours_variant: dict[str, Any] = {}
            logs = args.out / "logs"
            load0, t0 = load_average(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            commit = git_commit()
            ours_log = logs / f"{example}_seed{seed}_ours.log"
            ours_p = start_worker(sys.executable, example, seed, args.data, ours_variant, ours_log)
            theirs_p = None
            if theirs_python:
                theirs_log = logs / f"{example}_seed{seed}_theirs.log"
                theirs_p = start_worker(theirs_python, example, seed, args.data, {}, theirs_log)
            ours = collect(ours_p, ours_log)
            theirs = collect(theirs_p, theirs_log) if theirs_p else None
            record = {
                "example": example,
                "seed": seed,
                "tag": args.tag,
                "ours_variant": ours_variant,
                "ours": ours,
                "theirs": theirs,
                "ratio_ours_over_theirs": ratios(ours, theirs) if theirs else None,
                "started": t0,
                "load_average_start": load0,
                "load_average_end": load_average(),
                "cpu_count": os.cpu_count(),
                "threads_each": 1,
                "concurrent": theirs is not None,
                "commit": commit,
            }
            append_record(path, record)
            print(json.dumps(record), flush=True)


def run_probes(args: argparse.Namespace) -> None:
    path = args.out / "probes.jsonl"
    done = {(r["probe"], r["seed"]) for r in read_records(path)}
    # a diagnostic (not a training run) runs again at a new commit
    measured = {(r["probe"], r["seed"], r["commit"]) for r in read_records(path)}
    for name in args.probe:
        if name in (SCHEDULE_PROBE, CAPTURE_PROBE):
            for seed in [0] if name == SCHEDULE_PROBE else args.seeds:
                if (name, seed, git_commit()) not in measured:
                    run_both_probe(args, path, name, seed)
            continue
        if name not in PROBES:
            choices = sorted([*PROBES, SCHEDULE_PROBE, CAPTURE_PROBE])
            raise SystemExit(f"--probe must be among {choices}, got {name!r}")
        for seed in args.seeds:
            if (name, seed) in done:
                continue
            log = args.out / "logs" / f"probe_{name}_seed{seed}.log"
            load0, commit = load_average(), git_commit()
            python = sys.executable
            if name.startswith("theirs_"):
                if not args.against:
                    raise SystemExit(f"--probe {name} needs --against VENV")
                python = str(Path(args.against) / "bin" / "python")
            proc = start_worker(python, "nn", seed, args.data, PROBES[name], log)
            record = {
                "probe": name,
                "seed": seed,
                "variant": PROBES[name],
                "ours": collect(proc, log),
                "load_average_start": load0,
                "load_average_end": load_average(),
                "commit": commit,
            }
            append_record(path, record)
            print(json.dumps(record), flush=True)


def run_both_probe(args: argparse.Namespace, path: Path, name: str, seed: int) -> None:
    """A diagnostic worker under our python and (with ``--against``) under theirs."""
    pythons = {"ours": sys.executable}
    if args.against:
        pythons["theirs"] = str(Path(args.against) / "bin" / "python")
    logs = {side: args.out / "logs" / f"probe_{name}_seed{seed}_{side}.log" for side in pythons}
    procs = {
        side: start_worker(python, name, seed, args.data, {}, logs[side])
        for side, python in pythons.items()
    }
    results = {side: collect(proc, logs[side]) for side, proc in procs.items()}
    record = {"probe": name, "seed": seed, **results, "commit": git_commit()}
    append_record(path, record)
    print(json.dumps(record), flush=True)


# -- report ------------------------------------------------------------------------------------
def _mean(values: list[float]) -> str:
    return f"{statistics.mean(values):.4g}" if values else "-"


TARGET_ACCURACY = 0.818  # issue 15: the authors' figure for the snippet


def target_line(
    ours: list[float], theirs: list[float], wall: list[float], their_wall: list[float]
) -> str:
    """Issue 15's target on these runs: mean >= TARGET_ACCURACY and >= theirs, less wall time."""
    mean, their_mean = statistics.mean(ours), statistics.mean(theirs)
    ratio = sum(wall) / sum(their_wall)
    checks = [
        (mean >= TARGET_ACCURACY, f"ours mean {mean:.4f} vs {TARGET_ACCURACY}"),
        (mean >= their_mean, f"vs theirs {their_mean:.4f}"),
        (ratio < 1, f"total wall time ours/theirs {ratio:.3f}"),
    ]
    verdict = "met" if all(ok for ok, _ in checks) else "NOT met"
    parts = "; ".join(f"{text} ({'yes' if ok else 'no'})" for ok, text in checks)
    return f"Issue 15 target on these {len(ours)} seeds: **{verdict}**: {parts}."


README_BEGIN, README_END = "<!-- seed_examples begin -->", "<!-- seed_examples end -->"


def write_readme(path: Path, out: Path) -> None:
    """Rewrite the block between ``README_BEGIN`` and ``README_END`` in ``path`` with the runs'
    tables (generated from the records in ``out``; nothing else in the file changes)."""
    text = path.read_text()
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1:
        raise SystemExit(f"{path} needs one {README_BEGIN} and one {README_END} line")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    block = report(out, probes=False).replace("\n### ", "\n#### ")
    block = f"{block.strip()}\n\n{proxy_summary(out)}".strip()
    path.write_text(f"{head}{README_BEGIN}\n{block}\n{README_END}{tail}")


def proxy_summary(out: Path) -> str:
    """The digits proxy's paired comparison (``seed_examples_proxy.py``), from its records."""
    sys.path.insert(0, str(HERE))
    from seed_examples_proxy import paired_lines

    lines = paired_lines(read_records(out / "proxy.jsonl"))
    if not lines:
        return ""
    title = (
        "#### Digits proxy of the snippet (`seed_examples_proxy.py`: 64-64-10, 55 steps, "
        "test accuracy; ours and theirs at the same time, one thread each)"
    )
    return "\n".join([title, "", *lines])


def report(out: Path, probes: bool = True) -> str:
    """Markdown tables from the records in ``out`` (runs, then probes)."""
    lines: list[str] = []
    runs = read_records(out / "runs.jsonl")
    figure = {"nn": "test_accuracy", "ackley": "best_final_value", "ask_tell": "best_fitness"}
    tags = list(dict.fromkeys(r.get("tag", "") for r in runs))
    for tag, example in [(t, e) for t in reversed(tags) for e in EXAMPLES]:
        rows = [r for r in runs if r["example"] == example and r.get("tag", "") == tag]
        if not rows:
            continue
        key = figure[example]
        variants = {json.dumps(r.get("ours_variant", {})) for r in rows}
        ours_note = "; ours: the example as written"
        if variants != {"{}"}:
            ours_note = f"; ours with {' / '.join(sorted(variants))}"
        lines += [
            f"### {example}, runs {tag or 'untagged'} ({key}; wall_s = seconds of the example "
            f"itself, one thread each{ours_note})",
            "",
            f"| seed | ours {key} | theirs {key} | ours wall_s | theirs wall_s | "
            "wall ratio ours/theirs | load average (start/end, 2 cores) | commit |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(rows, key=lambda r: r["seed"]):
            theirs = r["theirs"] or {}
            ratio = (r["ratio_ours_over_theirs"] or {}).get("wall_s", "-")
            lines.append(
                f"| {r['seed']} | {r['ours'][key]} | {theirs.get(key, '-')} | "
                f"{r['ours']['wall_s']} | {theirs.get('wall_s', '-')} | {ratio} | "
                f"{r['load_average_start']} / {r['load_average_end']} | {r['commit']} |"
            )
        ours_vals = [r["ours"][key] for r in rows]
        theirs_vals = [r["theirs"][key] for r in rows if r["theirs"]]
        ours_wall = [r["ours"]["wall_s"] for r in rows]
        theirs_wall = [r["theirs"]["wall_s"] for r in rows if r["theirs"]]
        lines += [
            f"| mean | {_mean(ours_vals)} | {_mean(theirs_vals)} | {_mean(ours_wall)} | "
            f"{_mean(theirs_wall)} | | | |",
            "",
        ]
        if example == "nn" and theirs_vals and len(theirs_vals) == len(ours_vals):
            lines += [target_line(ours_vals, theirs_vals, ours_wall, theirs_wall), ""]
    if not probes:
        return "\n" + "\n".join(lines)
    records = read_records(out / "probes.jsonl")
    runs_of_nn = [r for r in records if r["probe"] in PROBES]
    if runs_of_nn:
        lines += [
            "### Probes of the network snippet (MNIST, 50 steps; ours unless the name says)",
            "",
            "| probe | package | extra keywords | seed | test accuracy | wall_s | steps | "
            "candidate evals | load average (start/end) | commit |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in runs_of_nn:
            o = r["ours"]
            lines.append(
                f"| {r['probe']} | {o['package'].split(' (')[0]} | "
                f"`{json.dumps(r['variant'])}` | {r['seed']} | "
                f"{o['test_accuracy']} | {o['wall_s']} | {o['steps']} | {o['candidate_evals']} | "
                f"{r['load_average_start']} / {r['load_average_end']} | {r['commit']} |"
            )
        lines.append("")
    for r in records:
        if r["probe"] == SCHEDULE_PROBE:
            lines += [f"### The snippet's schedules at step t (commit {r['commit']})", ""]
            steps = [str(t) for t in SCHEDULE_STEPS]
            lines += ["| package | schedule | " + " | ".join(f"t={t}" for t in steps) + " |"]
            lines += ["|---|---|" + "---|" * len(steps)]
            for side in ("ours", "theirs"):
                for name, values in r.get(side, {}).items():
                    if isinstance(values, dict):
                        cells = " | ".join(str(values[t]) for t in steps)
                        lines.append(f"| {side} | {name} | {cells} |")
            lines.append("")
    lines += draw_lines(runs, records)
    captured = [r for r in records if r["probe"] == CAPTURE_PROBE]
    if captured:
        lines += [
            "### Share of the first batch's gradient the rank-8 hybrid space sees, per weight",
            "",
            "| seed | package | commit | " + " | ".join(CAPTURE_COLUMNS) + " |",
            "|---|---|---|" + "---|" * len(CAPTURE_COLUMNS),
        ]
        for r in captured:
            for side in ("ours", "theirs"):
                if side in r:
                    cells = " | ".join(
                        f"{r[side][k]} ({r[side][k + ' coords']} coords)" for k in CAPTURE_COLUMNS
                    )
                    lines.append(f"| {r['seed']} | {side} | {r['commit']} | {cells} |")
        lines.append("")
    return "\n".join(lines)


DRAWS_TAG = "seed-gap"  # the runs whose draws are each package's default (ours: seed=0)
# ours again, with its later default (seed=None: drawn from torch's global generator); theirs
# in these runs repeats its DRAWS_TAG runs exactly (same code, data and seed), counted once
TORCH_SEED_TAG = "torch-seed"


def draw_lines(runs: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[str]:
    """The network snippet's test accuracy when only the random draws change (the optimizer's
    ``seed``: rotations and subspace; data order and initial weights stay the data seed's),
    each package's default draws taken from the runs tagged ``DRAWS_TAG``; then every such
    result of each package pooled (mean, sd) and the difference of the means with its
    standard error (Welch)."""
    rows = []
    for r in runs:
        if r["example"] == "nn" and r.get("tag") == DRAWS_TAG:
            rows.append(("ours", "default (seed=0)", r["seed"], r["ours"], r["commit"]))
            if r["theirs"]:
                rows.append(("theirs", "default (torch's generator)", r["seed"], r["theirs"], ""))
        if r["example"] == "nn" and r.get("tag") == TORCH_SEED_TAG:
            draw = "default (seed=None: torch's generator)"
            rows.append(("ours", draw, r["seed"], r["ours"], r["commit"]))
    for r in records:
        if "draw_seed" in r["probe"]:
            side = "theirs" if r["probe"].startswith("theirs_") else "ours"
            draw = f"seed={r['variant']['optimizer']['seed']}"
            rows.append((side, draw, r["seed"], r["ours"], r["commit"]))
    if not any(draw.startswith("seed=") for _, draw, *_ in rows):
        return []
    lines = [
        f"### The random draws alone (optimizer seed; runs {DRAWS_TAG} and {TORCH_SEED_TAG} "
        "for the defaults)",
        "",
        "| package | draws | data seed | test accuracy | commit |",
        "|---|---|---|---|---|",
    ]
    for side, draw, seed, result, commit in sorted(rows, key=lambda r: (r[2], r[0], r[1])):
        lines.append(f"| {side} | {draw} | {seed} | {result['test_accuracy']} | {commit} |")
    pooled = {
        side: [res["test_accuracy"] for s, _, _, res, _ in rows if s == side]
        for side in ("ours", "theirs")
    }
    lines.append("")
    for side, values in pooled.items():
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        lines.append(
            f"- {side}: {len(values)} runs, mean {statistics.mean(values):.4f}, sd {sd:.4f}"
        )
    ours, theirs = pooled["ours"], pooled["theirs"]
    if len(ours) > 1 and len(theirs) > 1:
        diff = statistics.mean(ours) - statistics.mean(theirs)
        se = math.sqrt(
            statistics.variance(ours) / len(ours) + statistics.variance(theirs) / len(theirs)
        )
        lines.append(f"- ours - theirs: {diff:+.4f} (standard error {se:.4f})")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", nargs="+", default=list(EXAMPLES), choices=EXAMPLES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--against", help="a venv holding the authors' polystep==1.1.0")
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the MNIST IDX files")
    parser.add_argument("--out", type=Path, default=OUT, help="where the records go")
    parser.add_argument("--probe", nargs="+", help=f"probe variants: {sorted(PROBES)}")
    parser.add_argument(
        "--tag", default="", help="label of a set of runs (a seed is rerun under a new tag)"
    )
    parser.add_argument("--report", action="store_true", help="print the tables and exit")
    parser.add_argument(
        "--readme", type=Path, help=f"rewrite the runs' tables between {README_BEGIN} lines"
    )
    parser.add_argument(
        "--worker", choices=[*EXAMPLES, SCHEDULE_PROBE, CAPTURE_PROBE], help=argparse.SUPPRESS
    )
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.seed, args.data, json.loads(args.variant))))
    elif args.readme:
        write_readme(args.readme, args.out)
    elif args.report:
        print(report(args.out))
    elif args.probe:
        run_probes(args)
    else:
        if "nn" in args.examples and not (args.data / "train-images-idx3-ubyte.gz").exists():
            raise SystemExit(f"MNIST IDX files not found in {args.data} (use --data)")
        run_pairs(args)


if __name__ == "__main__":
    main()
