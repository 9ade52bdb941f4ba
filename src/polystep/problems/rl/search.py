"""Policy search: PolyStep's driver, and the OpenAI-ES baseline at equal evaluations
(:mod:`.openai_es`; presets: :mod:`.presets`).

The search vector is the policy's flat parameter vector (about 100-170 numbers here), searched
either directly or through a random ``k``-dimensional subspace around the current parameters:
``theta = theta0 + B z`` with ``B (D, k)`` orthonormal columns, redrawn (after folding ``B z``
into ``theta0``) every ``redraw_every`` steps. One step is the core's block-coordinate PolyStep
step on ``z``: the engine (:mod:`polystep.engine`) with its ``"subspace"`` space; the run and
its checkpoint are :class:`PolicySearch`.

Loss of a candidate = -(mean return over ``rollouts`` episodes); all candidates of a step share
the same initial states (common random numbers), drawn from the search stream of ``seed``.
One *evaluation* is one candidate parameter vector scored on those ``rollouts`` episodes.
Held-out evaluation (:func:`evaluate_policy`) draws from a separate stream, so it never reuses
a search episode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

import torch

from polystep.distributed import Shard
from polystep.engine import Engine, Subspace, shaping
from polystep.parts import ProblemRun
from polystep.problems.rl.envs import (
    HELDOUT_STREAM,
    SEARCH_STREAM,
    initial_states,
    rollout_returns,
    stream_seed,
)
from polystep.problems.rl.gym_adapter import gym_vector_returns
from polystep.problems.rl.policies import MLPPolicy
from polystep.problems.rl.presets import (  # noqa: F401  (also imported from here)
    OPENAI_ES_PRESETS,
    POLYSTEP_PRESETS,
    OpenAIESPreset,
    PolicySearchPreset,
    openai_es_preset,
    polystep_preset,
)


@dataclass
class PolicySearchResult:
    """Final parameters ``(D,)`` and the run's bookkeeping."""

    params: torch.Tensor
    method: str
    evaluations: int
    steps: int
    seconds: float
    history: list[float] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    wall_s = property(lambda self: self.seconds)  # the old name, read by the bench


def _is_gym_vector(env: Any) -> bool:
    return hasattr(env, "num_envs") and hasattr(env, "step") and not hasattr(env, "max_steps")


def _losses(
    env: Any,
    policy: MLPPolicy,
    params: torch.Tensor,
    seed: int,
    draw: int,
    rollouts: int,
    horizon: int | None,
) -> torch.Tensor:
    """-(mean return over ``rollouts`` search episodes of draw ``draw``) per row of ``params``."""
    if _is_gym_vector(env):
        seeds = [stream_seed(seed, SEARCH_STREAM, draw) % (2**31) + r for r in range(rollouts)]
        returns = gym_vector_returns(env, policy, params, seeds, max_steps=horizon)
    else:
        states = initial_states(env, rollouts, seed, SEARCH_STREAM, draw)
        returns = rollout_returns(env, policy, params, states, max_steps=horizon)
    return -returns.mean(dim=1)


Callback = Callable[[int, int, float], None]


def search_policy(
    env: Any,
    policy: MLPPolicy,
    *,
    budget_evals: int,
    seed: int,
    method: str = "polystep",
    preset: PolicySearchPreset | OpenAIESPreset | None = None,
    callback: Callback | None = None,
) -> PolicySearchResult:
    """Search ``policy``'s parameters on ``env`` within ``budget_evals`` candidate evaluations.

    ``method`` is ``"polystep"`` (default preset :class:`PolicySearchPreset`) or ``"openai_es"``
    (:class:`OpenAIESPreset`). Returns the final iterate (PolyStep's incumbent, OpenAI-ES's
    mean), never a candidate picked by its score; with ``keep_best`` PolyStep returns the
    incumbent (of any step) with the best search score. ``callback(step, evaluations, best_return)``
    is called after every step.
    """
    if isinstance(budget_evals, bool) or not isinstance(budget_evals, int) or budget_evals < 1:
        raise ValueError(f"budget_evals must be a positive int, got {budget_evals!r}")
    if method == "polystep":
        preset = preset if preset is not None else PolicySearchPreset()
        if not isinstance(preset, PolicySearchPreset):
            raise ValueError("method='polystep' needs a PolicySearchPreset")
        search = PolicySearch(env, policy, budget_evals=budget_evals, seed=seed, preset=preset)
        return search.run(None if callback is None else lambda metrics: callback(*metrics))
    if method == "openai_es":
        preset = preset if preset is not None else OpenAIESPreset()
        if not isinstance(preset, OpenAIESPreset):
            raise ValueError("method='openai_es' needs an OpenAIESPreset")
        from polystep.problems.rl.openai_es import search_openai_es

        return search_openai_es(env, policy, budget_evals, seed, preset, callback)
    raise ValueError(f"method must be 'polystep' or 'openai_es', got {method!r}")


