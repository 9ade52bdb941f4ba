"""One tuning protocol for every method, --resume over stale records, README tables from records."""

import json
from pathlib import Path

import pytest

from bench_scripts import load_script
from polystep.baselines import NN_PRESETS
from polystep.bench import equal_time, readme, report, runner, tuning
from polystep.bench.codeversion import code_version
from polystep.bench.methods import METHODS
from polystep.bench.overrides import base_settings, resolved_settings
from polystep.bench.tasks import TASKS, load_task_data
from polystep.cli import main as cli_main
from polystep.optimizer import PRESETS, PolyStepOptimizer

ROOT = Path(__file__).resolve().parents[1]
SPSA_ARGS = ["bench", "mlp_mnist", "--scale", "smoke", "--seeds", "0", "--methods", "spsa"]


def test_every_method_gets_the_same_number_of_configurations_from_its_declared_grid():
    assert set(tuning.GRIDS) == set(METHODS)
    for method in METHODS:
        points = tuning.grid_points(method)
        assert len(points) >= tuning.K
        drawn = tuning.draw_configs(method, tuning.K)
        assert len(drawn) == tuning.K
        assert len({tuning.config_key(c) for c in drawn}) == tuning.K  # no repeats
        assert all(c in points for c in drawn)
        assert tuning.draw_configs(method, 3) == drawn[:3]  # a larger k extends a smaller one
        for config in drawn:  # every axis is a real setting of the method
            settings = resolved_settings(TASKS["snn_mnist"], method, config, scale="smoke")
            assert {k: settings[k] for k in config} == config


@pytest.mark.bad_input(
    "`tuning.draw_configs(method, k)` with k outside 1..grid size, or an unknown method",
    "ValueError naming k and the grid size, or the allowed methods",
)
def test_bad_tuning_arguments_are_named():
    with pytest.raises(ValueError, match="k must be in 1"):
        tuning.draw_configs("adam", 10_000)
    with pytest.raises(ValueError, match="method must be one of"):
        tuning.draw_configs("sgd", 2)
    with pytest.raises(ValueError, match="unknown \\['sigma'\\]"):
        resolved_settings(TASKS["mlp_mnist"], "adam", {"sigma": 1.0}, scale="smoke")


def test_a_task_s_settings_at_one_scale_replace_the_preset_s_there_only():
    task = TASKS["snn_mnist"]
    assert task.polystep_at_scale == {"full": {"rank": 32}}
    assert base_settings(task, "polystep", "full")["rank"] == 32
    for scale in ("smoke", "cpu"):
        assert base_settings(task, "polystep", scale)["rank"] == PRESETS["snn"]["rank"] == 8
    assert resolved_settings(task, "polystep", {"rank": 8}, scale="full")["rank"] == 8
    assert base_settings(task, "adam", "full") == NN_PRESETS["adam"]
    int8_rank = base_settings(TASKS["int8_mnist"], "polystep", "full")["rank"]
    assert int8_rank == PRESETS["quantized"]["rank"]
    config = runner.run_config(task, "polystep", scale="full", budget_fwd=10, budget_seconds=None,
                               device="cpu")  # fmt: skip
    assert config["settings"]["rank"] == 32 and config["overrides"] == {}


@pytest.mark.bad_input(
    "`base_settings(task, method, scale)` with an unknown scale",
    "ValueError naming scale and the allowed scales",
)
def test_an_unknown_scale_is_named():
    with pytest.raises(ValueError, match="scale must be one of \\('smoke', 'cpu', 'full'\\)"):
        base_settings(TASKS["snn_mnist"], "polystep", "huge")


