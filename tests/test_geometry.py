import math

import pytest
import torch

from polystep.geometry import (
    cube,
    num_vertices,
    orthoplex,
    polytope,
    probe_fractions,
    random_rotations,
    simplex,
)


@pytest.mark.parametrize("dim", [1, 2, 3, 8])
@pytest.mark.parametrize("name", ["orthoplex", "simplex", "cube"])
def test_templates_unit_norm_and_centred(name, dim):
    v = polytope(name, dim, dtype=torch.float64)
    assert v.shape == (num_vertices(name, dim), dim)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(v.shape[0], dtype=torch.float64))
    torch.testing.assert_close(v.sum(0), torch.zeros(dim, dtype=torch.float64))


@pytest.mark.parametrize("dim", [2, 5, 8])
def test_simplex_pairwise_inner_products(dim):
    v = simplex(dim, dtype=torch.float64)
    gram = v @ v.T
    off = gram[~torch.eye(dim + 1, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1.0 / dim))


@pytest.mark.parametrize("dim", [2, 4])
def test_orthoplex_and_cube_distances(dim):
    o = orthoplex(dim, dtype=torch.float64)
    d = torch.cdist(o, o)
    # each vertex: one antipode at distance 2, the others at sqrt(2)
    assert torch.isclose(d, torch.tensor(2.0, dtype=torch.float64)).sum() == 2 * dim
    c = cube(dim, dtype=torch.float64)
    dc = torch.cdist(c, c)
    nearest = dc.masked_fill(torch.eye(2**dim, dtype=torch.bool), 9.0).min(1).values
    torch.testing.assert_close(nearest, torch.full_like(nearest, 2 / math.sqrt(dim)))


def test_bad_template_arguments_are_named():
    with pytest.raises(ValueError, match="polytope must be one of"):
        polytope("sphere", 3)
    with pytest.raises(ValueError, match="dim"):
        orthoplex(0)
    with pytest.raises(ValueError, match="dim must be <= 16"):
        cube(17)
    with pytest.raises(ValueError, match="num_probe"):
        probe_fractions(0)


@pytest.mark.parametrize("dim", [1, 2, 3, 7])
def test_rotations_are_special_orthogonal(dim):
    g = torch.Generator().manual_seed(0)
    r = random_rotations(64, dim, generator=g, dtype=torch.float64)
    eye = torch.eye(dim, dtype=torch.float64).expand(64, dim, dim)
    torch.testing.assert_close(r @ r.transpose(1, 2), eye)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(64, dtype=torch.float64))


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_rotation_first_column_is_uniform_on_sphere(dim):
    # Haar: the first column is uniform on S^{p-1}, so E[x] = 0 and E[x x^T] = I/p.
    n = 20000
    r = random_rotations(n, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    col = r[:, :, 0]
    assert col.mean(0).abs().max() < 5.0 / math.sqrt(n)
    second = col.T @ col / n
    assert (second - torch.eye(dim, dtype=torch.float64) / dim).abs().max() < 0.02


def test_rotations_follow_the_generator():
    a = random_rotations(4, 5, generator=torch.Generator().manual_seed(3))
    b = random_rotations(4, 5, generator=torch.Generator().manual_seed(3))
    c = random_rotations(4, 5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_probe_fractions():
    torch.testing.assert_close(probe_fractions(3), torch.tensor([0.25, 0.5, 0.75]))
    torch.testing.assert_close(probe_fractions(1), torch.tensor([0.5]))


@pytest.mark.parametrize("dim", [1, 2, 3, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_orthoplex_directions_are_the_rotated_template_to_the_bit(dim, dtype):
    """The step's shortcut for the orthoplex (columns of R, then their negatives) gives the
    numbers of the general product, signed zeros included, in its memory layout."""
    from polystep.step import orthoplex_directions, vertex_directions

    gen = torch.Generator().manual_seed(dim)
    rotations = random_rotations(64, dim, generator=gen, dtype=dtype)
    want = vertex_directions(rotations, orthoplex(dim, dtype=dtype))
    got = orthoplex_directions(rotations)
    assert torch.equal(got, want) and torch.equal(got.signbit(), want.signbit())
    assert dim == 1 or got.stride() == want.stride()  # the move's product runs as before
