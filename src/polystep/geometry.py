"""Polytope templates, Haar-random rotations and probe fractions (pure tensor functions).

Every template is a ``(V, p)`` tensor of unit-norm vertices centred at the origin: the
step later scales it by a radius and rotates it per particle.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from polystep.validation import check_positive_int

POLYTOPES = ("orthoplex", "simplex", "cube")
MAX_CUBE_DIM = 16


def orthoplex(
    dim: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Cross-polytope ``+e_1..+e_p, -e_1..-e_p``: shape ``(2p, p)``.

    Vertex ``j`` and ``j + p`` are an antipodal pair.
    """
    check_positive_int("dim", dim)
    eye = torch.eye(dim, dtype=dtype, device=device)
    return torch.cat([eye, -eye], dim=0)


def simplex(
    dim: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Regular simplex with ``p + 1`` unit vertices, centred: shape ``(p + 1, p)``.

    The ``p + 1`` standard basis vectors of ``R^{p+1}``, centred, expressed in the Helmert basis
    of the sum-zero hyperplane they span (row ``k``: ``k`` ones, then ``-k``, scaled to unit
    length): since every basis row sums to zero, vertex ``i``'s coordinates are just column ``i``
    of that basis. Pairwise inner products are ``-1/p``. The basis is written out rather than
    taken from an SVD: the hyperplane is a repeated singular subspace, so each LAPACK build
    would return its own basis and a seeded run would move differently on another CPU.
    """
    check_positive_int("dim", dim)
    n = dim + 1
    k = torch.arange(1, n, dtype=torch.float64).unsqueeze(1)  # (p, 1)
    cols = torch.arange(n, dtype=torch.float64).unsqueeze(0)  # (1, p + 1)
    helmert = torch.where(cols < k, 1.0, torch.where(cols == k, -k, 0.0)) / (k * (k + 1)).sqrt()
    vertices = helmert.T / helmert.T.norm(dim=1, keepdim=True)
    return vertices.to(dtype=dtype, device=device)


def cube(
    dim: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Hypercube ``{-1, +1}^p / sqrt(p)``: shape ``(2^p, p)``; vertex k's signs are k's bits."""
    check_positive_int("dim", dim)
    if dim > MAX_CUBE_DIM:
        raise ValueError(
            f"dim must be <= {MAX_CUBE_DIM} for polytope='cube' (2^dim vertices), got {dim}"
        )
    bits = (torch.arange(2**dim).unsqueeze(1) >> torch.arange(dim)) & 1
    signs = 1.0 - 2.0 * bits.to(torch.float64)
    return (signs / math.sqrt(dim)).to(dtype=dtype, device=device)


def polytope(
    name: str,
    dim: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The template ``name`` (one of :data:`POLYTOPES`) in ``dim`` dimensions: ``(V, dim)``."""
    builders = {"orthoplex": orthoplex, "simplex": simplex, "cube": cube}
    if name not in builders:
        raise ValueError(f"polytope must be one of {POLYTOPES}, got {name!r}")
    return builders[name](dim, dtype=dtype, device=device)


def num_vertices(name: str, dim: int) -> int:
    """Number of vertices V of template ``name`` in ``dim`` dimensions."""
    counts = {"orthoplex": 2 * dim, "simplex": dim + 1, "cube": 2**dim}
    if name not in counts:
        raise ValueError(f"polytope must be one of {POLYTOPES}, got {name!r}")
    return counts[name]


def random_rotations(
    num: int,
    dim: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``num`` independent Haar-random rotations in SO(dim): shape ``(num, dim, dim)``.

    dim 1 gives the identity, dim 2 a uniform angle, larger dims the QR of a Gaussian matrix
    with the sign fix that makes Q Haar on O(p), then a flipped first column where det = -1.
    Draws happen in float64 on the generator's device and are cast afterwards.
    """
    check_positive_int("dim", dim)
    if isinstance(num, bool) or not isinstance(num, int) or num < 0:
        raise ValueError(f"num must be a non-negative int, got {num!r}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if dim == 1:
        return torch.ones(num, 1, 1, dtype=dtype, device=device)
    if dim == 2:
        angle = torch.rand(num, generator=generator, dtype=torch.float64, device=gen_device)
        angle = angle * (2.0 * math.pi)
        c, s = torch.cos(angle), torch.sin(angle)
        rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
        return rot.to(dtype=dtype, device=device)
    gauss = torch.randn(num, dim, dim, generator=generator, dtype=torch.float64, device=gen_device)
    # Householder QR (what torch.linalg.qr runs: the same Q and R)
    packed, tau = torch.geqrf(gauss)
    q = torch.linalg.householder_product(packed, tau)
    # Every column is multiplied by +-1 once (exact, and rounding is symmetric in the sign: the
    # product before or after the cast to dtype gives the same numbers)
    return (q * _column_signs(packed, tau)).to(dtype=dtype, device=device)


def _column_signs(packed: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """The sign fix ``(num, 1, dim)`` float64 (+-1) of the Householder QR ``packed, tau`` of
    ``num`` Gaussian matrices: column ``j`` of Q times the sign of ``R[j, j]`` (0 counts as +)
    makes Q Haar on O(dim); the first column flipped where that Q has det -1 puts it on
    SO(dim). Q is the product of one reflector (det -1) per nonzero tau, so its det is known
    without a determinant. On numpy: a few hundred numbers, where torch ops cost more."""
    negative = torch.diagonal(packed, dim1=-2, dim2=-1).cpu().numpy() < 0  # R's diagonal only
    flips = np.count_nonzero(tau.cpu().numpy(), axis=-1) + negative.sum(axis=-1)
    negative[:, 0] ^= flips % 2 == 1  # det(q) = (-1) ** flips
    return torch.from_numpy(1.0 - 2.0 * negative[:, None, :]).to(packed.device)


def probe_fractions(
    num_probe: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Fractions ``k / (K + 1)`` for ``k = 1..K`` of the probe radius: shape ``(K,)``."""
    check_positive_int("num_probe", num_probe)
    k = torch.arange(1, num_probe + 1, dtype=dtype, device=device)
    return k / (num_probe + 1)
