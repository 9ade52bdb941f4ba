"""benchmarks/corun.py: the machine-ceiling figures and table come from the runs' records."""

import pytest

from bench_scripts import load_script


def _copy(evals: float, start: float, seconds: float) -> dict:
    return {"candidate_evals_per_s": evals, "timed_from": start, "seconds": seconds,
            "rank_cpu_seconds": [seconds]}  # fmt: skip


def test_overlap_is_the_shared_part_of_the_covered_time():
    corun = load_script("corun")
    assert corun.overlap([(0.0, 10.0), (0.0, 10.0)]) == 1.0
    assert corun.overlap([(0.0, 10.0), (2.0, 12.0)]) == pytest.approx(8 / 12)
    assert corun.overlap([(0.0, 1.0), (2.0, 3.0)]) == 0.0


def test_a_round_relates_the_distributed_run_to_the_copies_ceiling():
    corun = load_script("corun")
    solo = {"candidate_evals_per_s": 1000.0, "rank_cpu_seconds": [2.0]}
    group = {"candidate_evals_per_s": 1600.0}
    record = corun.round_record(solo, group, [_copy(900.0, 0.0, 2.0), _copy(850.0, 0.5, 2.0)])
    assert record["speedup_vs_1"] == 1.6
    assert record["ceiling_vs_1"] == 1.75
    assert record["of_ceiling"] == round(1.6 / 1.75, 3)
    assert record["overlap"] == 0.6
    line = corun.table([{**record, "load_average_1min": 0.8}]).splitlines()[2]
    assert line == "| 1 | 2 | 1,000 | 1,600 | 900 / 850 | 1.60 | 1.75 | 0.91 | 0.60 | 0.8 |"


def test_the_gate_opens_when_every_copy_is_ready(tmp_path):
    corun = load_script("corun")
    (tmp_path / "other-copy").touch()
    corun.file_gate(tmp_path, 2)  # this process makes two: returns at once
    assert len(list(tmp_path.iterdir())) == 2


def test_bad_options_are_named():
    corun = load_script("corun")
    with pytest.raises(SystemExit, match="--copies must be >= 2"):
        corun.main(["--copies", "1"])
    with pytest.raises(SystemExit, match="--steps must be >= 1"):
        corun.main(["--steps", "0"])
