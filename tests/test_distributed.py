"""Scale-out on torch.distributed: 2 gloo ranks on loopback give the 1-process trajectory.

The multi-process tests start this file as a script, ``python tests/test_distributed.py
SCENARIO OUT``, once per rank with torchrun's variables (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``); each rank writes ``OUT/rank{r}.json``. The same scenario
run in this process (no process group) is the reference.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from bench_scripts import load_script
from polystep import distributed
from polystep.blocks import BlockCandidates
from polystep.distributed import CELLS, SMOOTHING, Shard, bounds_for, digest, measured_profile, take

HERE = Path(__file__).resolve()
STEPS = 6  # the snn preset redraws its subspace every 5 steps: one redraw is crossed


# -- scenarios: each returns what must match across world sizes ---------------------------------
def snn_data() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    from polystep.nn import spiking_mlp

    torch.manual_seed(0)
    model = spiking_mlp((64, 32, 10), num_steps=4)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    gen = torch.Generator().manual_seed(1)
    return model, torch.rand(STEPS, 32, 64, generator=gen), torch.randint(0, 10, (STEPS, 32))


def scenario_optimizer() -> dict[str, Any]:
    """step_batch on a spiking MLP (layered evaluator), step(closure) on a small MLP, then
    step_batch on a user-written SNN class (captured evaluator)."""
    from polystep.optimizer import PolyStepOptimizer

    model, x, y = snn_data()
    loss_fn = nn.CrossEntropyLoss()
    opt = PolyStepOptimizer(model, preset="snn", seed=0)
    opt.progress = False
    opt.set_horizon(steps=STEPS)  # the preset's schedules over the run
    losses = [opt.step_batch(x[t], y[t], loss_fn) for t in range(STEPS)]
    torch.manual_seed(2)
    mlp = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    xs, ys = torch.randn(16, 8), torch.randint(0, 3, (16,))
    opt2 = PolyStepOptimizer(mlp, seed=1)
    opt2.progress = False
    for _ in range(3):
        losses.append(opt2.step(lambda: loss_fn(mlp(xs), ys)))
    user = UserSNN()  # a plain class: the captured (torch.fx) evaluator
    opt3 = PolyStepOptimizer(user, preset="snn", evaluator="captured", seed=2)
    opt3.progress = False
    opt3.set_horizon(steps=3)
    losses += [opt3.step_batch(x[t, :, :12], y[t] % 5, loss_fn) for t in range(3)]
    return {
        "params": digest(model).hex(),
        "params_closure": digest(mlp).hex(),
        "params_captured": digest(user).hex(),
        "losses": losses,
        "metrics": opt.shard.metrics,
        "metrics_closure": opt2.shard.metrics,
    }


class UserSNN(nn.Module):
    """A hard-LIF 12-16-5 net written as users write it: a Python loop over time steps."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.fc1, self.fc2 = nn.Linear(12, 16), nn.Linear(16, 5)
        with torch.no_grad():
            for p in self.parameters():
                p.mul_(3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v1, v2 = torch.zeros(x.shape[0], 16), torch.zeros(x.shape[0], 5)
        count = torch.zeros(x.shape[0], 5)
        for _ in range(4):
            v1 = 0.9 * v1 + self.fc1(x)
            s1 = (v1 >= 1.0).float()
            v1 = v1 * (1.0 - s1)
            v2 = 0.9 * v2 + self.fc2(s1)
            s2 = (v2 >= 1.0).float()
            v2 = v2 * (1.0 - s2)
            count = count + s2
        return count


def scenario_ask_tell() -> dict[str, Any]:
    """minimize() unchanged, and a PolyStepES loop whose objective is wrapped by sharded()."""
    from polystep import PolyStepES, Rastrigin, minimize

    result = minimize(Rastrigin(dim=6), torch.ones(6), budget=600, num_particles=4)
    es = PolyStepES(dim=5, num_particles=3, x0=torch.ones(5), seed=3, dtype=torch.float64)
    objective = distributed.sharded(lambda x: (x**2).sum(dim=1) + torch.sin(7 * x).sum(dim=1))
    for _ in range(10):
        es.tell(objective(es.ask()))
    return {
        "minimize": digest((result.x, result.fun)).hex(),
        "es": digest(es.state_dict()).hex(),
        "best": es.best,
    }


def scenario_maxsat() -> dict[str, Any]:
    """MAX-SAT runs in both spaces: blocks (full space) and flip groups (random subspace)."""
    from polystep.problems.maxsat.generate import random_ksat
    from polystep.problems.maxsat.solve import MaxSATRun

    instance = random_ksat(300, seed=4)
    out: dict[str, Any] = {}
    for budget in (20_000, 400):  # 400 evaluations for 300 variables: flip groups
        run = MaxSATRun(instance, budget_evals=budget, seed=5)
        for _ in range(8):
            run.step()
        out[str(budget)] = digest(run.state_dict()["engine"]).hex()
        out[f"{budget}_space"] = type(run.engine.space).__name__
        out[f"{budget}_metrics"] = run.shard.metrics
    return out


def scenario_rl() -> dict[str, Any]:
    """A PolyStep policy search on the built-in cart-pole (keep-best: the incumbent is scored
    with the candidates)."""
    from polystep.problems.rl import PolicySearchPreset, make_env, make_policy, search_policy

    env = make_env("cartpole")
    preset = PolicySearchPreset(rollouts=2, horizon=40)
    result = search_policy(env, make_policy("tanh", env), budget_evals=120, seed=5, preset=preset)
    return {"params": digest(result.params).hex(), "history": result.history}


def scenario_diverge() -> dict[str, Any]:
    """Rank 1 starts from other weights: the first step must fail on both ranks."""
    from polystep.optimizer import PolyStepOptimizer

    model, x, y = snn_data()
    if int(os.environ.get("RANK", "0")) == 1:
        with torch.no_grad():
            next(model.parameters())[0, 0] += 1e-3
    opt = PolyStepOptimizer(model, preset="snn", seed=0)
    opt.progress = False
    opt.set_horizon(steps=1)  # the preset's schedules over the run
    try:
        opt.step_batch(x[0], y[0], nn.CrossEntropyLoss())
    except distributed.RankError as exc:
        return {"error": str(exc)}
    return {"error": None}


def scenario_raise() -> dict[str, Any]:
    """Rank 1's objective raises at the second call: rank 1 raises it, rank 0 a RankError."""
    calls = []

    def objective(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        if len(calls) == 2 and os.environ.get("RANK") == "1":
            raise ArithmeticError("objective broke")
        return (x**2).sum(dim=1)

    scored = distributed.sharded(objective)
    try:
        for _ in range(3):
            scored(torch.randn(10, 3, generator=torch.Generator().manual_seed(0)))
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "calls": len(calls)}
    return {"error": None, "calls": len(calls)}


def scenario_fail_early(where: str) -> dict[str, Any]:
    """Rank 1 raises outside any scoring, ``where="step"``: after building its optimizer (the
    group is formed then), ``"group"``: before; rank 0 builds its optimizer and steps."""
    from polystep.optimizer import PolyStepOptimizer

    model, x, y = snn_data()
    rank = int(os.environ.get("RANK", "0"))
    if rank == 1 and where == "group":
        raise RuntimeError("rank 1 broke before the group formed")
    start = time.time()
    try:
        opt = PolyStepOptimizer(model, preset="snn", seed=0)
        if rank == 1:
            raise RuntimeError("rank 1 broke outside scoring")
        opt.progress = False
        opt.set_horizon(steps=1)  # the preset's schedules over the run
        opt.step_batch(x[0], y[0], nn.CrossEntropyLoss())
    except distributed.RankError as exc:
        return {"error": str(exc), "seconds": time.time() - start}
    return {"error": None}


def train_setup(out: Path) -> tuple[nn.Module, Any, Any, Any]:
    from polystep.optimizer import PolyStepOptimizer

    model, x, y = snn_data()
    data = torch.utils.data.TensorDataset(x.reshape(-1, 64), y.reshape(-1))
    loader = torch.utils.data.DataLoader(
        data, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(7)
    )
    opt = PolyStepOptimizer(model, preset="snn", seed=0)
    opt.progress = False
    return model, loader, nn.CrossEntropyLoss(), opt


def scenario_train(out: Path, max_steps: int = 8, resume: bool = False) -> dict[str, Any]:
    """train() with a checkpoint every step (rank 0 writes it); with ``SLOW_RANK`` set, that
    rank sleeps in every step so another process can kill it mid-run."""
    from polystep.training import TrainConfig, train

    model, loader, loss_fn, opt = train_setup(out)
    slow = os.environ.get("SLOW_RANK")
    if slow is not None and int(os.environ.get("RANK", "0")) == int(slow):
        plain = opt.step_batch

        def step_batch(*args: Any) -> float:
            (out / f"alive{os.environ['RANK']}").write_text(str(opt.iteration))
            time.sleep(0.5)
            return plain(*args)

        opt.step_batch = step_batch  # type: ignore[method-assign]
    config = TrainConfig(
        epochs=10,
        max_steps=max_steps,
        checkpoint_path=out / "ckpt.pt",
        checkpoint_every=1,
        resume=resume,
        progress=False,
    )
    try:
        history = train(model, loader, loss_fn, opt, config)
    except distributed.RankError as exc:
        return {"error": str(exc), "at": time.time()}
    return {"params": digest(model).hex(), "history": history, "error": None}


def scenario_train_rows() -> dict[str, Any]:
    """train() for 3 steps, each rank told to checkpoint and write its metrics CSV into its own
    folder: only rank 0 may."""
    import tempfile

    from polystep.training import TrainConfig, train

    model, loader, loss_fn, opt = train_setup(Path("."))
    with tempfile.TemporaryDirectory() as folder:
        path, csv = Path(folder) / "ckpt.pt", Path(folder) / "metrics.csv"
        config = TrainConfig(
            epochs=1, max_steps=3, checkpoint_path=path, metrics_csv=csv, progress=False
        )
        history = train(model, loader, loss_fn, opt, config)
        written = [path.exists(), csv.exists()]
    return {"params": digest(model).hex(), "metrics_row": history[-1], "metrics_written": written}


def thread_names() -> list[str] | None:
    """The names of this process's threads (None where ``/proc`` does not list them)."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return None
    return [(task / "comm").read_text().strip() for task in sorted(tasks.iterdir())]


def scenario_leave() -> dict[str, Any]:
    """The exit path, run last: :func:`distributed._leave` after optimizers were built (under
    ``all`` the group formed first, so ``torch.optim`` imported ``torch._dynamo`` after it)
    must free the group at once, gloo's threads and rank 0's store thread with it, not leave
    them to interpreter shutdown."""
    before = thread_names()
    distributed._leave()
    import torch.distributed as dist

    return {"before": before, "after": thread_names(), "initialized": dist.is_initialized()}


SCENARIOS = {
    "optimizer": scenario_optimizer,
    "ask_tell": scenario_ask_tell,
    "maxsat": scenario_maxsat,
    "rl": scenario_rl,
    "train_rows": scenario_train_rows,
    "diverge": scenario_diverge,
    "raise": scenario_raise,
    "leave": scenario_leave,  # last: it destroys the group
}


def worker(name: str, out: Path) -> None:
    """Run scenario ``name`` (``"all"``: every one of :data:`SCENARIOS`, in order) on this rank."""
    torch.set_num_threads(1)
    if name == "train":
        result = scenario_train(out)
    elif name.startswith("fail_early_"):
        result = scenario_fail_early(name.removeprefix("fail_early_"))
    else:
        if name == "all":  # the group first, as torchrun scripts do (see scenario_leave)
            distributed.init()
        names = list(SCENARIOS) if name == "all" else [name]
        result = {key: SCENARIOS[key]() for key in names}
    rank = os.environ.get("RANK", "0")
    (out / f"rank{rank}.json").write_text(json.dumps(result, default=str))


# -- launching ranks ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(name: str, out: Path, world: int = 2, **env: str) -> list[subprocess.Popen]:
    port = str(free_port())
    procs = []
    for rank in range(world):
        environ = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
            **env,
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(HERE), name, str(out)],
                env=environ,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return procs


def results(procs: list[subprocess.Popen], out: Path, timeout: float = 120) -> list[dict]:
    for proc in procs:
        text, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, text[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(len(procs))]


def in_process(fn: Any, *args: Any) -> dict[str, Any]:
    """The scenario in this process, one thread, no process group: the reference."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return json.loads(json.dumps(fn(*args), default=str))
    finally:
        torch.set_num_threads(threads)


# -- multi-process tests ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict[str, Any]]:
    """Every scenario on 2 gloo ranks, in one launch (process start-up dominates)."""
    out = tmp_path_factory.mktemp("two_ranks")
    return results(launch("all", out), out)


@pytest.mark.parametrize("name", ["optimizer", "ask_tell", "maxsat", "rl", "train_rows"])
def test_two_ranks_match_one_process_bit_for_bit(name, two_ranks):
    reference = in_process(SCENARIOS[name])
    ranks = [rank[name] for rank in two_ranks]
    for rank in ranks:
        for key, value in reference.items():
            if "metrics" not in key:
                assert rank[key] == value, key
    if name == "optimizer":  # each rank scored part of every step, and says so
        metrics = ranks[0]["metrics"]
        assert metrics["world_size"] == 2 and sum(metrics["rank_candidates"]) > 0
        assert all(c > 0 for c in metrics["rank_candidates"])
        assert metrics["wire_dtype"] == "float64"  # the evaluator's float64 means
        # one number per candidate of the other rank plus a header: no parameters
        own, other = metrics["rank_candidates"]
        assert metrics["bytes_sent"] == 8 * (own + distributed.HEADER)
        assert metrics["bytes_received"] == 8 * (other + distributed.HEADER)
        assert ranks[0]["metrics_closure"]["wire_dtype"] == "float32"  # a float32 model's loss
    if name == "maxsat":
        assert {ranks[0]["20000_space"], ranks[0]["400_space"]} == {"Blocks", "FlipGroups"}
        assert ranks[0]["20000_metrics"]["wire_dtype"] == "float32"  # integer costs
        metrics = ranks[1]["20000_metrics"]
        own = metrics["rank_candidates"][1]
        assert metrics["bytes_sent"] == 4 * (own + distributed.HEADER)
        assert metrics["bytes_received"] == 4 * (metrics["candidates"] - own + distributed.HEADER)


def test_train_reports_ranks_and_only_rank_0_writes(two_ranks):
    rows = [rank["train_rows"]["metrics_row"] for rank in two_ranks]
    written = [rank["train_rows"]["metrics_written"] for rank in two_ranks]
    assert written == [[True, True], [False, False]]  # checkpoint, metrics CSV
    for row in rows:
        assert row["world_size"] == 2 and row["rank0_evals_per_s"] > 0
        assert row["rank1_evals_per_s"] > 0 and row["comm_bytes_received"] > 0
    assert "world_size" not in in_process(scenario_train_rows)["metrics_row"]  # one process


@pytest.mark.bad_input(
    "ranks that start from different weights (another seed, data or checkpoint)",
    "RankError on every rank at the first step, naming the ranks that differ from rank 0",
)
def test_diverged_rank_is_named_on_every_rank(two_ranks):
    for rank in two_ranks:
        assert rank["diverge"]["error"] is not None and "ranks [1]" in rank["diverge"]["error"]


def test_leaving_frees_the_group_and_its_threads_at_once(two_ranks):
    for rank in two_ranks:
        leave = rank["leave"]
        assert leave["initialized"] is False
        if leave["before"] is None:
            pytest.skip("no /proc/self/task: thread names unknown")
        assert any("gloo" in name for name in leave["before"])  # the check can see them
        assert not [name for name in leave["after"] if "gloo" in name or "tcpstore" in name]


@pytest.mark.slow
def test_three_ranks_match_one_process_bit_for_bit(tmp_path):
    ranks = results(launch("all", tmp_path, world=3), tmp_path, timeout=300)
    for name in ("optimizer", "ask_tell", "maxsat", "rl", "train_rows"):
        reference = in_process(SCENARIOS[name])
        for rank in ranks:
            for key, value in reference.items():
                if "metrics" not in key:
                    assert rank[name][key] == value, (name, key)
    written = [rank["train_rows"]["metrics_written"] for rank in ranks]
    assert written == [[True, True], [False, False], [False, False]]
    assert all("ranks [1]" in rank["diverge"]["error"] for rank in ranks)


@pytest.mark.bad_input(
    "an objective or model that raises on one rank only",
    "that rank raises its error; every other rank raises RankError naming it, at once",
)
def test_an_error_on_one_rank_stops_every_rank_at_once(two_ranks):
    rank0, rank1 = (rank["raise"] for rank in two_ranks)
    assert rank1 == {"error": "ArithmeticError: objective broke", "calls": 2}
    assert rank0["error"].startswith("RankError: rank 0: the scorer raised on ranks [1]")
    assert rank0["calls"] == 2


def failed_early(tmp_path: Path, where: str, timeout: float) -> dict[str, Any]:
    """Rank 0's record of :func:`scenario_fail_early` (rank 1 exits with its error)."""
    procs = launch(f"fail_early_{where}", tmp_path, POLYSTEP_DIST_TIMEOUT_S=str(timeout))
    text, _ = procs[0].communicate(timeout=timeout + 120)
    failed, _ = procs[1].communicate(timeout=60)
    assert procs[0].returncode == 0, text[-3000:]
    assert procs[1].returncode != 0 and "rank 1 broke" in failed
    return json.loads((tmp_path / "rank0.json").read_text())


@pytest.mark.bad_input(
    "a rank that raises outside scoring (data, user code) after building its optimizer",
    "every other rank raises RankError at its next collective, not at the timeout",
)
def test_an_error_outside_scoring_stops_the_others_at_once(tmp_path):
    rank0 = failed_early(tmp_path, "step", timeout=120.0)
    assert "rank 0 of 2" in rank0["error"] and "died" in rank0["error"]
    assert rank0["seconds"] < 60  # the timeout is 120 s: the closed connection was heard


@pytest.mark.slow
def test_a_rank_that_never_joins_is_a_rank_error_at_the_timeout(tmp_path):
    rank0 = failed_early(tmp_path, "group", timeout=3.0)
    assert rank0["error"].startswith("rank 0 of 2: the process group did not form within 3 s")


def test_killed_rank_stops_the_survivor_and_the_run_resumes_on_one_process(tmp_path):
    """SIGKILL rank 1 mid-run: rank 0 exits with a RankError well within the timeout; its last
    checkpoint resumes on ONE process and ends where an uninterrupted run ends."""
    timeout = 20.0
    procs = launch("train", tmp_path, SLOW_RANK="1", POLYSTEP_DIST_TIMEOUT_S=str(timeout))
    alive = tmp_path / "alive1"
    deadline = time.time() + 90
    while not (alive.exists() and int(alive.read_text() or 0) >= 3) and time.time() < deadline:
        time.sleep(0.05)
    assert alive.exists(), procs[1].communicate(timeout=30)[0][-3000:]
    killed_at = time.time()
    procs[1].send_signal(signal.SIGKILL)
    text, _ = procs[0].communicate(timeout=timeout + 60)
    procs[1].wait(timeout=30)
    assert procs[0].returncode == 0, text[-3000:]
    survivor = json.loads((tmp_path / "rank0.json").read_text())
    assert "rank 0 of 2" in survivor["error"] and "died" in survivor["error"]
    assert survivor["at"] - killed_at < timeout
    # resume on one process from rank 0's last checkpoint, against an uninterrupted run
    from polystep.checkpoint import load_checkpoint

    assert 3 <= load_checkpoint(tmp_path / "ckpt.pt")["train"]["step"] < 8
    resumed = in_process(scenario_train, tmp_path, 8, True)
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    fresh = in_process(scenario_train, fresh_dir)
    assert resumed["params"] == fresh["params"]


@pytest.mark.slow
def test_stalled_rank_stops_the_survivor_after_the_timeout(tmp_path):
    """SIGSTOP rank 1 mid-run: rank 0 waits for it no longer than the collective timeout."""
    timeout = 5.0
    procs = launch("train", tmp_path, SLOW_RANK="1", POLYSTEP_DIST_TIMEOUT_S=str(timeout))
    alive = tmp_path / "alive1"
    deadline = time.time() + 90
    while not (alive.exists() and int(alive.read_text() or 0) >= 2) and time.time() < deadline:
        time.sleep(0.05)
    stopped_at = time.time()
    procs[1].send_signal(signal.SIGSTOP)
    try:
        text, _ = procs[0].communicate(timeout=timeout + 60)
    finally:
        procs[1].kill()
        procs[1].wait(timeout=30)
    assert procs[0].returncode == 0, text[-3000:]
    survivor = json.loads((tmp_path / "rank0.json").read_text())
    assert "rank 0 of 2" in survivor["error"] and "stalled" in survivor["error"]
    assert timeout - 1 < survivor["at"] - stopped_at < timeout + 30


# -- single-process tests -----------------------------------------------------------------------
def test_bounds_cut_equal_costs():
    assert bounds_for(torch.ones(4), 8, 2).tolist() == [0, 4, 8]
    assert bounds_for(torch.ones(4), 7, 3).tolist() == [0, 2, 5, 7]
    assert bounds_for(torch.ones(4), 1, 3).tolist() == [0, 0, 1, 1]  # fewer rows than ranks
    # the first half of the rows costs 3x the second: the cut moves left of the middle
    cut = int(bounds_for(torch.tensor([3.0, 3.0, 1.0, 1.0]), 800, 2)[1])
    assert 266 < cut < 270  # 267 without FLOOR


def test_profile_learns_uneven_costs_until_ranks_take_equal_time():
    """Rows 0..2047 cost 1, the 464 after them 10 (a layer that is dear): from an even split,
    the measured profile moves the cut until both ranks take about the same time."""
    cost = torch.cat([torch.ones(2048), torch.full((464,), 10.0)])
    profile = torch.ones(CELLS) / CELLS
    for _ in range(10):
        bounds = bounds_for(profile, len(cost), 2)
        seconds = torch.stack([cost[a:b].sum() for a, b in itertools.pairwise(bounds)])
        profile = SMOOTHING * measured_profile(bounds, seconds, CELLS) + (1 - SMOOTHING) * profile
    assert float(seconds.max() / seconds.min()) < 1.05  # 4.3 at the even start
    assert measured_profile(torch.tensor([0, 0, 4]), torch.tensor([0.0, 0.0]), 2).tolist() == [
        0.5,
        0.5,
    ]


def test_take_slices_every_kind_of_candidates():
    from polystep.problems.maxsat.solve import FlipCandidates

    assert torch.equal(take(torch.arange(12).reshape(4, 3), 1, 3)[1], torch.tensor([6, 7, 8]))
    blocks = BlockCandidates(torch.tensor([0, 1, 2]), torch.arange(6.0).reshape(3, 2), 6)
    part = take(blocks, 1, 3)
    assert part.block.tolist() == [1, 2] and part.offset.tolist() == [[2, 3], [4, 5]]
    flips = FlipCandidates(torch.tensor([5, 6, 7, 8]), torch.tensor([0, 1, 2, 2]), 3, 3)
    part = take(flips, 1, 3)
    assert part.var.tolist() == [6, 7, 8] and part.cand.tolist() == [0, 1, 1] and part.num == 2
    assert take(flips, 0, 0).var.tolist() == [] and take(flips, 0, 0).num == 0
    with pytest.raises(TypeError, match="cannot split candidates of type dict"):
        take({}, 0, 1)


def test_single_process_calls_the_scorer_unchanged(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    shard = Shard()
    seen = []
    out = shard.score(lambda c, k: seen.append((c, k)) or torch.ones(3), "cands", 5)
    assert seen == [("cands", 5)] and out.tolist() == [1, 1, 1] and shard.metrics == {}
    assert distributed.is_writer() and distributed.world_size() == 1


def test_digest_sees_every_field():
    a = {"x": torch.zeros(3), "g": torch.Generator().manual_seed(0), "n": 1}
    b = {"x": torch.zeros(3), "g": torch.Generator().manual_seed(0), "n": 1}
    assert digest(a) == digest(b)
    b["x"][1] = 1e-30
    assert digest(a) != digest(b)
    assert digest(torch.zeros(2)) != digest(torch.zeros(2, dtype=torch.float64))


@pytest.mark.bad_input(
    "$POLYSTEP_DIST_TIMEOUT_S not a positive number",
    "ValueError naming the variable when polystep starts the process group",
)
@pytest.mark.parametrize(
    ("value", "message"),
    [("x", "must be a positive number"), ("0", "must be a positive number")],
)
def test_bad_timeout_is_named(monkeypatch, value, message):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, value)
    with pytest.raises(ValueError, match=f"{distributed.TIMEOUT_ENV} {message}"):
        distributed.timeout_s()


def test_scaling_table_is_rendered_from_the_records():
    scaling = load_script("scaling")
    one = {"world_size": 1, "candidate_evals_per_s": 1000.0, "speedup_vs_1": 1.0,
           "cpu_speedup_vs_1": 1.0, "cpu_total_vs_1": 1.0, "load_average_1min": 2.0}  # fmt: skip
    two = {**one, "world_size": 2, "candidate_evals_per_s": 1900.0, "speedup_vs_1": 1.9,
           "cpu_speedup_vs_1": 1.95, "cpu_total_vs_1": 1.02, "rank_candidates_last_step": [60, 40],
           "bytes_moved_per_step": 880.0, "wire_dtype": "float64"}  # fmt: skip
    lines = scaling.table([one, two]).splitlines()
    assert lines[2] == "| 1 | 1 | 1,000 | 1.00 | 1.00 | 1.00 | - | - | 2.0 |"
    assert lines[3] == "| 1 | 2 | 1,900 | 1.90 | 1.95 | 1.02 | 60 / 40 | 880 (float64) | 2.0 |"


@pytest.mark.bad_input(
    "WORLD_SIZE (torchrun's variable) that is not an int",
    "ValueError naming WORLD_SIZE at the first step",
)
def test_bad_world_size_is_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be a positive int, got 'two'"):
        Shard().score(lambda c: c, torch.zeros(2))


@pytest.mark.bad_input("Shard(check_every=) not a positive int", "ValueError naming check_every")
@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_bad_check_every_is_named(value):
    with pytest.raises(ValueError, match="check_every must be a positive int"):
        Shard(check_every=value)


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]))


