"""train() and checkpoints under bad input: unsafe, corrupted or mismatched checkpoints, finished
runs, foreign optimizers, empty loaders, subspaces of other shapes, and SIGKILL mid-write."""

from __future__ import annotations

import hashlib
import io
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from polystep import PolyStepOptimizer, TrainConfig, train
from polystep.checkpoint import (
    FORMAT_VERSION,
    HEADER,
    MAGIC,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from polystep.subspace import FactoredSubspace
from polystep.transform import ParamLayout


def dataset(n: int = 48, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


def mlp(seed: int = 0, hidden: int = 8) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, hidden), nn.Tanh(), nn.Linear(hidden, 3))


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def config(path: Path, **kwargs: object) -> TrainConfig:
    base = {"epochs": 2, "progress": False, "checkpoint_path": path, "checkpoint_every": 1}
    return TrainConfig(**{**base, **kwargs})  # type: ignore[arg-type]


def trained_checkpoint(path: Path, **opt_kwargs: object) -> dict[str, torch.Tensor]:
    """Train 3 steps with a checkpoint after each; returns the final weights."""
    net = mlp()
    opt = PolyStepOptimizer(net, seed=0, **opt_kwargs)  # type: ignore[arg-type]
    loader = DataLoader(dataset(), batch_size=16)
    train(net, loader, nn.CrossEntropyLoss(), opt, config(path, max_steps=3))
    return weights(net)


def resume(path: Path, net: nn.Module, opt: PolyStepOptimizer, **kwargs: object) -> list:
    loader = DataLoader(dataset(), batch_size=16)
    cfg = config(path, resume=path, **kwargs)
    return train(net, loader, nn.CrossEntropyLoss(), opt, cfg)