def test_overrides_are_passed_down_to_the_run_and_never_change_the_tables():
    task = TASKS["mlp_mnist"]
    before_es, before_presets = dict(NN_PRESETS["openai_es"]), {**PRESETS}
    settings = resolved_settings(task, "openai_es", {"sigma": 0.1}, scale="smoke")
    assert settings == {**NN_PRESETS["openai_es"], "sigma": 0.1}
    settings = resolved_settings(task, "polystep", {"rank": 2}, scale="smoke")
    assert settings == {**PRESETS["default"], "rank": 2}
    model = TASKS["mlp_mnist"].model(64, 10, "smoke")
    optimizer = PolyStepOptimizer(model, preset=settings, subspace="factored")
    assert optimizer.subspace.rank == 2 and optimizer.settings == settings
    with pytest.raises(ValueError, match="preset as a dict must have exactly the keys"):
        PolyStepOptimizer(model, preset={"rank": 2})
    splits = load_task_data(task, "smoke", seed=0)
    run = runner.train_one(
        task, "spsa", 0, splits, scale="smoke", budget_fwd=64, budget_seconds=None,
        device="cpu", overrides={"num_directions": 2},
    )  # fmt: skip
    assert run.config["settings"]["num_directions"] == 2
    assert run.extra["evaluations"] == 64 and run.extra["generations"] == 16  # 2 x 2 probes
    assert NN_PRESETS["openai_es"] == before_es and before_presets == PRESETS


def test_edge_flags_name_selected_values_at_the_end_of_an_axis():
    assert tuning.edge_flags("openai_es", {"sigma": 0.1, "learning_rate": 0.01}) == [
        "sigma=0.1 (grid max)"
    ]
    assert tuning.edge_flags("cmaes", {"sigma0": 0.01, "popsize": 50}) == ["sigma0=0.01 (grid min)"]
    assert tuning.edge_flags("adam", {"weight_decay": 0.0}) == []  # a two-value axis has no inside


def test_tuning_log_is_resumable_selects_on_validation_and_reruns_other_code(tmp_path):
    log = tmp_path / "tuning.jsonl"
    task = [TASKS["mlp_mnist"]]
    args = {"scale": "smoke", "log_path": log, "k": 2, "budget_fwd": 300, "log": lambda *_: None}
    lines = tuning.tune(task, ["spsa", "adam"], **args)
    assert len(lines) == 4 and len(tuning.load_log(log)) == 4
    assert all("test_acc_selected" not in line and line["seed"] == 0 for line in lines)
    assert {line["method"] for line in lines} == {"spsa", "adam"}
    tuning.tune(task, ["spsa", "adam"], **args)  # everything done: nothing appended
    assert len(tuning.load_log(log)) == 4
    # A line made by other code does not count: its trial is run again, the old line stays.
    stored = tuning.load_log(log)
    stored[0]["code"] = {**stored[0]["code"], "source": "0" * 64}
    log.write_text("".join(json.dumps(line) + "\n" for line in stored) + '{"cut off')
    assert len(tuning.load_log(log)) == 4  # the cut-off last line is ignored
    log.write_text("".join(json.dumps(line) + "\n" for line in stored))
    tuning.tune(task, ["spsa", "adam"], **args)
    assert len(tuning.load_log(log)) == 5
    summary = tuning.summarise(tuning.current(tuning.load_log(log)))
    spsa = next(row for row in summary if row["method"] == "spsa")
    scores = {
        tuning.config_key(line["config"]): line["val_acc_best"]
        for line in tuning.current(tuning.load_log(log))
        if line["method"] == "spsa"
    }
    assert spsa["configs"] == 2 and spsa["best_val"] == max(scores.values())
    chosen = tuning.tuned_overrides(
        log, task, ["spsa"], scale="smoke", budget_fwd=300, budget_seconds=None, k=2
    )
    assert chosen == {("mlp_mnist", "spsa"): spsa["selected"]}
    with pytest.raises(ValueError, match="mlp_mnist/cmaes"):
        tuning.tuned_overrides(
            log, task, ["cmaes"], scale="smoke", budget_fwd=300, budget_seconds=None, k=2
        )
    with pytest.raises(ValueError, match="budget_fwd 400"):  # another budget is not tuned
        tuning.tuned_overrides(
            log, task, ["spsa"], scale="smoke", budget_fwd=400, budget_seconds=None, k=2
        )
    text = tuning.markdown_summary(tuning.load_log(log), code_version()["source"])
    assert "1 log lines by other code versions are not shown (stale)." in text


def _tamper_code(path: Path) -> None:
    record = json.loads(path.read_text())
    record["code"] = {**record["code"], "source": "f" * 64}
    path.write_text(json.dumps(record))


