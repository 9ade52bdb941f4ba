"""The tail that ``exchange.py`` and ``step_split.py`` share: start the ranks, print their lines.

A script with a ``--worker`` mode (one rank) hands its parsed options here; the options named
are passed on to every rank, the ranks run on 127.0.0.1 by :func:`scaling.run_ranks`, and every
line they print is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scaling


def relay(script: str, args: argparse.Namespace, names: list[str], timeout: float) -> int:
    """Run ``args.procs`` ranks of ``script --worker`` with the options ``names`` (their parsed
    values, as ``--name=value``); every rank's stdout lines printed. Returns 0."""
    passed = [f"--{name}={getattr(args, name)}" for name in names]
    for line in scaling.run_ranks(Path(script), args.procs, passed, timeout=timeout):
        print(line, flush=True)
    return 0