def test_exchange_benchmark_times_both_paths_on_every_rank():
    """benchmarks/exchange.py on 2 gloo ranks: one record per rank, with the CPU cost of the
    bare collective and of Shard.score (which does more, so costs more on the main thread)."""
    script = HERE.parents[1] / "benchmarks" / "exchange.py"
    argv = ["--procs", "2", "--candidates", "64", "--calls", "20", "--repeats", "1"]
    done = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(r["rank"] for r in records) == [0, 1]
    for record in records:
        assert record["world_size"] == 2 and record["candidates"] == 64
        assert record["wire_dtype"] == "float64"
        main = record["main_thread_cpu_us"]
        assert 0 < main["bare"] < main["shard_score"]
        assert set(record["process_cpu_us"]) == {"bare", "shard_score"}


def test_shared_parts_benchmark_times_every_part(capsys):
    """benchmarks/shared_parts.py: one record with the CPU cost of each repeated part."""
    shared_parts = load_script("shared_parts")
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng(devices=[]):  # the script seeds torch's generator
            assert shared_parts.main(["--warmup", "1", "--calls", "2", "--batch", "8"]) == 0
            argv = ["--warmup", "1", "--calls", "2", "--batch", "8", "--parts", "ask", "evaluator"]
            assert shared_parts.main(argv) == 0
    finally:
        torch.set_num_threads(threads)  # ... and runs on one thread
    every, chosen = (json.loads(line) for line in capsys.readouterr().out.splitlines()[-2:])
    assert list(chosen["cpu_ms_per_call"]) == [
        "ask", "evaluator setup, all rows", "evaluator setup, rank 0 rows",
        "evaluator setup, rank 1 rows",
    ]  # fmt: skip
    record = every
    parts = record["cpu_ms_per_call"]
    assert set(parts) == {
        "ask", "tell", "evaluator setup, all rows", "evaluator setup, rank 0 rows",
        "evaluator setup, rank 1 rows", "move", "schedules",
    }  # fmt: skip
    assert all(value > 0 for value in parts.values())
    assert record["candidates"] > record["cut"] > 0
