"""A bench run interrupted part-way resumes from its partial checkpoint and writes the record an
uninterrupted run writes (every figure but the times); a partial written under another
configuration, or unreadable, is set aside, never used; no partial outlives its run's record.

Runs are interrupted deterministically: the checkpoint writer (``train()``'s for PolyStep and
Adam, the partial's for the vector baselines) raises (or, in a subprocess, SIGKILLs the process)
right after its k-th write; checkpoints are written after every step (``EVERY_SECONDS`` patched
to a nanosecond). Digits, smoke scale, small budgets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from polystep import training
from polystep.bench import outdir, partial, readme, report, runner
from polystep.bench.selection import Selector
from polystep.bench.tasks import TASKS
from polystep.checkpoint import load_checkpoint, save_checkpoint

TIMES = {"wall_seconds", "train_seconds", "budget_seconds_used", "longest_step_seconds"}
# mlp_mnist at smoke: 4 PolyStep steps, 40 Adam steps, 8 OpenAI-ES and CMA-ES generations (50 a
# population), 25 SPSA iterations (8 directions)
BUDGETS = {"polystep": 4000, "adam": 40, "openai_es": 400, "spsa": 400, "cmaes": 400}
pytestmark = pytest.mark.filterwarnings("ignore:evaluator 'auto' uses vmap")


class Interrupted(Exception):
    """Stands in for the session ending."""


def bench(out: Path, method: str, budget: int | None = None, log: list[str] | None = None) -> Path:
    lines = [] if log is None else log
    (path,) = runner.run_bench(
        [TASKS["mlp_mnist"]], [method], [0], scale="smoke", out_dir=out,
        budget_fwd=budget or BUDGETS[method], log=lines.append,
    )  # fmt: skip
    return path


def interrupted_bench(out: Path, method: str, monkeypatch, after: int, **kwargs: Any) -> None:
    """The bench, stopped right after the ``after``-th checkpoint write."""
    real, writes = training.save_checkpoint, []

    def write_then_stop(path: Path, payload: dict[str, Any]) -> None:
        real(path, payload)
        writes.append(path)
        if len(writes) == after:
            raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(training, "save_checkpoint", write_then_stop)
        patch.setattr(partial, "save_checkpoint", write_then_stop)
        with pytest.raises(Interrupted):
            bench(out, method, **kwargs)


def without_times(record: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in record.items() if k not in TIMES | {"resumes"}}
    kept["curve"] = [{k: v for k, v in p.items() if k != "seconds"} for p in record["curve"]]
    return kept


def partials(out: Path) -> list[Path]:
    return sorted(p for p in (out / "partial").rglob("*") if p.is_file())


@pytest.fixture(autouse=True)
def checkpoint_every_step(monkeypatch) -> None:
    monkeypatch.setattr(partial, "EVERY_SECONDS", 1e-9)


@pytest.mark.parametrize("method", ["polystep", "adam", "openai_es", "spsa", "cmaes"])
def test_an_interrupted_run_resumes_to_the_record_of_an_uninterrupted_one(
    method: str, tmp_path: Path, monkeypatch
) -> None:
    reference = json.loads(bench(tmp_path / "a", method).read_text())
    assert partials(tmp_path / "a") == []  # deleted once the record was written
    interrupted_bench(tmp_path / "b", method, monkeypatch, after=2)
    assert [p.name for p in partials(tmp_path / "b")] == [f"mlp_mnist__{method}__seed0.ckpt"]
    assert not list((tmp_path / "b").glob("*.json"))
    log: list[str] = []
    resumed = json.loads(bench(tmp_path / "b", method, log=log).read_text())
    assert any(line.startswith("resume mlp_mnist") for line in log)
    assert resumed["resumes"] == 1 and reference["resumes"] == 0
    assert without_times(resumed) == without_times(reference)
    steps = [p["step"] for p in resumed["curve"]]
    assert steps == sorted(steps) and steps.count(0) == 1  # one curve; its start scored once
    assert resumed["evaluations"] == reference["evaluations"] > 0
    assert partials(tmp_path / "b") == []
    assert "| 1 of 1 (1 resume) |" in report.markdown_table(report.load_runs(tmp_path / "b"))


def test_a_partial_of_another_configuration_or_unreadable_is_set_aside(
    tmp_path: Path, monkeypatch
) -> None:
    reference = json.loads(bench(tmp_path / "a", "adam", budget=30).read_text())
    interrupted_bench(tmp_path / "b", "adam", monkeypatch, after=3)  # budget 40
    log: list[str] = []
    record = json.loads(bench(tmp_path / "b", "adam", budget=30, log=log).read_text())
    assert record["resumes"] == 0 and without_times(record) == without_times(reference)
    assert any("start over" in line and "budget_fwd: 40 -> 30" in line for line in log)
    (kept,) = partials(tmp_path / "b")  # the old partial, kept aside for inspection
    assert kept.parent.name == "stale" and kept.name.startswith("mlp_mnist__adam__seed0.")
    # A partial that is not a complete polystep checkpoint: set aside too, and the run is done.
    os.replace(tmp_path / "b" / "mlp_mnist__adam__seed0.json", tmp_path / "done.json")
    broken = partial.partial_path(tmp_path / "b", "mlp_mnist", "adam", 0)
    broken.write_bytes(b"half a checkpoint")
    log.clear()
    record = json.loads(bench(tmp_path / "b", "adam", budget=30, log=log).read_text())
    assert record["resumes"] == 0 and without_times(record) == without_times(reference)
    assert any("start over" in line and "not a polystep checkpoint" in line for line in log)
    assert [p.name.endswith(".unrecorded.ckpt") for p in partials(tmp_path / "b")] == [False, True]


def test_a_partial_left_beside_a_finished_record_is_removed(tmp_path: Path) -> None:
    bench(tmp_path, "adam")
    left = partial.partial_path(tmp_path, "mlp_mnist", "adam", 0)
    left.write_bytes(b"left by a run killed between its record and the clean-up")
    log: list[str] = []
    bench(tmp_path, "adam", log=log)
    assert any(line.startswith("skip ") for line in log) and partials(tmp_path) == []


def test_selector_state_round_trips_and_refuses_another_schedule() -> None:
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    batches = [(x, (x[:, 0] > 0).long())]
    model = torch.nn.Linear(4, 2)
    selector = Selector(batches, eval_every=10)
    selector.observe(model, 0, 0, 0.0)
    selector.observe(model, 12, 1, 1.5)
    copy = Selector(batches, eval_every=10)
    copy.load_state_dict(selector.state_dict())
    assert copy.state_dict()["curve"] == selector.curve and copy.due(19, 0.0) is False
    assert copy.due(20, 0.0) and copy.best_step == selector.best_step
    other = Selector(batches, eval_every=5)
    with pytest.raises(ValueError, match="validates every"):
        other.load_state_dict(selector.state_dict())
    assert other.curve == []


KILLER = """
import os, signal, sys
from polystep import training
from polystep.checkpoint import load_checkpoint, save_checkpoint
from polystep.bench import partial
from polystep.cli import main

