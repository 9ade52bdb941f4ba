"""benchmarks/candidate_count.py: its table is the committed records, and it resumes."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "bench_candidate_count", ROOT / "benchmarks" / "candidate_count.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _record(arm, seed, val, options=None, **extra):
    return {
        "arm": arm, "options": options or {}, "seed": seed, "budget": 1000, "steps": 4,
        "val_selected": val, "val_last": val, "code": {"commit": "abcdef0123"}, **extra,
    }  # fmt: skip


def test_table_pairs_seeds_against_base_and_marks_removed_arms():
    cc = _script()
    records = [
        _record("base", 0, 0.5), _record("base", 1, 0.7),
        _record("subset 1/2", 0, 0.6, {"blocks_per_step": 78}),
        _record("subset 1/2", 1, 0.9, {"blocks_per_step": 78}),
        _record("gone", 0, 0.4, {"x": 1}),
        _record("subset 1/2", 0, 0.6, {"blocks_per_step": 78}, test_acc_selected=0.61,
                test_acc_last=0.59),
    ]  # fmt: skip
    text = cc.table(records)
    assert '| subset 1/2 | `{"blocks_per_step": 78}` | 1,000 | 2 | 75.0 +- 21.2 |' in text
    assert "| +15.0 (2) |" in text  # (0.1 + 0.2) / 2 over the paired seeds
    assert "| gone (removed) |" in text and "| -10.0 (1) |" in text
    assert "seeds [0]): validation-selected model 61.0 +- 0.0 %, last 59.0 +- 0.0 %" in text


def test_committed_table_is_generated_from_the_committed_records():
    cc = _script()
    results = ROOT / "benchmarks" / "results" / "tuning"
    records = cc.read(results / "candidate_count.jsonl")
    assert records, "the records are committed"
    assert (results / "candidate_count.md").read_text().strip() == cc.table(records).strip()
