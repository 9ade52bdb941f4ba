"""The ``snn`` and ``quantized`` presets' schedules over the run are exactly what
benchmarks/snn_schedules.py measured, and the script's arms, tasks, old log names and summary."""

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from bench_scripts import load_script
from polystep.bench.codeversion import code_version
from polystep.bench.runner import run_config
from polystep.bench.tasks import TASKS
from polystep.nn import quantized_mlp, spiking_mlp
from polystep.optimizer import PolyStepOptimizer
from polystep.presets import PRESETS
from polystep.schedules import Cosine
from polystep.training import TrainConfig, forward_passes_per_step, train

BUDGET = 2_000  # forward passes: a handful of steps of the tiny net below


def _script():
    return load_script("snn_schedules")


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 10, generator=g) * 2
    y = torch.arange(48) % 3
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, 48, 16)]


def _snn() -> nn.Module:
    return spiking_mlp((10, 12, 3), num_steps=4)


def _int8() -> nn.Module:
    return quantized_mlp((10, 12, 12, 3))


def _train(preset, schedules_over=None, build=_snn) -> tuple[nn.Module, PolyStepOptimizer]:
    """A tiny net (default: hard-LIF) trained through train() under BUDGET forward passes; with
    ``schedules_over``, the probe script's original mechanism: the schedules it returns for the
    run's step count are put onto the optimizer's rule."""
    torch.manual_seed(0)
    model = build()
    opt = PolyStepOptimizer(model, preset=preset, subspace="factored", seed=7)
    if schedules_over is not None:
        steps = max(1, BUDGET // forward_passes_per_step(opt))  # the probe's run_steps
        opt.rule = replace(opt.rule, **schedules_over(steps))
    config = TrainConfig(epochs=None, max_evaluations=BUDGET, progress=False, restore_best=False)
    train(model, _data(), nn.CrossEntropyLoss(), opt, config)
    return model, opt


def test_the_snn_preset_is_bit_identical_to_the_measured_decay_both_arm():
    """The probe's decay_both arm: the old constant preset (epsilon 0.03, step radius 0.2) with
    Cosine(total_steps=run steps) put onto the optimizer; the preset now: schedules over the
    run, horizon from train()."""
    old = {**PRESETS["snn"], "epsilon": 0.03, "step_radius": 0.2}

    def decay_both(steps: int) -> dict[str, Cosine]:
        return {
            "step_radius": Cosine(init=0.2, target=0.05, total_steps=steps),
            "epsilon": Cosine(init=0.03, target=0.01, total_steps=steps),
        }

    measured, probe = _train(old, decay_both)
    adopted, opt = _train("snn")
    assert opt.iteration == probe.iteration >= 3
    assert opt.param_groups[0]["step_radius"] == pytest.approx(0.05)  # reached the target
    for mine, theirs in zip(adopted.parameters(), measured.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    constant, _ = _train(old)  # and the decay does change the trajectory
    assert any(not torch.equal(a, c) for a, c in zip(adopted.parameters(), constant.parameters()))


def test_the_quantized_preset_is_bit_identical_to_the_measured_decay_both_arm():
    """The int8 probe's decay_both arm (results/tuning/int8_schedules.md): the old constant
    preset (epsilon 0.03, step radius 0.1) with the probe's cosines to 0.01 and 0.025."""
    old = {**PRESETS["quantized"], "epsilon": 0.03, "step_radius": 0.1}
    arm = _script().arm_overrides("decay_both", 0.025, 0.01, "int8_mnist")
    assert PRESETS["quantized"] == {**old, **arm}

    def decay_both(steps: int) -> dict[str, Cosine]:
        return {
            "step_radius": Cosine(init=0.1, target=0.025, total_steps=steps),
            "epsilon": Cosine(init=0.03, target=0.01, total_steps=steps),
        }

    measured, probe = _train(old, decay_both, _int8)
    adopted, opt = _train("quantized", build=_int8)
    assert opt.iteration == probe.iteration >= 3
    assert opt.param_groups[0]["step_radius"] == pytest.approx(0.025)  # reached the target
    for mine, theirs in zip(adopted.parameters(), measured.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    constant, _ = _train(old, build=_int8)  # and the decay does change the trajectory
    assert any(not torch.equal(a, c) for a, c in zip(adopted.parameters(), constant.parameters()))


def test_a_resumed_run_continues_the_same_schedule(tmp_path):
    class StopAt:
        def __init__(self, step: int | None) -> None:
            self.step = step

        def on_step_end(self, state, metrics) -> bool:
            return metrics["step"] == self.step

    def run(stop: int | None, resume: bool) -> nn.Module:
        torch.manual_seed(0)
        model = spiking_mlp((10, 12, 3), num_steps=4)
        opt = PolyStepOptimizer(model, preset="snn", subspace="factored", seed=7)
        config = TrainConfig(
            epochs=None, max_evaluations=BUDGET, progress=False, restore_best=False,
            callbacks=[StopAt(stop)], checkpoint_path=tmp_path / "run.ckpt", resume=resume,
        )  # fmt: skip
        train(model, _data(), nn.CrossEntropyLoss(), opt, config)
        return model

    whole = run(None, False)
    (tmp_path / "run.ckpt").unlink()
    run(2, False)  # interrupted after 2 steps, checkpointed
    resumed = run(None, True)
    for a, b in zip(resumed.parameters(), whole.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("task", "step", "probe"), [("snn_mnist", (0.2, 0.05), 1.0), ("int8_mnist", (0.1, 0.025), None)]
)
def test_bench_records_store_the_schedules_as_state_dicts(task, step, probe):
    config = run_config(
        TASKS[task], "polystep", scale="smoke", budget_fwd=1000, budget_seconds=None, device="cpu"
    )
    assert config["settings"]["step_radius"] == Cosine(init=step[0], target=step[1]).state_dict()
    assert config["settings"]["epsilon"] == Cosine(init=0.03, target=0.01).state_dict()
    if probe is not None:
        assert config["settings"]["probe_radius"] == probe


def test_arms_start_at_the_preset_and_decay_only_what_they_name():
    ss = _script()
    constant = ss.arm_overrides("constant", 0.05, 0.01)
    both = ss.arm_overrides("decay_both", 0.05, 0.01)
    step = ss.arm_overrides("decay_step", 0.05, 0.01)
    every = ss.arm_overrides("decay_all", 0.05, 0.01, probe_target=0.25)
    keys = ("step_radius", "epsilon", "probe_radius")
    # the preset before decay_both
    assert constant == {"step_radius": 0.2, "epsilon": 0.03, "probe_radius": 1.0}
    assert both == {key: PRESETS["snn"][key] for key in keys}
    assert step == {"step_radius": both["step_radius"], "epsilon": 0.03, "probe_radius": 1.0}
    assert every == {**both, "probe_radius": Cosine(init=1.0, target=0.25).state_dict()}
    with pytest.raises(ValueError, match="needs --probe-target"):
        ss.arm_overrides("decay_all", 0.05, 0.01)
    with pytest.raises(ValueError, match="arm must be one of"):
        ss.arm_overrides("warm", 0.05, 0.01)


def test_old_log_rows_of_the_preset_arm_read_as_constant(tmp_path):
    ss = _script()
    log = tmp_path / "log.jsonl"
    log.write_text('{"arm": "preset", "seed": 1}\n{"arm": "decay_both", "seed": 1}\n')
    assert [r["arm"] for r in ss.load_log(log)] == ["constant", "decay_both"]


def _line(arm, seed, best, last):
    return {
        "arm": arm, "seed": seed, "budget_fwd": 1000, "val_acc_best": best,
        "val_acc_last": last, "selected_step": 3, "steps": 4, "load_before": 5.0,
        "load_after": 6.0, "wall_seconds": 10.0,
    }  # fmt: skip


def test_summary_pairs_each_arm_with_the_constant_arm_on_the_same_seed():
    ss = _script()
    text = ss.summary(
        [
            _line("constant", 1, 0.80, 0.79), _line("constant", 2, 0.70, 0.70),
            _line("decay_both", 1, 0.85, 0.84), _line("decay_both", 2, 0.69, 0.69),
        ]
    )  # fmt: skip
    assert "| 1,000 | decay_both | 1 | 85.00 | 84.00 | 3 | 4 | 5.0→6.0 | 10 |" in text
    assert "| 1,000 | decay_both | 1,2 | 77.00 ± 11.31 |" in text
    assert "+5.00, -1.00 (mean +2.00)" in text
    assert "| 1,000 | constant | 1,2 | 75.00 ± 7.07 | 74.50 ± 6.36 |  |  |" in text
    assert "`constant` is epsilon 0.03 and step radius 0.2" in text


def test_the_probe_takes_any_task_and_starts_at_its_preset():
    ss = _script()
    assert ss.start_values("int8_mnist") == {
        "epsilon": 0.03, "step_radius": 0.1, "probe_radius": 1.0,
    }  # fmt: skip
    both = ss.arm_overrides("decay_both", 0.025, 0.01, "int8_mnist")
    assert both == {
        "epsilon": Cosine(init=0.03, target=0.01).state_dict(),
        "step_radius": Cosine(init=0.1, target=0.025).state_dict(),
        "probe_radius": 1.0,
    }
    assert ss.arm_overrides("constant", None, None, "int8_mnist") == {
        "epsilon": 0.03, "step_radius": 0.1, "probe_radius": 1.0,
    }  # fmt: skip
    with pytest.raises(ValueError, match="task must be one of"):
        ss.start_values("int9_mnist")
    with pytest.raises(ValueError, match="needs --step-target"):
        ss.arm_overrides("decay_step", None, 0.01, "int8_mnist")
    with pytest.raises(ValueError, match="needs --eps-target"):
        ss.arm_overrides("decay_both", 0.025, None, "int8_mnist")


def test_log_rows_without_a_task_are_the_snn_task(tmp_path):
    ss = _script()
    log = tmp_path / "log.jsonl"
    log.write_text('{"arm": "constant", "seed": 1}\n{"arm": "constant", "task": "int8_mnist"}\n')
    assert [r["task"] for r in ss.load_log(log)] == ["snn_mnist", "int8_mnist"]


def test_a_summary_names_its_task_its_constants_and_the_cosines_run():
    ss = _script()
    both = {**_line("decay_both", 1, 0.9, 0.9), "task": "int8_mnist"}
    both["schedules"] = ss.arm_overrides("decay_both", 0.025, 0.01, "int8_mnist")
    text = ss.summary([{**_line("constant", 1, 0.8, 0.8), "task": "int8_mnist"}, both])
    assert text.startswith("Validation accuracy of `int8_mnist`")
    assert "`constant` is epsilon 0.03 and step radius 0.1 throughout" in text
    assert "| decay_both (epsilon 0.03 → 0.01, step_radius 0.1 → 0.025) | 1 | 90.00 |" in text
    assert "The probe radius is 1.0 unless an arm decays it." in text
    assert "+10.00 (mean +10.00)" in text
    with pytest.raises(ValueError, match="one task"):
        ss.summary([_line("constant", 1, 0.8, 0.8), both])


def test_a_decaying_arm_without_its_target_is_refused_before_any_run(tmp_path, capsys):
    ss = _script()
    log = tmp_path / "log.jsonl"
    with pytest.raises(SystemExit) as exit_info:
        ss.main(["--task", "int8_mnist", "--arm", "decay_both", "--eps-target", "0.01",
                 "--log", str(log)])  # fmt: skip
    assert exit_info.value.code == 2
    assert "needs --step-target" in capsys.readouterr().err
    assert not log.exists()


def test_a_logged_run_of_the_same_library_source_is_skipped_whatever_the_commit(tmp_path):
    ss = _script()
    log = tmp_path / "log.jsonl"
    code = {**code_version(), "commit": "an older commit: records were committed since"}
    schedules = ss.arm_overrides("constant", None, None, "int8_mnist")
    row = {"task": "int8_mnist", "arm": "constant", "seed": 1, "budget_fwd": 1000, "code": code,
           "schedules": schedules}  # fmt: skip
    log.write_text(json.dumps(row) + "\n")
    argv = ["--task", "int8_mnist", "--arm", "constant", "--seed", "1", "--budget-fwd", "1000"]
    assert ss.main([*argv, "--log", str(log)]) == 0  # no data loaded, nothing run
    assert log.read_text() == json.dumps(row) + "\n"


def _logged_int8_run(ss, tmp_path, monkeypatch, arm: str, schedules: dict, option: str):
    """A log holding one int8 run of ``arm`` (current code, ``schedules``), ``run`` replaced
    by a recorder of ``args.<option>``; the log, the recorded values, and the argv of that
    arm's seed and budget."""
    log = tmp_path / "log.jsonl"
    row = {"task": "int8_mnist", "arm": arm, "seed": 1, "budget_fwd": 1000,
           "code": code_version(), "schedules": schedules}  # fmt: skip
    log.write_text(json.dumps(row) + "\n")
    ran: list = []
    monkeypatch.setattr(ss, "run", lambda args: ran.append(getattr(args, option)) or {"arm": "x"})
    argv = ["--task", "int8_mnist", "--arm", arm, "--seed", "1", "--budget-fwd", "1000"]
    return log, ran, argv


def test_a_logged_run_at_other_targets_is_not_taken_for_this_one(tmp_path, monkeypatch):
    ss = _script()
    logged = ss.arm_overrides("decay_step", 0.05, None, "int8_mnist")
    log, ran, argv = _logged_int8_run(
        ss, tmp_path, monkeypatch, "decay_step", logged, "step_target"
    )
    assert ss.main([*argv, "--step-target", "0.05", "--log", str(log)]) == 0
    assert ran == []  # the same targets: skipped
    assert ss.main([*argv, "--step-target", "0.02", "--log", str(log)]) == 0
    assert ran == [0.02]  # another target: run


def test_summary_keeps_one_arm_at_two_targets_apart():
    ss = _script()

    def decayed(seed, target, best):
        line = _line("decay_step", seed, best, best)
        line["schedules"] = {"step_radius": Cosine(init=0.2, target=target).state_dict()}
        return line

    text = ss.summary(
        [
            _line("constant", 1, 0.80, 0.80),
            decayed(1, 0.05, 0.84), decayed(1, 0.02, 0.70),
        ]
    )  # fmt: skip
    assert "| 1,000 | decay_step (step_radius 0.2 → 0.05) | 1 | 84.00 | 84.00 |" in text
    assert "| 1,000 | decay_step (step_radius 0.2 → 0.02) | 1 | 70.00 | 70.00 |" in text
    assert "| 1,000 | decay_step (step_radius 0.2 → 0.05) | 1 | 84.00 | 84.00 | +4.00" in text
    assert "| 1,000 | decay_step (step_radius 0.2 → 0.02) | 1 | 70.00 | 70.00 | -10.00" in text


def test_a_revived_run_is_its_own_row_and_not_taken_for_the_plain_one(tmp_path, monkeypatch):
    ss = _script()
    plain = _line("decay_both", 1, 0.80, 0.80)
    revived = {**_line("decay_both", 1, 0.85, 0.85), "revive_outputs": 0.02}
    text = ss.summary([_line("constant", 1, 0.7, 0.7), plain, revived])
    assert "| 1,000 | decay_both | 1 | 80.00 |" in text
    assert "| 1,000 | decay_both (revive 0.02) | 1 | 85.00 |" in text
    schedules = ss.arm_overrides("constant", None, None, "int8_mnist")
    log, ran, argv = _logged_int8_run(ss, tmp_path, monkeypatch, "constant", schedules, "revive")
    assert ss.main([*argv, "--log", str(log)]) == 0 and ran == []
    assert ss.main([*argv, "--revive", "0.02", "--log", str(log)]) == 0 and ran == [0.02]


def test_the_summary_pairs_each_revived_arm_with_the_same_arm_unrevived():
    ss = _script()
    lines = [
        _line("decay_both", 1, 0.80, 0.80), _line("decay_both", 2, 0.70, 0.70),
        {**_line("decay_both", 1, 0.82, 0.81), "revive_outputs": 0.02},
        {**_line("decay_both", 2, 0.80, 0.79), "revive_outputs": 0.02},
    ]  # fmt: skip
    text = ss.summary(lines)
    assert "against the same arm without that option" in text
    assert (
        "| 1,000 | decay_both (revive 0.02) | decay_both | 1,2 | +2.00, +10.00 (mean +6.00) | "
        "+1.00, +9.00 (mean +5.00) |" in text
    )
    assert "without that option" not in ss.summary(lines[:2])


def test_the_log_names_a_run_s_rank_only_where_it_is_not_the_preset_s():
    ss = _script()
    assert ss.logged_rank("snn_mnist", None) == 32  # the bench's rank at scale full
    assert ss.logged_rank("snn_mnist", 8) is None  # the snn preset's
    assert ss.logged_rank("snn_mnist", 16) == 16
    assert ss.logged_rank("int8_mnist", None) is None


def test_a_run_at_another_rank_is_its_own_row_paired_with_the_preset_rank(tmp_path, monkeypatch):
    ss = _script()
    lines = [
        {**_line("decay_both", 1, 0.80, 0.80), "revive_outputs": 0.02},
        {**_line("decay_both", 1, 0.83, 0.82), "revive_outputs": 0.02, "rank": 16},
    ]
    text = ss.summary(lines)
    assert "| 1,000 | decay_both (revive 0.02, rank 16) | 1 | 83.00 | 82.00 |" in text
    assert (
        "| 1,000 | decay_both (revive 0.02, rank 16) | decay_both (revive 0.02) | 1 | "
        "+3.00 (mean +3.00) | +2.00 (mean +2.00) |" in text
    )
    schedules = ss.arm_overrides("constant", None, None, "int8_mnist")
    log, ran, argv = _logged_int8_run(ss, tmp_path, monkeypatch, "constant", schedules, "rank")
    assert ss.main([*argv, "--log", str(log)]) == 0 and ran == []
    assert ss.main([*argv, "--rank", "16", "--log", str(log)]) == 0 and ran == [16]
