"""Command line: ``polystep demo [snn|synthetic]`` and ``polystep bench <suite> ...``.

Each bench suite lives in ``polystep.bench.<suite>`` and exposes ``main(argv) -> int``; the CLI
imports it only when asked, so start-up stays light.
"""

from __future__ import annotations

import argparse
import importlib
import sys

BENCH_SUITES = {
    "maxsat": "polystep.bench.maxsat",
    "rl": "polystep.bench.rl",
}
DEMOS = {
    "synthetic": "polystep.demos.synthetic",
    "snn": "polystep.demos.snn",
}
DEFAULT_DEMO = "synthetic"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="polystep", description=__doc__)
    parser.add_argument("command", choices=["demo", "bench"])
    parser.add_argument("target", nargs="?", help="demo name, or bench suite")
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        name = args.target or DEFAULT_DEMO
        if name not in DEMOS:
            parser.error(f"demo must be one of {sorted(DEMOS)}, got {name!r}")
        return int(importlib.import_module(DEMOS[name]).main(rest) or 0)
    if args.target not in BENCH_SUITES:
        parser.error(f"bench suite must be one of {sorted(BENCH_SUITES)}, got {args.target!r}")
    return int(importlib.import_module(BENCH_SUITES[args.target]).main(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
