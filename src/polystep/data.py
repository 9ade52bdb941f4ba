"""Datasets as normalised float32 tensors with a seeded validation split carved from train.

Two sources, neither of which downloads anything:

* :func:`load_digits_splits`: scikit-learn's bundled 8×8 digits (1,797 images, 10 classes), the
  embedded default for demos and fast tests. It has no official test split, so a fixed stratified
  test split (``test_seed``) is held out first; the validation split is then drawn with ``seed``.
* :func:`load_idx_splits`: a directory of IDX files in the MNIST / Fashion-MNIST / torchvision
  raw layout (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each plain or ``.gz``).

Every loader returns :class:`Splits` (three ``TensorDataset`` of ``(x, y)``: ``x`` float32
``(N, features)`` or ``(N, 1, H, W)``, ``y`` int64 ``(N,)``). Selection must use ``val`` only; the
test split is fixed across seeds. :func:`make_loaders` turns splits into seeded DataLoaders.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from polystep.validation import check_positive_int

NORMALIZE_MODES = ("unit", "standard", "none")

# IDX type codes -> big-endian numpy dtypes.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class Splits:
    """Train / validation / test ``TensorDataset`` s of ``(x float32, y int64)``."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. ``(64,)`` or ``(1, 28, 28)``."""
        return tuple(self.train.tensors[0].shape[1:])

    @property
    def num_features(self) -> int:
        """Number of input values per sample (``prod(input_shape)``)."""
        return int(np.prod(self.input_shape))

    def sizes(self) -> dict[str, int]:
        """Number of samples in each split."""
        return {
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
        }

    def to(self, device: torch.device | str) -> Splits:
        """The same splits with every tensor on ``device``."""

        def move(ds: TensorDataset) -> TensorDataset:
            return TensorDataset(*(t.to(device) for t in ds.tensors))

        return Splits(move(self.train), move(self.val), move(self.test), self.num_classes)


class TensorBatches:
    """A fast loader over in-memory tensors: slices of a seeded permutation, no collation.

    Iterating yields ``(x, y)`` batches on the tensors' device; each new iteration (epoch) draws
    a new permutation from its own generator, so the batch order is reproducible from ``seed``.

    Args:
        dataset: a ``TensorDataset`` of ``(x, y)`` (any device).
        batch_size: samples per batch.
        shuffle: permute every epoch (False: the stored order).
        seed: seed of the permutation generator (CPU).
        drop_last: skip a final partial batch.
    """

    def __init__(
        self,
        dataset: TensorDataset,
        batch_size: int = 128,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        check_positive_int("batch_size", batch_size)
        self.dataset = dataset
        self.tensors = dataset.tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.tensors[0].device)
        else:
            order = None
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, n)
            if order is None:
                yield tuple(t[lo:hi] for t in self.tensors)
            else:
                idx = order[lo:hi]
                yield tuple(t[idx] for t in self.tensors)


@dataclass(frozen=True)
class Loaders:
    """Loaders over :class:`Splits`; ``train`` shuffles with a seeded generator."""

    train: DataLoader | TensorBatches
    val: DataLoader | TensorBatches
    test: DataLoader | TensorBatches


# --------------------------------------------------------------------------- IDX parsing


def _open_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the suffix says
        return gzip.decompress(raw)
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (plain or gzip) into a numpy array of its stored shape and dtype.

    Raises:
        ValueError: when the header is malformed or the payload size does not match it.
    """
    path = Path(path)
    data = _open_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic {data[:4]!r})")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: payload has {len(data) - header} bytes, header {shape} implies {expected}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (gzip when ``compress`` or when the name ends in ``.gz``)."""
    path = Path(path)
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"array dtype {array.dtype} has no IDX type code")
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(_IDX_DTYPES[code]).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def find_idx_file(directory: str | Path, stem: str) -> Path:
    """Locate ``stem`` (or ``stem.gz``, or the ``.``-for-``-`` variant) in ``directory`` or
    ``directory/raw`` (torchvision layout)."""
    directory = Path(directory)
    names = [stem, stem.replace("-idx", ".idx")]
    for folder in (directory, directory / "raw"):
        for name in names:
            for suffix in ("", ".gz"):
                candidate = folder / f"{name}{suffix}"
                if candidate.is_file():
                    return candidate
    raise FileNotFoundError(f"no IDX file {stem!r} (plain or .gz) in {directory} or its raw/")


def has_idx_files(directory: str | Path) -> bool:
    """True when all four MNIST-layout IDX files are present in ``directory``."""
    try:
        for stem in IDX_FILES.values():
            find_idx_file(directory, stem)
    except FileNotFoundError:
        return False
    return True


# --------------------------------------------------------------------------- splitting


def _check_fraction(name: str, value: float, *, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a float in [0, 1), got {value!r}")
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value < 1):
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def _check_limit(name: str, value: int | None) -> int | None:
    check_positive_int(name, value, allow_none=True)
    return value


