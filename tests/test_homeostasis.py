"""polystep.nn.homeostasis: silent output neurons of a spiking net raised by their bias, with
forward passes only, charged to the run's budget."""

import pytest
import torch
from torch import nn

from polystep.bench import runner
from polystep.bench.overrides import resolved_settings
from polystep.bench.tasks import TASKS, load_task_data
from polystep.nn import ReviveSilentOutputs, raise_silent_outputs, spiking_mlp
from polystep.optimizer import PolyStepOptimizer
from polystep.training import TrainConfig, train


def _net(silent: int | None = 1) -> nn.Module:
    torch.manual_seed(0)
    model = spiking_mlp((10, 12, 3), num_steps=4)
    with torch.no_grad():
        model[-3].bias.copy_(torch.tensor([2.0, 2.0, 2.0]))  # every output spikes at once
        if silent is not None:
            model[-3].bias[silent] = -50.0
    return model


def _inputs() -> torch.Tensor:
    return torch.rand(64, 10, generator=torch.Generator().manual_seed(1)) * 2


def _spiking_share(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (model(x) > 0).float().mean(dim=0)


def test_a_silent_output_neuron_is_raised_just_enough_and_the_others_keep_their_bias():
    model, x = _net(), _inputs()
    assert _spiking_share(model, x).tolist() == [1.0, 0.0, 1.0]
    before = model[-3].bias.detach().clone()
    passes = raise_silent_outputs(model, x, 0.05)
    after = model[-3].bias.detach()
    assert _spiking_share(model, x)[1] >= 0.05
    assert after[0] == before[0] and after[2] == before[2]
    with torch.no_grad():  # just enough: a shift 2^-18 of the bracket smaller does not do it
        model[-3].bias[1] -= 64 / 2**18
    assert _spiking_share(model, x)[1] < 0.05
    assert passes == 2 + 7 + 20  # prefix and check, doublings 1 -> 64, bisection


def test_nothing_silent_costs_two_passes_and_changes_nothing():
    model, x = _net(silent=None), _inputs()
    before = [p.detach().clone() for p in model.parameters()]
    assert raise_silent_outputs(model, x, 0.05) == 2
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before, strict=True))


@pytest.mark.bad_input("raise_silent_outputs/ReviveSilentOutputs with a model that is not a "
                       "SpikingMLP, a share outside (0, 1], or inputs not (B, F)",
                       "TypeError/ValueError naming model, share or inputs")  # fmt: skip
def test_bad_input_is_named():
    with pytest.raises(TypeError, match=r"model must be a polystep\.nn\.SpikingMLP"):
        raise_silent_outputs(nn.Linear(2, 2), torch.zeros(1, 2), 0.1)
    for share in (0, 1.5, True, "0.1"):
        with pytest.raises(ValueError, match="share must be a float in"):
            ReviveSilentOutputs(_net(), _inputs(), share)
    with pytest.raises(ValueError, match="inputs must be a non-empty"):
        ReviveSilentOutputs(_net(), torch.zeros(10), 0.1)


def test_train_charges_the_revivals_to_the_budget():
    model, x = _net(), _inputs()
    data = [(x[i : i + 16], torch.arange(16) % 3) for i in range(0, 64, 16)]
    opt = PolyStepOptimizer(model, preset="default", subspace="factored", seed=3)
    revive, spent, steps = ReviveSilentOutputs(model, x, 0.05), [], []

    class Spent:
        def on_train_end(self, state) -> None:
            spent.append(state.evaluations)
            steps.append(state.budget.steps)

    config = TrainConfig(epochs=None, max_evaluations=3000, progress=False,
                         restore_best=False, callbacks=[revive, Spent()])  # fmt: skip
    train(model, data, nn.CrossEntropyLoss(), opt, config)
    assert revive.passes >= 2 * opt.iteration + 27  # the first step's revival, then checks
    # every step: its candidates, the incumbent, and the revival after it
    assert spent == [opt.evaluations + opt.iteration + revive.passes]
    assert spent[0] <= 3000
    assert steps == [opt.iteration]  # the revivals' passes are charged, not counted as steps
    assert _spiking_share(model, x)[1] >= 0.05


def test_the_bench_takes_revive_outputs_for_polystep_only_and_counts_its_passes():
    task = TASKS["snn_mnist"]

    def settings(task, overrides):
        return resolved_settings(task, "polystep", overrides, scale="smoke")

    assert settings(task, {})["revive_outputs"] == 0.02  # the SNN row's
    assert "revive_outputs" not in settings(TASKS["int8_mnist"], {})
    assert settings(task, {"revive_outputs": None})["revive_outputs"] is None
    with pytest.raises(ValueError, match="got unknown \\['revive_outputs'\\]"):
        resolved_settings(task, "spsa", {"revive_outputs": 0.02}, scale="smoke")
    splits = load_task_data(task, "smoke", seed=0)
    runs = [
        runner.train_one(
            task, "polystep", 0, splits, scale="smoke", budget_fwd=20_000, budget_seconds=None,
            device="cpu", overrides=overrides,
        )
        for overrides in ({"revive_outputs": None}, {})
    ]  # fmt: skip
    plain, revived = (r.extra for r in runs)
    assert plain["evaluations"] <= 20_000 and revived["evaluations"] <= 20_000
    assert revived["steps"] < plain["steps"]  # the revivals' passes come out of the budget
    assert runs[1].config["settings"]["revive_outputs"] == 0.02
