"""A bench you can trust: the wall-second rule, the untrained-model mark, the code version.

Wall-second behaviour is tested on a fake clock that moves only when a model runs a forward
pass (1 fake second per call), so nothing here depends on the machine's speed or load.
"""

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from polystep import deadline
from polystep.bench import runner, selection
from polystep.bench.methods import METHODS
from polystep.bench.report import load_runs, markdown_table
from polystep.bench.tasks import TASKS, TaskSpec, load_task_data

FAKE_NOW = [0.0]


class FakeTime:
    """Stands in for the ``time`` module of the runner and of the training clock."""

    @staticmethod
    def perf_counter() -> float:
        return FAKE_NOW[0]


class Ticking(nn.Module):
    """A linear classifier whose every forward call costs one fake second."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        FAKE_NOW[0] += 1.0
        return self.linear(x)


def _ticking_task() -> TaskSpec:
    base = TASKS["mlp_mnist"]
    return TaskSpec(
        "ticking", "mnist", lambda i, h, c, s: Ticking(i, c), "default", "fake-clock linear",
        base.scales, has_twin=False,
    )  # fmt: skip


def test_step_budget_does_not_start_a_step_that_would_end_past_the_limit():
    now = [0.0]
    budget = deadline.StepBudget(None, 10.0, clock=lambda: now[0])
    budget.start()
    started = []
    while budget.allows(1):
        started.append(now[0])
        now[0] += 3.0  # every step takes 3 s
        budget.charge(1)
    # The first step has no estimate; the step that would start at 9 s would end at 12 s.
    assert started == [0.0, 3.0, 6.0]
    assert budget.steps == 3 and budget.longest_step == 3.0


@pytest.mark.filterwarnings("ignore:evaluator 'auto' uses vmap")
@pytest.mark.parametrize("method", METHODS)
def test_no_method_runs_past_the_wall_budget_and_validation_is_not_counted(method, monkeypatch):
    monkeypatch.setattr(runner, "time", FakeTime)
    monkeypatch.setattr(deadline, "time", FakeTime)
    FAKE_NOW[0] = 0.0
    task = _ticking_task()
    splits = load_task_data(task, "smoke", seed=0)
    limit = 10.5  # not a multiple of any step time: crossing it cannot end exactly on it
    payload = runner.run_one(
        task, method, 0, splits, scale="smoke", budget_fwd=10**15, budget_seconds=limit,
        device="cpu",
    )  # fmt: skip
    steps = payload.get("steps", payload.get("generations"))
    assert steps >= 2  # the estimate was used, not only the first step
    assert payload["curve"][-1]["seconds"] <= limit
    assert limit - payload["longest_step_seconds"] < payload["budget_seconds_used"] <= limit
    # The budget's clock is the selector's training clock (validation excluded from both), and
    # every validation cost fake seconds that the budget did not count.
    assert payload["budget_seconds_used"] == pytest.approx(payload["curve"][-1]["seconds"])
    assert FAKE_NOW[0] >= payload["budget_seconds_used"] + len(payload["curve"])
    assert "validation excluded for every method" in payload["protocol"]


def test_selector_records_the_step_and_says_when_the_initial_model_wins():
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
        model.weight[1, 0] = 1.0  # the initial model is right
    selector = selection.Selector([(x, y)], eval_every=1)
    selector.observe(model, 0, 0, 0.0)
    with torch.no_grad():
        model.weight.neg_()  # "training" made it worse
    selector.observe(model, 10, 1, 1.0)
    figures = selector.finish(model, [(x, y)])
    assert figures["selected_step"] == 0 and figures["test_acc_selected"] == 1.0
    assert [p["step"] for p in figures["curve"]] == [0, 1]


def test_run_records_selected_step_and_code_version():
    task = TASKS["mlp_mnist"]
    splits = load_task_data(task, "smoke", seed=0)
    payload = runner.run_one(
        task, "spsa", 0, splits, scale="smoke", budget_fwd=400, budget_seconds=None, device="cpu"
    )
    chosen = [p for p in payload["curve"] if p["step"] == payload["selected_step"]]
    assert chosen and chosen[0]["val_acc"] == payload["val_acc_selected"]
    code = payload["code"]
    assert re.fullmatch(r"[0-9a-f]{64}", code["source"])
    assert code["package"] == payload["versions"]["polystep"]
    assert payload["protocol"] == runner.PROTOCOL and payload["config"]["budget_fwd"] == 400


def _record(method, seed, acc, **extra):
    return {
        "task": "moe_20", "method": method, "seed": seed, "scale": "cpu",
        "test_acc_selected": acc, "test_acc_last": acc, "evaluations": 10, "wall_seconds": 1.0,
        "curve": [], **extra,
    }  # fmt: skip


def test_report_marks_untrained_selections_new_and_old_records():
    runs = [
        _record("polystep", 1, 0.07, selected_step=0),
        _record("polystep", 2, 0.08, selected_at_evaluations=0),  # an older record
        _record("spsa", 1, 0.3, selected_step=0),
        _record("spsa", 2, 0.4, selected_step=5, selected_at_evaluations=0),
        _record("adam", 1, 0.9),  # oldest records: nothing known, nothing claimed
    ]
    rows = {
        line.split(" | ")[2]: line for line in markdown_table(runs).splitlines() if "moe" in line
    }
    assert "(untrained model selected) |" in rows["polystep"]
    assert "(untrained model selected in 1 of 2 seeds)" in rows["spsa"]
    assert "untrained" not in rows["adam"]


def test_report_flags_records_of_different_code():
    def code(source, commit):
        return {"source": source, "commit": commit, "package": "0.1.0"}

    runs = [
        _record("polystep", 1, 0.5, code=code("a" * 64, "c1")),
        _record("polystep", 2, 0.6, code=code("b" * 64, "c2")),
        _record("spsa", 1, 0.3, code=code("a" * 64, "c1")),
        _record("adam", 1, 0.9),
    ]
    table = markdown_table(runs)
    rows = {line.split(" | ")[2]: line for line in table.splitlines() if "moe" in line}
    assert rows["polystep"].endswith("| A, B (mixed) |")
    assert rows["spsa"].endswith("| A |")
    assert rows["adam"].endswith("| not recorded |")
    assert "- A: source sha256 aaaaaaaaaaaa, commit c1" in table
    assert "- B: source sha256 bbbbbbbbbbbb, commit c2" in table
    same = markdown_table(runs[2:3])
    assert "| code |" not in same and "Code version of every run:" in same


def test_committed_records_still_load_and_report():
    folder = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "nn_cpu_45s"
    if not folder.is_dir():
        pytest.skip("no committed 45 s records in this checkout")
    table = markdown_table(load_runs(folder))
    moe = [
        line for line in table.splitlines() if line.startswith("| moe_20 |") and "polystep" in line
    ]
    assert moe and "(untrained model selected)" in moe[0]
    assert "not recorded" in table
    assert json.loads((folder / "moe_20__polystep__seed42.json").read_text())["task"] == "moe_20"


def test_report_shows_the_seconds_counted_against_the_budget():
    runs = [
        _record("polystep", 1, 0.5, budget_seconds_used=44.0),
        _record("polystep", 2, 0.5, budget_seconds_used=44.9),
        _record("spsa", 1, 0.3),  # an older record: its wall seconds include validation
    ]
    rows = {
        line.split(" | ")[2]: line for line in markdown_table(runs).splitlines() if "moe" in line
    }
    assert rows["polystep"].endswith("| 1.0 | 44.9 | not recorded |")  # then: runs resumed
    assert rows["spsa"].endswith("| 1.0 | not recorded | not recorded |")
