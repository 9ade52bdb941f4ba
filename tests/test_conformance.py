"""One conformance suite over every front end of the engine (:mod:`polystep.engine`).

Each entry of :data:`FRONT_ENDS` says how to build a run, take a step, save, load and read a
fingerprint; every check below runs over all of them. Adding a front end is one entry.
Run as a script (``python tests/test_conformance.py DIR``) it resumes the checkpoints in ``DIR``
in a fresh process and writes their fingerprints back (used by the fresh-process test).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from polystep import Levy, PolyStep, PolyStepES, Rastrigin
from polystep.engine import REGISTRY, Engine, Particles, resolve
from polystep.optimizer import PRESETS, PolyStepOptimizer
from polystep.parts import shape_ranks, shape_rows
from polystep.problems.maxsat import random_ksat
from polystep.problems.maxsat.solve import MaxSATRun
from polystep.problems.rl import PolicySearchPreset
from polystep.problems.rl.envs import make_env
from polystep.problems.rl.policies import make_policy
from polystep.problems.rl.search import PolicySearch
from polystep.step import StepRule
from polystep.transform import ParamLayout

STEPS, SPLIT = 6, 2


def poisoned(values: torch.Tensor) -> torch.Tensor:
    """Some costs NaN, +inf and -inf."""
    values = values.clone().to(torch.float64)
    values[::3] = float("nan")
    values[1::4] = float("inf")
    values[2::5] = -float("inf")
    return values


@dataclass
class ParticleRun:
    solver: PolyStep
    state: Any

    def step(self) -> None:
        self.solver.step(self.state)


def particles(seed: int, poison: bool = False) -> ParticleRun:
    def objective(x: torch.Tensor) -> torch.Tensor:
        return poisoned(Levy(dim=4)(x)) if poison else Levy(dim=4)(x)

    solver = PolyStep.create(objective, dim=4, max_iterations=STEPS, solver="sinkhorn", seed=seed)
    x0 = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    return ParticleRun(solver, solver.init_state(x0))


@dataclass
class AskTellRun:
    es: PolyStepES
    poison: bool

    def step(self) -> None:
        values = Rastrigin(dim=3)(self.es.ask())
        self.es.tell(poisoned(values) if self.poison else values)

    @property
    def state(self) -> Any:
        return self.es.state


def ask_tell(seed: int, poison: bool = False) -> AskTellRun:
    es = PolyStepES(3, num_particles=3, seed=seed, x0=torch.ones(3), bounds=(-2.0, 2.0))
    return AskTellRun(es, poison)


def maxsat(seed: int, poison: bool = False, subspace: bool = False) -> MaxSATRun:
    instance = random_ksat(40, num_clauses=170, seed=3)
    run = MaxSATRun(instance, budget_evals=100 if subspace else 2_000, seed=seed)
    assert run.preset.subspace == subspace
    if poison:
        for name in ("costs", "flip_costs"):
            method = getattr(run.evaluator, name)
            setattr(run.evaluator, name, lambda *a, m=method: poisoned(m(*a)))
    return run


def policy_search(seed: int, poison: bool = False, subspace_dim: int | None = 8) -> PolicySearch:
    env = make_env("cartpole")
    preset = PolicySearchPreset(rollouts=2, horizon=30, subspace_dim=subspace_dim, keep_best=True)
    policy = make_policy("tanh", env, hidden=16 if subspace_dim else 4)  # full space: 30 params
    run = PolicySearch(env, policy, budget_evals=600, seed=seed, preset=preset)
    if poison:
        losses = run._losses
        run._losses = lambda params, draw: poisoned(losses(params, draw))  # type: ignore[method-assign]
    return run


@dataclass
class OptimizerRun:
    """A small MLP trained by :class:`PolyStepOptimizer` (one preset, a factored space with a
    redraw and a random subset of blocks); ``state`` is its engine state."""

    optimizer: PolyStepOptimizer
    poison: bool

    def step(self) -> None:
        g = torch.Generator().manual_seed(self.optimizer.iteration)  # a fresh batch per step
        x, y = torch.randn(24, 5, generator=g, dtype=torch.float64), torch.arange(24) % 3
        self.optimizer.step_batch(x, y, torch.nn.functional.cross_entropy)

    @property
    def state(self) -> Any:
        return self.optimizer.search

    @property
    def params(self) -> torch.Tensor:
        return ParamLayout.from_module(self.optimizer.model).flatten(self.optimizer.model)

    def state_dict(self) -> dict[str, Any]:  # a torch checkpoint: the model and the optimizer
        return {
            "model": self.optimizer.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(saved["optimizer"])
        self.optimizer.model.load_state_dict(saved["model"])

    @staticmethod
    def corrupt(saved: dict[str, Any], field: str, value: Any) -> str:
        """Write ``value`` into the optimizer's own name for the engine's ``field`` (it keeps
        no best so far: ``best`` stands for ``skipped_steps``); returns the error to expect."""
        if field == "format":
            saved["optimizer"]["format"] = value
            return "format version"
        name = {"x": "z", "best": "skipped_steps"}.get(field, field)
        saved["optimizer"]["state"][name] = value
        return f"optimizer state {name}"


def optimizer(preset: str, seed: int, poison: bool = False) -> OptimizerRun:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    opt = PolyStepOptimizer(model.double(), preset=preset, subspace="factored", seed=seed)
    opt.progress, opt.blocks_per_step = False, 20
    opt.set_horizon(steps=20)  # for a preset's schedules over the run (snn)
    if poison:
        losses = opt.candidate_losses
        opt.candidate_losses = lambda *a: poisoned(losses(*a))  # type: ignore[method-assign]
    return OptimizerRun(opt, poison)


@dataclass(frozen=True)
class FrontEnd:
    name: str
    build: Callable[..., Any]

    def fingerprint(self, run: Any) -> dict[str, Any]:
        state = run.state.state_dict()
        state["generator"] = state["generator"].clone()
        extra = {k: v for k, v in vars(run).items() if k in ("history", "informed", "cost")}
        if isinstance(run, OptimizerRun):  # the weights are the optimizer's incumbent
            extra["params"] = run.params.detach().clone()
        return {**state, **extra, "costs": list(getattr(run.state, "costs", []))}

    def save(self, run: Any) -> dict[str, Any]:
        return run.state_dict() if hasattr(run, "state_dict") else run.state.state_dict()

    def load(self, run: Any, saved: dict[str, Any]) -> None:
        target = run if hasattr(run, "load_state_dict") else run.state
        target.load_state_dict(saved)


FRONT_ENDS = [
    FrontEnd("particles", particles),
    FrontEnd("ask_tell", ask_tell),
    FrontEnd("maxsat_blocks", maxsat),
    FrontEnd("maxsat_flip_groups", lambda seed, poison=False: maxsat(seed, poison, True)),
    FrontEnd("rl", policy_search),
    FrontEnd("rl_full_space", lambda seed, poison=False: policy_search(seed, poison, None)),
    *(
        FrontEnd(
            f"optimizer_{name}", lambda seed, poison=False, name=name: optimizer(name, seed, poison)
        )
        for name in sorted(PRESETS)
    ),
]
IDS = [f.name for f in FRONT_ENDS]
PROBLEMS = [f for f in FRONT_ENDS if f.name.startswith(("maxsat", "rl"))]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def advance(run: Any, steps: int) -> Any:
    for _ in range(steps):
        run.step()
    return run


@pytest.mark.parametrize("front", FRONT_ENDS, ids=IDS)
def test_determinism_by_seed(front):
    a, b, c = (front.fingerprint(advance(front.build(seed), STEPS)) for seed in (4, 4, 5))
    assert same(a, b)
    key = "params" if "params" in a else "x"  # the optimizer's x restarts at 0 on a redraw
    assert not same(a[key], c[key])


@pytest.mark.parametrize("front", FRONT_ENDS, ids=IDS)
def test_resume_in_a_fresh_object_is_bit_exact(front):
    full = advance(front.build(4), STEPS)
    saved = front.save(advance(front.build(4), SPLIT))
    fresh = front.build(9)
    front.load(fresh, saved)
    assert same(front.fingerprint(advance(fresh, STEPS - SPLIT)), front.fingerprint(full))


def test_resume_in_a_fresh_process_is_bit_exact(tmp_path):
    for front in FRONT_ENDS:
        torch.save(front.save(advance(front.build(4), SPLIT)), tmp_path / f"{front.name}.pt")
    script = [sys.executable, __file__, str(tmp_path)]
    subprocess.run(script, check=True, capture_output=True, text=True, timeout=300)
    for front in FRONT_ENDS:
        resumed = torch.load(tmp_path / f"{front.name}.out.pt", weights_only=False)
        assert same(resumed, front.fingerprint(advance(front.build(4), STEPS))), front.name


@pytest.mark.parametrize("front", FRONT_ENDS, ids=IDS)
def test_non_finite_costs_never_corrupt_state(front):
    run = advance(front.build(4, poison=True), STEPS)
    state = run.state
    assert bool(torch.isfinite(state.x).all())
    assert bool(torch.isfinite(front.fingerprint(run).get("params", torch.zeros(1))).all())
    assert state.best == state.best  # never NaN
    if state.draw is not None:
        assert bool(torch.isfinite(state.draw.lift(state.x)).all())


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("format", 99, "format"),
        ("x", torch.zeros(1), "x in state"),
        ("generator", torch.zeros(3, dtype=torch.uint8), "generator"),
        ("iteration", -1, "iteration"),
        ("evaluations", "many", "evaluations"),
        ("best", float("nan"), "best"),
        ("duals", [], "duals"),
    ],
)
@pytest.mark.parametrize("front", FRONT_ENDS, ids=IDS)
def test_bad_checkpoints_are_named_errors_and_change_nothing(front, field, value, match):
    run = advance(front.build(4), SPLIT)
    saved, before = front.save(run), front.fingerprint(run)
    if hasattr(run, "corrupt"):
        match = run.corrupt(saved, field, value)
    else:
        saved.get("engine", saved)[field] = value
    with pytest.raises(ValueError, match=match):
        front.load(run, saved)
    assert same(front.fingerprint(run), before)


@pytest.mark.parametrize("front", PROBLEMS, ids=[f.name for f in PROBLEMS])
def test_problem_checkpoints_of_another_configuration_are_refused(front):
    run = advance(front.build(4), SPLIT)
    saved, before = front.save(run), front.fingerprint(run)
    saved["config"] = {**saved["config"], "budget_evals": 1}
    with pytest.raises(ValueError, match="config in state"):
        front.load(run, saved)
    saved = front.save(run)
    saved["seconds"] = -1.0
    with pytest.raises(ValueError, match="seconds in state"):
        front.load(run, saved)
    assert same(front.fingerprint(run), before)


def test_protocol_errors_are_named():
    engine = Engine(StepRule.build(epsilon=0.5, step_radius=0.5, probe_radius=1.0), Particles(2, 3))
    state = engine.start(torch.zeros(2, 3), torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="before ask"):
        engine.tell(state, torch.zeros(12))
    engine.ask(state)
    with pytest.raises(RuntimeError, match="twice"):
        engine.ask(state)
    with pytest.raises(RuntimeError, match="state_dict"):
        state.state_dict()
    with pytest.raises(ValueError, match="losses must have 12"):
        engine.tell(state, torch.zeros(5))


def test_registry_resolves_aliases_and_names_bad_ones():
    assert set(REGISTRY) == {"shaping", "projection", "space", "weights"}
    with pytest.raises(ValueError, match="scale_cost must be one of None, 'mean'"):
        resolve("shaping", "median", name="scale_cost")
    with pytest.raises(ValueError, match="scale_cost as a cost unit"):
        resolve("shaping", -1.0, name="scale_cost")
    with pytest.raises(ValueError, match="kind must be one of"):
        resolve("loss", "mean")
    with pytest.raises(ValueError, match="bounds must satisfy"):
        resolve("projection", "clip", bounds=(1.0, 0.0))
    clip = resolve("projection", "clip", bounds=(-1.0, 1.0))
    assert torch.equal(clip(torch.tensor([-3.0, 0.5, 2.0])), torch.tensor([-1.0, 0.5, 1.0]))
    assert resolve("weights", "sinkhorn") is not None
    assert resolve("space", "blocks", dim=5, block_dim=2).num_particles == 3
    subset = resolve("space", "block subset", dim=9, block_dim=2, active=3)
    state = Engine(StepRule.build(epsilon=0.5, step_radius=0.5, probe_radius=1.0), subset).start(
        torch.arange(9.0), torch.Generator().manual_seed(0)
    )
    chosen = subset.choose(5, state, torch.device("cpu"))
    assert chosen.tolist() == sorted(chosen.tolist()) and len(set(chosen.tolist())) == 3


def test_row_and_rank_shaping():
    costs = torch.tensor([[1.0, 3.0, float("nan")], [10.0, 10.0, 40.0]], dtype=torch.float64)
    rows = shape_rows(costs)
    assert torch.isfinite(rows).all() and (rows.amin(dim=1) == 0).all()
    torch.testing.assert_close(rows[1], torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64))
    assert rows[0, 2] > rows[0, 1]  # NaN ranks above every finite cost of its row
    ranks = shape_ranks(costs)
    torch.testing.assert_close(ranks, torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.5, 1.0]]).double())
    solver = PolyStep.create(Levy(dim=3), max_iterations=3, scale_cost="rank")
    assert torch.isfinite(solver.run(torch.ones(4, 3)).positions).all()


def test_the_engine_docstring_example_runs():
    import polystep.engine as engine_module

    doc = engine_module.__doc__
    code = "\n".join(line[4:] for line in doc.split("::\n", 1)[1].splitlines())
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    instance = random_ksat(40, num_clauses=170, seed=3)
    best_x, best = namespace["solve"](instance, steps=20)
    from polystep.problems.maxsat import unsat_weight_numpy

    assert unsat_weight_numpy(instance, best_x.numpy()) == best < 170


def test_schedules_names_and_old_import_path():
    from polystep.epsilon import CosineEpsilon, LinearEpsilon
    from polystep.schedules import Cosine, Linear

    assert Cosine is CosineEpsilon and Linear is LinearEpsilon
    assert Cosine(init=1.0, target=0.1, total_steps=4)(4) == pytest.approx(0.1)


def _resume_all(folder: Path) -> None:
    for front in FRONT_ENDS:
        run = front.build(9)
        front.load(run, torch.load(folder / f"{front.name}.pt", weights_only=True))
        torch.save(front.fingerprint(advance(run, STEPS - SPLIT)), folder / f"{front.name}.out.pt")


if __name__ == "__main__":
    _resume_all(Path(sys.argv[1]))
