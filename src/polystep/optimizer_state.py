"""What :class:`~polystep.optimizer.PolyStepOptimizer` keeps outside its search: the
``param_groups[0]`` contract (:class:`ParamGroup`) and the ``state_dict`` format, with the checks
a state passes (every field, before anything is restored) and the older version it still reads.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from polystep.epsilon import Schedule, from_state
from polystep.geometry import num_vertices
from polystep.step import Duals, StepRule

GROUP_KEYS = ("epsilon", "step_radius", "probe_radius")  # the step's knobs in param_groups[0]
GROUP_ALIASES = {"lr": "step_radius"}  # so torch.optim.lr_scheduler drives the step radius


def check_group_value(key: str, value: Any) -> float:
    """``value`` as a float; a ValueError naming ``param_groups[0][key]`` unless finite > 0."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and value > 0):
        raise ValueError(f"param_groups[0][{key!r}] must be a finite number > 0, got {value!r}")
    return float(value)


class ParamGroup(dict):
    """``param_groups[0]`` of :class:`PolyStepOptimizer`: a dict that records which of
    ``GROUP_KEYS`` were written from outside the optimizer (``"lr"`` writes ``step_radius``:
    both keys always hold the same value). Written values are checked at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.written: set[str] = set()
        self.update(*args, **kwargs)
        self.written.clear()  # the initial values are the optimizer's, not the caller's

    def __setitem__(self, key: str, value: Any) -> None:
        name = GROUP_ALIASES.get(key, key)
        if name not in GROUP_KEYS:
            super().__setitem__(key, value)
            return
        self.put(name, check_group_value(key, value))
        self.written.add(name)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def put(self, name: str, value: float) -> None:
        """Set ``name`` (and its aliases) without marking it written: the optimizer's own
        writes."""
        super().__setitem__(name, value)
        for alias, target in GROUP_ALIASES.items():
            if target == name:
                super().__setitem__(alias, value)

    def __reduce__(self) -> tuple[Any, ...]:  # pickle and deepcopy keep the written set
        return (_restore_group, (dict(self), sorted(self.written)))


def _restore_group(items: dict[str, Any], written: list[str]) -> ParamGroup:
    group = ParamGroup(items)
    group.written.update(written)
    return group


STATE_FORMAT = 2  # version of state_dict(); load_state_dict reads it and version 1
STATE_KEYS_V1 = frozenset(
    [
        "layout",
        "iteration",
        "evaluations",
        "skipped_steps",
        "z",
        "generator",
        "duals",
        "subspace",
        "rule",
        "seed",
    ]
)
STATE_KEYS = STATE_KEYS_V1 | {"group_owns"}


def _check_tensor(
    name: str,
    value: Any,
    shape: tuple[int, ...],
    dtype: torch.dtype | None = None,
    *,
    floating: bool = False,
) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a tensor of ``shape`` (and dtype)."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"optimizer state {name} must be a tensor, got {type(value).__name__}")
    if tuple(value.shape) != shape:
        raise ValueError(
            f"optimizer state {name} has shape {tuple(value.shape)}, this optimizer needs {shape}"
        )
    if (dtype is not None and value.dtype != dtype) or (floating and not value.is_floating_point()):
        wanted = dtype or "a floating dtype"
        raise ValueError(f"optimizer state {name} has dtype {value.dtype}, expected {wanted}")


def check_state(opt: Any, state: Any) -> tuple[dict[str, Any], dict[str, Schedule], dict[str, Any]]:
    """Raise a ValueError naming the first field of ``state`` that does not fit the
    optimizer ``opt``; return the run state, its schedules rebuilt and the saved group (empty for
    format 1). Changes nothing."""
    if not isinstance(state, dict):
        raise ValueError(f"optimizer state must be a dict, got {type(state).__name__}")
    version = state.get("format")
    if version == 1:  # the flat layout of earlier versions: no group, schedules own all
        run, saved_group, needed = dict(state), {}, STATE_KEYS_V1
        del run["format"]
    elif version == STATE_FORMAT:
        if set(state) != {"format", "state", "param_groups"}:
            raise ValueError(
                "optimizer state (format 2) must have keys ['format', 'param_groups', "
                f"'state'], got {sorted(state)}"
            )
        run, needed = state["state"], STATE_KEYS
        if not isinstance(run, dict):
            raise ValueError(f"optimizer state 'state' must be a dict, got {run!r:.80}")
        saved_group = check_saved_groups(opt, state["param_groups"], run.get("group_owns"))
    else:
        raise ValueError(
            f"optimizer state has format version {version!r}, this polystep reads versions "
            f"1 and {STATE_FORMAT}"
        )
    missing = sorted(needed - set(run))
    if missing:
        raise ValueError(f"optimizer state lacks {missing}")
    opt.layout.check_described(run["layout"], "optimizer state")
    opt.subspace.check_state_dict(run["subspace"])
    num_blocks = -(-opt.subspace.dim // opt.subspace.block_dim)
    vertices = num_vertices(opt.rule.polytope, opt.subspace.block_dim)
    _check_tensor("z", run["z"], tuple(opt.z.shape), floating=True)
    generator = opt.generator.get_state()
    _check_tensor("generator", run["generator"], tuple(generator.shape), generator.dtype)
    duals = run["duals"]
    if not isinstance(duals, dict) or set(duals) != {"f", "g"}:
        raise ValueError("optimizer state duals must be a dict with keys 'f' and 'g'")
    for key, size in (("f", num_blocks), ("g", vertices)):
        if duals[key] is not None:
            _check_tensor(f"duals {key}", duals[key], (size,), floating=True)
    for key in ("iteration", "evaluations", "skipped_steps", "seed"):
        value = run[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"optimizer state {key} must be an int >= 0, got {value!r}")
    rule = run["rule"]
    if not isinstance(rule, dict) or set(rule) != set(GROUP_KEYS):
        raise ValueError(f"optimizer state rule must be a dict with keys {list(GROUP_KEYS)}")
    try:
        return run, {k: from_state(rule[k]) for k in GROUP_KEYS}, saved_group
    except (TypeError, ValueError) as exc:
        raise ValueError(f"optimizer state rule holds an invalid schedule: {exc}") from exc


def check_saved_groups(opt: Any, groups: Any, owns: Any) -> dict[str, Any]:
    """The one saved group of a format-2 state, checked against this optimizer."""
    if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict):
        raise ValueError("optimizer state param_groups must be a list of one dict")
    group = groups[0]
    wanted = list(range(len(opt.group["params"])))
    if group.get("params") != wanted:
        raise ValueError(
            f"optimizer state param_groups params must be {wanted[:3]}... "
            f"({len(wanted)} parameters), got {group.get('params')!r:.80}"
        )
    for key in (*GROUP_KEYS, *GROUP_ALIASES):
        if key not in group:
            raise ValueError(f"optimizer state param_groups lack {key!r}")
        check_group_value(key, group[key])
    for alias, target in GROUP_ALIASES.items():
        if group[alias] != group[target]:
            raise ValueError(
                f"optimizer state param_groups {alias!r} ({group[alias]!r}) differs from "
                f"its alias {target!r} ({group[target]!r})"
            )
    if not isinstance(owns, list) or not set(owns) <= set(GROUP_KEYS):
        raise ValueError(
            f"optimizer state group_owns must be a list of keys from {list(GROUP_KEYS)}, "
            f"got {owns!r}"
        )
    return group


def save(opt: Any) -> dict[str, Any]:
    """``opt.state_dict()``: the format-2 state of the optimizer ``opt``."""
    group = opt.group
    saved_group = {key: value for key, value in group.items() if key != "params"}
    saved_group["params"] = list(range(len(group["params"])))
    run = {
        "layout": opt.layout.describe(),
        "iteration": opt.iteration,
        "evaluations": opt.evaluations,
        "skipped_steps": opt.skipped_steps,
        "z": opt.z.detach().cpu().clone(),
        "generator": opt.generator.get_state(),
        "duals": {"f": opt.duals.f, "g": opt.duals.g},
        "subspace": opt.subspace.state_dict(),
        "rule": {key: getattr(opt.rule, key).state_dict() for key in GROUP_KEYS},
        "seed": opt.seed,
        "group_owns": sorted(group.written),
    }
    return {"format": STATE_FORMAT, "state": run, "param_groups": [saved_group]}


def restore(opt: Any, state: Any) -> None:
    """``opt.load_state_dict(state)``: checked in full by :func:`check_state` first."""
    run, schedules, saved_group = check_state(opt, state)
    opt.subspace.load_state_dict(run["subspace"])
    search = opt.search
    search.iteration = int(run["iteration"])
    search.evaluations = int(run["evaluations"])
    opt.skipped_steps = int(run["skipped_steps"])
    search.x = run["z"].to(search.x)
    search.generator.set_state(run["generator"])
    search.duals = Duals(f=run["duals"]["f"], g=run["duals"]["g"])
    opt.rule = StepRule(**{**opt.rule.__dict__, **schedules})
    opt.seed = int(run["seed"])
    group = opt.group
    for key, value in saved_group.items():
        if key != "params" and GROUP_ALIASES.get(key, key) not in GROUP_KEYS:
            dict.__setitem__(group, key, value)  # e.g. a torch scheduler's "initial_lr"
    group.written.clear()
    for key in run.get("group_owns", []):
        group.put(key, check_group_value(key, saved_group[key]))
        group.written.add(key)
    opt._refresh_group()
