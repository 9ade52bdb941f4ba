"""Command line: ``polystep demo [NAME] [options]`` and ``polystep bench ...``.

  polystep demo [snn|synthetic] [options]    a demo (default: snn); NAME --help for its options
  polystep bench TASK... [options]           the NN task table (TASK: all, snn_mnist, ...)
  polystep bench report DIR                  aggregate a task table folder into report.md
  polystep bench report --readme FILE        regenerate a README's tables from the records
  polystep bench maxsat [options]            PolyStep on MAX-SAT (random 3-SAT, DIMACS/WCNF)
  polystep bench rl [options]                PolyStep on CartPole / Acrobot policies

Each command takes --help. A suite is imported only when it runs, so the help stays light (no
torch import).
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
    "snn": ("polystep.demos.snn", "hard-threshold spiking net on digits, forward passes only"),
    "synthetic": ("polystep.demos.synthetic", "PolyStep on Ackley-10 and Rastrigin-10"),
}
DEFAULT_DEMO = "snn"
HELP = ("-h", "--help")


def _parser(prog: str, usage: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=prog,
        usage=usage,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _help(parser: argparse.ArgumentParser, argv: list[str], missing: str | None) -> bool:
    """True, with the help printed, when ``argv`` starts with -h/--help; a usage error saying
    ``missing`` when ``argv`` is empty and ``missing`` is given (something must follow)."""
    if not argv and missing is not None:
        parser.error(missing)
    if argv[:1] and argv[0] in HELP:
        parser.print_help()
        return True
    return False


def _demo(argv: list[str]) -> int:
    lines = "\n".join(f"  {name:10s} {text}" for name, (_, text) in DEMOS.items())
    parser = _parser(
        "polystep demo",
        "polystep demo [NAME] [options]",
        f"Run a demo (default: {DEFAULT_DEMO}); `polystep demo NAME --help` lists its options."
        f"\n\ndemos:\n{lines}",
    )
    if _help(parser, argv, None):
        return 0
    if argv[:1] and not argv[0].startswith("-"):
        name, rest = argv[0], argv[1:]
    else:
        name, rest = DEFAULT_DEMO, argv
    if name not in DEMOS:
        parser.error(f"argument NAME: invalid choice: {name!r} (choose from {', '.join(DEMOS)})")
    return int(importlib.import_module(DEMOS[name][0]).main(rest) or 0)


def _bench(argv: list[str]) -> int:
    suites = [line for line in __doc__.splitlines() if line.startswith("  polystep bench")]
    parser = _parser(
        "polystep bench",
        "polystep bench {TASK... | report DIR | maxsat | rl} [options]",
        "\n".join(suites) + "\n\n`polystep bench all --help`, `... maxsat --help` and `... rl "
        "--help` list the options of each.",
    )
    if _help(parser, argv, "give a suite (maxsat, rl), task names, 'all' or 'report DIR'"):
        return 0
    if argv[0] in BENCH_SUITES:
        return int(importlib.import_module(BENCH_SUITES[argv[0]]).main(argv[1:]) or 0)
    return int(importlib.import_module(NN_TASKS_SUITE).main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser("polystep", "polystep {demo,bench} ...", __doc__.split("\n\n", 1)[1])
    if _help(parser, argv, "give a command: demo or bench"):
        return 0
    if argv[0] == "demo":
        return _demo(argv[1:])
    if argv[0] == "bench":
        return _bench(argv[1:])
    return parser.error(f"invalid command: {argv[0]!r} (choose from demo, bench)")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
