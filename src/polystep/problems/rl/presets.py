"""Policy-search presets: PolyStep's (:class:`PolicySearchPreset`) and the OpenAI-ES
baseline's (:class:`OpenAIESPreset`), with the documented settings per environment. The driver
is :mod:`polystep.problems.rl.search`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from polystep.blocks import num_blocks
from polystep.engine import population
from polystep.schedules import Cosine
from polystep.step import StepRule


@dataclass(frozen=True, kw_only=True)
class PolicySearchPreset:
    """PolyStep settings for small-policy search. Radii are distances in search coordinates.

    ``epsilon`` is in units of the step's mean cost spread (``scale_cost="mean"``), so the same
    numbers serve CartPole (returns up to 500) and Acrobot (returns down to -500). Each
    ``(init, target)`` pair is a cosine decay over the run. ``horizon`` caps the search episodes
    (held-out evaluation always plays the environment's full horizon).

    Flat start: while every candidate of every step so far has scored the same (a fresh policy
    that always picks one action, or never swings Acrobot up within ``horizon``), the costs
    carry no information and the softmax move is zero. The search then folds ``z`` into the base
    point and scales the next probes and moves by ``stall_growth`` per flat step (at most
    ``stall_max``); from the first step whose costs differ, the scale is 1 for the rest of the
    run (a later plateau, e.g. every candidate at CartPole's maximum 500, is left alone). Runs
    whose first step is informative are unaffected.

    Best incumbent (``keep_best``): every step also plays the incumbent itself on that step's
    search episodes (one more evaluation a step, counted in the budget), and one last evaluation
    scores the incumbent after the final move on a fresh search draw. The search returns the
    incumbent with the best of these search scores (ties: the later one) instead of the last, so
    a late move onto a worse policy (noisy 16-episode costs, quantized policies) is not what gets
    reported. Only search episodes are used; held-out episodes never take part in the choice.
    """

    rollouts: int = 16
    subspace_dim: int | None = 24
    block_dim: int = 4
    polytope: str = "orthoplex"
    epsilon: tuple[float, float] = (1.0, 0.1)
    step_radius: tuple[float, float] = (0.5, 0.05)
    probe_radius: tuple[float, float] = (1.0, 0.1)
    redraw_every: int = 1
    init_scale: float = 1.0
    horizon: int | None = None
    stall_growth: float = 2.0
    stall_max: float = 64.0
    keep_best: bool = False

    def popsize(self, dim: int) -> int:
        """Candidates per step for a policy with ``dim`` parameters (without the incumbent)."""
        k = dim if self.subspace_dim is None else min(self.subspace_dim, dim)
        return population(self.polytope, self.block_dim, num_blocks(k, self.block_dim))

    def steps(self, dim: int, budget: int) -> int:
        """Steps that fit ``budget`` evaluations, incumbent evaluations included."""
        if self.keep_best:
            return (budget - 1) // (self.popsize(dim) + 1)
        return budget // self.popsize(dim)

    def rule(self, steps: int) -> StepRule:
        def cosine(pair: tuple[float, float]) -> Cosine:
            return Cosine(init=pair[0], target=pair[1], total_steps=max(1, steps))

        return StepRule.build(
            epsilon=cosine(self.epsilon),
            step_radius=cosine(self.step_radius),
            probe_radius=cosine(self.probe_radius),
            polytope=self.polytope,
        )


@dataclass(frozen=True, kw_only=True)
class OpenAIESPreset:
    """OpenAI-ES settings for the baseline (see ``polystep.baselines.openai_es``)."""

    rollouts: int = 16
    popsize: int = 50
    sigma: float = 0.1
    sigma_final: float | None = None
    learning_rate: float = 0.05
    init_scale: float = 1.0
    horizon: int | None = None


# Tuned on seeds 1, 2, 3 only (never on the reported 42, 123, 456); see benchmarks/results/rl.
# Both environments: a 24-dim random subspace redrawn every step, 6 particles x 8 orthoplex
# vertices = 48 candidates a step. CartPole: 67 steps in 3,216 evaluations. Acrobot: the
# incumbent is played too (keep_best, 49 evaluations a step, 195 steps in 9,600) and the best
# incumbent by search score is returned; it searches with a 200-step horizon (held-out
# evaluation uses 500). keep_best is off for CartPole: its two lost steps cost tanh seed 3
# (held-out 454 instead of 500).
_SUBSPACE: dict[str, Any] = {"probe_radius": (3.0, 0.45), "step_radius": (0.2, 0.03)}
POLYSTEP_PRESETS: dict[str, dict[str, Any]] = {
    "cartpole": dict(_SUBSPACE),
    "acrobot": {**_SUBSPACE, "keep_best": True, "horizon": 200},
}
OPENAI_ES_PRESETS: dict[str, dict[str, Any]] = {
    "cartpole": {"popsize": 50},
    "acrobot": {"popsize": 200, "horizon": 200},
}


def polystep_preset(env: str, policy: str = "tanh") -> PolicySearchPreset:
    """The documented PolyStep preset for ``env`` (``"cartpole"`` / ``"acrobot"``)."""
    del policy  # one preset per environment serves every policy
    return PolicySearchPreset(**POLYSTEP_PRESETS.get(env, {}))


def openai_es_preset(env: str, policy: str = "tanh") -> OpenAIESPreset:
    """The OpenAI-ES baseline settings for ``env``."""
    del policy
    return OpenAIESPreset(**OPENAI_ES_PRESETS.get(env, {}))
