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
        "task": task, "method": method, "seed": seed, "scale": "cpu", "test_acc_selected": acc,
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
    assert "| snn_mnist | MNIST | polystep | 3 | 92.0 ± 2.0 | 91.0 ± 2.0 | 1,000 | 2.0 |" in report
    assert "| snn_mnist | MNIST | spsa | 1 | 50.0 ± 0.0 |" in report
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


# ----- hardening: no lost or stale records, truthful data labels --------------------------------

SMOKE_ARGS = ["bench", "mlp_mnist", "--scale", "smoke", "--seeds", "0", "--methods", "spsa"]


@pytest.mark.bad_input(
    "`polystep bench TASK --out DIR` again with another budget",
    "refused before training, naming the file and the differing settings (was: old runs 'done')",
)
def test_rerun_with_another_budget_is_refused_not_reported_done(tmp_path, capsys):
    out = str(tmp_path / "bench")
    assert cli_main([*SMOKE_ARGS, "--budget-fwd", "600", "--out", out]) == 0
    record = tmp_path / "bench" / "mlp_mnist__spsa__seed0.json"
    before = record.read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*SMOKE_ARGS, "--budget-fwd", "900", "--out", out])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --out" in err and "mlp_mnist__spsa__seed0.json" in err
    assert "budget_fwd: 600 -> 900" in err
    assert record.read_text() == before  # the old record is untouched
    assert cli_main([*SMOKE_ARGS, "--budget-fwd", "600", "--out", out]) == 0  # same: skipped
    skipped = "skip mlp_mnist__spsa__seed0.json (done, same configuration and code)"
    assert skipped in capsys.readouterr().out


@pytest.mark.bad_input(
    "`--out` that cannot be written",
    "argparse error naming --out before any training (was: failure after training)",
)
def test_unwritable_out_fails_before_training(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    trained = []
    monkeypatch.setattr(runner, "run_one", lambda *a, **k: trained.append(1))
    for argv in (
        [*SMOKE_ARGS, "--out", str(blocker / "sub")],
        ["bench", "rl", "--scale", "smoke", "--out", str(blocker / "sub")],
        ["bench", "maxsat", "--scale", "smoke", "--out", str(blocker / "sub")],
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(argv)
        assert exit_info.value.code == 2
        assert f"argument --out: cannot write to {blocker / 'sub'}" in capsys.readouterr().err
    assert trained == []


@pytest.mark.bad_input(
    "`polystep bench rl --out DIR` run twice",
    "records appended, finished runs skipped, another config refused (was: runs.jsonl truncated)",
)
def test_rl_bench_twice_keeps_every_record(tmp_path, capsys):
    from polystep.bench import rl

    base = ["--env", "cartpole", "--method", "polystep", "--seeds", "1", "--scale", "smoke"]
    out = ["--out", str(tmp_path)]
    assert rl.main([*base, "--policy", "tanh", *out]) == 0
    first = (tmp_path / "runs.jsonl").read_text()
    assert rl.main([*base, "--policy", "tanh,binary", *out]) == 0
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert (tmp_path / "runs.jsonl").read_text().startswith(first)
    assert [json.loads(line)["policy"] for line in lines] == ["tanh", "binary"]
    skipped = "skip cartpole tanh polystep seed 1 (done, same configuration)"
    assert skipped in capsys.readouterr().out
    with pytest.raises(SystemExit):
        rl.main([*base, "--policy", "tanh", "--budget", "48", *out])
    assert "budget: 96 -> 48" in capsys.readouterr().err
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 2
    # Records written before run_config existed are matched on budget, episodes and preset.
    legacy = [json.loads(line) for line in lines]
    for rec in legacy:
        del rec["run_config"]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in legacy))
    assert rl.main([*base, "--policy", "tanh", *out]) == 0
    assert "seed 1 (done, same configuration)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        rl.main([*base, "--policy", "tanh", "--episodes", "9", "--scale", "full", *out])
    assert "budget: 96 -> 3216" in capsys.readouterr().err


@pytest.mark.bad_input(
    "`polystep bench snn_mnist` at the default scale (smoke)",
    "log, JSON and table say it trains on sklearn digits, not MNIST",
)
def test_smoke_scale_says_it_trains_on_digits(tmp_path, capsys):
    out = tmp_path / "bench"
    assert cli_main([*SMOKE_ARGS, "--budget-fwd", "600", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "sklearn digits 8x8 (stand-in at scale smoke, not MNIST)" in text
    record = json.loads((out / "mlp_mnist__spsa__seed0.json").read_text())
    assert record["data"].startswith("sklearn digits")
    assert "| mlp_mnist | sklearn digits 8x8" in (out / "report.md").read_text()


def test_adam_is_capped_at_the_papers_epochs_at_full_scale_only():
    from polystep.bench.tasks import ADAM_EPOCHS, adam_budget

    full, cpu = TASKS["snn_mnist"].scales["full"], TASKS["snn_mnist"].scales["cpu"]
    assert ADAM_EPOCHS == 30 and full.adam_epochs == 30 and cpu.adam_epochs is None
    # 54,000 training images in batches of 512: 106 steps an epoch, one pass each.
    assert adam_budget(full, 31_000_000, 54_000) == 30 * 106
    assert adam_budget(full, 1_000, 54_000) == 1_000  # a smaller budget still binds
    assert adam_budget(cpu, 2_000_000, 18_000) == 2_000_000


def test_full_scale_adam_run_stops_after_its_epochs_and_validates_along_the_way():
    task = TASKS["mlp_mnist"]
    splits = load_task_data(task, "smoke", seed=0)  # digits: fast, the full-scale rule applies
    steps = 30 * -(-len(splits.train) // task.scales["full"].batch_size)
    trained = runner.train_one(
        task, "adam", 0, splits, scale="full", budget_fwd=5 * steps, budget_seconds=None,
        device="cpu",
    )  # fmt: skip
    assert trained.extra["evaluations"] == steps and trained.extra["steps"] == steps
    assert len(trained.selector.curve) > 10  # points spread over the capped budget