@pytest.mark.bad_input(
    "`polystep bench ... --out DIR` over a record made by other code (or another configuration)",
    "refused before training naming the code difference; `--resume` reruns it, the old file "
    "kept in DIR/stale/",
)
def test_resume_reruns_records_of_other_code_or_config_and_keeps_the_old_ones(tmp_path, capsys):
    out = tmp_path / "bench"
    record = out / "mlp_mnist__spsa__seed0.json"
    assert cli_main([*SPSA_ARGS, "--budget-fwd", "300", "--out", str(out)]) == 0
    _tamper_code(record)
    capsys.readouterr()
    assert "stale" in report.write_report(out).read_text()  # report.md marks it
    with pytest.raises(SystemExit):
        cli_main([*SPSA_ARGS, "--budget-fwd", "300", "--out", str(out)])
    err = capsys.readouterr().err
    assert "code: source ffffffffffff ->" in err and "--resume" in err
    assert cli_main([*SPSA_ARGS, "--budget-fwd", "300", "--out", str(out), "--resume"]) == 0
    assert "rerun mlp_mnist__spsa__seed0.json (code: source ffffffffffff" in capsys.readouterr().out
    assert json.loads(record.read_text())["code"] == code_version()
    assert (out / "stale" / "mlp_mnist__spsa__seed0.ffffffffffff.json").exists()
    assert "stale" not in (out / "report.md").read_text()
    # Another configuration with --resume: rerun too; the replaced record is kept.
    assert cli_main([*SPSA_ARGS, "--budget-fwd", "450", "--out", str(out), "--resume"]) == 0
    assert json.loads(record.read_text())["config"]["budget_fwd"] == 450
    assert len(list((out / "stale").iterdir())) == 2
    assert len(report.load_runs(out)) == 1  # stale/ is never reported


def test_bench_runs_a_tuned_selection_and_records_it(tmp_path, capsys):
    log = tmp_path / "tuning.jsonl"
    tuning.tune(
        [TASKS["mlp_mnist"]], ["spsa"], scale="smoke", log_path=log, k=tuning.K, budget_fwd=150,
        log=lambda *_: None,
    )  # fmt: skip
    selected = tuning.summarise(tuning.load_log(log))[0]["selected"]
    out = tmp_path / "bench"
    args = [*SPSA_ARGS, "--budget-fwd", "150", "--out", str(out), "--tuned", str(log)]
    assert cli_main(args) == 0
    config = json.loads((out / "mlp_mnist__spsa__seed0.json").read_text())["config"]
    assert config["overrides"] == selected
    assert config["settings"] == {**NN_PRESETS["spsa"], **selected}
    capsys.readouterr()
    with pytest.raises(SystemExit):  # no tuning at this budget: refused, named
        cli_main([*SPSA_ARGS, "--budget-fwd", "200", "--out", str(out), "--tuned", str(log)])
    assert "argument --tuned" in capsys.readouterr().err


def test_report_marks_rows_of_other_code_stale_only_against_a_current_source():
    def run(method, source):
        return {
            "task": "mlp_mnist", "method": method, "seed": 0, "scale": "smoke",
            "test_acc_selected": 0.5, "test_acc_last": 0.5, "evaluations": 1, "wall_seconds": 1,
            "curve": [], "code": {"source": source, "commit": "c", "package": "0"},
        }  # fmt: skip

    runs = [run("spsa", "a" * 64), run("adam", "b" * 64)]
    table = report.markdown_table(runs, current_source="a" * 64)
    rows = {line.split(" | ")[2]: line for line in table.splitlines() if "mlp_mnist" in line}
    assert rows["adam"].endswith("| B stale |") and rows["spsa"].endswith("| A |")
    assert "1 of 2 records were made by code other than the current source" in table
    assert "stale" not in report.markdown_table(runs)


def test_benchmarks_readme_tables_are_generated_from_the_records():
    path = ROOT / "benchmarks" / "README.md"
    text = path.read_text()
    blocks = readme.BLOCK.findall(text)
    assert len(blocks) >= 6
    assert text == readme.render(text, path.parent / "results"), (
        "run: polystep bench report --readme benchmarks/README.md"
    )


