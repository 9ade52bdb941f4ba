"""Univariate forecasting windows from a CSV column, with the ETTh1 (Informer) split.

:func:`load_etth1` reads one column of ``ETTh1.csv`` (default ``OT``, the oil temperature) and
cuts it as Informer does: the first 12 months train (8,640 hours), the next 4 months validation
(2,880), the 4 after that test (2,880). The validation and test series start ``lookback`` hours
before their boundary, so their first window forecasts the first hour of the split. Values are
z-scored with the training part's mean and (population) standard deviation. Each split is a
``TensorDataset`` of sliding windows ``(x (N, lookback), y (N, horizon))``, float32.

Nothing is downloaded: pass the path of a local copy of the file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from polystep.validation import check_positive_int

ETTH1_SPLIT = (8640, 2880, 2880)  # hours: train, validation, test


@dataclass(frozen=True)
class ForecastSplits:
    """Train / validation / test window datasets and the training statistics used to scale."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    mean: float
    std: float

    def sizes(self) -> dict[str, int]:
        """Number of windows in each split."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def read_column(path: str | Path, column: str) -> torch.Tensor:
    """Column ``column`` of the CSV file at ``path`` as float64 ``(rows,)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path {str(path)!r} is not a file")
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{str(path)!r} is empty")
        if column not in header:
            raise ValueError(f"column must be one of {header}, got {column!r}")
        k = header.index(column)
        values = [float(row[k]) for row in reader if row]
    return torch.tensor(values, dtype=torch.float64)


def sliding_windows(
    series: torch.Tensor, lookback: int, horizon: int, stride: int = 1
) -> TensorDataset:
    """All windows of ``series (L,)``: inputs ``(N, lookback)``, targets ``(N, horizon)``.

    ``N = (L - lookback - horizon) // stride + 1``; float32.
    """
    check_positive_int("lookback", lookback)
    check_positive_int("horizon", horizon)
    check_positive_int("stride", stride)
    span = lookback + horizon
    if series.ndim != 1 or series.shape[0] < span:
        raise ValueError(
            f"series must be 1-D with at least lookback + horizon = {span} values, "
            f"got shape {tuple(series.shape)}"
        )
    windows = series.unfold(0, span, stride).to(torch.float32)
    return TensorDataset(windows[:, :lookback].contiguous(), windows[:, lookback:].contiguous())


def load_etth1(
    path: str | Path,
    *,
    column: str = "OT",
    lookback: int = 96,
    horizon: int = 96,
    stride: int = 1,
) -> ForecastSplits:
    """ETTh1 column ``column`` as Informer's 8,640 / 2,880 / 2,880 split (module docstring).

    With the defaults: 8,449 training, 2,785 validation and 2,785 test windows.
    """
    check_positive_int("lookback", lookback)
    series = read_column(path, column)
    n_train, n_val, n_test = ETTH1_SPLIT
    end = n_train + n_val + n_test
    if series.shape[0] < end:
        raise ValueError(f"{str(path)!r} has {series.shape[0]} rows, the split needs {end}")
    if lookback > n_train:
        raise ValueError(f"lookback must be <= {n_train} (the training length), got {lookback}")
    train = series[:n_train]
    mean, std = float(train.mean()), float(train.std(correction=0))  # as StandardScaler
    scaled = (series - mean) / std
    bounds = {
        "train": (0, n_train),
        "val": (n_train - lookback, n_train + n_val),
        "test": (n_train + n_val - lookback, end),
    }
    parts = {
        k: sliding_windows(scaled[a:b], lookback, horizon, stride) for k, (a, b) in bounds.items()
    }
    return ForecastSplits(parts["train"], parts["val"], parts["test"], mean, std)


def persistence(x: torch.Tensor, horizon: int) -> torch.Tensor:
    """Last-value forecast: ``x (N, lookback) -> (N, horizon)``, every step is ``x[:, -1]``."""
    check_positive_int("horizon", horizon)
    return x[:, -1:].expand(-1, horizon)
