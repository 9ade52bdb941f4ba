"""An adaptive factored subspace: a redraw keeps the input directions that paid off.

Like :class:`~polystep.subspace.factored.FactoredSubspace` (``dW = A @ B`` per weight, ``B``
redrawn), but :meth:`redraw` looks at the coordinates ``A (d_out, r)`` the last period
accumulated: the top ``keep`` right singular vectors of ``A @ B`` (the input directions the
weight moved along) become the first rows of the next ``B``; the remaining ``r - keep`` rows
are fresh random directions orthogonal to them. The kept rows are state: they are saved and
restored with the space.
"""

from __future__ import annotations

from typing import Any

import torch

from polystep.subspace.factored import FactoredSubspace
from polystep.subspace.segments import LowRankSegment, Segment
from polystep.transform import ParamLayout
from polystep.validation import check_positive_int


def merge_rows(kept: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """``kept (m, d)`` orthonormal rows, then ``fresh (r, d)``'s first ``r - m`` rows made
    orthogonal to them: ``(r, d)`` orthonormal rows (float64)."""
    m, r = kept.shape[0], fresh.shape[0]
    stacked = torch.cat([kept, fresh[: r - m]]).to(torch.float64)
    q, upper = torch.linalg.qr(stacked.T)
    sign = torch.sign(torch.diagonal(upper))
    return (q * torch.where(sign == 0, 1.0, sign)).T.contiguous()


class AdaptiveFactoredSubspace(FactoredSubspace):
    """See the module docstring. ``keep`` rows kept per weight at each redraw (< rank)."""

    kind = "adaptive factored"

    def __init__(self, layout: ParamLayout, *, keep: int = 2, **kwargs: Any) -> None:
        check_positive_int("keep", keep)
        rank = int(kwargs.get("rank", 8))
        if keep >= rank:
            raise ValueError(f"keep must be smaller than rank ({rank}), got {keep}")
        self.keep = keep
        self.kept: dict[int, torch.Tensor] = {}
        super().__init__(layout, **kwargs)

    def _build(self, seed: int, draw: int, *, sizes_only: bool = False) -> list[Segment]:
        segments = super()._build(seed, draw, sizes_only=sizes_only)
        for index, kept in self.kept.items():
            seg = segments[index]
            if isinstance(seg, LowRankSegment) and seg.right is not None:
                seg.right = merge_rows(kept, seg.right)
        return segments

    def observe(self, z: torch.Tensor) -> None:
        """Note the current coordinates ``z (D,)``: the next :meth:`redraw` keeps their
        directions."""
        self._seen = z.detach().clone()

    def redraw(self, draw: int | None = None) -> None:
        """New bases; each weight's top ``keep`` directions of ``A @ B`` (from the last
        :meth:`observe`, if any) become the first rows of its next ``B``."""
        seen, kept = getattr(self, "_seen", None), {}
        for index, seg in enumerate(self.segments if seen is not None else []):
            if not isinstance(seg, LowRankSegment) or seg.right is None:
                continue
            rank = seg.right.shape[0]
            coords = seen[seg.start : seg.start + seg.a_size].reshape(seg.d_out, rank)
            if not bool(coords.ne(0).any()):
                continue
            _, _, vh = torch.linalg.svd(coords.to(torch.float64), full_matrices=False)
            kept[index] = vh[: self.keep] @ seg.right.to(torch.float64)
        self.kept, self._seen = kept, None
        super().redraw(draw)

    def state_dict(self) -> dict[str, Any]:
        kept = {str(k): v.detach().cpu().clone() for k, v in self.kept.items()}
        return {**super().state_dict(), "kept": kept}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        kept = state.get("kept") if isinstance(state, dict) else None
        if not isinstance(kept, dict):
            raise ValueError("adaptive subspace state must hold 'kept' (a dict of row tensors)")
        super().load_state_dict(state)
        self.kept = {int(k): v.clone() for k, v in kept.items()}