def test_readme_blocks_are_replaced_and_unknown_kinds_named(tmp_path):
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    record = {
        "task": "mlp_mnist", "method": "polystep", "seed": 1, "scale": "smoke",
        "test_acc_selected": 0.9, "test_acc_last": 0.8, "evaluations": 5000, "steps": 4,
        "passes_per_step": 1250, "wall_seconds": 3.0, "selected_step": 0, "curve": [],
        "config": {"budget_fwd": 5000, "budget_seconds": None, "preset": "default"},
        "machine": {"platform": "p", "processor": "x", "threads": 2},
    }  # fmt: skip
    (results / "runs" / "mlp_mnist__polystep__seed1.json").write_text(json.dumps(record))
    text = "a\n<!-- table:runs -->\nSTALE TEXT\n<!-- end -->\n<!-- steps:runs -->\n<!-- end -->\n"
    new = readme.render(text, results)
    assert "STALE TEXT" not in new and "| mlp_mnist | 90.0 (5k) † |" in new
    assert "--budget-fwd 5000 --seeds 1 --threads 2" in new
    assert "| mlp_mnist | default | 1,250 | 4 | 3 |" in new
    with pytest.raises(ValueError, match="block kind must be"):
        readme.render("<!-- nope:runs -->\n<!-- end -->", results)


def test_run_config_records_settings_threads_and_overrides():
    config = runner.run_config(
        TASKS["int8_mnist"], "polystep", scale="smoke", budget_fwd=10, budget_seconds=None,
        device="cpu", overrides={"rank": 4},
    )  # fmt: skip
    assert config["settings"] == {**PRESETS["quantized"], "rank": 4}
    assert config["overrides"] == {"rank": 4} and config["threads"] >= 1


def test_run_settings_refuse_an_unknown_keyword_before_anything_runs():
    with pytest.raises(TypeError, match="unknown run settings \\['override'\\]"):
        runner.train_one(
            TASKS["mlp_mnist"], "polystep", 0, None, scale="smoke", budget_fwd=10,
            budget_seconds=None, device="cpu", override={"rank": 4},
        )  # fmt: skip


def test_equal_time_long_table_takes_the_best_gradient_free_baseline_by_validation(
    tmp_path, monkeypatch
):
    def record(task, method, val, test):
        return {"task": task, "method": method, "val_acc_selected": val, "test_acc_selected": test}

    short_runs = [
        record("mlp_mnist", "openai_es", 0.8, 0.1),  # best on validation, worst on test
        record("mlp_mnist", "spsa", 0.7, 0.9),
        record("mlp_mnist", "cmaes", 0.6, 0.9),
        record("mlp_mnist", "polystep", 0.99, 0.99),  # not a baseline
        record("snn_mnist", "cmaes", 0.5, 0.5),
    ]
    assert equal_time.best_gradient_free(short_runs, "mlp_mnist") == "openai_es"
    with pytest.raises(ValueError, match="int8_mnist"):
        equal_time.best_gradient_free(short_runs, "int8_mnist")
    calls = []

    def fake_bench(tasks, methods, seeds, **kwargs):
        calls.append(([t.name for t in tasks], methods, kwargs["budget_seconds"], kwargs))

    monkeypatch.setattr(equal_time, "run_bench", fake_bench)
    monkeypatch.setattr(equal_time, "write_report", lambda folder: None)
    monkeypatch.setattr(equal_time, "load_runs", lambda folder: short_runs)
    tasks = [TASKS["mlp_mnist"], TASKS["snn_mnist"]]
    chosen = equal_time.run_protocol(tasks, [1, 2, 3], out=tmp_path, log=lambda *_: None)
    assert chosen == {"mlp_mnist": "openai_es", "snn_mnist": "cmaes"}
    assert [c[:3] for c in calls] == [
        (["mlp_mnist", "snn_mnist"], list(METHODS), 60.0),
        (["mlp_mnist"], ["polystep", "openai_es"], 300.0),
        (["snn_mnist"], ["polystep", "cmaes"], 300.0),
    ]
    assert (
        calls[0][3]["out_dir"] == tmp_path / "60s" and calls[1][3]["out_dir"] == tmp_path / "300s"
    )
    # With a tuning log: each table is tuned at its own budget first, for the methods it runs.
    tuned_calls = []
    monkeypatch.setattr(
        equal_time, "tune",
        lambda tasks, methods, **kw: tuned_calls.append(([t.name for t in tasks], methods, kw)),
    )  # fmt: skip
    monkeypatch.setattr(
        equal_time, "tuned_overrides",
        lambda log, tasks, methods, **kw: {(tasks[0].name, methods[-1]): {"seconds": kw}},
    )  # fmt: skip
    calls.clear()
    log = tmp_path / "tune.jsonl"
    equal_time.run_protocol(tasks[:1], [1], out=tmp_path, tune_log=log, k=3, log=lambda *_: None)
    assert [(c[0], c[1], c[2]["budget_seconds"], c[2]["k"]) for c in tuned_calls] == [
        (["mlp_mnist"], list(METHODS), 60.0, 3),
        (["mlp_mnist"], ["polystep", "openai_es"], 300.0, 3),
    ]
    assert calls[1][3]["overrides"][("mlp_mnist", "openai_es")]["seconds"]["budget_seconds"] == 300
    assert equal_time.estimate_seconds(6, 3, short=60, long=300, overhead=15) == 18 * (
        5 * 75 + 2 * 315
    )