partial.EVERY_SECONDS = 1e-9
real, writes = training.save_checkpoint, []

def write_then_die(path, payload):
    real(path, payload)
    writes.append(path)
    if len(writes) == 2:
        os.kill(os.getpid(), signal.SIGKILL)

training.save_checkpoint = write_then_die
main(sys.argv[1:])
"""


def test_a_bench_killed_with_sigkill_resumes_when_the_same_command_runs_again(
    tmp_path: Path,
) -> None:
    from polystep.cli import main

    args = ["bench", "mlp_mnist", "--methods", "polystep", "--seeds", "0", "--budget-fwd",
            str(BUDGETS["polystep"]), "--out", str(tmp_path)]  # fmt: skip
    killed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLER), *args], capture_output=True, timeout=240
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert len(partials(tmp_path)) == 1 and not list(tmp_path.glob("*.json"))
    assert main(args) == 0
    record = json.loads((tmp_path / "mlp_mnist__polystep__seed0.json").read_text())
    steps = [p["step"] for p in record["curve"]]
    assert record["resumes"] == 1 and steps == sorted(steps) and steps.count(0) == 1
    assert record["evaluations"] == record["steps"] * record["passes_per_step"] > 0
    assert partials(tmp_path) == []


def test_archive_names_a_stale_file_after_its_code_and_never_overwrites_one(tmp_path: Path) -> None:
    record, kept = tmp_path / "mlp_mnist__spsa__seed0.json", []
    for text in ("first", "second", "third"):
        record.write_text(text)
        kept.append(outdir.archive(record, "abcdef0123456789"))
    part = tmp_path / "partial" / "mlp_mnist__spsa__seed0.ckpt"
    part.parent.mkdir()
    part.write_text("a partial of unknown code")
    kept.append(outdir.archive(part, None))
    names = [f"{p.parent.parent.name}/{p.parent.name}/{p.name}" for p in kept]
    stem, root = "mlp_mnist__spsa__seed0", tmp_path.name
    assert names == [
        f"{root}/stale/{stem}.abcdef012345.json",
        f"{root}/stale/{stem}.abcdef012345.1.json",
        f"{root}/stale/{stem}.abcdef012345.2.json",
        f"partial/stale/{stem}.unrecorded.ckpt",
    ]
    assert [p.read_text() for p in kept[:3]] == ["first", "second", "third"]
    assert not record.exists() and not part.exists()


def test_the_tables_say_which_runs_were_resumed_and_where_that_is_not_recorded() -> None:
    def run(seed: int, **fields: Any) -> dict[str, Any]:
        return {
            "task": "snn_mnist", "method": "polystep", "seed": seed, "scale": "full",
            "test_acc_selected": 0.9, "test_acc_last": 0.9, "evaluations": 10,
            "wall_seconds": 1234.4, "curve": [], **fields,
        }  # fmt: skip

    runs = [run(1, resumes=0), run(2, resumes=2), run(3, resumes=1)]
    assert report.resumed(runs) == "2 of 3 (3 resumes)"
    assert report.resumed([*runs, run(4)]) == "2 of 3 (3 resumes), 1 not recorded"
    assert report.resumed([run(4)]) == "not recorded"
    assert report.resumed(runs[:1]) == "0 of 1"
    row = next(line for line in report.markdown_table(runs).splitlines() if "snn_mnist" in line)
    assert row.endswith("| 2 of 3 (3 resumes) |")
    assert readme.resumed_line(runs) == (
        "Runs resumed from a partial checkpoint: 2 of 3 (3 resumes) (snn_mnist PolyStep seed 2: "
        "2x, 1234 s wall over its sessions; snn_mnist PolyStep seed 3: 1x, 1234 s wall over its "
        "sessions)."
    )
    assert readme.resumed_line([run(4)]).endswith("not recorded (records predate the field).")


def test_a_resumed_baseline_gets_only_the_seconds_its_earlier_sessions_left(
    tmp_path: Path, monkeypatch
) -> None:
    def run() -> Path:
        (path,) = runner.run_bench(
            [TASKS["mlp_mnist"]], ["openai_es"], [0], scale="smoke", out_dir=tmp_path,
            budget_fwd=400, budget_seconds=600.0, log=lambda *_: None,
        )  # fmt: skip
        return path

    real, writes = partial.save_checkpoint, []

    def write_then_stop(path: Path, payload: dict[str, Any]) -> None:
        real(path, payload)
        writes.append(path)
        if len(writes) == 3:
            raise Interrupted

    with monkeypatch.context() as patch, pytest.raises(Interrupted):
        patch.setattr(partial, "save_checkpoint", write_then_stop)
        run()
    where = partial.partial_path(tmp_path, "mlp_mnist", "openai_es", 0)
    payload = load_checkpoint(where)
    assert payload["spent"]["steps"] == 3
    payload["spent"]["seconds"] = 600.0  # as if the earlier session had trained 600 s
    save_checkpoint(where, payload)
    record = json.loads(run().read_text())
    assert record["resumes"] == 1 and record["generations"] == 3
    assert record["evaluations"] == 150 and record["budget_seconds_used"] >= 600.0
