"""Data loaders: digits splits, IDX parsing, MNIST / Fashion-MNIST directories, loaders."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from polystep.data import (
    Splits,
    TensorBatches,
    concat_splits,
    find_fashion_mnist,
    find_idx_file,
    load_digits_splits,
    load_idx_splits,
    make_loaders,
    read_idx,
    split_indices,
    write_idx,
)

SHARED_DATA = Path(__file__).parents[2] / "shared" / "data"
MNIST_DIR = SHARED_DATA / "mnist"


def _rows(ds: torch.utils.data.TensorDataset) -> set[bytes]:
    return {row.numpy().tobytes() for row in ds.tensors[0]}


def test_digits_shapes_dtypes_and_range() -> None:
    s = load_digits_splits()
    assert isinstance(s, Splits)
    sizes = s.sizes()
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == 359
    assert sizes["val"] == round(0.1 * (1797 - 359))
    for ds in (s.train, s.val, s.test):
        x, y = ds.tensors
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1] == 64 and y.shape == (x.shape[0],)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert s.num_classes == 10 and s.input_shape == (64,) and s.num_features == 64
    img = load_digits_splits(flatten=False)
    assert img.input_shape == (1, 8, 8)


def test_digits_split_disjoint_and_deterministic() -> None:
    a = load_digits_splits(val_fraction=0.1, seed=3)
    b = load_digits_splits(val_fraction=0.1, seed=3)
    c = load_digits_splits(val_fraction=0.1, seed=4)
    for name in ("train", "val", "test"):
        for ta, tb in zip(getattr(a, name).tensors, getattr(b, name).tensors):
            assert torch.equal(ta, tb)
    # the test split does not move with the validation seed
    assert torch.equal(a.test.tensors[0], c.test.tensors[0])
    assert not torch.equal(a.val.tensors[0], c.val.tensors[0])
    # digits contains a few duplicate images, so check disjointness through indices as well
    tr, va = split_indices(1000, 0.2, seed=7)
    assert set(tr.tolist()).isdisjoint(va.tolist())
    assert len(tr) + len(va) == 1000 and len(va) == 200
    tr_rows, te_rows = _rows(a.train), _rows(a.test)
    assert len(tr_rows & te_rows) <= 5


def test_digits_standard_normalisation_uses_train_stats() -> None:
    s = load_digits_splits(normalize="standard")
    x = s.train.tensors[0]
    assert abs(float(x.mean())) < 1e-4
    assert abs(float(x.std()) - 1.0) < 1e-3


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"normalize": "zscore"}, "normalize"),
        ({"test_fraction": 0.0}, "test_fraction"),
    ],
)
def test_digits_bad_arguments_name_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        load_digits_splits(**kwargs)


def test_split_indices_limit() -> None:
    tr, va = split_indices(100, 0.1, seed=0, limit=30)
    assert len(tr) + len(va) == 30 and len(va) == 3
    with pytest.raises(ValueError, match="limit"):
        split_indices(100, 0.1, seed=0, limit=0)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_roundtrip(tmp_path: Path, suffix: str) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / f"a-idx3-ubyte{suffix}", arr)
    out = read_idx(path)
    assert out.dtype == np.uint8 and np.array_equal(out, arr)
    floats = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(read_idx(write_idx(tmp_path / "f.idx", floats)), floats)


def test_idx_parses_handwritten_header(tmp_path: Path) -> None:
    # 3 labels, written byte by byte: magic 0x00000801, count 3, payload 7 8 9
    raw = bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])
    (tmp_path / "l").write_bytes(raw)
    assert read_idx(tmp_path / "l").tolist() == [7, 8, 9]
    (tmp_path / "l2").write_bytes(gzip.compress(raw))  # gzip without .gz suffix
    assert read_idx(tmp_path / "l2").tolist() == [7, 8, 9]
    (tmp_path / "bad").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="payload"):
        read_idx(tmp_path / "bad")
    (tmp_path / "magic").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="IDX"):
        read_idx(tmp_path / "magic")


def _fake_idx_dir(folder: Path, n_train: int = 50, n_test: int = 20, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    write_idx(
        folder / f"train-images-idx3-ubyte{sfx}",
        rng.integers(0, 256, (n_train, 5, 4), dtype=np.uint8),
    )
    write_idx(folder / f"train-labels-idx1-ubyte{sfx}", (np.arange(n_train) % 10).astype(np.uint8))
    write_idx(
        folder / f"t10k-images-idx3-ubyte{sfx}",
        rng.integers(0, 256, (n_test, 5, 4), dtype=np.uint8),
    )
    write_idx(folder / f"t10k-labels-idx1-ubyte{sfx}", (np.arange(n_test) % 10).astype(np.uint8))


@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_splits_tiny_directory(tmp_path: Path, gz: bool) -> None:
    _fake_idx_dir(tmp_path, gz=gz)
    s = load_idx_splits(tmp_path, val_fraction=0.2, seed=1)
    assert s.sizes() == {"train": 40, "val": 10, "test": 20}
    assert s.input_shape == (20,) and s.num_classes == 10
    assert s.train.tensors[0].dtype == torch.float32
    assert float(s.train.tensors[0].max()) <= 1.0
    assert _rows(s.train).isdisjoint(_rows(s.val))
    again = load_idx_splits(tmp_path, val_fraction=0.2, seed=1)
    assert torch.equal(s.val.tensors[0], again.val.tensors[0])
    lim = load_idx_splits(tmp_path, 0.1, 0, limit=30, test_limit=5, flatten=False)
    assert lim.sizes() == {"train": 27, "val": 3, "test": 5}
    assert lim.input_shape == (1, 5, 4)


def test_load_idx_torchvision_raw_layout_and_errors(tmp_path: Path) -> None:
    _fake_idx_dir(tmp_path / "MNIST" / "raw", gz=False)
    s = load_idx_splits(tmp_path / "MNIST")
    assert len(s.test) == 20
    assert find_idx_file(tmp_path / "MNIST", "t10k-labels-idx1-ubyte").parent.name == "raw"
    with pytest.raises(FileNotFoundError):
        load_idx_splits(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_idx_splits(tmp_path / "nope")


def test_concat_splits_offsets_labels(tmp_path: Path) -> None:
    _fake_idx_dir(tmp_path / "a")
    _fake_idx_dir(tmp_path / "b")
    a, b = load_idx_splits(tmp_path / "a"), load_idx_splits(tmp_path / "b")
    both = concat_splits(a, b)
    assert both.num_classes == 20
    assert len(both.train) == len(a.train) + len(b.train)
    assert int(both.test.tensors[1].max()) == 19
    with pytest.raises(ValueError, match="input shapes"):
        concat_splits(a, load_digits_splits())


def test_make_loaders_seeded_shuffle() -> None:
    s = load_digits_splits()
    first = [y for _, y in make_loaders(s, 64, seed=5).train]
    second = [y for _, y in make_loaders(s, 64, seed=5).train]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    loaders = make_loaders(s, 64, eval_batch_size=None)
    ((xv, _yv),) = list(loaders.val)
    assert xv.shape == (len(s.val), 64)
    with pytest.raises(ValueError, match="batch_size"):
        make_loaders(s, 0)


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="shared MNIST data not present")
def test_mnist_from_shared_data() -> None:
    s = load_idx_splits(MNIST_DIR, val_fraction=0.1, seed=0, limit=2000, test_limit=500)
    assert s.sizes() == {"train": 1800, "val": 200, "test": 500}
    assert s.input_shape == (784,) and s.num_classes == 10
    x = s.train.tensors[0]
    assert float(x.min()) == 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.9


@pytest.mark.skipif(find_fashion_mnist() is None, reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_if_installed() -> None:
    folder = find_fashion_mnist()
    assert folder is not None
    s = load_idx_splits(folder, limit=1000, test_limit=100)
    assert s.input_shape == (784,) and s.num_classes == 10


def test_tensor_batches_fast_loader() -> None:
    s = load_digits_splits()
    fast = make_loaders(s, 100, seed=2, fast=True)
    assert isinstance(fast.train, TensorBatches)
    epoch1 = list(fast.train)
    epoch2 = list(fast.train)
    assert len(epoch1) == len(fast.train) == 13 and epoch1[-1][0].shape == (94, 64)
    ys = torch.cat([y for _, y in epoch1])
    assert torch.equal(ys.sort().values, s.train.tensors[1].sort().values)  # a permutation
    assert not torch.equal(epoch1[0][1], epoch2[0][1])  # reshuffled per epoch
    again = [y for _, y in make_loaders(s, 100, seed=2, fast=True).train]
    assert all(torch.equal(a, b) for a, b in zip(again, [y for _, y in epoch1]))
    ((xv, yv),) = list(make_loaders(s, 100, eval_batch_size=None, fast=True).val)
    assert torch.equal(xv, s.val.tensors[0]) and torch.equal(yv, s.val.tensors[1])
    assert len(TensorBatches(s.train, 100, drop_last=True)) == 12
    moved = s.to("cpu")
    assert torch.equal(moved.test.tensors[0], s.test.tensors[0])