RESULTS = ROOT / "benchmarks" / "results"
SCRIPT_REPORTS = {
    "accuracy_at_budget": (
        "accuracy_at_budget.jsonl",
        lambda m: m.report(RESULTS / "accuracy_at_budget.jsonl"),
    ),
    "roofline": (
        "roofline_cpu_quiet_stop10.jsonl",
        lambda m: m.report(RESULTS / "roofline_cpu_quiet_stop10.jsonl"),
    ),
    "etth1": ("etth1/runs.jsonl", lambda m: m.report(RESULTS / "etth1" / "runs.jsonl")),
    "memory": (
        "memory/runs.jsonl",
        lambda m: m.table(m.load_records(RESULTS / "memory" / "runs.jsonl")),
    ),
    # the README holds the side-by-side tables; the probes are in that folder's report.md
    "seed_examples": (
        "seed_examples/runs.jsonl",
        lambda m: m.report(RESULTS / "seed_examples").split("### Probes")[0],
    ),
}


@pytest.mark.parametrize("script", sorted(SCRIPT_REPORTS))
def test_benchmarks_readme_holds_what_the_scripts_report_from_their_records(script):
    """Sections of other benchmarks print their tables with ``--report``; every row they give
    from the committed records is in the README as printed."""
    record, render = SCRIPT_REPORTS[script]
    if not (RESULTS / record).exists():
        pytest.skip(f"no committed {record} in this checkout")
    table = render(load_script(script))
    text = (ROOT / "benchmarks" / "README.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows and [row for row in rows if row not in text] == []


@pytest.mark.bad_input(
    "`polystep bench report --readme FILE` with a block of an unknown kind or a missing folder",
    "argparse error naming the allowed kinds or the folder; the README is not touched",
)
def test_report_readme_cli_regenerates_then_says_current(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    cli_main([*SPSA_ARGS, "--budget-fwd", "150", "--out", str(tmp_path / "results" / "runs")])
    path = tmp_path / "README.md"
    path.write_text("# t\n<!-- table:runs -->\n<!-- end -->\n")
    capsys.readouterr()
    assert cli_main(["bench", "report", "--readme", str(path)]) == 0
    assert "regenerated" in capsys.readouterr().out and "| task | SPSA |" in path.read_text()
    assert cli_main(["bench", "report", "--readme", str(path)]) == 0
    assert "already current" in capsys.readouterr().out
    for bad, says in [("nope:runs", "block kind must be"), ("table:none", "no run records")]:
        path.write_text(f"<!-- {bad} -->\n<!-- end -->\n")
        with pytest.raises(SystemExit):
            cli_main(["bench", "report", "--readme", str(path)])
        assert says in capsys.readouterr().err
        assert path.read_text() == f"<!-- {bad} -->\n<!-- end -->\n"


def test_readme_command_leaves_out_the_budget_when_each_task_ran_its_own_default():
    from polystep.bench.tasks import TASKS

    def run(task: str, budget: int) -> dict:
        config = {"budget_fwd": budget, "threads": 2}
        return {"task": task, "method": "polystep", "seed": 1, "scale": "full", "config": config}

    own = [run(t, TASKS[t].scales["full"].budget_fwd) for t in ("snn_mnist", "int8_mnist")]
    assert "--budget-fwd" not in readme._command(own, "x")
    assert "--scale full --seeds 1 --threads 2" in readme._command(own, "x")
    chosen = [run("snn_mnist", 5000), run("int8_mnist", 5000)]
    assert "--scale full --budget-fwd 5000 --seeds 1" in readme._command(chosen, "x")


@pytest.mark.parametrize(
    ("task", "scale", "flag"),
    [
        ("snn_mnist", "full", True),
        ("moe_20", "cpu", True),  # MNIST + Fashion-MNIST
        ("argmax_fmnist", "cpu", False),  # Fashion-MNIST is found without a flag
        ("snn_mnist", "smoke", False),  # digits
    ],
)
def test_readme_command_names_the_mnist_folder_where_the_records_read_mnist(task, scale, flag):
    record = {"task": task, "method": "polystep", "seed": 1, "scale": scale, "config": {}}
    command = readme._command([record], "x")
    assert ("--mnist-dir ../shared/data/mnist --out" in command) is flag


def test_readme_cells_name_their_code_version_when_a_table_mixes_versions(tmp_path):
    def record(task: str, source: str) -> dict:
        return {
            "task": task, "method": "polystep", "seed": 1, "scale": "cpu", "data": "MNIST",
            "test_acc_selected": 0.5, "val_acc_selected": 0.5, "evaluations": 100,
            "config": {"budget_fwd": 100, "threads": 1}, "machine": {"threads": 1},
            "code": {"source": source, "commit": "c" * 40, "package": "0.1.0"},
        }  # fmt: skip

    folder = tmp_path / "runs"
    folder.mkdir()
    for task, source in (("snn_mnist", "a" * 64), ("int8_mnist", "a" * 64)):
        (folder / f"{task}__polystep__seed1.json").write_text(json.dumps(record(task, source)))
    assert " code A" not in readme.table_block(tmp_path, "runs")
    (folder / "int8_mnist__polystep__seed1.json").write_text(
        json.dumps(record("int8_mnist", "b" * 64))
    )
    rows = readme.table_block(tmp_path, "runs").splitlines()
    snn = next(r for r in rows if r.startswith("| snn_mnist |"))
    int8 = next(r for r in rows if r.startswith("| int8_mnist |"))
    assert {snn.split(" | ")[1], int8.split(" | ")[1]} == {"50.0 (100) code A", "50.0 (100) code B"}


def test_a_cell_short_of_the_tables_seeds_says_how_many_it_has(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    for task, seeds in (("snn_mnist", (1, 2, 3)), ("int8_mnist", (1,)), ("mlp_mnist", (1, 2))):
        for seed in seeds:
            record = {
                "task": task, "method": "polystep", "seed": seed, "scale": "cpu",
                "data": "MNIST", "test_acc_selected": 0.5, "val_acc_selected": 0.5,
                "evaluations": 100, "config": {"budget_fwd": 100, "threads": 1},
                "machine": {"threads": 1},
                "code": {"source": "a" * 64, "commit": "c" * 40, "package": "0.1.0"},
            }  # fmt: skip
            (folder / f"{task}__polystep__seed{seed}.json").write_text(json.dumps(record))
    rows = readme.table_block(tmp_path, "runs").splitlines()
    cell = {r.split(" | ")[0][2:]: r.split(" | ")[1] for r in rows if r.startswith("| ")}
    assert cell["snn_mnist"] == "50.0 ± 0.0 (100)"
    assert cell["int8_mnist"] == "50.0 (100) [1 seed]"
    assert cell["mlp_mnist"] == "50.0 ± 0.0 (100) [2 seeds]"


def test_readme_names_the_tuned_settings_and_the_tuned_flag_of_tuned_records():
    def record(method: str, overrides: dict | None) -> dict:
        config = {"budget_seconds": 60.0, "threads": 2, "overrides": overrides}
        return {"task": "snn_mnist", "method": method, "seed": 1, "scale": "cpu", "config": config}

    plain = [record("polystep", None), record("spsa", {})]
    assert readme.tuned_settings(plain) == [] and "--tuned" not in readme._command(plain, "x")
    tuned = [record("spsa", {"c": 0.03, "a": 0.1}), record("polystep", {"rank": 4})]
    assert readme.tuned_settings(tuned) == [
        "snn_mnist / PolyStep: rank 4",
        "snn_mnist / SPSA: a 0.1, c 0.03",
    ]
    assert "--tuned LOG --out benchmarks/results/x" in readme._command(tuned, "x")
