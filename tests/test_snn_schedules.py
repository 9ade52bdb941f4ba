"""benchmarks/snn_schedules.py: the arms' schedules, how they reach the bench's optimizer, and
the summary's paired differences."""

import pytest
import torch
from torch import nn

from bench_scripts import load_script
from polystep.bench import methods
from polystep.optimizer import PolyStepOptimizer
from polystep.presets import PRESETS


def _script():
    return load_script("snn_schedules")


def test_arms_start_at_the_preset_and_decay_only_what_they_name():
    ss = _script()
    snn = PRESETS["snn"]
    preset = ss.arm_schedules("preset", snn, 100, 0.05, 0.01)
    both = ss.arm_schedules("decay_both", snn, 100, 0.05, 0.01)
    step = ss.arm_schedules("decay_step", snn, 100, 0.05, 0.01)
    for arm in (preset, both, step):
        assert arm["step_radius"](0) == pytest.approx(snn["step_radius"])
        assert arm["epsilon"](0) == pytest.approx(snn["epsilon"])
    assert preset["step_radius"](100) == pytest.approx(snn["step_radius"])
    assert both["step_radius"](100) == pytest.approx(0.05)
    assert both["epsilon"](100) == pytest.approx(0.01)
    assert step["step_radius"](100) == pytest.approx(0.05)
    assert step["epsilon"](100) == pytest.approx(snn["epsilon"])
    with pytest.raises(ValueError, match="arm must be one of"):
        ss.arm_schedules("warm", snn, 100, 0.05, 0.01)


def test_run_steps_rounds_down_as_train_does():
    ss = _script()
    assert ss.run_steps(20_000, 2_497) == 8
    assert ss.run_steps(10, 2_497) == 1


def test_scheduled_puts_the_schedules_on_the_optimizer_and_restores_the_class():
    ss = _script()
    original = methods.PolyStepOptimizer

    def make(optimizer):
        return ss.arm_schedules("decay_both", optimizer.settings, 10, 0.05, 0.01)

    with ss.scheduled(make) as built:
        opt = methods.PolyStepOptimizer(nn.Sequential(nn.Linear(3, 2)), preset="snn", seed=0)
    assert methods.PolyStepOptimizer is original
    assert isinstance(opt, PolyStepOptimizer)
    assert built["step_radius"]["total_steps"] == 10
    assert opt.step_rule().step_radius(10) == pytest.approx(0.05)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    for _ in range(10):
        opt.step_batch(x, y, nn.CrossEntropyLoss())
    assert opt.param_groups[0]["step_radius"] == pytest.approx(0.05)
    assert opt.param_groups[0]["epsilon"] == pytest.approx(0.01)


def _line(arm, seed, best, last):
    return {
        "arm": arm, "seed": seed, "budget_fwd": 1000, "val_acc_best": best,
        "val_acc_last": last, "selected_step": 3, "steps": 4, "load_before": 5.0,
        "load_after": 6.0, "wall_seconds": 10.0,
    }  # fmt: skip


def test_summary_pairs_each_arm_with_the_preset_on_the_same_seed():
    ss = _script()
    text = ss.summary(
        [
            _line("preset", 1, 0.80, 0.79), _line("preset", 2, 0.70, 0.70),
            _line("decay_both", 1, 0.85, 0.84), _line("decay_both", 2, 0.69, 0.69),
        ]
    )  # fmt: skip
    assert "| 1,000 | decay_both | 1 | 85.00 | 84.00 | 3 | 4 | 5.0→6.0 | 10 |" in text
    assert "| 1,000 | decay_both | 1,2 | 77.00 ± 11.31 |" in text
    assert "+5.00, -1.00 (mean +2.00)" in text
    assert "| 1,000 | preset | 1,2 | 75.00 ± 7.07 | 74.50 ± 6.36 |  |  |" in text
