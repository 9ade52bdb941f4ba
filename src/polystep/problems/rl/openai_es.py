"""The OpenAI-ES baseline of policy search (:func:`~polystep.problems.rl.search.search_policy`
with ``method="openai_es"``): the same losses, episodes and result type as PolyStep's."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import torch

from polystep.baselines.openai_es import OpenAIES
from polystep.problems.rl.policies import MLPPolicy
from polystep.problems.rl.presets import OpenAIESPreset
from polystep.problems.rl.search import Callback, PolicySearchResult, _losses
from polystep.schedules import Cosine


def search_openai_es(
    env: Any,
    policy: MLPPolicy,
    budget: int,
    seed: int,
    preset: OpenAIESPreset,
    callback: Callback | None,
) -> PolicySearchResult:
    """OpenAI-ES on ``policy``'s parameters within ``budget`` evaluations (``budget //
    popsize`` generations on the same search episodes as PolyStep's); returns the final mean."""
    start = time.perf_counter()
    generations = budget // preset.popsize
    if generations < 1:
        raise ValueError(f"budget_evals must be at least one population ({preset.popsize})")
    generator = torch.Generator().manual_seed(int(seed))
    x0 = policy.init(generator) * preset.init_scale
    es = OpenAIES(
        policy.dim,
        popsize=preset.popsize,
        sigma=preset.sigma,
        learning_rate=preset.learning_rate,
        x0=x0,
        seed=int(seed),
    )
    sigma = None
    if preset.sigma_final is not None:
        sigma = Cosine(init=preset.sigma, target=preset.sigma_final, total_steps=generations)
    history: list[float] = []
    for gen in range(generations):
        if sigma is not None:
            es.sigma = sigma(gen)
        params = torch.as_tensor(es.ask(), dtype=torch.float32)
        losses = _losses(env, policy, params, seed, gen, preset.rollouts, preset.horizon)
        es.tell(losses)
        history.append(-float(losses.min()))
        if callback is not None:
            callback(gen, (gen + 1) * preset.popsize, history[-1])
    return PolicySearchResult(
        params=torch.as_tensor(es.mean, dtype=torch.float32).clone(),
        method="openai_es",
        evaluations=generations * preset.popsize,
        steps=generations,
        seconds=time.perf_counter() - start,
        history=history,
        config=asdict(preset),
    )
