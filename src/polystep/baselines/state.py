"""Checks the vector baselines' ``load_state_dict`` shares: a state written by another method,
for another shape or under other settings is refused with a ValueError naming what differs,
before anything is changed.

A baseline's state (``state_dict()``) is plain data (tensors, numbers, strings, None, lists and
dicts), so it goes into a :mod:`polystep.checkpoint` file as it is: ``method`` (the baseline's
name), ``settings`` (every setting that shapes the trajectory, ``dim`` included) and the
method's own entries.
"""

from __future__ import annotations

from typing import Any

import torch

from polystep.validation import check_int


def check_state(
    owner: str, method: str, settings: dict[str, Any], state: Any, keys: frozenset[str]
) -> None:
    """Raise a ValueError unless ``state`` is a state of ``method`` with exactly ``keys`` and,
    setting by setting, the same ``settings`` as the loading baseline (``owner`` names it)."""
    where = f"{owner}.load_state_dict"
    if not isinstance(state, dict):
        raise ValueError(f"{where}: the state must be a dict, got {type(state).__name__}")
    if state.get("method") != method:
        raise ValueError(
            f"{where}: the state is of method {state.get('method')!r}, this is {method!r}"
        )
    if set(state) != keys:
        raise ValueError(
            f"{where}: the state must have the keys {sorted(keys)}, has {sorted(state)}"
        )
    stored = state["settings"]
    if not isinstance(stored, dict):
        raise ValueError(f"{where}: the state's settings must be a dict")
    for name, value in settings.items():
        have = stored.get(name, "<missing>")
        if have != value:
            raise ValueError(
                f"{where}: the state has {name}={have!r}, this {owner} has {name}={value!r}"
            )


def check_vector(owner: str, name: str, value: Any, dim: int, *, optional: bool = False) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a float tensor of shape
    ``(dim,)`` (or None when ``optional``)."""
    if optional and value is None:
        return
    if not (isinstance(value, torch.Tensor) and value.is_floating_point()):
        raise ValueError(f"{owner}.load_state_dict: the state's {name} must be a float tensor")
    if tuple(value.shape) != (dim,):
        raise ValueError(
            f"{owner}.load_state_dict: the state's {name} has shape {tuple(value.shape)}, "
            f"this {owner} needs ({dim},)"
        )


def check_count(owner: str, name: str, value: Any) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an int >= 0."""
    check_int(f"{owner}.load_state_dict: the state's {name}", value, minimum=0)


def check_rng(owner: str, value: Any, device: torch.device) -> None:
    """Raise a ValueError unless ``value`` is the state of a ``torch.Generator`` on ``device``."""
    try:
        torch.Generator(device=device).set_state(value)
    except (TypeError, RuntimeError) as err:
        raise ValueError(
            f"{owner}.load_state_dict: the state's rng is not a {device.type} generator state "
            f"({str(err).splitlines()[0][:120]})"
        ) from None


def check_number(owner: str, name: str, value: Any) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an int or a float (inf allowed)."""
    if type(value) not in (int, float):
        raise ValueError(f"{owner}.load_state_dict: the state's {name} must be a number")


class SampledState:
    """What the baselines that sample with a ``torch.Generator`` (``_gen``) share: the check of
    a told fitness and the best point (``_received``), and ``state_dict()``/
    ``load_state_dict()`` of their ``mean``, ``evaluations``, ``best_x``, ``best_fitness``,
    the sampler's state (taken before a population asked but not told, so a loaded copy asks it
    again) and the entries of :attr:`STATE_ATTRIBUTES` (``(state key, attribute)`` pairs: a
    ``(dim,)`` tensor or an int counter each). A subclass sets :attr:`METHOD`,
    :attr:`STATE_ATTRIBUTES` and ``settings()``, and records ``_rng_before_ask`` as each
    ``ask()`` begins."""

    METHOD: str
    STATE_ATTRIBUTES: tuple[tuple[str, str], ...]
    COMMON = ("mean", "evaluations", "best_x", "best_fitness")
    dim: int
    dtype: torch.dtype
    device: torch.device
    mean: torch.Tensor
    best_x: torch.Tensor | None
    _gen: torch.Generator
    _rng_before_ask: torch.Tensor
    _population: torch.Tensor | None

    popsize: int
    best_fitness: float

    def settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def _start(self, mean: torch.Tensor, seed: int) -> None:
        """The state before the first ``ask()``: ``mean``, nothing evaluated, no best point,
        the sampler seeded with ``seed`` on ``self.device``, no population pending."""
        self.mean = mean
        self.evaluations = 0
        self.best_x = None
        self.best_fitness = float("inf")
        self._gen = torch.Generator(device=self.device).manual_seed(int(seed))
        self._rng_before_ask = self._gen.get_state()
        self._population = None

    def _received(self, fitness: Any) -> torch.Tensor:
        """``fitness`` ``(popsize,)`` of the pending population as a tensor on the device, checked,
        with the best point updated (NaN counts as +inf)."""
        if self._population is None:
            raise RuntimeError("tell() called before ask()")
        f = torch.as_tensor(fitness).detach().reshape(-1).to(self.device)
        if f.shape[0] != self.popsize:
            raise ValueError(f"fitness must have {self.popsize} values, got {f.shape[0]}")
        clean = torch.nan_to_num(f.double(), nan=float("inf"))
        i = int(torch.argmin(clean))
        if float(clean[i]) < self.best_fitness:
            self.best_fitness = float(clean[i])
            self.best_x = self._population[i].clone()
        return f

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the exact trajectory (plain data)."""
        attributes = {**{k: k for k in self.COMMON}, **dict(self.STATE_ATTRIBUTES)}
        state = {key: getattr(self, name) for key, name in attributes.items()}
        state = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
        pending = self._population is not None
        rng = self._rng_before_ask if pending else self._gen.get_state()
        return {"method": self.METHOD, "settings": self.settings(), "rng": rng, **state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s ``state``; a ValueError naming what differs (method,
        a setting, an entry's shape or type), with nothing changed, when it was written by
        another baseline or under other settings."""
        owner = type(self).__name__
        attributes = {**{k: k for k in self.COMMON}, **dict(self.STATE_ATTRIBUTES)}
        keys = frozenset({"method", "settings", "rng", *attributes})
        check_state(owner, self.METHOD, self.settings(), state, keys)
        check_number(owner, "best_fitness", state["best_fitness"])
        check_rng(owner, state["rng"], self.device)
        for key, name in attributes.items():
            if key == "best_fitness":
                continue
            if isinstance(getattr(self, name), torch.Tensor) or key == "best_x":
                check_vector(owner, key, state[key], self.dim, optional=key == "best_x")
            else:
                check_count(owner, key, state[key])
        self._gen.set_state(state["rng"])
        for key, name in attributes.items():
            value = state[key]
            if isinstance(value, torch.Tensor):
                value = value.to(self.device, self.dtype).clone()
            setattr(self, name, float(value) if key == "best_fitness" else value)
        self._population = None