def split_indices(
    n: int, val_fraction: float, seed: int, *, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded disjoint ``(train_idx, val_idx)`` over ``range(n)`` (in permuted order).

    ``limit`` first keeps a seeded random subset of ``min(limit, n)`` samples; the validation
    split is ``round(val_fraction * kept)`` of those (at least 1 when ``val_fraction > 0``).
    """
    val_fraction = _check_fraction("val_fraction", val_fraction)
    limit = _check_limit("limit", limit)
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    if limit is not None:
        perm = perm[:limit]
    kept = perm.numel()
    n_val = round(val_fraction * kept)
    if val_fraction > 0:
        n_val = max(n_val, 1)
    if n_val >= kept:
        raise ValueError(f"val_fraction={val_fraction} leaves no training samples out of {kept}")
    return perm[n_val:], perm[:n_val]


def _normalize(
    x_train: torch.Tensor, others: list[torch.Tensor], mode: str, max_value: float
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Scale to [0, 1] by ``max_value`` and, for ``standard``, standardise with train stats.

    Works in place: the tensors passed in must be fresh copies.
    """
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {mode!r}")
    if mode == "none":
        return x_train, others
    for x in (x_train, *others):
        x.div_(max_value)
    if mode == "standard":
        mean = x_train.mean()
        std = x_train.std().clamp_min(1e-8)
        for x in (x_train, *others):
            x.sub_(mean).div_(std)
    return x_train, others


def _build_splits(
    x: torch.Tensor,
    y: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    val_fraction: float,
    seed: int,
    limit: int | None,
    test_limit: int | None,
    normalize: str,
    max_value: float,
    image_shape: tuple[int, ...],
    flatten: bool,
    num_classes: int,
) -> Splits:
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    test_limit = _check_limit("test_limit", test_limit)
    train_idx, val_idx = split_indices(x.shape[0], val_fraction, seed, limit=limit)
    if test_limit is not None:
        x_test, y_test = x_test[:test_limit], y_test[:test_limit]
    x_tr, x_va = x[train_idx].float(), x[val_idx].float()
    x_tr, (x_va, x_te) = _normalize(x_tr, [x_va, x_test.float().clone()], normalize, max_value)
    shape = (-1,) if flatten else (1, *image_shape)

    def ds(xs: torch.Tensor, ys: torch.Tensor) -> TensorDataset:
        return TensorDataset(
            xs.reshape(xs.shape[0], *shape).to(torch.float32).contiguous(),
            ys.to(torch.int64).contiguous(),
        )

    return Splits(
        train=ds(x_tr, y[train_idx]),
        val=ds(x_va, y[val_idx]),
        test=ds(x_te, y_test),
        num_classes=num_classes,
    )


# --------------------------------------------------------------------------- loaders


def load_digits_splits(
    val_fraction: float = 0.1,
    seed: int = 0,
    *,
    test_fraction: float = 0.2,
    test_seed: int = 0,
    normalize: str = "unit",
    flatten: bool = True,
) -> Splits:
    """scikit-learn's bundled 8×8 digits, split into train / val / test.

    Args:
        val_fraction: fraction of the non-test samples held out for validation (seeded by ``seed``).
        seed: seed of the validation split.
        test_fraction: fraction held out as the test split, stratified by class, fixed by
            ``test_seed`` so every ``seed`` sees the same test set (default 0.2: 359 images).
        test_seed: seed of the test split.
        normalize: ``"unit"`` (pixels / 16 in [0, 1]), ``"standard"`` (zero mean, unit std with
            train statistics) or ``"none"`` (raw 0..16 values).
        flatten: ``x`` as ``(N, 64)`` when True, ``(N, 1, 8, 8)`` otherwise.

    Returns:
        :class:`Splits` (1,294 / 144 / 359 samples at the defaults), 10 classes.
    """
    from sklearn.datasets import load_digits

    test_fraction = _check_fraction("test_fraction", test_fraction, allow_zero=False)
    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    test_mask = torch.zeros(len(y), dtype=torch.bool)
    g = torch.Generator().manual_seed(int(test_seed))
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        test_mask[idx[: round(test_fraction * idx.numel())]] = True
    return _build_splits(
        x[~test_mask],
        y[~test_mask],
        x[test_mask],
        y[test_mask],
        val_fraction=val_fraction,
        seed=seed,
        limit=None,
        test_limit=None,
        normalize=normalize,
        max_value=16.0,
        image_shape=(8, 8),
        flatten=flatten,
        num_classes=10,
    )


def load_idx_splits(
    directory: str | Path,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    *,
    test_limit: int | None = None,
    normalize: str = "unit",
    flatten: bool = True,
) -> Splits:
    """MNIST-layout IDX files in ``directory`` (MNIST, Fashion-MNIST, torchvision ``raw/``).

    Args:
        directory: folder with the four IDX files (plain or ``.gz``), or its parent of ``raw/``.
        val_fraction: fraction of the (possibly limited) training pool held out for validation.
        seed: seed of the ``limit`` subset and of the validation split.
        limit: keep a seeded random subset of this many training-pool samples (None: all).
        test_limit: keep the first ``test_limit`` test samples (None: all; the order is fixed).
        normalize: ``"unit"`` (pixels / 255), ``"standard"`` (train mean/std) or ``"none"``.
        flatten: ``x`` as ``(N, H*W)`` when True, ``(N, 1, H, W)`` otherwise.

    Returns:
        :class:`Splits`; ``num_classes`` is ``max(label) + 1`` over train and test.

    Raises:
        FileNotFoundError: when a file is missing. ValueError: malformed files or arguments.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"directory {directory} does not exist")
    arrays = {key: read_idx(find_idx_file(directory, stem)) for key, stem in IDX_FILES.items()}
    x, y = arrays["train_images"], arrays["train_labels"]
    x_test, y_test = arrays["test_images"], arrays["test_labels"]
    if x.ndim != 3 or x_test.ndim != 3 or x.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"{directory}: images must be (N, H, W), got {x.shape} / {x_test.shape}")
    if y.shape != (x.shape[0],) or y_test.shape != (x_test.shape[0],):
        raise ValueError(f"{directory}: labels do not match images ({y.shape}, {y_test.shape})")
    max_value = 255.0 if x.dtype == np.uint8 else float(max(np.abs(x).max(), 1e-8))
    num_classes = int(max(y.max(), y_test.max())) + 1
    if x.dtype not in (np.uint8, np.float32):
        x, x_test = x.astype(np.float32), x_test.astype(np.float32)
    return _build_splits(
        torch.from_numpy(x),
        torch.from_numpy(y.astype(np.int64)),
        torch.from_numpy(x_test),
        torch.from_numpy(y_test.astype(np.int64)),
        val_fraction=val_fraction,
        seed=seed,
        limit=limit,
        test_limit=test_limit,
        normalize=normalize,
        max_value=max_value,
        image_shape=tuple(x.shape[1:]),
        flatten=flatten,
        num_classes=num_classes,
    )


# Debian's ``dataset-fashion-mnist`` installs into the first of these.
FASHION_MNIST_DIRS = (
    "/usr/share/datasets/fashion-mnist",
    "/usr/share/dataset-fashion-mnist",
)


def find_fashion_mnist(extra: tuple[str | Path, ...] = ()) -> Path | None:
    """First folder among ``extra`` and Debian's install locations that holds the IDX files."""
    for folder in (*extra, *FASHION_MNIST_DIRS):
        if Path(folder).is_dir() and has_idx_files(folder):
            return Path(folder)
    return None


def concat_splits(first: Splits, second: Splits, *, offset_labels: bool = True) -> Splits:
    """Join two splits with the same input shape (e.g. MNIST + Fashion-MNIST, 20 classes).

    With ``offset_labels`` the labels of ``second`` are shifted by ``first.num_classes``.
    """
    if first.input_shape != second.input_shape:
        raise ValueError(
            f"input shapes differ: {first.input_shape} vs {second.input_shape}; cannot concat"
        )
    offset = first.num_classes if offset_labels else 0

    def cat(a: TensorDataset, b: TensorDataset) -> TensorDataset:
        (xa, ya), (xb, yb) = a.tensors, b.tensors
        return TensorDataset(torch.cat([xa, xb]), torch.cat([ya, yb + offset]))

    num = (
        offset + second.num_classes if offset_labels else max(first.num_classes, second.num_classes)
    )
    return Splits(
        train=cat(first.train, second.train),
        val=cat(first.val, second.val),
        test=cat(first.test, second.test),
        num_classes=num,
    )


def make_loader(
    dataset: TensorDataset,
    batch_size: int = 128,
    *,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A single-process DataLoader; shuffling uses its own generator seeded by ``seed``."""
    check_positive_int("batch_size", batch_size)
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=generator,
        num_workers=0,
    )


def make_loaders(
    splits: Splits,
    batch_size: int = 128,
    *,
    eval_batch_size: int | None = 1024,
    seed: int = 0,
    drop_last: bool = False,
    fast: bool = False,
) -> Loaders:
    """Seeded shuffled train loader plus ordered val/test loaders.

    ``eval_batch_size=None`` evaluates each of val and test in a single batch. ``fast=True``
    returns :class:`TensorBatches` (slicing, no per-sample collation; keeps the tensors' device)
    instead of ``DataLoader`` s; the two shuffle differently for the same seed.
    """

    def loader(ds: TensorDataset, size: int, shuffle: bool) -> DataLoader | TensorBatches:
        if fast:
            return TensorBatches(ds, size, shuffle=shuffle, seed=seed, drop_last=drop_last)
        return make_loader(ds, size, shuffle=shuffle, seed=seed, drop_last=drop_last)

    def eval_loader(ds: TensorDataset) -> DataLoader | TensorBatches:
        size = max(len(ds), 1) if eval_batch_size is None else eval_batch_size
        if fast:
            return TensorBatches(ds, size)
        return make_loader(ds, size, shuffle=False)

    return Loaders(
        train=loader(splits.train, batch_size, True),
        val=eval_loader(splits.val),
        test=eval_loader(splits.test),
    )