class PolicySearch(ProblemRun):
    """A PolyStep policy search as an engine configuration (space ``"subspace"``: ``theta =
    base + scale * B z``) plus what is its own: the flat-start scale and keep-best (the engine's
    best so far is the best incumbent by search score). ``step()`` until ``finished``;
    ``state_dict()`` / ``load_state_dict()`` resume it exactly."""

    def __init__(
        self,
        env: Any,
        policy: MLPPolicy,
        *,
        budget_evals: int,
        seed: int,
        preset: PolicySearchPreset,
    ) -> None:
        self.start_clock()
        self.env, self.policy, self.seed, self.preset = env, policy, int(seed), preset
        dim = policy.dim
        self.per_step = preset.popsize(dim) + int(preset.keep_best)  # the incumbent: one more
        steps = preset.steps(dim, budget_evals)
        if steps < 1:
            need = self.per_step + int(preset.keep_best)
            raise ValueError(f"budget_evals must be at least one step ({need}), got {budget_evals}")
        k = dim if preset.subspace_dim is None else min(preset.subspace_dim, dim)
        every = None if preset.subspace_dim is None else preset.redraw_every
        space = Subspace(dim, k, preset.block_dim, every)
        self.engine = Engine(preset.rule(steps), space, shaping("mean"), max_iterations=steps)
        generator = torch.Generator().manual_seed(self.seed)
        self.state = self.engine.start(policy.init(generator) * preset.init_scale, generator)
        self.history: list[float] = []
        self.informed = False  # some step's costs differed (ends the flat-start growth)
        self.shard = Shard()  # under torchrun: candidates split over ranks
        self.config = {"dim": dim, "budget_evals": budget_evals, "preset": asdict(preset)}

    @property
    def finished(self) -> bool:
        return self.engine.should_stop(self.state)

    def _losses(self, params: torch.Tensor, draw: int) -> torch.Tensor:
        preset = self.preset
        args = (self.seed, draw, preset.rollouts, preset.horizon)
        score = partial(_losses, self.env, self.policy)  # under torchrun: its rows a rank
        return self.shard.score(lambda rows: score(rows, *args), params, state=self.state)

    def step(self) -> tuple[int, int, float]:
        """One step; returns ``(step, evaluations, best return among its candidates)``."""
        state, preset, step = self.state, self.preset, self.state.iteration
        params = self.engine.ask(state)
        if preset.keep_best:
            incumbent = state.draw.lift(state.x)
            losses = self._losses(torch.cat([params, incumbent.unsqueeze(0)]), step)
            Engine.record(state, incumbent, float(losses[-1]), later_ties=True)
            losses = losses[:-1]
        else:
            losses = self._losses(params, step)
        self.engine.tell(state, losses, counted=self.per_step)
        self.history.append(-float(losses.min()))
        flat = bool(torch.isfinite(losses).all()) and float(losses.max() - losses.min()) == 0.0
        self.informed = self.informed or not flat
        scale = state.draw.scale
        new_scale = 1.0 if self.informed else min(scale * preset.stall_growth, preset.stall_max)
        if new_scale != scale:
            state.draw = replace(state.draw.fold(state.x), scale=new_scale)
            state.x = torch.zeros_like(state.x)
        return step, state.evaluations, self.history[-1]

    def own_state(self) -> dict[str, Any]:
        return {"informed": self.informed}

    def check_own_state(self, saved: dict[str, Any], history: list[Any]) -> dict[str, Any]:
        """The seed (it seeds the episodes) comes from the checkpoint too."""
        informed = saved.get("informed")
        if not all(isinstance(h, float) for h in history):
            raise ValueError("history in state must be a list of floats")
        if not isinstance(informed, bool):
            raise ValueError(f"informed in state must be a bool, got {informed!r}")
        return {"history": history, "informed": informed}

    def result(self) -> PolicySearchResult:
        """The final incumbent; with ``keep_best``, it is scored once more (one evaluation) and
        the incumbent with the best search score (ties: the later one) is returned."""
        state = self.state
        final, evaluations = state.draw.lift(state.x), state.evaluations
        if self.preset.keep_best:
            loss = self._losses(final.unsqueeze(0), state.iteration)
            evaluations += 1
            best = float(loss[0])
            if state.best_x is not None and not (math.isfinite(best) and best <= state.best):
                final = state.best_x
        return PolicySearchResult(
            params=final,
            method="polystep",
            evaluations=evaluations,
            steps=state.iteration,
            seconds=self.seconds,
            history=list(self.history),
            config={"popsize": self.preset.popsize(self.policy.dim), **asdict(self.preset)},
        )


def evaluate_policy(
    env: Any,
    policy: MLPPolicy,
    params: torch.Tensor,
    *,
    seed: int,
    episodes: int = 100,
    horizon: int | None = None,
) -> torch.Tensor:
    """Held-out returns of ``params (D,)``: ``(episodes,)`` float64, from initial states of the
    held-out stream of ``seed`` (disjoint from every search episode); ``horizon`` defaults to the
    environment's own (500 steps)."""
    params = params.reshape(1, -1)
    if _is_gym_vector(env):
        base = stream_seed(seed, HELDOUT_STREAM, 0) % (2**31)
        seeds = [base + r for r in range(episodes)]
        return gym_vector_returns(env, policy, params, seeds, max_steps=horizon)[0]
    states = initial_states(env, episodes, seed, HELDOUT_STREAM, 0)
    return rollout_returns(env, policy, params, states, max_steps=horizon)[0]
