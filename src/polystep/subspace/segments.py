"""Segments: the linear map from a contiguous slice of search coordinates to ONE parameter.

A subspace is a list of segments, one per parameter, in layout order. Segment ``s`` owns the
coordinates ``z[s.start : s.start + s.size]`` (``size`` is a multiple of the block size, so no
particle straddles two parameters) and maps them linearly to a change of its parameter:
``delta(coords (n, size)) -> (n, *shape)``. Trailing padding coordinates map to nothing.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch


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


@dataclass
class DirectSegment(Segment):
    """Coordinates ARE the parameter values (row-major), then padding."""

    def delta(self, coords: torch.Tensor) -> torch.Tensor:
        return coords[:, : self.numel].reshape(-1, *self.shape)


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

    def to(self, device: torch.device | str, dtype: torch.dtype) -> LowRankSegment:
        if self.right is not None:
            self.right = self.right.to(device=device, dtype=dtype)
        if self.left is not None:
            self.left = self.left.to(device=device, dtype=dtype)
        return self


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
