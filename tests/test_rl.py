"""RL policy search: torch envs against gymnasium, quantized policies, search, bench."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from polystep.problems.rl import (
    Acrobot,
    CartPole,
    MLPPolicy,
    PolicySearchPreset,
    evaluate_policy,
    fake_quant,
    gym_vector_returns,
    initial_states,
    make_env,
    make_policy,
    rollout_returns,
    search_policy,
)
from polystep.problems.rl.envs import HELDOUT_STREAM, SEARCH_STREAM


def _gym_state(env) -> torch.Tensor:
    return torch.tensor(np.asarray(env.unwrapped.state, dtype=np.float64))


@pytest.mark.parametrize("env_cls", [CartPole, Acrobot])
def test_dynamics_match_gymnasium_for_200_random_steps(env_cls):
    gym = pytest.importorskip("gymnasium")
    ours = env_cls()
    theirs = gym.make(ours.gym_id)
    rng = np.random.default_rng(0)
    theirs.reset(seed=7)
    state = _gym_state(theirs)
    episodes = 1
    for t in range(200):
        action = int(rng.integers(ours.num_actions))
        obs, reward, terminated, truncated, _ = theirs.step(action)
        state, our_reward, our_terminated = ours.step(state, torch.tensor(action))
        np.testing.assert_array_equal(ours.observe(state).numpy(), obs)
        np.testing.assert_array_equal(state.numpy(), np.asarray(theirs.unwrapped.state))
        assert float(our_reward) == reward
        assert bool(our_terminated) == terminated
        if terminated or truncated:
            theirs.reset(seed=100 + t)
            state = _gym_state(theirs)
            episodes += 1
    if env_cls is CartPole:
        assert episodes > 3  # random actions end CartPole episodes: resets were exercised


@pytest.mark.parametrize("name", ["cartpole", "acrobot"])
def test_rollouts_match_gymnasium_vector_env(name):
    gym = pytest.importorskip("gymnasium")
    env = make_env(name)
    policy = make_policy("tanh", env)
    generator = torch.Generator().manual_seed(0)
    params = torch.stack([policy.init(generator) * 3 for _ in range(3)])
    seeds = [11, 12]
    vec = gym.make_vec(env.gym_id, num_envs=4, vectorization_mode="sync")
    theirs = gym_vector_returns(vec, policy, params, seeds, max_steps=60)
    single = gym.make(env.gym_id)
    states = []
    for s in seeds:
        single.reset(seed=s)
        states.append(_gym_state(single))
    ours = rollout_returns(env, policy, params, torch.stack(states), max_steps=60)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_common_random_numbers_and_batch_independence():
    env = make_env("cartpole")
    policy = make_policy("int8", env)
    generator = torch.Generator().manual_seed(1)
    params = torch.stack([policy.init(generator) * 4 for _ in range(6)])
    states = initial_states(env, 8, 3, SEARCH_STREAM, 0)
    batch = rollout_returns(env, policy, params, states)
    for n in range(params.shape[0]):
        alone = rollout_returns(env, policy, params[n : n + 1], states)
        torch.testing.assert_close(alone[0], batch[n], rtol=0, atol=0)
    again = initial_states(env, 8, 3, SEARCH_STREAM, 0)
    assert torch.equal(states, again)
    assert not torch.equal(states, initial_states(env, 8, 3, SEARCH_STREAM, 1))
    assert not torch.equal(states, initial_states(env, 8, 3, HELDOUT_STREAM, 0))
    assert float(states.abs().max()) <= env.reset_bound


def test_fake_quant_values_on_the_int8_grid():
    x = torch.randn(5, 7, 9, generator=torch.Generator().manual_seed(0)) * 3
    q = fake_quant(x, (1, 2))
    scale = x.abs().amax(dim=(1, 2), keepdim=True) / 127
    ints = q / scale
    torch.testing.assert_close(ints, ints.round(), rtol=0, atol=1e-4)
    assert float(ints.abs().max()) <= 127 + 1e-4
    assert torch.allclose(q.abs().amax(dim=(1, 2)), x.abs().amax(dim=(1, 2)))
    assert float((q - x).abs().max()) <= float(scale.max()) / 2 + 1e-6
    assert torch.equal(fake_quant(torch.zeros(2, 3), (1,)), torch.zeros(2, 3))


def _hidden(policy: MLPPolicy, params: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    w1, b1, _, _ = policy.prepare(params)
    pre = torch.baddbmm(b1[:, None, :], obs, w1.transpose(1, 2))
    return policy.hidden_activation(pre)


def test_quantized_policy_outputs():
    env = make_env("acrobot")
    generator = torch.Generator().manual_seed(2)
    obs = torch.randn(4, 10, env.obs_dim, generator=generator)
    params = torch.randn(4, make_policy("tanh", env).dim, generator=generator)

    binary = make_policy("binary", env)
    hid = _hidden(binary, params, obs)
    assert set(hid.unique().tolist()) <= {-1.0, 1.0}

    int8 = make_policy("int8", env)
    hid = _hidden(int8, params, obs)
    scale = hid.abs().amax(dim=-1, keepdim=True) / 127
    ints = hid / scale
    torch.testing.assert_close(ints, ints.round(), rtol=0, atol=1e-3)
    assert float(ints.abs().max()) <= 127.001

    int8w = make_policy("int8w", env)
    assert int8w.weight_bits == 8 and int8w.activation == "int8"
    for tensor in int8w.prepare(params):
        dims = tuple(range(1, tensor.ndim))
        ints = tensor / (tensor.abs().amax(dim=dims, keepdim=True) / 127)
        torch.testing.assert_close(ints, ints.round(), rtol=0, atol=1e-3)
        assert float(ints.abs().max()) <= 127.001

    for name in ("tanh", "binary", "int8", "int8w"):
        policy = make_policy(name, env)
        actions = policy.act(params, obs)
        assert actions.shape == (4, 10) and actions.dtype == torch.long
        assert int(actions.min()) >= 0 and int(actions.max()) < env.num_actions
        assert policy.dim == 6 * 16 + 16 + 16 * 3 + 3


def test_policy_rejects_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        MLPPolicy(obs_dim=4, num_actions=2, activation="relu")
    with pytest.raises(ValueError, match="weight_bits"):
        MLPPolicy(obs_dim=4, num_actions=2, weight_bits=4)
    with pytest.raises(ValueError, match="params must have shape"):
        make_policy("tanh", make_env("cartpole")).act(torch.zeros(2, 3), torch.zeros(2, 1, 4))
    with pytest.raises(ValueError, match="env must be one of"):
        make_env("pendulum")


@pytest.mark.parametrize("method", ["polystep", "openai_es"])
def test_search_is_deterministic_by_seed(method):
    env = make_env("cartpole")
    policy = make_policy("binary", env)
    kwargs = {"rollouts": 2, "horizon": 40}
    if method == "polystep":
        preset = PolicySearchPreset(**kwargs)
    else:
        from polystep.problems.rl import OpenAIESPreset

        preset = OpenAIESPreset(popsize=8, **kwargs)
    runs = [
        search_policy(env, policy, budget_evals=96, seed=s, method=method, preset=preset)
        for s in (5, 5, 6)
    ]
    assert torch.equal(runs[0].params, runs[1].params)
    assert runs[0].history == runs[1].history
    assert not torch.equal(runs[0].params, runs[2].params)
    assert runs[0].evaluations <= 96 and runs[0].evaluations == runs[1].evaluations


def test_polystep_solves_cartpole_quickly():
    env = make_env("cartpole")
    policy = make_policy("tanh", env)
    preset = PolicySearchPreset(rollouts=8, horizon=150, probe_radius=(3.0, 0.45))
    result = search_policy(env, policy, budget_evals=480, seed=1, preset=preset)
    returns = evaluate_policy(env, policy, result.params, seed=1, episodes=20, horizon=150)
    assert float(returns.mean()) > 100.0


def test_smoke_bench_writes_results(tmp_path):
    from polystep.bench import rl as bench

    start = time.perf_counter()
    argv = ["--env", "cartpole,acrobot", "--policy", "int8w", "--seeds", "1"]
    assert bench.main([*argv, "--scale", "smoke", "--out", str(tmp_path)]) == 0
    elapsed = time.perf_counter() - start
    records = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2
    assert {r["method"] for r in records} == {"polystep", "openai_es"}
    assert all(r["evaluations"] <= 96 for r in records)
    table = (tmp_path / "table.md").read_text()
    assert "| cartpole | int8w | polystep |" in table
    assert elapsed < 60.0


def test_search_policy_on_a_gymnasium_vector_env():
    gym = pytest.importorskip("gymnasium")
    vec = gym.make_vec("CartPole-v1", num_envs=16, vectorization_mode="sync")
    policy = MLPPolicy(obs_dim=4, num_actions=2, hidden=4)
    preset = PolicySearchPreset(rollouts=2, horizon=20, subspace_dim=8, block_dim=4)
    result = search_policy(vec, policy, budget_evals=16, seed=0, preset=preset)
    assert result.evaluations == 16 and result.params.shape == (policy.dim,)
    returns = evaluate_policy(vec, policy, result.params, seed=0, episodes=4, horizon=20)
    assert returns.shape == (4,) and bool(((returns >= 1) & (returns <= 20)).all())


def test_keep_best_returns_the_incumbent_with_the_best_search_score(monkeypatch):
    import polystep.problems.rl.search as search

    calls: list[torch.Tensor] = []

    def fake_losses(env, policy, params, seed, draw, rollouts, horizon):
        calls.append(params.clone())
        losses = params.pow(2).sum(dim=1)  # candidates: any informative costs
        if params.shape[0] > 1:
            losses[-1] = -10.0 if draw == 2 else 0.0  # the incumbent scores best at step 2
        else:
            losses[0] = 5.0  # the final incumbent, after the last move
        return losses

    monkeypatch.setattr(search, "_losses", fake_losses)
    env = make_env("cartpole")
    policy = make_policy("tanh", env)
    preset = PolicySearchPreset(subspace_dim=8, block_dim=4, keep_best=True)
    popsize = preset.popsize(policy.dim)  # 2 particles x 8 vertices = 16
    result = search_policy(env, policy, budget_evals=100, seed=0, preset=preset)
    steps = (100 - 1) // (popsize + 1)
    assert result.steps == steps == 5
    assert result.evaluations == steps * (popsize + 1) + 1 <= 100
    assert [c.shape[0] for c in calls] == [popsize + 1] * steps + [1]
    assert torch.equal(result.params, calls[2][-1])  # the incumbent played at step 2
    assert not torch.equal(result.params, calls[-1][0])  # not the last iterate
    off = search_policy(env, policy, budget_evals=100, seed=0, preset=PolicySearchPreset())
    assert off.evaluations == 96  # keep_best=False: 2 steps x 48 candidates, no extras
