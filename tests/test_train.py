"""train(): validation selection, CSV, callbacks, atomic checkpoints, exact resume, seed snippet."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from polystep import (
    EarlyStoppingCallback,
    LoggingCallback,
    PolyStepOptimizer,
    TrainConfig,
    train,
)
from polystep.training import evaluate_loader, load_checkpoint, save_checkpoint


def data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


def model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def test_validation_selection_history_and_csv(tmp_path: Path) -> None:
    net = model()
    loader = DataLoader(data(64, 0), batch_size=32, shuffle=True)
    val = DataLoader(data(64, 1), batch_size=64)
    lines: list[str] = []
    cfg = TrainConfig(
        epochs=3,
        val_every=2,
        metrics_csv=tmp_path / "m.csv",
        callbacks=[LoggingCallback(every=1, printer=lines.append)],
        progress=True,
    )
    history = train(net, loader, nn.CrossEntropyLoss(), PolyStepOptimizer(net), cfg, val_loader=val)
    assert [row["step"] for row in history] == [2, 4, 6]
    assert {"train_loss", "val_loss", "val_accuracy", "evals_per_s"} <= set(history[0])
    best = max(row["val_accuracy"] for row in history)
    assert evaluate_loader(net, val, nn.CrossEntropyLoss())["accuracy"] == best
    text = (tmp_path / "m.csv").read_text().splitlines()
    assert text[0].startswith("step,epoch,time,train_loss") and len(text) == 4
    assert any(line.startswith("step 1 ") for line in lines)
    assert any(line.startswith("validation:") for line in lines)


def test_early_stopping_and_max_steps() -> None:
    net = model()
    loader = DataLoader(data(64, 0), batch_size=16)
    stopper = EarlyStoppingCallback(patience=1, min_delta=10.0)  # nothing improves by 10
    cfg = TrainConfig(epochs=50, val_every=1, callbacks=[stopper], progress=False)
    history = train(
        net, loader, nn.CrossEntropyLoss(), PolyStepOptimizer(net), cfg, val_loader=loader
    )
    assert history[-1]["step"] == 2
    cfg = TrainConfig(epochs=50, max_steps=3, progress=False)
    assert train(net, loader, nn.CrossEntropyLoss(), PolyStepOptimizer(net), cfg)[-1]["step"] == 3


def test_config_errors_are_named() -> None:
    for kwargs, name in [
        ({"epochs": 0}, "epochs"),
        ({"max_steps": -1}, "max_steps"),
        ({"select_on": "f1"}, "select_on"),
        ({"max_seconds": 0}, "max_seconds"),
        ({"max_evaluations": 0}, "max_evaluations"),
        ({"epochs": None}, "epochs=None needs another limit"),
    ]:
        with pytest.raises(ValueError, match=name):
            TrainConfig(**kwargs)
    with pytest.raises(ValueError, match="patience"):
        EarlyStoppingCallback(patience=0)
    with pytest.raises(ValueError, match="resume"):
        net = model()
        train(
            net,
            [],
            nn.MSELoss(),
            PolyStepOptimizer(net),
            TrainConfig(resume="/nonexistent/ckpt.pt", progress=False),
        )


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})

    def broken_save(obj: object, fh) -> None:
        fh.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(importlib.import_module("polystep.training").torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    restored = load_checkpoint(path)
    assert restored["step"] == 1 and torch.equal(restored["w"], torch.ones(3))


RESUME_SCRIPT = textwrap.dedent(
    """
    import sys
    ARGV = globals().get("ARGV") or sys.argv[1:]
    import torch
    torch.set_num_threads(1)
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from polystep import PolyStepOptimizer, TrainConfig, train
    from polystep.subspace import HybridSubspace
    from polystep.transform import ParamLayout

    steps, ckpt, out = int(ARGV[0]), ARGV[1], ARGV[2]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)  # global-RNG shuffle
    space = HybridSubspace.from_layout(ParamLayout.from_module(model), rank=2, redraw_every=2)
    opt = PolyStepOptimizer(model, subspace=space, seed=0)
    use_ckpt = ckpt != "-"
    cfg = TrainConfig(
        epochs=10, max_steps=steps, progress=False, checkpoint_every=1 if use_ckpt else None,
        checkpoint_path=ckpt if use_ckpt else None, resume=True if use_ckpt else None,
    )
    train(model, loader, nn.CrossEntropyLoss(), opt, cfg)
    torch.save({"model": model.state_dict(), "iteration": opt.iteration}, out)
    """
)


def _run(tmp_path: Path, *args: str) -> None:
    script = tmp_path / "resume_run.py"
    script.write_text(RESUME_SCRIPT)
    subprocess.run([sys.executable, str(script), *args], check=True, timeout=300)


def test_resume_in_fresh_process_is_bit_identical(tmp_path: Path) -> None:
    """7 straight steps == 3 steps | fresh process to 4 (an epoch end) | fresh process to 7."""
    exec(RESUME_SCRIPT, {"ARGV": ["7", "-", str(tmp_path / "straight.pt")]})
    ckpt = str(tmp_path / "ckpt.pt")
    for steps in ("3", "4", "7"):  # mid-epoch checkpoint, then an epoch-end checkpoint
        _run(tmp_path, steps, ckpt, str(tmp_path / f"part{steps}.pt"))
    straight = torch.load(tmp_path / "straight.pt")
    resumed = torch.load(tmp_path / "part7.pt")
    assert resumed["iteration"] == straight["iteration"] == 7
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


def test_seed_snippet_runs_unchanged() -> None:
    g = torch.Generator().manual_seed(0)
    train_loader = DataLoader(
        TensorDataset(torch.rand(32, 784, generator=g), torch.randint(0, 10, (32,), generator=g)),
        batch_size=32,
    )
    # --- the snippet from the issue, verbatim ---
    import torch.nn as nn

    from polystep import LoggingCallback, PolyStepOptimizer, TrainConfig, train  # noqa: F401
    from polystep.epsilon import CosineEpsilon
    from polystep.hybrid_subspace import HybridSubspace
    from polystep.transform import ParamLayout

    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    layout = ParamLayout.from_module(model)
    subspace = HybridSubspace.from_layout(layout, rank=8)
    optimizer = PolyStepOptimizer(
        model,
        subspace=subspace,
        solver="softmax",
        epsilon=CosineEpsilon(init=10.0, target=0.1, decay=0.02),
        step_radius=CosineEpsilon(init=5.0, target=1.0, decay=0.008),
        probe_radius=CosineEpsilon(init=10.0, target=2.0, decay=0.016),
    )
    train(model, train_loader, nn.CrossEntropyLoss(), optimizer, TrainConfig(epochs=5))
    # --- end of snippet ---
    assert optimizer.iteration == 5
    assert all(torch.isfinite(p).all() for p in model.parameters())
