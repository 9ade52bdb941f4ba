"""The NN task bench: protocol (no test data before training ends), budgets, resume, report."""

import json

import pytest

from polystep.bench import runner, selection
from polystep.bench.methods import METHODS
from polystep.bench.report import markdown_table, write_report
from polystep.bench.tasks import TASKS, load_task_data, resolve_tasks
from polystep.cli import main as cli_main


@pytest.mark.parametrize("method", METHODS)
def test_budget_respected_and_test_split_read_only_after_training(method, monkeypatch):
    calls = []
    real_accuracy = selection.accuracy

    def spy(model, batches):
        calls.append(batches)
        return real_accuracy(model, batches)

    made = []
    real_make = runner.make_loaders

    def make_loaders(*args, **kwargs):
        made.append(real_make(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(selection, "accuracy", spy)
    monkeypatch.setattr(runner, "make_loaders", make_loaders)
    task = TASKS["mlp_mnist"]
    splits = load_task_data(task, "smoke", seed=0)
    payload = runner.run_one(
        task, method, 0, splits, scale="smoke", budget_fwd=2400, budget_seconds=None, device="cpu"
    )
    assert payload["evaluations"] <= 2400
    assert all(p["evaluations"] <= 2400 for p in payload["curve"])
    assert payload["curve"][0]["evaluations"] == 0
    loaders = made[0]
    # Validation only while training; the test loader exactly twice at the end (last, selected).
    assert [c is loaders.val for c in calls[:-2]] == [True] * (len(calls) - 2)
    assert calls[-2] is loaders.test and calls[-1] is loaders.test
    assert len(calls) - 2 == len(payload["curve"])


def test_bench_cli_smoke_all_methods_resumes_and_reports(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["bench", "mlp_mnist", "--scale", "smoke", "--seeds", "0", "--budget-fwd", "2400"]
    assert cli_main([*args, "--out", str(out)]) == 0
    files = sorted(p.name for p in out.glob("*.json"))
    assert len(files) == len(METHODS)
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert cli_main([*args, "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.json")} == stamp  # skipped, not redone
    assert (out / "report.md").exists() and (out / "mlp_mnist.png").exists()
    assert "skip" in capsys.readouterr().out


def _fixture(task, method, seed, acc):
    return {
        "task": task, "method": method, "seed": seed, "test_acc_selected": acc,
        "test_acc_last": acc - 0.01, "evaluations": 1000, "wall_seconds": 2.0,
        "curve": [{"evaluations": 0, "seconds": 0.0, "val_acc": 0.1},
                  {"evaluations": 1000, "seconds": 2.0, "val_acc": acc}],
    }  # fmt: skip


def test_report_aggregates_fixture_json(tmp_path):
    for seed, acc in [(1, 0.90), (2, 0.92), (3, 0.94)]:
        path = runner.run_path(tmp_path, "snn_mnist", "polystep", seed)
        path.write_text(json.dumps(_fixture("snn_mnist", "polystep", seed, acc)))
    runner.run_path(tmp_path, "snn_mnist", "spsa", 1).write_text(
        json.dumps(_fixture("snn_mnist", "spsa", 1, 0.5))
    )
    report = write_report(tmp_path).read_text()
    assert "| snn_mnist | polystep | 3 | 92.0 ± 2.0 | 91.0 ± 2.0 | 1,000 | 2.0 |" in report
    assert "| snn_mnist | spsa | 1 | 50.0 ± 0.0 |" in report
    assert (tmp_path / "snn_mnist.png").stat().st_size > 1000
    assert markdown_table([]).count("\n") == 4


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="task must be"):
        resolve_tasks(["snn"])
    with pytest.raises(ValueError, match="method must be"):
        runner.run_one(
            TASKS["mlp_mnist"], "sgd", 0, None, scale="smoke", budget_fwd=10,
            budget_seconds=None, device="cpu",
        )  # fmt: skip
    with pytest.raises(ValueError, match="scale must be"):
        load_task_data(TASKS["mlp_mnist"], "huge", 0)


def test_atomic_json_write_leaves_no_partial_file(tmp_path):
    path = tmp_path / "a.json"
    runner.write_json_atomic(path, {"x": 1})
    with pytest.raises(TypeError):
        runner.write_json_atomic(path, {"x": object()})
    assert json.loads(path.read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
