"""Base class of every search space: segments, the coordinate map, and redraws by seed.

A subspace maps search coordinates ``z (D,)`` linearly to a parameter change ``M(z)``. It is
fully defined by ``(layout, settings, seed, draw)``: a redraw only bumps ``draw``, and the bases
are rebuilt from the seed on demand, so a checkpoint stores two integers.
"""

from __future__ import annotations

import reprlib
from typing import Any

import torch

from polystep.subspace.segments import Segment
from polystep.transform import ParamLayout
from polystep.validation import check_positive_int


class Subspace:
    """Search coordinates over a :class:`ParamLayout`. Subclasses implement :meth:`_build`.

    Attributes:
        block_dim: particle size ``p``; every segment size is a multiple of it.
        redraw_every: absorb and redraw the bases every this many steps (None: never).
        seed: base seed (None until the optimizer assigns its own).
        draw: how many redraws happened; bases depend on ``(seed, draw)`` only.
    """

    kind = "base"

    def __init__(
        self,
        layout: ParamLayout,
        *,
        block_dim: int,
        seed: int | None = None,
        redraw_every: int | None = None,
    ) -> None:
        if not isinstance(layout, ParamLayout):
            raise ValueError(f"layout must be a ParamLayout, got {type(layout).__name__}")
        check_positive_int("block_dim", block_dim)
        check_positive_int("redraw_every", redraw_every, allow_none=True)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        self.layout = layout
        self.block_dim = block_dim
        self.seed = seed
        self.redraw_every = redraw_every
        self.draw = 0
        self.device = torch.device("cpu")
        self.dtype = layout.entries[0].dtype
        self._segments: list[Segment] | None = None
        self.dim = sum(s.size for s in self._build(0, 0, sizes_only=True))

    # -- to implement -------------------------------------------------------------------------
    def _build(self, seed: int, draw: int, *, sizes_only: bool = False) -> list[Segment]:
        """Segments for ``(seed, draw)``; with ``sizes_only`` bases may be left out."""
        raise NotImplementedError

    # -- public -------------------------------------------------------------------------------
    @property
    def segments(self) -> list[Segment]:
        """Segments in layout order (built lazily from ``(seed, draw)``)."""
        if self._segments is None:
            built = self._build(self.seed or 0, self.draw)
            self._segments = [s.to(self.device, self.dtype) for s in built]
        return self._segments

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Subspace:
        """Keep bases on ``device`` in ``dtype`` (default: the first parameter's dtype)."""
        self.device = torch.device(device)
        self.dtype = dtype or self.dtype
        self._segments = None
        return self

    def redraw(self, draw: int | None = None) -> None:
        """New bases from the same seed: ``draw`` (default: the next one)."""
        self.draw = self.draw + 1 if draw is None else int(draw)
        self._segments = None

    def set_seed(self, seed: int) -> None:
        self.seed = int(seed)
        self._segments = None

    def block_segments(self) -> torch.Tensor:
        """Segment index of every block (particle): ``(P,)`` long."""
        sizes = torch.tensor([s.size // self.block_dim for s in self.segments])
        return torch.repeat_interleave(torch.arange(len(sizes)), sizes)

    def delta(self, z: torch.Tensor) -> torch.Tensor:
        """``M(z)``: ``(D,) -> (numel,)`` or ``(N, D) -> (N, numel)`` in layout order."""
        batch = z.reshape(-1, self.dim).to(self.dtype)
        parts = [
            s.delta(batch[:, s.start : s.start + s.size]).reshape(batch.shape[0], -1)
            for s in self.segments
        ]
        out = torch.cat(parts, dim=1)
        return out[0] if z.ndim == 1 else out

    def add_to(self, params: dict[str, torch.Tensor], z: torch.Tensor) -> None:
        """``params += M(z)`` in place, one segment at a time (``z (D,)``; ``params`` by name):
        never a buffer of all the parameters, unlike :meth:`delta`."""
        z = z.to(self.dtype)
        for s in self.segments:
            s.add_to(params[s.name], z[s.start : s.start + s.size])

    def check_layout(self, layout: ParamLayout) -> None:
        """Raise a ValueError unless this space was built for ``layout`` (same names, shapes)."""
        if self.layout.names != layout.names:
            raise ValueError(
                "subspace was built for a different model: its parameters are "
                f"{list(self.layout.names)}, the model's are {list(layout.names)}"
            )
        for mine, theirs in zip(self.layout.entries, layout.entries, strict=True):
            if tuple(mine.shape) != tuple(theirs.shape):
                raise ValueError(
                    f"subspace was built for parameter {mine.name!r} of shape "
                    f"{tuple(mine.shape)}, but the model's {theirs.name!r} has shape "
                    f"{tuple(theirs.shape)}"
                )

    def signature(self) -> dict[str, Any]:
        """What fixes this space apart from its state ``(seed, draw)``: kind, every plain
        setting (block size, rank, dimension, ...) and the layout's names and shapes."""
        settings = {
            k: v
            for k, v in sorted(vars(self).items())
            if k not in ("seed", "draw")
            and not k.startswith("_")
            and (v is None or isinstance(v, bool | int | float | str))
        }
        return {"kind": self.kind, **settings, "layout": self.layout.describe()}

    def state_dict(self) -> dict[str, Any]:
        """``(seed, draw)`` and the :meth:`signature` they are only valid for."""
        return {"seed": self.seed, "draw": self.draw, "signature": self.signature()}

    def check_state_dict(self, state: Any) -> None:
        """Raise a ValueError naming the first mismatch unless ``state`` fits this space."""
        if not isinstance(state, dict) or not {"seed", "draw", "signature"} <= set(state):
            raise ValueError("subspace state must be a dict with 'seed', 'draw' and 'signature'")
        theirs, mine = state["signature"], self.signature()
        if theirs != mine:
            keys = [k for k in mine if not isinstance(theirs, dict) or theirs.get(k) != mine[k]]
            key = keys[0] if keys else sorted(set(theirs) - set(mine))[0]
            got = theirs.get(key) if isinstance(theirs, dict) else theirs
            raise ValueError(
                f"subspace state is for a different space: its {key} is {reprlib.repr(got)}, "
                f"this {self.kind} space has {reprlib.repr(mine.get(key))}"
            )
        seed, draw = state["seed"], state["draw"]
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"subspace state seed must be an int or None, got {seed!r}")
        if isinstance(draw, bool) or not isinstance(draw, int) or draw < 0:
            raise ValueError(f"subspace state draw must be an int >= 0, got {draw!r}")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; nothing changes unless all of it fits."""
        self.check_state_dict(state)
        self.seed, self.draw = state["seed"], int(state["draw"])
        self._segments = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(dim={self.dim}, block_dim={self.block_dim}, "
            f"params={self.layout.numel}, seed={self.seed}, redraw_every={self.redraw_every})"
        )


class RankedSubspace(Subspace):
    """Base of the per-weight low-rank spaces: a ``rank`` per weight matrix, and weights of at
    most ``direct_max`` values searched directly."""

    def __init__(
        self, layout: ParamLayout, *, rank: int = 8, direct_max: int = 0, **kwargs: object
    ) -> None:
        check_positive_int("rank", rank)
        if isinstance(direct_max, bool) or not isinstance(direct_max, int) or direct_max < 0:
            raise ValueError(f"direct_max must be an int >= 0, got {direct_max!r}")
        self.rank = rank
        self.direct_max = direct_max
        super().__init__(layout, **kwargs)  # type: ignore[arg-type]
