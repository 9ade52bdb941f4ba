"""Shared test settings: one torch thread (2-core CI), torch's global generator seeded before
every test, and the location of ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _seeded_torch() -> None:
    """``torch.manual_seed(0)`` before every test: a test's random draws (and the default
    ``PolyStepOptimizer(seed=None)``, which takes its seed from torch's global generator) do
    not depend on which tests ran before it."""
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data``; skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present on this machine")
    return SHARED_DATA
