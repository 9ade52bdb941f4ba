"""DIMACS / WCNF input hardening: odd but valid files parse like python-sat, bad ones are refused
with the file and line named, and a hypothesis fuzz test against python-sat's reader."""

from __future__ import annotations

import bz2
import gzip
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polystep.problems.maxsat import MaxSATInstance, parse_dimacs, read_dimacs, write_dimacs

bad_input = pytest.mark.bad_input


@bad_input("DIMACS file with CR-only line endings", "parsed like LF (was: an empty instance)")
def test_cr_only_line_endings_parse_like_lf():
    lf = "c comment 1 2 0\np cnf 3 2\n1 -2 0\n3 0\n"
    for text in (lf, lf.replace("\n", "\r"), lf.replace("\n", "\r\n")):
        inst = parse_dimacs(text)
        assert inst.clause_lists() == [[1, -2], [3]], repr(text)


@bad_input(
    "CNF whose header clause count is wrong and a clause lacks its `0`",
    "ValueError naming the line where the merged clause starts",
)
def test_missing_zero_with_wrong_count_is_refused():
    with pytest.raises(ValueError, match=r"line 2: the header declares 2 clauses, 1 were read"):
        parse_dimacs("p cnf 3 2\n1 2\n3 0\n")
    # A clause spread over lines is valid DIMACS when the count agrees, and a wrong count alone
    # is tolerated (python-sat reads both).
    assert parse_dimacs("p cnf 3 1\n1 2\n3 0\n").clause_lists() == [[1, 2, 3]]
    assert parse_dimacs("p cnf 3 5\n1 2 0\n3 0\n").clause_lists() == [[1, 2], [3]]


@bad_input("WCNF clause missing its `0`", "ValueError naming the line (pysat also refuses)")
def test_wcnf_clause_running_onto_the_next_line_is_refused():
    with pytest.raises(ValueError, match=r"line 2: a WCNF clause runs on to line 3"):
        parse_dimacs("h 1 2 0\n3 1 2\n4 2 0\n")


@bad_input("WCNF weight 2^62 (valid in the 2022 format)", "accepted, hard/soft split kept")
def test_huge_weights_are_read():
    w = 2**62
    inst = parse_dimacs(f"h 1 2 0\n{w} -1 0\n3 2 0\n")
    assert inst.hard.tolist() == [True, False, False]
    assert inst.weights[1:].tolist() == [float(w), 3.0]
    assert inst.top > inst.soft_weight  # a hard violation always costs more than all soft ones
    classic = parse_dimacs(f"p wcnf 2 2 {w}\n{w} 1 2 0\n5 -1 0\n")
    assert classic.hard.tolist() == [True, False] and classic.top == float(w)


def test_decimal_weights_are_read_like_pysat():
    inst = parse_dimacs("h 1 0\n0.25 -1 0\n1e3 2 0\n")
    assert inst.weights[1:].tolist() == [0.25, 1000.0]
    with pytest.raises(ValueError, match=r"line 1: literal '1.5' is not a variable index"):
        parse_dimacs("1 1.5 0\n")


@bad_input("bzip2-compressed instance", "read (gzip, bzip2, xz detected from the magic bytes)")
def test_bzip2_is_read(tmp_path):
    path = tmp_path / "a.cnf.bz2"
    path.write_bytes(bz2.compress(b"p cnf 2 1\n1 -2 0\n"))
    inst = read_dimacs(path)
    assert inst.clause_lists() == [[1, -2]] and inst.name == "a.cnf"


@bad_input("truncated .gz instance", "ValueError naming the file and the compression")
def test_truncated_gzip_names_the_file(tmp_path):
    path = tmp_path / "cut.cnf.gz"
    path.write_bytes(gzip.compress(b"p cnf 2 1\n1 -2 0\n" * 50)[:-12])
    with pytest.raises(ValueError, match=r"cut\.cnf\.gz: corrupt or truncated gzip"):
        read_dimacs(path)


def test_parse_errors_from_a_file_name_the_file(tmp_path):
    path = tmp_path / "bad.cnf"
    path.write_text("p cnf 2 1\n1 x 0\n")
    with pytest.raises(ValueError, match=r"bad\.cnf: line 2: unexpected token 'x'"):
        read_dimacs(path)


@bad_input("empty file, or comments only", "ValueError: no header and no clauses")
def test_empty_input_is_refused(tmp_path):
    for text in ("", "c nothing here\n", "\n\n"):
        path = tmp_path / "empty.cnf"
        path.write_text(text)
        with pytest.raises(ValueError, match=r"empty\.cnf: empty input"):
            read_dimacs(path)
    assert parse_dimacs("p cnf 0 0\n").num_clauses == 0  # declared empty: valid


