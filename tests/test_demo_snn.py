"""The SNN demo runs end to end (tiny budget) and writes its plot and metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from polystep.cli import DEFAULT_DEMO
from polystep.demos import snn


def test_snn_demo_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = snn.main(["--seconds", "2", "--out", str(tmp_path), "--no-progress", "--hidden", "16"])
    assert code == 0
    out = capsys.readouterr().out
    assert "validation accuracy" in out and "test accuracy (selected on validation)" in out
    assert (tmp_path / "snn.png").stat().st_size > 1000
    assert (tmp_path / "snn_metrics.csv").read_text().startswith("step,")
    assert DEFAULT_DEMO == "snn"
