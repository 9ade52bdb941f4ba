"""RL policy search: vectorised CartPole / Acrobot, batched policies, PolyStep and OpenAI-ES."""

from polystep.problems.rl.envs import (
    Acrobot,
    CartPole,
    initial_states,
    make_env,
    rollout_returns,
)
from polystep.problems.rl.gym_adapter import gym_vector_returns
from polystep.problems.rl.policies import MLPPolicy, fake_quant, make_policy
from polystep.problems.rl.search import (
    OpenAIESPreset,
    PolicySearchPreset,
    PolicySearchResult,
    evaluate_policy,
    openai_es_preset,
    polystep_preset,
    search_policy,
)

__all__ = [
    "Acrobot",
    "CartPole",
    "MLPPolicy",
    "OpenAIESPreset",
    "PolicySearchPreset",
    "PolicySearchResult",
    "evaluate_policy",
    "fake_quant",
    "gym_vector_returns",
    "initial_states",
    "make_env",
    "make_policy",
    "openai_es_preset",
    "polystep_preset",
    "rollout_returns",
    "search_policy",
]
