"""train() budgets and optimizers: exact max_evaluations, the max_seconds deadline on a fake
clock (no wall-clock assertions), any torch optimizer, the bench's selection callback, and the
bench running through train()."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from polystep import PolyStepOptimizer, TrainConfig, deadline, train
from polystep.bench import methods, runner
from polystep.bench.selection import Selector
from polystep.bench.tasks import TASKS, load_task_data
from polystep.training import forward_passes_per_step

NOW = [0.0]


class FakeTime:
    """Stands in for the ``time`` module of :mod:`polystep.deadline`."""

    @staticmethod
    def perf_counter() -> float:
        return NOW[0]


def data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.parametrize("blocks_per_step", ["auto", 3])
def test_max_evaluations_stops_exactly_at_the_budget(blocks_per_step: str | int) -> None:
    net = model()
    opt = PolyStepOptimizer(net, seed=0)
    opt.blocks_per_step = blocks_per_step
    opt.progress = False
    per_step = forward_passes_per_step(opt)  # candidates + the pass at the current weights
    loader = DataLoader(data(64, 0), batch_size=16)
    config = TrainConfig(epochs=None, max_evaluations=3 * per_step + per_step - 1, progress=False)
    history = train(net, loader, nn.CrossEntropyLoss(), opt, config)
    # A fourth step would need one pass more than is left: it is not started.
    assert history[-1]["step"] == opt.iteration == 3
    assert history[-1]["evaluations"] == 3 * per_step
    assert opt.evaluations == 3 * (per_step - 1)  # the optimizer counts the candidates only


def test_max_evaluations_counts_one_pass_per_gradient_step_and_the_whole_run() -> None:
    net = model()
    adam = torch.optim.Adam(net.parameters(), lr=1e-2)
    loader = DataLoader(data(64, 0), batch_size=16)
    history = train(
        net, loader, nn.CrossEntropyLoss(), adam, TrainConfig(max_evaluations=6, progress=False)
    )
    assert history[-1]["step"] == history[-1]["evaluations"] == 6


class Ticking(nn.Module):
    """Linear classifier whose forward pass costs fake seconds: ``durations`` in training (one
    per step, in order), 100 s in evaluation mode (validation, which must not count)."""

    def __init__(self, durations: list[float]) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 2)
        self.durations = list(durations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        NOW[0] += self.durations.pop(0) if self.training else 100.0
        return self.linear(x)


def test_max_seconds_never_starts_a_step_it_cannot_finish(monkeypatch) -> None:
    monkeypatch.setattr(deadline, "time", FakeTime)
    NOW[0] = 0.0
    net = Ticking([1.0, 1.0, 3.0] + [1.0] * 20)
    adam = torch.optim.Adam(net.parameters(), lr=1e-2)
    loader = DataLoader(data(64, 0), batch_size=8)
    val = DataLoader(data(16, 1), batch_size=16)
    config = TrainConfig(epochs=None, max_seconds=7.5, val_every=1, progress=False)
    history = train(net, loader, nn.CrossEntropyLoss(), adam, config, val_loader=val)
    # Steps end at 1, 2 and 5 training seconds; the next is estimated at 3 s (the longest so
    # far) and would end at 8 > 7.5, so it is not started, although 2.5 s are left.
    assert history[-1]["step"] == 3
    assert history[-1]["seconds"] == 5.0
    assert NOW[0] >= 5.0 + 3 * 100.0  # three validations ran and cost no training seconds


@pytest.mark.bad_input(
    "train() given something that is not a torch optimizer, or one built for another model, "
    "or a NaN loss under a gradient optimizer",
    "ValueError naming optimizer; the NaN step is skipped and the weights are unchanged",
)
def test_gradient_optimizer_errors_and_nan_losses_never_reach_the_weights() -> None:
    net = model()
    loader = DataLoader(data(32, 0), batch_size=16)
    with pytest.raises(ValueError, match="optimizer must be a PolyStepOptimizer or a torch"):
        train(net, loader, nn.CrossEntropyLoss(), object(), TrainConfig(progress=False))
    other = torch.optim.SGD(model().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="another model"):
        train(net, loader, nn.CrossEntropyLoss(), other, TrainConfig(progress=False))
    before = [p.detach().clone() for p in net.parameters()]
    sgd = torch.optim.SGD(net.parameters(), lr=0.1)
    train(net, loader, lambda out, y: out.sum() * float("nan"), sgd, TrainConfig(progress=False))
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def _selection_run(loss_sign: float, tilt: float) -> tuple[Selector, nn.Module, torch.Tensor]:
    x = torch.randn(128, 8, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    net = nn.Linear(8, 2)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[1, 0] = 0.05  # right on every sample, barely...
        net.weight[1, 1] = tilt  # ...unless tilted by the second feature
    start = net.weight.detach().clone()
    selector = Selector([(x, y)], eval_every=1)
    loss = nn.CrossEntropyLoss()
    adam = torch.optim.Adam(net.parameters(), lr=0.05)
    config = TrainConfig(
        max_evaluations=20, restore_best=False, callbacks=[selector.callback(net)], progress=False
    )
    train(net, DataLoader(TensorDataset(x, y), batch_size=32), lambda o, t: loss_sign * loss(o, t),
          adam, config)  # fmt: skip
    return selector, net, start


def test_selection_callback_keeps_the_best_validation_weights_and_flags_the_untrained_one():
    # Gradient ASCENT on the loss from a perfect start: the untrained model is the best.
    selector, net, start = _selection_run(-1.0, 0.0)
    assert [p["step"] for p in selector.curve][:2] == [0, 1] and selector.curve[-1]["step"] == 20
    figures = selector.finish(net, selector.val_batches)
    assert figures["selected_step"] == 0 and figures["selected_at_evaluations"] == 0
    assert torch.equal(selector.best_state["weight"], start)
    assert figures["test_acc_selected"] == 1.0 > figures["test_acc_last"]
    # Descent from a worse start: a later step wins and its weights are the ones kept.
    selector, net, start = _selection_run(1.0, 0.2)
    best = max(selector.curve, key=lambda p: p["val_acc"])
    assert selector.best_step == best["step"] > 0 and selector.best_val == best["val_acc"]
    chosen = nn.Linear(8, 2)
    chosen.load_state_dict(selector.best_state)
    assert selector.finish(chosen, selector.val_batches)["test_acc_last"] == best["val_acc"]


@pytest.mark.parametrize("method", ["polystep", "adam"])
def test_bench_runs_polystep_and_adam_through_train(method: str, monkeypatch) -> None:
    seen: list[torch.optim.Optimizer] = []
    real = methods.train

    def spy(model, loader, loss_fn, optimizer, config=None, **kwargs):
        seen.append(optimizer)
        assert config.max_evaluations == 1000 and config.epochs is None
        return real(model, loader, loss_fn, optimizer, config, **kwargs)

    monkeypatch.setattr(methods, "train", spy)
    task = TASKS["mlp_mnist"]
    splits = load_task_data(task, "smoke", seed=0)
    payload = runner.run_one(
        task, method, 0, splits, scale="smoke", budget_fwd=1000, budget_seconds=None, device="cpu"
    )
    kind = PolyStepOptimizer if method == "polystep" else torch.optim.Adam
    assert len(seen) == 1 and isinstance(seen[0], kind)
    assert 0 < payload["evaluations"] <= 1000 and payload["steps"] >= 1
    if method == "adam":
        assert payload["evaluations"] == payload["steps"] == 1000
    else:
        assert payload["evaluations"] == payload["steps"] * payload["passes_per_step"]


def test_max_evaluations_is_a_run_total_across_resume_and_old_checkpoints_still_load(tmp_path):
    from polystep.checkpoint import load_checkpoint, save_checkpoint

    net = model()
    adam = torch.optim.Adam(net.parameters(), lr=1e-2)
    loader = DataLoader(data(64, 0), batch_size=16)
    path = tmp_path / "ckpt.pt"

    def run(budget: int) -> dict:
        config = TrainConfig(
            epochs=None, max_evaluations=budget, checkpoint_path=path, resume=True, progress=False
        )
        return train(net, loader, nn.CrossEntropyLoss(), adam, config)[-1]

    assert run(5)["evaluations"] == 5
    assert run(9)["step"] == 9  # four more, not nine more
    assert run(9)["step"] == 9  # a finished run takes no further step
    # A checkpoint written before the loop counted forward passes: one per gradient step.
    ckpt = load_checkpoint(path)
    del ckpt["train"]["evaluations"]
    save_checkpoint(path, ckpt)
    last = run(10)
    assert last["step"] == last["evaluations"] == 10


class StepCounter:
    """A callback with state: counts the steps it saw and remembers where it began."""

    def __init__(self) -> None:
        self.steps = 0
        self.began_at: list[int] = []

    def on_train_begin(self, state) -> None:
        self.began_at.append(self.steps)

    def on_step_end(self, state, metrics) -> None:
        self.steps += 1

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"steps"}:
            raise ValueError("not a StepCounter state")
        self.steps = state["steps"]


def _adam_run(tmp_path, callbacks, **config):
    net = model()
    adam = torch.optim.Adam(net.parameters(), lr=1e-2)
    loader = DataLoader(data(64, 0), batch_size=16)
    settings = dict(epochs=None, checkpoint_path=tmp_path / "c.ckpt", progress=False)
    cfg = TrainConfig(**{**settings, **config}, callbacks=callbacks)
    train(net, loader, nn.CrossEntropyLoss(), adam, cfg)
    return net


def test_callbacks_with_state_dict_are_checkpointed_and_resumed_before_train_begins(tmp_path):
    from polystep.checkpoint import load_checkpoint

    counter, plain = StepCounter(), LoggingCallbackStub()
    _adam_run(tmp_path, [plain, counter], max_steps=5, checkpoint_every=2)
    assert load_checkpoint(tmp_path / "c.ckpt")["callbacks"] == [None, {"steps": 5}]
    resumed = StepCounter()
    _adam_run(tmp_path, [LoggingCallbackStub(), resumed], max_steps=8, resume=True)
    assert resumed.began_at == [5] and resumed.steps == 8  # loaded before on_train_begin


class LoggingCallbackStub:
    """A callback without state (saved as None)."""

    def on_step_end(self, state, metrics) -> None:
        pass


@pytest.mark.bad_input(
    "train(resume=...) with callbacks other than those the checkpoint was written with",
    "CheckpointError naming the file and the callback positions; nothing is changed",
)
def test_a_checkpoint_resumed_with_other_callbacks_is_refused_before_anything_changes(tmp_path):
    from polystep.checkpoint import CheckpointError

    _adam_run(tmp_path, [StepCounter()], max_steps=3, checkpoint_every=1)
    for callbacks in ([], [LoggingCallbackStub()], [StepCounter(), StepCounter()]):
        net = model()
        before = [p.detach().clone() for p in net.parameters()]
        adam = torch.optim.Adam(net.parameters(), lr=1e-2)
        cfg = TrainConfig(
            epochs=None, max_steps=6, resume=tmp_path / "c.ckpt", callbacks=callbacks,
            progress=False,
        )  # fmt: skip
        with pytest.raises(CheckpointError, match="same callbacks in the same order"):
            train(net, DataLoader(data(64, 0), batch_size=16), nn.CrossEntropyLoss(), adam, cfg)
        assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
        assert not adam.state  # the optimizer was not loaded either


def test_max_seconds_is_a_run_total_across_resume(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(deadline, "time", FakeTime)
    NOW[0] = 0.0
    path = tmp_path / "c.ckpt"

    def run(**config) -> dict:
        net = Ticking([1.0] * 20)
        adam = torch.optim.Adam(net.parameters(), lr=1e-2)
        cfg = TrainConfig(
            epochs=None, max_seconds=6.5, checkpoint_path=path, checkpoint_every=1,
            restore_best=False, progress=False, **config,
        )  # fmt: skip
        loader = DataLoader(data(64, 0), batch_size=8)
        return train(net, loader, nn.CrossEntropyLoss(), adam, cfg)[-1]

    assert run(max_steps=3)["seconds"] == 3.0
    # The resumed call spends the 3.5 s left: three 1 s steps, not six more.
    last = run(resume=path)
    assert last["step"] == 6 and last["seconds"] == 6.0
    # 0.5 s left and the step times restored from the checkpoint: no step is started.
    assert run(resume=path)["step"] == 6


def test_checkpoint_every_seconds_writes_after_the_step_that_crosses_it(monkeypatch, tmp_path):
    from polystep import training

    monkeypatch.setattr(deadline, "time", FakeTime)
    monkeypatch.setattr(training, "time", FakeTime)
    NOW[0] = 0.0
    written: list[int] = []
    real = training.save_checkpoint

    def spy(path, payload) -> None:
        written.append(payload["train"]["step"])
        real(path, payload)

    monkeypatch.setattr(training, "save_checkpoint", spy)
    net = Ticking([1.0] * 20)  # each step costs 1 fake second
    adam = torch.optim.Adam(net.parameters(), lr=1e-2)
    cfg = TrainConfig(
        epochs=None, max_steps=10, checkpoint_path=tmp_path / "c.ckpt",
        checkpoint_every_seconds=2.5, restore_best=False, progress=False,
    )  # fmt: skip
    train(net, DataLoader(data(64, 0), batch_size=8), nn.CrossEntropyLoss(), adam, cfg)
    assert written == [3, 6, 9, 10]  # every 2.5 s at step ends, and when the run ends
    with pytest.raises(ValueError, match="at most one of checkpoint_every"):
        TrainConfig(checkpoint_every=2, checkpoint_every_seconds=60.0)
    with pytest.raises(ValueError, match="checkpoint_every_seconds must be None or > 0"):
        TrainConfig(checkpoint_every_seconds=0)


@pytest.mark.bad_input(
    "a checkpoint whose loop seconds or recent step times are negative or not numbers",
    "CheckpointError naming the file and the values; nothing is changed",
)
def test_checkpoints_with_broken_loop_seconds_are_refused(tmp_path) -> None:
    from polystep.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    _adam_run(tmp_path, [], max_steps=2, checkpoint_every=1)
    path = tmp_path / "c.ckpt"
    good = load_checkpoint(path)
    assert good["train"]["seconds"] >= 0 and len(good["train"]["recent_seconds"]) == 1
    for key, value in (("seconds", -1.0), ("seconds", "3"), ("recent_seconds", [float("nan")])):
        save_checkpoint(path, {**good, "train": {**good["train"], key: value}})
        with pytest.raises(CheckpointError, match="loop seconds"):
            _adam_run(tmp_path, [], max_steps=4, resume=True)
