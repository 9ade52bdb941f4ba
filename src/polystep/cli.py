"""Command line: ``polystep demo [snn|synthetic]`` and ``polystep bench ...``.

``polystep bench maxsat|rl ...`` run those suites; ``polystep bench TASK...`` runs the NN task
table and ``polystep bench report DIR`` aggregates it. Each suite exposes ``main(argv) -> int``
and is imported only when asked, so start-up stays light.
"""

from __future__ import annotations

import argparse
import importlib
import sys

BENCH_SUITES = {
    "maxsat": "polystep.bench.maxsat",
    "rl": "polystep.bench.rl",
}
NN_TASKS_SUITE = "polystep.bench.nn_tasks"
DEMOS = {
    "synthetic": "polystep.demos.synthetic",
    "snn": "polystep.demos.snn",
}
DEFAULT_DEMO = "snn"


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
    if args.target is None:
        parser.error("bench needs a suite (maxsat, rl), task names, 'all' or 'report DIR'")
    if args.target in BENCH_SUITES:
        return int(importlib.import_module(BENCH_SUITES[args.target]).main(rest) or 0)
    return int(importlib.import_module(NN_TASKS_SUITE).main([args.target, *rest]) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
