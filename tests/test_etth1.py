"""ETTh1 windows: the Informer split, train-only scaling, persistence, and the bench report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench_scripts import load_script
from polystep.timeseries import (
    ETTH1_SPLIT,
    load_etth1,
    persistence,
    read_column,
    sliding_windows,
)


def write_csv(path: Path, rows: int) -> torch.Tensor:
    ot = torch.arange(rows, dtype=torch.float64) * 0.5 + torch.sin(torch.arange(rows) * 0.3)
    lines = ["date,HUFL,OT"] + [f"2016-01-01 {i},{-i},{float(v)!r}" for i, v in enumerate(ot)]
    path.write_text("\n".join(lines) + "\n")
    return ot


def test_sliding_windows() -> None:
    ds = sliding_windows(torch.arange(10.0), 3, 2)
    x, y = ds.tensors
    assert x.shape == (6, 3) and y.shape == (6, 2) and x.dtype == torch.float32
    assert x[1].tolist() == [1, 2, 3] and y[1].tolist() == [4, 5]
    assert len(sliding_windows(torch.arange(10.0), 3, 2, stride=2)) == 3
    with pytest.raises(ValueError, match="lookback"):
        sliding_windows(torch.arange(4.0), 3, 2)
    with pytest.raises(ValueError, match="stride"):
        sliding_windows(torch.arange(10.0), 3, 2, stride=0)


def test_informer_split_and_train_statistics(tmp_path: Path) -> None:
    ot = write_csv(tmp_path / "e.csv", sum(ETTH1_SPLIT) + 5)
    s = load_etth1(tmp_path / "e.csv", lookback=96, horizon=96)
    assert s.sizes() == {"train": 8449, "val": 2785, "test": 2785}
    train = ot[:8640]
    assert s.mean == pytest.approx(float(train.mean()))
    assert s.std == pytest.approx(float(train.std(correction=0)))
    scaled = (ot - s.mean) / s.std
    x, y = s.val.tensors  # the first validation window forecasts the first validation hour
    assert torch.allclose(x[0].double(), scaled[8640 - 96 : 8640], atol=1e-5)
    assert torch.allclose(y[0].double(), scaled[8640 : 8640 + 96], atol=1e-5)
    x, y = s.test.tensors
    assert torch.allclose(y[-1].double(), scaled[11520 + 2880 - 96 : 11520 + 2880], atol=1e-5)
    assert torch.allclose(x[0].double(), scaled[11520 - 96 : 11520], atol=1e-5)


def test_bad_input_is_named(tmp_path: Path) -> None:
    write_csv(tmp_path / "short.csv", 500)
    with pytest.raises(ValueError, match="rows"):
        load_etth1(tmp_path / "short.csv")
    with pytest.raises(ValueError, match="column must be one of"):
        read_column(tmp_path / "short.csv", "XX")
    with pytest.raises(FileNotFoundError, match="path"):
        load_etth1(tmp_path / "missing.csv")


def test_persistence_repeats_the_last_value() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert persistence(x, 2).tolist() == [[3.0, 3.0], [6.0, 6.0]]


def test_real_etth1(shared_data: Path) -> None:
    path = shared_data / "etth1" / "ETTh1.csv"
    if not path.is_file():
        pytest.skip("ETTh1.csv is not present")
    s = load_etth1(path)
    assert s.sizes() == {"train": 8449, "val": 2785, "test": 2785}
    x, _ = s.train.tensors
    assert abs(float(x[:, 0].mean())) < 0.05  # z-scored with train statistics
    x, y = s.test.tensors
    mse = float((persistence(x, 96) - y).pow(2).mean())
    assert 0.0 < mse < 1.0


def load_bench():
    return load_script("etth1")


def test_bench_report_and_search_space(tmp_path: Path) -> None:
    bench = load_bench()
    recs = [
        {"method": "persistence", "seed": 0, "val_mse": 0.2, "test_mse": 0.1, "test_mae": 0.3},
        *[
            {"method": "polystep", "seed": s, "val_mse": v, "test_mse": m, "test_mae": 0.4,
             "last_test_mse": m, "lstm_passes": 970, "wall_s": 5.0, "cpu_s": 2.0, "steps": 10,
             "candidates": 125_760, "config": {"batch": 16}, "grid_index": g}
            for s, g, v, m in ((0, 0, 0.2, 0.2), (0, 1, 0.3, 0.01), (1, 0, 0.2, 0.4))
        ],
    ]  # fmt: skip
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    table = bench.report(path)
    assert "| persistence (last value) | — | 0.100 |" in table
    # grid entry 1 has the better test MSE but the worse validation MSE: entry 0 is reported
    assert "| PolyStep (sigmoid gates) | 0,1 | 0.300 ± 0.141 |" in table
    assert "| 10 steps, 970 LSTM passes × 16 windows, 0.13 M candidates | 5 | 2 |" in table
    log = bench.tuning_log(path)
    assert (
        '| polystep | {"step_radius": [0.05, 0.005], "probe_radius": [0.2, 0.05]} | 0.3000 |  |'
        in log
    )
    assert '| adam | {"lr": 0.001} | not run |  |' in log
    # seed 0 runs every grid entry; later seeds wait for the selection, then run only it
    assert bench.runs_owed("adam", 0, recs) == [0, 1]
    assert bench.runs_owed("adam", 1, recs) == []
    assert bench.runs_owed("polystep", 1, recs) == []
    assert bench.runs_owed("polystep", 2, recs) == [0]
    assert bench.runs_owed("persistence", 0, recs) == []
    model = bench.lstm_forecaster()
    space = bench.ForecastSpace(
        bench.ParamLayout.from_module(model), block_dim=8, seed=0, redraw_every=1
    )
    lstm = sum(bench.LSTM_COORDS.values())
    assert space.dim == lstm + 64 * 96 + 96
    delta = space.delta(torch.ones(space.dim))
    assert delta.shape == (23_392,) and torch.isfinite(delta).all()
