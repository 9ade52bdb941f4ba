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
    if type(value) is not int or value < 0:
        raise ValueError(f"{owner}.load_state_dict: the state's {name} must be an int >= 0")


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