# -- 1. every checkpoint loads with weights_only=True; a pickle that runs code is refused ------
class RunsCode:
    """Unpickling this creates ``marker``: proof that loading ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def wrap(body: bytes) -> bytes:
    """``body`` behind a valid polystep header (an attacker can compute the digest too)."""
    return HEADER.pack(MAGIC, FORMAT_VERSION, len(body), hashlib.sha256(body).digest()) + body


def test_checkpoints_written_by_train_load_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    trained_checkpoint(path, subspace="hybrid", solver="sinkhorn")
    body = path.read_bytes()[HEADER.size :]
    ckpt = torch.load(io.BytesIO(body), weights_only=True)  # raises on anything but plain data
    assert set(ckpt) == {"model", "optimizer", "train", "callbacks"} and ckpt["train"]["step"] == 3
    assert ckpt["optimizer"]["state"]["generator"].dtype == torch.uint8


@pytest.mark.parametrize("with_header", [False, True])
@pytest.mark.bad_input(
    "a crafted pickle as a checkpoint",
    "CheckpointError naming the path; nothing in it runs (weights_only=True)",
)
def test_crafted_pickle_checkpoint_is_refused_without_running_it(
    tmp_path: Path, with_header: bool
) -> None:
    marker, path = tmp_path / "code-ran", tmp_path / "evil.pt"
    buffer = io.BytesIO()
    torch.save({"model": RunsCode(marker), "optimizer": {}, "train": {}}, buffer)
    path.write_bytes(wrap(buffer.getvalue()) if with_header else buffer.getvalue())
    net = mlp()
    before = weights(net)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        resume(path, net, PolyStepOptimizer(net))
    assert not marker.exists()
    assert same(weights(net), before)


def test_saving_anything_but_plain_data_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"\['callbacks'\]\[0\].*RunsCode"):
        save_checkpoint(tmp_path / "c.pt", {"callbacks": [RunsCode(tmp_path / "m")]})
    assert not (tmp_path / "c.pt").exists()


# -- 2. verified by a digest: flipped, truncated, garbage files raise naming the path ---------
def corruptions(data: bytes) -> dict[str, bytes]:
    out = {}
    for at in sorted({0, 5, 16, 20, 28, HEADER.size, len(data) // 2, len(data) - 1}):
        flipped = bytearray(data)
        flipped[at] ^= 0x01
        out[f"flip byte {at}"] = bytes(flipped)
    out["truncated"] = data[: len(data) // 2]
    out["header only"] = data[: HEADER.size]
    out["trailing bytes"] = data + b"\0"
    out["garbage"] = bytes(range(256)) * 8
    out["empty"] = b""
    return out


@pytest.mark.bad_input(
    "a checkpoint with a flipped byte, truncated, empty or garbage",
    "CheckpointError naming the path and saying corrupted (SHA-256), truncated or not a checkpoint",
)
def test_corrupted_checkpoints_raise_naming_the_path(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    trained_checkpoint(good)
    load_checkpoint(good)  # the intact file loads
    for name, data in corruptions(good.read_bytes()).items():
        path = tmp_path / f"{name.replace(' ', '-')}.pt"
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match=re.escape(repr(str(path)))):
            load_checkpoint(path)


def test_resume_from_a_flipped_checkpoint_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    trained_checkpoint(path)
    data = bytearray(path.read_bytes())
    data[-40] ^= 0x10  # inside the payload: the generator state, say
    path.write_bytes(bytes(data))
    net = mlp(seed=5)
    opt = PolyStepOptimizer(net)
    before, state = weights(net), opt.generator.get_state()
    with pytest.raises(CheckpointError, match="corrupted"):
        resume(path, net, opt)
    assert same(weights(net), before) and torch.equal(opt.generator.get_state(), state)


# -- 3. a checkpoint that does not fit is refused before anything is touched ------------------
@pytest.mark.bad_input(
    "resume into an optimizer with another subspace",
    "CheckpointError naming what differs; model and optimizer untouched",
)
def test_resume_into_another_subspace_changes_neither_model_nor_optimizer(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    trained_checkpoint(path, subspace="factored")
    net = mlp(seed=5)
    opt = PolyStepOptimizer(net, subspace="hybrid", seed=7)
    before, z = weights(net), opt.z.clone()
    with pytest.raises(CheckpointError, match=r"ckpt\.pt.*subspace.*(factored|hybrid)"):
        resume(path, net, opt)
    assert same(weights(net), before)
    assert opt.iteration == 0 and torch.equal(opt.z, z) and opt.subspace.draw == 0


def test_resume_into_a_model_of_other_shapes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    trained_checkpoint(path)
    net = mlp(hidden=9)
    before = weights(net)
    with pytest.raises(CheckpointError, match=r"'0\.weight' of shape \(8, 6\).*\(9, 6\)"):
        resume(path, net, PolyStepOptimizer(net))
    assert same(weights(net), before)


@pytest.mark.bad_input(
    "a checkpoint of another format version",
    "CheckpointError naming both versions",
)
def test_resume_with_another_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    trained_checkpoint(path)
    ckpt = load_checkpoint(path)
    ckpt["optimizer"]["format"] = 99
    save_checkpoint(path, ckpt)
    net = mlp(seed=5)
    before = weights(net)
    with pytest.raises(CheckpointError, match="format version 99"):
        resume(path, net, PolyStepOptimizer(net))
    assert same(weights(net), before)


def test_optimizer_load_state_dict_checks_everything_first() -> None:
    x, y = dataset()[:]
    opt = PolyStepOptimizer(mlp(), subspace="factored", solver="sinkhorn", seed=0)
    for _ in range(2):
        opt.step_batch(x, y, nn.CrossEntropyLoss())
    full = opt.state_dict()
    good = full["state"]  # the run's state (format 2 nests it under "state")
    other = PolyStepOptimizer(mlp(seed=3), subspace="factored", solver="sinkhorn", seed=1)
    snapshot = other.state_dict()["state"]
    bad_cases = {
        "z": {**good, "z": torch.zeros(3)},
        "generator": {**good, "generator": torch.zeros(3, dtype=torch.uint8)},
        "duals g": {**good, "duals": {"f": good["duals"]["f"], "g": torch.zeros(99)}},
        "iteration": {**good, "iteration": -1},
        "lacks": {k: v for k, v in good.items() if k != "rule"},
        "schedule": {**good, "rule": {**good["rule"], "epsilon": {"type": "Nope"}}},
    }
    for match, bad in bad_cases.items():
        with pytest.raises(ValueError, match=match):
            other.load_state_dict({**full, "state": bad})
        after = other.state_dict()["state"]
        assert torch.equal(after["z"], snapshot["z"]) and after["iteration"] == 0
        assert torch.equal(after["generator"], snapshot["generator"])
        assert after["subspace"] == snapshot["subspace"]
    other.load_state_dict(full)
    assert other.iteration == 2


# -- 4. a run that reached max_steps takes no extra step when resumed -------------------------
@pytest.mark.bad_input(
    "resuming a run that already reached max_steps",
    "no extra step is taken",
)
def test_resuming_a_finished_run_takes_no_extra_step(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    final = trained_checkpoint(path)
    for _ in range(2):
        net = mlp(seed=5)
        opt = PolyStepOptimizer(net, seed=0)
        history = resume(path, net, opt, max_steps=3)
        assert opt.iteration == 3 and history[-1]["step"] == 3
        assert same(weights(net), final)


# -- 5. the optimizer must belong to the model being trained --------------------------------
@pytest.mark.bad_input(
    "train(model_b, ..., PolyStepOptimizer(model_a))",
    "ValueError: optimizer was built for another model",
)
def test_train_refuses_an_optimizer_built_for_another_model() -> None:
    model_a, model_b = mlp(), mlp(seed=1)
    before = weights(model_a)
    loader = DataLoader(dataset(), batch_size=16)
    with pytest.raises(ValueError, match="optimizer was built for another model"):
        train(
            model_b,
            loader,
            nn.CrossEntropyLoss(),
            PolyStepOptimizer(model_a),
            TrainConfig(epochs=1, progress=False),
        )
    assert same(weights(model_a), before)


# -- 6. empty loaders are errors, not NaN histories or a best val_loss of 0.0 ----------------
@pytest.mark.parametrize(
    "empty",
    [
        [],
        DataLoader(dataset(0), batch_size=4),
        DataLoader(dataset(3), batch_size=4, drop_last=True),
    ],
    ids=["list", "no-samples", "drop-last"],
)
@pytest.mark.bad_input(
    "an empty train or validation loader",
    "ValueError naming loader / val_loader",
)
def test_empty_train_or_validation_loader_is_an_error(empty: object) -> None:
    net = mlp()
    loader = DataLoader(dataset(), batch_size=16)
    cfg = TrainConfig(epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"^loader is empty"):
        train(net, empty, nn.CrossEntropyLoss(), PolyStepOptimizer(net), cfg)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^val_loader is empty"):
        train(net, loader, nn.CrossEntropyLoss(), PolyStepOptimizer(net), cfg, val_loader=empty)  # type: ignore[arg-type]


def test_unsized_empty_loaders_are_errors_too() -> None:
    net = mlp()
    cfg = TrainConfig(epochs=1, progress=False)
    with pytest.raises(ValueError, match="loader yielded no batches in epoch 0"):
        train(net, iter(()), nn.CrossEntropyLoss(), PolyStepOptimizer(net), cfg)
    loader = DataLoader(dataset(), batch_size=16)
    with pytest.raises(ValueError, match="loader yielded no batches"):
        train(net, loader, nn.CrossEntropyLoss(), PolyStepOptimizer(net), cfg, val_loader=iter(()))


# -- 7. a subspace built for other shapes is refused when the optimizer is built --------------
@pytest.mark.bad_input(
    "a subspace built for a model with other shapes",
    "ValueError at construction naming the parameter and both shapes",
)
def test_subspace_for_other_shapes_is_refused_at_construction() -> None:
    space = FactoredSubspace.from_layout(ParamLayout.from_module(mlp(hidden=8)), rank=2)
    with pytest.raises(ValueError, match=r"'0\.weight' of shape \(8, 6\).*shape \(16, 6\)"):
        PolyStepOptimizer(mlp(hidden=16), subspace=space)


# -- fault: SIGKILL around the checkpoint write leaves the old or the new one ----------------
KILLED_RUN = textwrap.dedent(
    """
    import os, sys
    ARGV = globals().get("ARGV") or sys.argv[1:]
    import torch
    torch.set_num_threads(1)
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from polystep import PolyStepOptimizer, TrainConfig, train

    steps, ckpt, out, pause = int(ARGV[0]), ARGV[1], ARGV[2], ARGV[3] == "pause"
    if pause:  # hold at each rename until the parent answers (or kills us)
        rename = os.replace

        def held(src, dst):
            print("written", flush=True)
            sys.stdin.readline()
            rename(src, dst)
            print("renamed", flush=True)
            sys.stdin.readline()

        os.replace = held
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    opt = PolyStepOptimizer(model, subspace="factored", seed=0)
    use = ckpt != "-"
    cfg = TrainConfig(
        epochs=5, max_steps=steps, progress=False, checkpoint_every=1 if use else None,
        checkpoint_path=ckpt if use else None, resume=True if use else None,
    )
    train(model, loader, nn.CrossEntropyLoss(), opt, cfg)
    torch.save({"model": model.state_dict(), "iteration": opt.iteration}, out)
    """
)


def run_and_kill(script: Path, args: list[str], at: str, count: int) -> None:
    """Run ``script``; SIGKILL it at the ``count``-th ``at`` line it prints."""
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    seen = 0
    assert proc.stdout is not None and proc.stdin is not None
    for line in proc.stdout:
        seen += line.strip() == at
        if seen == count:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            return
        proc.stdin.write("\n")
        proc.stdin.flush()
    proc.wait(timeout=60)
    pytest.fail(f"the run ended (rc {proc.returncode}) before the kill point")


@pytest.mark.bad_input(
    "training killed (SIGKILL) while writing a checkpoint",
    "the previous checkpoint stays whole; the resumed run ends bit-identical",
)
def test_sigkill_between_write_and_rename_leaves_the_old_checkpoint_and_resumes(
    tmp_path: Path,
) -> None:
    """Killed with the third checkpoint fully in the temporary file but not yet renamed: the
    second is in place, whole; resuming from it (past a half-written temporary file) ends
    bit-identical to a run that was never interrupted."""
    script, ckpt = tmp_path / "killed_run.py", tmp_path / "ckpt.pt"
    script.write_text(KILLED_RUN)
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    run_and_kill(script, ["6", str(ckpt), "-", "pause"], "written", 3)
    assert load_checkpoint(ckpt)["train"]["step"] == 2 and tmp.exists()
    tmp.write_bytes(b"half a checkpoint")  # what a kill in the middle of the write leaves
    threads = torch.get_num_threads()
    try:
        exec(KILLED_RUN, {"ARGV": ["6", str(ckpt), str(tmp_path / "resumed.pt"), "-"]})
        exec(KILLED_RUN, {"ARGV": ["6", "-", str(tmp_path / "straight.pt"), "-"]})
    finally:
        torch.set_num_threads(threads)
    assert load_checkpoint(ckpt)["train"]["step"] == 6 and not tmp.exists()
    straight = torch.load(tmp_path / "straight.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert resumed["iteration"] == straight["iteration"] == 6
    assert same(resumed["model"], straight["model"])


def test_a_loader_without_a_length_still_trains() -> None:
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):  # type: ignore[no-untyped-def]
            data = dataset()
            return (data[i] for i in range(len(data)))

    net = mlp()
    opt = PolyStepOptimizer(net)
    loader = DataLoader(Stream(), batch_size=16)
    train(net, loader, nn.CrossEntropyLoss(), opt, TrainConfig(epochs=1, progress=False))
    assert opt.iteration == 3
