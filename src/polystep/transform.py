"""A module's trainable parameters as one flat vector and back.

:class:`ParamLayout` lists every trainable (``requires_grad``) parameter in ``state_dict`` order.
Tied weights (one ``Parameter`` object under several names) appear once, under the first name;
the other names are recorded as aliases. Buffers are not part of the layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class ParamEntry:
    """One parameter: canonical ``name``, ``shape``, ``numel``, ``offset`` in the flat vector."""

    name: str
    shape: torch.Size
    numel: int
    offset: int
    dtype: torch.dtype

    @property
    def is_matrix(self) -> bool:
        """True for weights with >= 2 dims (searched through projections by subspaces)."""
        return len(self.shape) >= 2

    @property
    def rows_cols(self) -> tuple[int, int]:
        """``(d_out, d_in)`` with ``d_in = prod(shape[1:])`` (convolutions are flattened)."""
        return int(self.shape[0]), self.numel // max(int(self.shape[0]), 1)


@dataclass(frozen=True)
class ParamLayout:
    """Flat layout of a module's trainable parameters (see the module docstring)."""

    entries: tuple[ParamEntry, ...]
    aliases: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_module(cls, model: nn.Module) -> ParamLayout:
        """Layout of ``model``'s trainable parameters, in ``state_dict`` order, ties deduplicated.

        Raises ValueError when the module has no trainable parameter, or when two different
        parameter objects share storage (an ambiguous tie).
        """
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        seen: dict[int, str] = {}
        storages: dict[int, str] = {}
        entries: list[ParamEntry] = []
        aliases: dict[str, str] = {}
        offset = 0
        for name, tensor in model.state_dict(keep_vars=True).items():
            if not isinstance(tensor, nn.Parameter) or not tensor.requires_grad:
                continue
            if id(tensor) in seen:
                aliases[name] = seen[id(tensor)]
                continue
            ptr = tensor.untyped_storage().data_ptr()
            if tensor.numel() > 0 and ptr in storages:
                raise ValueError(
                    f"parameters {storages[ptr]!r} and {name!r} share storage but are different "
                    "objects; tie them by assigning the same nn.Parameter"
                )
            storages[ptr] = name
            seen[id(tensor)] = name
            entries.append(ParamEntry(name, tensor.shape, tensor.numel(), offset, tensor.dtype))
            offset += tensor.numel()
        if not entries:
            raise ValueError("model has no trainable parameters (requires_grad=True)")
        return cls(tuple(entries), aliases)

    @property
    def numel(self) -> int:
        """Total number of trainable values."""
        last = self.entries[-1]
        return last.offset + last.numel

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    def entry(self, name: str) -> ParamEntry:
        """The entry called ``name`` (an alias resolves to its canonical entry)."""
        name = self.aliases.get(name, name)
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(f"no trainable parameter named {name!r}")

    def parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """The live parameters of ``model`` by canonical name."""
        return {e.name: model.get_parameter(e.name) for e in self.entries}

    def flatten(self, source: nn.Module | dict[str, torch.Tensor]) -> torch.Tensor:
        """Parameters of a module (or a name -> tensor dict) as one vector ``(numel,)``."""
        tensors = self.parameters(source) if isinstance(source, nn.Module) else source
        return torch.cat([tensors[e.name].detach().reshape(-1) for e in self.entries])

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``vector (numel,)`` (or ``(N, numel)``) shaped like each parameter."""
        if vector.shape[-1] != self.numel:
            raise ValueError(f"vector must have {self.numel} entries, got {vector.shape[-1]}")
        lead = vector.shape[:-1]
        return {
            e.name: vector[..., e.offset : e.offset + e.numel].reshape(*lead, *e.shape)
            for e in self.entries
        }

    def describe(self) -> list[list[Any]]:
        """``[[name, shape as a list], ...]``: plain data that identifies this layout."""
        return [[e.name, list(e.shape)] for e in self.entries]

    def check_described(self, described: Any, source: str) -> None:
        """Raise a ValueError naming the first parameter where ``described`` (a
        :meth:`describe` output read from ``source``) differs from this layout."""
        mine = self.describe()
        if described == mine:
            return
        if not isinstance(described, list):
            raise ValueError(f"{source} has no parameter layout (got {type(described).__name__})")
        for theirs, ours in zip(described, mine, strict=False):
            if theirs != ours:
                shown = (
                    f"{theirs[0]!r} of shape {tuple(theirs[1])}"
                    if isinstance(theirs, list) and len(theirs) == 2
                    else repr(theirs)
                )
                raise ValueError(
                    f"{source} is for parameter {shown}, the model has {ours[0]!r} of shape "
                    f"{tuple(ours[1])}"
                )
        raise ValueError(f"{source} is for {len(described)} parameters, the model has {len(mine)}")

    @torch.no_grad()
    def assign(self, model: nn.Module, vector: torch.Tensor) -> None:
        """Copy ``vector (numel,)`` into ``model``'s parameters in place."""
        live = self.parameters(model)
        for name, value in self.unflatten(vector).items():
            live[name].copy_(value)
