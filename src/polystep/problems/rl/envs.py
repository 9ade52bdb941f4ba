"""Vectorised pure-torch CartPole-v1 and Acrobot-v1 dynamics.

An environment here is stateless: a state is a tensor ``(..., S)`` with any leading batch shape
(candidates x rollouts, say), and ``step(state, action)`` returns the next state, the reward and
the termination flag for every environment at once. The equations, constants, integrators and
termination tests follow gymnasium 1.x (``classic_control.cartpole`` / ``acrobot``, "book"
dynamics) so trajectories agree step for step with gymnasium in float64; ``tests/test_rl.py``
checks it.

:func:`rollout_returns` plays a batched policy from given initial states up to the horizon
(gymnasium's ``TimeLimit``: 500 steps for both) and returns the undiscounted returns.
:func:`initial_states` draws the initial states of one evaluation from a seed, so that all
candidates of one step share them (common random numbers).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch


class BatchedPolicy(Protocol):
    """What a rollout needs from a policy (see :class:`~polystep.problems.rl.policies.MLPPolicy`).

    ``prepare(params (N, D))`` returns per-candidate tensors, each with leading dimension ``N``
    (weights, quantized once); ``act_prepared(prepared, obs (N, B, o))`` returns ``(N, B)`` long.
    """

    def prepare(self, params: torch.Tensor) -> list[torch.Tensor]: ...

    def act_prepared(self, prepared: list[torch.Tensor], obs: torch.Tensor) -> torch.Tensor: ...


class CartPole:
    """CartPole-v1: Euler steps of 0.02 s, force +-10, fails at |x| > 2.4 or |theta| > 12 deg.

    State ``(x, x_dot, theta, theta_dot)``; observation = state; actions 0 (push left) and
    1 (push right); reward 1 on every step including the terminating one; horizon 500.
    """

    name = "cartpole"
    gym_id = "CartPole-v1"
    obs_dim = 4
    state_dim = 4
    num_actions = 2
    max_steps = 500
    reset_bound = 0.05

    gravity = 9.8
    masscart = 1.0
    masspole = 0.1
    total_mass = masspole + masscart
    length = 0.5
    polemass_length = masspole * length
    force_mag = 10.0
    tau = 0.02
    theta_threshold = 12 * 2 * math.pi / 360
    x_threshold = 2.4

    def initial_states(self, num: int, generator: torch.Generator) -> torch.Tensor:
        """``num`` states uniform in ``[-0.05, 0.05]^4``: ``(num, 4)`` float64."""
        unit = torch.rand(num, self.state_dim, generator=generator, dtype=torch.float64)
        return (2.0 * unit - 1.0) * self.reset_bound

    def observe(self, state: torch.Tensor) -> torch.Tensor:
        """Observation of ``state (..., 4)``: the state itself, as gymnasium's float32."""
        return state.to(torch.float32)

    def step(
        self, state: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``state (..., 4), action (...)`` -> ``next_state, reward (...), terminated (...)``."""
        x, x_dot, theta, theta_dot = state.unbind(-1)
        force = torch.where(action == 1, self.force_mag, -self.force_mag).to(state.dtype)
        costheta = torch.cos(theta)
        sintheta = torch.sin(theta)
        temp = (force + self.polemass_length * theta_dot.square() * sintheta) / self.total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * costheta.square() / self.total_mass)
        )
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        x = x + self.tau * x_dot
        x_dot = x_dot + self.tau * xacc
        theta = theta + self.tau * theta_dot
        theta_dot = theta_dot + self.tau * thetaacc
        nxt = torch.stack((x, x_dot, theta, theta_dot), dim=-1)
        terminated = (
            (x < -self.x_threshold)
            | (x > self.x_threshold)
            | (theta < -self.theta_threshold)
            | (theta > self.theta_threshold)
        )
        reward = torch.ones_like(x)
        return nxt, reward, terminated


def _wrap(x: torch.Tensor, low: float, high: float, sweeps: int = 3) -> torch.Tensor:
    # gymnasium subtracts / adds the period in a loop; a few sweeps cover every reachable value.
    diff = high - low
    for _ in range(sweeps):
        x = torch.where(x > high, x - diff, x)
        x = torch.where(x < low, x + diff, x)
    return x


class Acrobot:
    """Acrobot-v1 ("book" dynamics): RK4 over dt 0.2, torques (-1, 0, +1), velocities bounded.

    State ``(theta1, theta2, dtheta1, dtheta2)``; observation
    ``(cos t1, sin t1, cos t2, sin t2, dt1, dt2)``; reward -1 per step and 0 on the step that
    reaches the goal height ``-cos(t1) - cos(t1 + t2) > 1``; horizon 500.
    """

    name = "acrobot"
    gym_id = "Acrobot-v1"
    obs_dim = 6
    state_dim = 4
    num_actions = 3
    max_steps = 500
    reset_bound = 0.1

    dt = 0.2
    link_length_1 = 1.0
    link_mass_1 = 1.0
    link_mass_2 = 1.0
    link_com_1 = 0.5
    link_com_2 = 0.5
    link_moi = 1.0
    max_vel_1 = 4 * math.pi
    max_vel_2 = 9 * math.pi
    gravity = 9.8
    torques = (-1.0, 0.0, 1.0)

    def initial_states(self, num: int, generator: torch.Generator) -> torch.Tensor:
        """``num`` states uniform in ``[-0.1, 0.1]^4`` (rounded to float32 like gymnasium)."""
        unit = torch.rand(num, self.state_dim, generator=generator, dtype=torch.float64)
        return ((2.0 * unit - 1.0) * self.reset_bound).to(torch.float32).to(torch.float64)

    def observe(self, state: torch.Tensor) -> torch.Tensor:
        t1, t2, d1, d2 = state.unbind(-1)
        obs = torch.stack((t1.cos(), t1.sin(), t2.cos(), t2.sin(), d1, d2), dim=-1)
        return obs.to(torch.float32)

    def _derivs(
        self,
        t1: torch.Tensor,
        t2: torch.Tensor,
        d1: torch.Tensor,
        d2: torch.Tensor,
        a: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        m1, m2 = self.link_mass_1, self.link_mass_2
        l1, lc1, lc2 = self.link_length_1, self.link_com_1, self.link_com_2
        i1 = i2 = self.link_moi
        g = self.gravity
        cos_t2, sin_t2 = torch.cos(t2), torch.sin(t2)
        dd1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * cos_t2) + i1 + i2
        dd2 = m2 * (lc2**2 + l1 * lc2 * cos_t2) + i2
        phi2 = m2 * lc2 * g * torch.cos(t1 + t2 - math.pi / 2.0)
        phi1 = (
            -m2 * l1 * lc2 * d2**2 * sin_t2
            - 2 * m2 * l1 * lc2 * d2 * d1 * sin_t2
            + (m1 * lc1 + m2 * l1) * g * torch.cos(t1 - math.pi / 2)
            + phi2
        )
        ddtheta2 = (a + dd2 / dd1 * phi1 - m2 * l1 * lc2 * d1**2 * sin_t2 - phi2) / (
            m2 * lc2**2 + i2 - dd2**2 / dd1
        )
        ddtheta1 = -(dd2 * ddtheta2 + phi1) / dd1
        return d1, d2, ddtheta1, ddtheta2

    def step(
        self, state: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``state (..., 4), action (...)`` -> ``next_state, reward (...), terminated (...)``."""
        torque = torch.tensor(self.torques, dtype=state.dtype, device=state.device)[action]
        y = state.unbind(-1)
        h, h2 = self.dt, self.dt / 2.0
        k1 = self._derivs(*y, torque)
        k2 = self._derivs(*(yi + h2 * ki for yi, ki in zip(y, k1)), torque)
        k3 = self._derivs(*(yi + h2 * ki for yi, ki in zip(y, k2)), torque)
        k4 = self._derivs(*(yi + h * ki for yi, ki in zip(y, k3)), torque)
        t1, t2, d1, d2 = (
            yi + h / 6.0 * (a + 2 * b + 2 * c + d) for yi, a, b, c, d in zip(y, k1, k2, k3, k4)
        )
        t1 = _wrap(t1, -math.pi, math.pi)
        t2 = _wrap(t2, -math.pi, math.pi)
        d1 = d1.clamp(-self.max_vel_1, self.max_vel_1)
        d2 = d2.clamp(-self.max_vel_2, self.max_vel_2)
        nxt = torch.stack((t1, t2, d1, d2), dim=-1)
        terminated = -torch.cos(t1) - torch.cos(t2 + t1) > 1.0
        reward = torch.where(terminated, 0.0, -1.0).to(state.dtype)
        return nxt, reward, terminated


ENVS = {"cartpole": CartPole, "acrobot": Acrobot}
Env = CartPole | Acrobot


def make_env(name: str) -> Env:
    """``"cartpole"`` or ``"acrobot"`` (the gymnasium ids are accepted too)."""
    key = {"cartpole-v1": "cartpole", "acrobot-v1": "acrobot"}.get(name.lower(), name.lower())
    if key not in ENVS:
        raise ValueError(f"env must be one of {sorted(ENVS)}, got {name!r}")
    return ENVS[key]()


def stream_seed(seed: int, stream: int, index: int) -> int:
    """A 63-bit seed for draw ``index`` of ``stream`` (0 = search, 1 = held-out evaluation).

    Derived with numpy's ``SeedSequence`` so different ``(seed, stream, index)`` give independent
    generators: held-out initial states never coincide with the search's.
    """
    state = np.random.SeedSequence([int(seed), int(stream), int(index)]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


SEARCH_STREAM = 0
HELDOUT_STREAM = 1


def initial_states(env: Env, num: int, seed: int, stream: int, index: int) -> torch.Tensor:
    """``num`` initial states for draw ``index`` of ``stream`` under ``seed``: ``(num, S)``."""
    generator = torch.Generator().manual_seed(stream_seed(seed, stream, index))
    return env.initial_states(num, generator)


@torch.no_grad()
def rollout_returns(
    env: Env,
    policy: BatchedPolicy,
    params: torch.Tensor,
    states: torch.Tensor,
    *,
    max_steps: int | None = None,
) -> torch.Tensor:
    """Play ``params (N, D)`` from the shared ``states (R, S)``: returns ``(N, R)`` float64.

    Every candidate starts from the same ``R`` states (common random numbers). Finished
    environments are frozen and stop collecting reward; the loop ends when all are finished or at
    the horizon (``max_steps``, default the environment's 500).
    """
    horizon = env.max_steps if max_steps is None else int(max_steps)
    num = params.shape[0]
    state = states.to(torch.float64).unsqueeze(0).expand(num, *states.shape).clone()
    alive = torch.ones(state.shape[:-1], dtype=torch.bool)
    total = torch.zeros(state.shape[:-1], dtype=torch.float64)
    # Environments still running are gathered into a compact batch when many have finished;
    # from then on each row carries its own parameter vector.
    index = torch.arange(alive.numel())
    flat_state = state.reshape(-1, state.shape[-1])
    flat_alive = alive.reshape(-1)
    flat_total = total.reshape(-1)
    weights = policy.prepare(params)
    compact = False
    for _ in range(horizon):
        obs = env.observe(flat_state)
        if compact:
            actions = policy.act_prepared(weights, obs[:, None, :]).reshape(-1)
        else:
            actions = policy.act_prepared(weights, obs.view(num, -1, obs.shape[-1])).reshape(-1)
        nxt, reward, terminated = env.step(flat_state, actions)
        flat_total.index_add_(0, index, reward * flat_alive)
        flat_alive = flat_alive & ~terminated
        flat_state = torch.where(flat_alive[:, None], nxt, flat_state)
        live = int(flat_alive.sum())
        if live == 0:
            break
        if live <= flat_alive.numel() // 2:
            keep = flat_alive.nonzero().squeeze(1)
            rows = keep if compact else index[keep] // states.shape[0]
            weights, compact = [w[rows] for w in weights], True
            index, flat_state, flat_alive = index[keep], flat_state[keep], flat_alive[keep]
    return total
