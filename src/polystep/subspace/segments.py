"""Segments: the linear map from a contiguous slice of search coordinates to ONE parameter.

A subspace is a list of segments, one per parameter, in layout order. Segment ``s`` owns the
coordinates ``z[s.start : s.start + s.size]`` (``size`` is a multiple of the block size, so no
particle straddles two parameters) and maps them linearly to a change of its parameter:
``delta(coords (n, size)) -> (n, *shape)``. Trailing padding coordinates map to nothing.

A segment also owns the fast paths of a candidate that moves ONE block of its coordinates when
its parameter is the weight ``(d_out, d_in)`` or bias ``(d_out,)`` of a linear map
``y = x·Wᵀ + b``: which output units the block touches and how ``y`` changes on them
(:meth:`Segment.unit_change`), the change of the whole output (:meth:`Segment.output_delta`),
and the dense change of the touched weight rows (:meth:`Segment.unit_rows`). ``cols (n, p)`` are
the block's local coordinate indices, ``vals (n, p)`` its offsets, ``x (M, d_in)`` the layer
input, ``shared`` a per-step cache of products with the input. A segment that has no such path
returns None (or False) and the evaluator runs the layer instead.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

ADD_ROWS_ELEMENTS = 2**16  # weight rows updated at a time by LowRankSegment.add_to


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is ``>= value``."""
    return -(-value // multiple) * multiple


def seeded_generator(seed: int, *keys: object) -> torch.Generator:
    """A CPU generator seeded by a stable hash of ``(seed, *keys)`` (same on every platform)."""
    text = ":".join(str(k) for k in (seed, *keys))
    return torch.Generator().manual_seed(zlib.crc32(text.encode()) * 2654435761 % (2**62))


def orthonormal_rows(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """A ``(rows, cols)`` float64 matrix with orthonormal rows (``rows <= cols``), Haar-random."""
    gauss = torch.randn(cols, rows, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)
    sign = torch.sign(torch.diagonal(r))
    return (q * torch.where(sign == 0, 1.0, sign)).T.contiguous()


@dataclass
class Segment:
    """Base segment: parameter ``name`` of ``shape``, coordinates ``[start, start + size)``."""

    name: str
    shape: torch.Size
    start: int
    size: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def delta(self, coords: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """``(n, size) -> (n, *shape)``: the parameter change of each row of coordinates."""
        raise NotImplementedError

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Segment:
        return self

    def add_to(self, param: torch.Tensor, coords: torch.Tensor) -> None:
        """``param += delta(coords)`` in place for one coordinate vector ``(size,)``."""
        param.add_(self.delta(coords[None])[0].to(param))

    def unit_sparse(self, cols: torch.Tensor) -> torch.Tensor:
        """``(n,)`` bool: which blocks change only a few output units (see :meth:`unit_change`)."""
        return torch.zeros(cols.shape[0], dtype=torch.bool, device=cols.device)

    def unit_change(
        self, x: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, shared: dict
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Touched units ``(n, k)`` and the change of ``y`` on them ``(n, M, k)``."""
        return None

    def output_delta(
        self, out: torch.Tensor, x: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor,
        shared: dict,
    ) -> bool:  # fmt: skip
        """Add each block's change of ``y`` to ``out (n, M, d_out)`` in place; False if none."""
        return False

    def unit_rows(
        self, cols: torch.Tensor, vals: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Touched units ``(n, p)`` and the change of their rows ``(n, p, d_in)`` (bias:
        ``(n, p, 1)``); slots may repeat a unit (their changes add up)."""
        return None


def _valid(cols: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padding columns (``>= size``) mapped to 0, and the mask of real ones."""
    valid = cols < size
    return torch.where(valid, cols, 0), valid


def scatter_products(
    out: torch.Tensor, src: torch.Tensor, src_col: torch.Tensor, out_col: torch.Tensor,
    values: torch.Tensor,
) -> None:  # fmt: skip
    """``out[n, :, out_col[n, j]] += src[:, src_col[n, j]] * values[n, j]`` in place.

    Shapes: ``out (n, M, R)``, ``src (M, C)``, index and values ``(n, p)``.
    """
    contrib = src[:, src_col].permute(1, 0, 2) * values[:, None, :]
    out.scatter_add_(2, out_col[:, None, :].expand(-1, src.shape[0], -1), contrib)


@dataclass
class DirectSegment(Segment):
    """Coordinates ARE the parameter values (row-major), then padding."""

    def delta(self, coords: torch.Tensor) -> torch.Tensor:
        return coords[:, : self.numel].reshape(-1, *self.shape)

    def add_to(self, param: torch.Tensor, coords: torch.Tensor) -> None:
        param.add_(coords[: self.numel].reshape(self.shape).to(param))

    @property
    def _d_in(self) -> int:
        return self.numel // int(self.shape[0]) if len(self.shape) > 1 else 1

    def unit_sparse(self, cols: torch.Tensor) -> torch.Tensor:
        return torch.ones(cols.shape[0], dtype=torch.bool, device=cols.device)

    def unit_change(
        self, x: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, shared: dict
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c, valid = _valid(cols, self.numel)
        vals = vals * valid
        if len(self.shape) == 1:  # bias: unit c moves by its value on every row
            return c, vals[:, None, :].expand(-1, x.shape[0], -1)
        units, inner = c // self._d_in, c % self._d_in
        return units, x[:, inner].permute(1, 0, 2) * vals[:, None, :]

    def output_delta(
        self, out: torch.Tensor, x: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor,
        shared: dict,
    ) -> bool:  # fmt: skip
        c, valid = _valid(cols, self.numel)
        vals = vals * valid
        if len(self.shape) == 1:
            delta = out.new_zeros(out.shape[0], out.shape[2]).scatter_add_(1, c, vals)
            out += delta[:, None, :]
        else:
            scatter_products(out, x, c % self._d_in, c // self._d_in, vals)
        return True

    def unit_rows(
        self, cols: torch.Tensor, vals: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c, valid = _valid(cols, self.numel)
        vals = vals * valid
        if len(self.shape) == 1:
            return c, vals[:, :, None]
        rows = vals.new_zeros(*c.shape, self._d_in)
        return c // self._d_in, rows.scatter_(2, (c % self._d_in)[:, :, None], vals[:, :, None])


@dataclass
class LowRankSegment(Segment):
    """``dW = A @ right + left @ E`` for a weight seen as ``(d_out, d_in)``.

    Coordinates: ``A (d_out, r)`` row-major, then ``E (r2, d_in)`` row-major, then padding.
    ``right (r, d_in)`` has orthonormal rows, ``left (d_out, r2)`` orthonormal columns; either
    may be None (the factored space has ``left = None``). Within each factor the map is an
    isometry: ``||A @ right||_F = ||A||_F``.
    """

    right: torch.Tensor | None = None
    left: torch.Tensor | None = None

    @property
    def d_out(self) -> int:
        return int(self.shape[0])

    @property
    def d_in(self) -> int:
        return self.numel // self.d_out

    @property
    def a_size(self) -> int:
        return 0 if self.right is None else self.d_out * self.right.shape[0]

    @property
    def e_size(self) -> int:
        return 0 if self.left is None else self.left.shape[1] * self.d_in

    def delta(self, coords: torch.Tensor) -> torch.Tensor:
        n = coords.shape[0]
        out = coords.new_zeros(n, self.d_out, self.d_in)
        if self.right is not None:
            a = coords[:, : self.a_size].reshape(n, self.d_out, -1)
            out = out + a @ self.right
        if self.left is not None:
            e = coords[:, self.a_size : self.a_size + self.e_size].reshape(n, -1, self.d_in)
            out = out + self.left @ e
        return out.reshape(n, *self.shape)

    def add_to(self, param: torch.Tensor, coords: torch.Tensor) -> None:
        """``param += A @ right + left @ E`` a few rows at a time: no parameter-sized buffer.
        A weight of at most :data:`ADD_ROWS_ELEMENTS` values takes one product, the numbers of
        :meth:`delta`; in several pieces the last bits may differ from them (a matrix
        product's rounding depends on its row count)."""
        if self.left is not None or not param.is_contiguous():
            super().add_to(param, coords)
            return
        w = param.view(self.d_out, self.d_in)
        a = coords[: self.a_size].reshape(self.d_out, -1)
        step = max(1, ADD_ROWS_ELEMENTS // self.d_in)
        for r in range(0, self.d_out, step):
            w[r : r + step].add_((a[r : r + step] @ self.right).to(param))

    def to(self, device: torch.device | str, dtype: torch.dtype) -> LowRankSegment:
        if self.right is not None:
            self.right = self.right.to(device=device, dtype=dtype)
        if self.left is not None:
            self.left = self.left.to(device=device, dtype=dtype)
        return self

    def unit_sparse(self, cols: torch.Tensor) -> torch.Tensor:
        """Blocks with no ``E``-factor coordinate (a row of ``A`` moves one output unit)."""
        in_e = (cols >= self.a_size) & (cols < self.a_size + self.e_size)
        return ~in_e.any(dim=1)

    def _xb(self, x: torch.Tensor, shared: dict) -> torch.Tensor:
        if "xb" not in shared:
            shared["xb"] = x @ self.right.T.to(x)
        return shared["xb"]

    def unit_change(
        self, x: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, shared: dict
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c, valid = _valid(cols, self.a_size)
        vals = vals * valid
        r = self.right.shape[0]
        units, inner = c // r, c % r
        xb = self._xb(x, shared)
        if bool((units == units[:, :1]).all()):  # each block is (part of) one row of A
            coef = vals.new_zeros(len(c), r).scatter_add_(1, inner, vals)
            return units[:, :1], (coef @ xb.T)[:, :, None]
        return units, xb[:, inner].permute(1, 0, 2) * vals[:, None, :]

    def output_delta(
        self, out: torch.Tensor, x: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor,
        shared: dict,
    ) -> bool:  # fmt: skip
        a, e = self.a_size, self.e_size
        in_a = cols < a
        if a and bool(in_a.any()):
            r = self.right.shape[0]
            c = torch.where(in_a, cols, 0)
            scatter_products(out, self._xb(x, shared), c % r, c // r, vals * in_a)
        in_e = (cols >= a) & (cols < a + e)
        if e and bool(in_e.any()):
            hit = torch.nonzero(in_e.any(dim=1)).flatten()
            c = torch.where(in_e, cols - a, 0)[hit]
            u = x.new_zeros(len(hit), x.shape[0], self.left.shape[1])
            scatter_products(u, x, c % self.d_in, c // self.d_in, (vals * in_e)[hit])
            out.index_add_(0, hit, u @ self.left.T.to(x))
        return True

    def unit_rows(
        self, cols: torch.Tensor, vals: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c, valid = _valid(cols, self.a_size)
        r = self.right.shape[0]
        return c // r, (vals * valid)[:, :, None] * self.right[c % r].to(vals)


def orthonormal_columns(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """A ``(rows, cols)`` float64 matrix with orthonormal columns (``cols <= rows``)."""
    return orthonormal_rows(cols, rows, generator).T.contiguous()


def add_block_outputs(
    out: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, size: int,
    columns: Callable[[torch.Tensor], torch.Tensor],
) -> None:  # fmt: skip
    """``out[n] += sum_j vals[n, j] * columns(cols[n])[j]`` in place, one ``columns`` call per
    run of candidates of one block: ``columns(c (p,)) -> (p, M, d_out)`` is ``x M_jᵀ`` for each
    coordinate ``c_j`` (its weight change ``M_j`` as a ``(d_out, d_in)`` matrix). Coordinates
    ``>= size`` are padding. ``out (n, M, d_out)`` must be contiguous.

    All candidates of one block share ``cols`` and differ in ``vals``, so a block's column
    outputs are formed once and each candidate costs one small matrix product.
    """
    valid = cols < size
    vals = vals * valid
    cols = torch.where(valid, cols, 0)
    flat = out.view(out.shape[0], -1)
    _, counts = torch.unique_consecutive(cols[:, 0], return_counts=True)
    start = 0
    for n in counts.tolist():
        outs = columns(cols[start])
        flat[start : start + n].addmm_(vals[start : start + n], outs.reshape(len(outs), -1))
        start += n


@dataclass
class DenseSegment(Segment):
    """``dW = basis @ coords`` (flattened): ``basis (numel, k)`` has orthonormal columns, so
    the map is an isometry; coordinates ``>= k`` are padding."""

    basis: torch.Tensor | None = None

    @property
    def k(self) -> int:
        return self.basis.shape[1]

    def delta(self, coords: torch.Tensor) -> torch.Tensor:
        return (coords[:, : self.k] @ self.basis.T.to(coords)).reshape(-1, *self.shape)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> DenseSegment:
        self.basis = self.basis.to(device=device, dtype=dtype)
        return self

    def output_delta(
        self, out: torch.Tensor, x: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor,
        shared: dict,
    ) -> bool:  # fmt: skip
        if len(self.shape) != 2:
            return False
        d_out, d_in = self.shape

        def columns(c: torch.Tensor) -> torch.Tensor:
            m = self.basis[:, c].T.reshape(-1, d_in).to(x)  # (p d_out, d_in)
            return (x @ m.T).reshape(x.shape[0], len(c), d_out).transpose(0, 1)

        add_block_outputs(out, cols, vals, self.k, columns)
        return True


@dataclass
class SparseSegment(Segment):
    """Very sparse random projection: coordinate ``c`` adds ``sign[c, j]`` at ``index[c, j]``.

    ``index (k, nnz)`` are positions in the flattened parameter, ``sign`` is ``+-1/sqrt(nnz)``.
    Nothing of size ``numel x k`` is ever formed.
    """

    index: torch.Tensor | None = None
    sign: torch.Tensor | None = None

    def delta(self, coords: torch.Tensor) -> torch.Tensor:
        n = coords.shape[0]
        k, nnz = self.index.shape
        values = (coords[:, :k, None] * self.sign).reshape(n, k * nnz)
        out = coords.new_zeros(n, self.numel)
        out.index_add_(1, self.index.reshape(-1), values)
        return out.reshape(n, *self.shape)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> SparseSegment:
        self.index = self.index.to(device)
        self.sign = self.sign.to(device=device, dtype=dtype)
        return self

    def output_delta(
        self, out: torch.Tensor, x: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor,
        shared: dict,
    ) -> bool:  # fmt: skip
        if len(self.shape) != 2:
            return False
        d_out, d_in = int(self.shape[0]), int(self.shape[1])

        def columns(c: torch.Tensor) -> torch.Tensor:
            index = self.index[c].reshape(-1)  # flat positions, row-major (unit, input)
            p = len(c)
            xt = shared.get("xt")
            if xt is None:
                xt = shared["xt"] = x.T.contiguous()  # (d_in, M): one row per input
            contrib = xt[index % d_in] * self.sign[c].reshape(-1, 1).to(x)
            target = index // d_in + d_out * torch.arange(p, device=x.device).repeat_interleave(
                index.numel() // p
            )
            outs = x.new_zeros(p * d_out, x.shape[0]).index_add_(0, target, contrib)
            return outs.reshape(p, d_out, -1).transpose(1, 2)

        add_block_outputs(out, cols, vals, self.index.shape[0], columns)
        return True
