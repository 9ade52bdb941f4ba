"""Evaluate batched policies on any gymnasium vector environment (users' own environments).

The torch environments in :mod:`polystep.problems.rl.envs` are the fast path for CartPole and
Acrobot; this adapter runs the same policies on a ``gymnasium.vector.VectorEnv`` (for example
``gymnasium.make_vec("MountainCar-v0", num_envs=64)``), with the same common-random-numbers
contract: every candidate plays episodes reset with the same list of seeds. gymnasium is only
imported by the caller; this module needs nothing beyond numpy and torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from polystep.problems.rl.envs import BatchedPolicy


@torch.no_grad()
def gym_vector_returns(
    envs: Any,
    policy: BatchedPolicy,
    params: torch.Tensor,
    seeds: list[int],
    *,
    max_steps: int | None = None,
) -> torch.Tensor:
    """Returns ``(N, R)`` float64 of ``params (N, D)`` over episodes reset with ``seeds (R,)``.

    ``envs`` is a gymnasium vector env with ``num_envs = M`` copies; the ``N * R`` episodes are
    played ``M`` at a time, each sub-environment reset with its episode's seed (so candidate
    ``n`` and candidate ``m`` see identical initial states for the same seed). An episode ends at
    its first ``terminated`` or ``truncated`` (the env's own ``TimeLimit``) or after ``max_steps``
    steps; rewards after the end (autoreset) are ignored.
    """
    num, rollouts = params.shape[0], len(seeds)
    width = int(envs.num_envs)
    prepared = policy.prepare(params)
    owner = torch.arange(num).repeat_interleave(rollouts)
    episode_seed = [int(s) for s in seeds] * num
    totals = torch.zeros(num * rollouts, dtype=torch.float64)
    for start in range(0, num * rollouts, width):
        stop = min(start + width, num * rollouts)
        # Pad the last chunk with copies of its first episode; their returns are discarded.
        slots = list(range(start, stop)) + [start] * (width - (stop - start))
        obs, _ = envs.reset(seed=[episode_seed[i] for i in slots])
        rows = owner[slots]
        weights = [w[rows] for w in prepared]
        alive = np.ones(width, dtype=bool)
        alive[stop - start :] = False
        chunk_total = np.zeros(width, dtype=np.float64)
        steps = 0
        while alive.any() and (max_steps is None or steps < max_steps):
            obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32).reshape(width, 1, -1)
            actions = policy.act_prepared(weights, obs_t).reshape(-1).numpy()
            obs, reward, terminated, truncated, _ = envs.step(actions)
            chunk_total += np.where(alive, np.asarray(reward, dtype=np.float64), 0.0)
            alive &= ~(np.asarray(terminated) | np.asarray(truncated))
            steps += 1
        totals[start:stop] = torch.from_numpy(chunk_total[: stop - start])
    return totals.reshape(num, rollouts)