@bad_input(
    "variable index 2e9 in a file with no header",
    "ValueError naming the line (was: a 16 GB allocation in the solver)",
)
def test_sparse_huge_index_without_header_is_refused():
    with pytest.raises(ValueError, match=r"line 2: variable index 2000000000 with no 'p' header"):
        parse_dimacs("1 2 0\n-1 2000000000 0\n")
    declared = parse_dimacs("p cnf 2000000000 1\n1 2000000000 0\n")  # asked for: allowed
    assert declared.num_vars == 2_000_000_000


@bad_input("variable index above 2^31 - 1", "ValueError naming the line and the limit")
def test_index_beyond_int32_names_the_line():
    with pytest.raises(ValueError, match=r"line 3: literal .* is not a variable index"):
        parse_dimacs("p cnf 3 2\n1 0\n99999999999999999999 0\n")
    with pytest.raises(ValueError, match=r"line 2: literal 3000000000 is out of range"):
        parse_dimacs("p cnf 3 1\n3000000000 0\n")


@bad_input("`write_dimacs` of fractional weights", "written exactly (was: truncated to integers)")
def test_write_dimacs_keeps_fractional_and_huge_weights():
    weights = np.array([9.0, 0.1, 2.5, 2.0**62, 1e-7])
    inst = MaxSATInstance(
        3, np.array([[1, 2], [-1, 0], [3, 0], [-3, 2], [2, 0]]), weights, np.array([1, 0, 0, 0, 0])
    )
    back = parse_dimacs(write_dimacs(inst))
    assert back.hard.tolist() == inst.hard.tolist()
    assert back.weights[1:].tolist() == weights[1:].tolist()
    assert back.clause_lists() == inst.clause_lists()


# ----- fuzz against python-sat -------------------------------------------------------------------

_BLANK = st.sampled_from([" ", "  ", "\t", " \t "])
_EOL = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def _dimacs_files(draw: st.DrawFn) -> tuple[str, str, list[list[int]], list[object]]:
    """``(kind, text, clauses, weights)``: one clause per line ending in 0 (the dialect both
    readers accept), with random blanks, line endings, comments and, for WCNF, big or decimal
    weights and 'h' markers. ``weights`` holds None for a hard clause."""
    kind = draw(st.sampled_from(["cnf", "wcnf"]))
    num_vars = draw(st.integers(1, 40))
    lit = st.integers(1, num_vars).flatmap(lambda v: st.sampled_from([v, -v]))
    clauses = draw(st.lists(st.lists(lit, min_size=0, max_size=6), min_size=1, max_size=25))
    soft = st.one_of(
        st.integers(1, 10),
        st.integers(1, 2**62),
        st.decimals(min_value=Decimal("0.01"), max_value=Decimal(100), places=2).filter(
            lambda d: d != d.to_integral_value()
        ),
    )
    weights: list[object] = [
        draw(st.one_of(st.none(), soft)) if kind == "wcnf" else 1 for _ in clauses
    ]
    eol = draw(_EOL)
    lines = [f"c generated {kind}{draw(_BLANK)}1 2 0"]
    if kind == "cnf" or draw(st.booleans()):
        lines.append(f"p cnf {num_vars} {len(clauses)}" if kind == "cnf" else "c no header")
    for clause, weight in zip(clauses, weights, strict=True):
        blank = draw(_BLANK)
        head = [] if kind == "cnf" else ["h" if weight is None else str(weight)]
        lines.append(draw(st.sampled_from(["", " "])) + blank.join([*head, *map(str, clause), "0"]))
        if draw(st.integers(0, 9)) == 0:
            lines.append("c between clauses")
    return kind, eol.join(lines) + eol, clauses, weights


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_dimacs_files())
def test_fuzz_reader_agrees_with_pysat(sample):
    from pysat.formula import CNF, WCNF

    kind, text, clauses, weights = sample
    ours = parse_dimacs(text, name=f"fuzz.{kind}")
    assert ours.clause_lists() == clauses
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # pysat reads CR-only as empty
    if kind == "cnf":
        assert ours.clause_lists() == CNF(from_string=text).clauses
        assert not ours.hard.any() and np.all(ours.weights == 1)
        return
    ref = WCNF(from_string=text)
    assert [c for c, h in zip(ours.clause_lists(), ours.hard, strict=True) if h] == ref.hard
    assert [c for c, h in zip(ours.clause_lists(), ours.hard, strict=True) if not h] == ref.soft
    assert ours.weights[~ours.hard].tolist() == [float(w) for w in ref.wght]
    assert ours.hard.tolist() == [w is None for w in weights]
