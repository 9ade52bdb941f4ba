"""The ``polystep`` command line: per-command help, no torch import for help, and bad options
rejected by argparse with the option named (exit 2) before any work starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from polystep.cli import main

bad_input = pytest.mark.bad_input


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as stop:
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


HELP_SCREENS = {
    ("--help",): "usage: polystep {demo,bench}",
    ("demo", "--help"): "usage: polystep demo [NAME] [options]",
    ("demo", "snn", "--help"): "usage: polystep demo snn",
    ("demo", "synthetic", "--help"): "usage: polystep demo synthetic",
    ("bench", "--help"): "usage: polystep bench {TASK... | report DIR | maxsat | rl}",
    ("bench", "all", "--help"): "usage: polystep bench [-h] [--methods METHODS]",
    ("bench", "report", "--help"): "usage: polystep bench report",
    ("bench", "maxsat", "--help"): "usage: polystep bench maxsat",
    ("bench", "rl", "--help"): "usage: polystep bench rl",
}


@bad_input(
    "`polystep demo --help`, `bench --help`, `bench maxsat --help`",
    "each prints its own help, as plain text (was: the top-level help, with RST markup)",
)
def test_every_command_has_its_own_plain_help(capsys):
    screens = {}
    for argv, usage in HELP_SCREENS.items():
        code, out, _ = _run(list(argv), capsys)
        assert code == 0, argv
        assert out.startswith(usage), (argv, out[:200])
        assert "``" not in out and ":func:" not in out and ":class:" not in out, argv
        screens[argv] = out
    assert len(set(screens.values())) == len(screens)  # nine different screens


@bad_input("`polystep --help`", "prints help without importing torch (lazy imports)")
def test_top_level_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from polystep.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "import polystep\n"
        "assert polystep.__version__\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip().endswith("False"), result.stdout
    # The lazy package still exposes its public names.
    import polystep

    assert polystep.PolyStep.__name__ == "PolyStep" and "train" in dir(polystep)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = polystep.Nope


BAD_OPTIONS = [
    # (argv, text the error must contain)
    (["bench", "mlp_mnist", "--budget-fwd", "0"], "argument --budget-fwd: must be a positive"),
    (["bench", "mlp_mnist", "--budget-fwd", "-5"], "argument --budget-fwd: must be a positive"),
    (["bench", "mlp_mnist", "--budget-seconds", "-1"], "argument --budget-seconds"),
    (["bench", "mlp_mnist", "--threads", "-2"], "argument --threads: must be a positive"),
    (["bench", "mlp_mnist", "--methods", "bogus"], "polystep, openai_es, spsa, cmaes, adam"),
    (["bench", "mlp_mnist", "--seeds", "a,b"], "argument --seeds"),
    (["bench", "mlp_mnist", "--device", "gpu"], "argument --device: must be a torch device"),
    (["bench", "maxsat", "--vars", "10", "--device", "tpu0"], "argument --device"),
    (["bench", "nope"], "argument tasks: task must be 'all' or one of"),
    (["bench", "mlp_mnist", "--mnist-dir", "/no/such/dir"], "argument --mnist-dir: no such"),
    (["bench", "report", "/no/such/dir"], "argument dir: no such folder"),
    (["bench", "maxsat", "--budget", "0", "--vars", "10"], "argument --budget: must be a posi"),
    (["bench", "maxsat", "--vars", "-10"], "argument --vars: must be a positive integer"),
    (["bench", "maxsat", "--vars", "10", "--ratio", "-1"], "argument --ratio: must be a posi"),
    (["bench", "maxsat", "--vars", "10", "--threads", "0"], "argument --threads"),
    (["bench", "maxsat", "--vars", "10", "--methods", "bogus"], "polystep, openai-es, probsat"),
    (["bench", "maxsat", "--cnf", "/no/such.cnf"], "argument --cnf: no such file"),
    (["bench", "maxsat", "--vars", "10", "--baselines-from", "/no/runs.jsonl"], "--baselines"),
    (["bench", "rl", "--budget", "0"], "argument --budget: must be a positive integer"),
    (["bench", "rl", "--episodes", "0"], "argument --episodes: must be a positive integer"),
    (["bench", "rl", "--env", "pong"], "argument --env: must be a comma-separated list of"),
    (["bench", "rl", "--policy", "relu"], "tanh, binary, int8, int8w"),
    (["bench", "rl", "--threads", "-1"], "argument --threads"),
    (["bench", "rl", "--collect", "/no/such/dir"], "argument --collect: no such folder"),
    (["demo", "snn", "--seconds", "-1"], "argument --seconds: must be a positive number"),
    (["demo", "snn", "--hidden", "0"], "argument --hidden: must be a positive integer"),
    (["demo", "synthetic", "--iterations", "0"], "argument --iterations"),
    (["demo", "nope"], "invalid choice: 'nope' (choose from snn, synthetic)"),
    (["frobnicate"], "invalid command: 'frobnicate'"),
]

IDS = [" ".join(argv) for argv, _ in BAD_OPTIONS]


@bad_input(
    "negative or zero budgets, threads, sizes, ratios, episodes; unknown methods, envs, "
    "policies, tasks, demos; missing files and folders",
    "argparse error (exit 2) naming the option and the allowed values, before any work",
)
@pytest.mark.parametrize(("argv", "message"), BAD_OPTIONS, ids=IDS)
def test_bad_options_are_argparse_errors(argv, message, capsys):
    code, out, err = _run(argv, capsys)
    assert code == 2
    assert message in err, err
    assert "Traceback" not in err and out == ""
