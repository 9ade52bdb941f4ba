"""MAX-SAT instances: the padded clause representation, and DIMACS CNF / WCNF reading and writing.

Parsing is vectorised with numpy over the whole byte buffer (no Python loop per clause): a
1M-variable, 4.27M-clause CNF parses in seconds. Accepted input:

* DIMACS CNF: ``c`` comment lines, one ``p cnf <vars> <clauses>`` header, clauses as integer
  literals terminated by ``0`` (several clauses per line, or one clause spread over lines; an
  empty clause is a bare ``0``). SATLIB's ``%`` trailer ends the input.
* WCNF, classic: ``p wcnf <vars> <clauses> [<top>]``, every clause starts with its weight; a
  weight ``>= top`` marks a hard clause.
* WCNF, 2022 MaxSAT Evaluation format: no ``p`` line, a clause starts with ``h`` (hard) or its
  weight.
* Weights are positive integers of any size (2^62 is fine; stored as float64, so exact up to
  2^53) or decimals (``0.5``, ``1e-3``), as python-sat reads them. A WCNF clause ends on its own
  line: a clause running onto the next line means a missing ``0`` and is an error.
* Lines end with LF, CR LF or a lone CR.
* plain, gzip, bzip2 or xz files (detected from the magic bytes, not the file name).

Malformed input raises :class:`ValueError` naming the 1-based line number (and, from
:func:`read_dimacs`, the file): also a header whose clause count disagrees with a clause that runs
across lines (a missing ``0`` merging two clauses), input with no header and no clause, and, with
no header, a variable index far above the number of literals (the solvers' memory grows with the
largest index; give a ``p`` header to ask for that many variables).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_WS = np.zeros(256, dtype=bool)
_WS[[9, 10, 11, 12, 13, 32]] = True
_DIGIT = np.zeros(256, dtype=bool)
_DIGIT[48:58] = True
_WIDE = np.zeros(256, dtype=bool)  # bytes of a decimal weight: '1.5', '2e3', '1E+3'
_WIDE[[ord("."), ord("e"), ord("E"), ord("+")]] = True
_MAX_DIGITS = 18  # longer integers (weights up to 2^63 and beyond) are read one by one
_SPARSE_LIMIT = 2**20  # with no header, larger indices must be backed by as many literals


@dataclass
class MaxSATInstance:
    """Clauses in a padded array, with weights.

    ``literals (m, kmax)`` int32: DIMACS literals (``+v``/``-v`` for variable ``v`` in 1..n),
    ``0`` pads short clauses; an all-zero row is the empty clause (never satisfied).
    ``weights (m,)`` float64; ``hard (m,)`` bool. For plain CNF every clause is soft with weight 1.
    Hard clauses carry weight ``top`` (the WCNF top, or 1 + the total soft weight), so the
    weighted unsatisfied count of an assignment that breaks a hard clause exceeds that of any
    assignment that satisfies all of them.
    """

    num_vars: int
    literals: np.ndarray
    weights: np.ndarray
    hard: np.ndarray
    top: float | None = None
    name: str = ""

    def __post_init__(self) -> None:
        self.literals = np.ascontiguousarray(self.literals, dtype=np.int32)
        if self.literals.ndim != 2:
            raise ValueError(f"literals must be (m, kmax), got shape {self.literals.shape}")
        m = self.literals.shape[0]
        self.weights = np.ascontiguousarray(self.weights, dtype=np.float64).reshape(m)
        self.hard = np.ascontiguousarray(self.hard, dtype=bool).reshape(m)
        if self.literals.size and int(np.abs(self.literals).max()) > self.num_vars:
            raise ValueError("a literal exceeds num_vars")

    @property
    def num_clauses(self) -> int:
        return int(self.literals.shape[0])

    @property
    def num_soft(self) -> int:
        return int((~self.hard).sum())

    @property
    def soft_weight(self) -> float:
        """Total weight of the soft clauses."""
        return float(self.weights[~self.hard].sum())

    def clause_lists(self) -> list[list[int]]:
        """Clauses as Python lists of literals (slow: for small instances and cross-checks)."""
        return [[int(v) for v in row if v != 0] for row in self.literals]


def _line_of(newlines: np.ndarray, position: int) -> int:
    """1-based line number of byte ``position``."""
    return int(np.searchsorted(newlines, position, side="left")) + 1


def _line_breaks(buf: np.ndarray) -> np.ndarray:
    """Positions of the bytes that end a line: every LF, and every CR not followed by LF."""
    cr = buf == 13
    cr[:-1] &= buf[1:] != 10
    return np.flatnonzero((buf == 10) | cr)


_CODECS = (
    (b"\x1f\x8b", "gzip", gzip.decompress),
    (b"BZh", "bzip2", bz2.decompress),
    (b"\xfd7zXZ\x00", "xz", lzma.decompress),
)


def _decompress(data: bytes) -> bytes:
    for magic, kind, decompress in _CODECS:
        if data.startswith(magic):
            try:
                return decompress(data)
            except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as err:
                raise ValueError(f"corrupt or truncated {kind} data ({err})") from None
    return data


def _bad_token(buf: np.ndarray, newlines: np.ndarray, start: int, length: int) -> ValueError:
    token = bytes(buf[start : start + length]).decode("latin-1")
    return ValueError(f"line {_line_of(newlines, start)}: unexpected token {token!r}")


_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_B30 = np.uint64(0x3030303030303030)
_BF0 = np.uint64(0xF0F0F0F0F0F0F0F0)
_B0F = np.uint64(0x0F0F0F0F0F0F0F0F)
_B06 = np.uint64(0x0606060606060606)
_B10 = np.uint64(0x1010101010101010)


def _parse_ints(
    buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray, newlines: np.ndarray
) -> np.ndarray:
    """Integers of the tokens ``buf[starts[i] : starts[i] + lengths[i]]`` (optional leading '-').

    Tokens of up to 8 digits (all of them in practice) are read as one unaligned little-endian
    64-bit word each and converted with SWAR arithmetic; longer ones digit by digit."""
    values = np.zeros(starts.shape[0], dtype=np.int64)
    negative = buf[starts] == ord("-")
    dstart = starts + negative
    dlen = lengths - negative
    bad = dlen < 1
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _bad_token(buf, newlines, int(starts[i]), int(lengths[i]))
    if int(dlen.max(initial=0)) > _MAX_DIGITS:
        i = int(np.flatnonzero(dlen > _MAX_DIGITS)[0])
        raise ValueError(f"line {_line_of(newlines, int(starts[i]))}: integer too long")
    short = dlen <= 8
    if short.any():
        padded = np.zeros(buf.shape[0] + 8, dtype=np.uint8)
        padded[: buf.shape[0]] = buf
        words_view = np.ndarray(
            shape=(buf.shape[0] + 1,), dtype="<u8", buffer=padded.data, strides=(1,)
        )
        sel = np.flatnonzero(short) if not short.all() else None
        ds = dstart if sel is None else dstart[sel]
        dl = (dlen if sel is None else dlen[sel]).astype(np.uint64)
        words = words_view[ds]
        shift = np.uint64(8) * (np.uint64(8) - dl)
        words = words << shift  # digits right-aligned: the last digit in the top byte
        mask = _ONES << shift
        not_digit = (((words & _BF0) ^ _B30) | (((words & _B0F) + _B06) & _B10)) & mask
        if not_digit.any():
            k = int(np.flatnonzero(not_digit)[0])
            k = k if sel is None else int(sel[k])
            raise _bad_token(buf, newlines, int(starts[k]), int(lengths[k]))
        v = words & _B0F
        v = (v * np.uint64(10) + (v >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
        v = (v * np.uint64(100) + (v >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
        v = (v * np.uint64(10000) + (v >> np.uint64(32))) & np.uint64(0x00000000FFFFFFFF)
        if sel is None:
            values = v.astype(np.int64)
        else:
            values[sel] = v.astype(np.int64)
    for length in np.unique(dlen[~short]):
        sel = np.flatnonzero(dlen == length)
        acc = np.zeros(sel.shape[0], dtype=np.int64)
        for j in range(int(length)):
            byte = buf[dstart[sel] + j]
            ok = _DIGIT[byte]
            if not ok.all():
                k = int(sel[np.flatnonzero(~ok)[0]])
                raise _bad_token(buf, newlines, int(starts[k]), int(lengths[k]))
            acc = acc * 10 + (byte.astype(np.int64) - 48)
        values[sel] = acc
    return np.where(negative, -values, values)


def _drop_ranges(num: int, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Boolean keep-mask over ``num`` items, False on every ``[first[i], last[i])``."""
    marks = np.zeros(num + 1, dtype=np.int32)
    np.add.at(marks, first, 1)
    np.add.at(marks, last, -1)
    return np.cumsum(marks[:num]) == 0


def _wide_tokens(
    buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray, newlines: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and float values of the tokens the fast integer path cannot read: decimals
    (``0.5``, ``1e3``) and integers of more than ``_MAX_DIGITS`` digits. Few in practice."""
    marks = np.flatnonzero(_WIDE[buf])
    tok = np.searchsorted(starts, marks, side="right") - 1
    inside = (tok >= 0) & (marks < starts[np.maximum(tok, 0)] + lengths[np.maximum(tok, 0)])
    digits = lengths - (buf[starts] == ord("-"))
    index = np.union1d(tok[inside], np.flatnonzero(digits > _MAX_DIGITS))
    values = np.empty(index.shape[0], dtype=np.float64)
    for j, i in enumerate(index.tolist()):
        text = bytes(buf[starts[i] : starts[i] + lengths[i]]).decode("latin-1")
        try:
            values[j] = int(text) if text.lstrip("-").isdigit() else float(text)
        except (ValueError, OverflowError):
            raise _bad_token(buf, newlines, int(starts[i]), int(lengths[i])) from None
        if not np.isfinite(values[j]):
            raise _bad_token(buf, newlines, int(starts[i]), int(lengths[i]))
    return index, values


def _header(fields: list[str], line: int) -> tuple[str, int, int, float | None]:
    """``(kind, vars, clauses, top)`` of a ``p cnf|wcnf`` line; ``top`` may be a decimal."""
    error = ValueError(f"line {line}: malformed header {' '.join(fields)!r}")
    kind = fields[1] if len(fields) > 1 else ""
    if fields[0] != "p" or kind not in ("cnf", "wcnf") or len(fields) not in (4, 5):
        raise error
    if len(fields) == 5 and kind == "cnf":
        raise error
    try:
        num_vars, num_clauses = int(fields[2]), int(fields[3])
        top = float(fields[4]) if len(fields) == 5 else None
    except ValueError:
        raise error from None
    if min(num_vars, num_clauses) < 0 or (top is not None and not 0 < top < float("inf")):
        raise error
    return kind, num_vars, num_clauses, top


def parse_dimacs(data: bytes | str, *, name: str = "") -> MaxSATInstance:
    """Parse DIMACS CNF or WCNF text (bytes may be gzip/bzip2/xz compressed); see the module
    docstring for what is accepted and refused."""
    if isinstance(data, str):
        data = data.encode()
    data = _decompress(data)
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = _line_breaks(buf)
    ws = _WS[buf]
    # Token boundaries: a token is a maximal run of non-whitespace bytes.
    padded = np.ones(buf.shape[0] + 2, dtype=np.int8)
    padded[1:-1] = ws
    edge = np.diff(padded)
    del padded, ws
    starts = np.flatnonzero(edge == -1)
    ends = np.flatnonzero(edge == 1)
    del edge
    lengths = ends - starts
    head = buf[starts]
    # Letters only start comment ('c'), header ('p'), trailer ('%') lines and WCNF 'h' markers;
    # only those few tokens need their line position.
    special = np.flatnonzero(~(_DIGIT[head] | (head == ord("-"))))
    s_line = np.searchsorted(newlines, starts[special])
    prev_end = np.where(special > 0, ends[np.maximum(special - 1, 0)], 0)
    s_first = (special == 0) | (np.searchsorted(newlines, prev_end) < s_line)
    s_head = head[special]
    num_tokens = starts.shape[0]
    stop = special[s_first & (s_head == ord("%"))]
    if stop.size:
        num_tokens = int(stop[0])
    keep = np.ones(num_tokens, dtype=bool)
    line_start = np.concatenate(([0], newlines + 1))
    line_end = np.concatenate((newlines, [buf.shape[0]]))

    def tokens_of_lines(lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo = np.searchsorted(starts[:num_tokens], line_start[lines])
        hi = np.searchsorted(starts[:num_tokens], line_end[lines])
        return lo, hi

    comment_lines = np.unique(s_line[s_first & (s_head == ord("c")) & (special < num_tokens)])
    if comment_lines.size:
        keep &= _drop_ranges(num_tokens, *tokens_of_lines(comment_lines))
    header_lines = np.unique(s_line[s_first & (s_head == ord("p")) & (special < num_tokens)])
    if header_lines.size > 1:
        raise ValueError(f"line {int(header_lines[1]) + 1}: a second 'p' header line")
    kind, declared_vars, declared_clauses, top = None, None, None, None
    if header_lines.size == 1:
        lo, hi = (int(v[0]) for v in tokens_of_lines(header_lines))
        fields = [
            bytes(buf[st : st + ln]).decode("latin-1")
            for st, ln in zip(starts[lo:hi], lengths[lo:hi], strict=True)
        ]
        keep[lo:hi] = False
        kind, declared_vars, declared_clauses, top = _header(fields, int(header_lines[0]) + 1)
    if num_tokens < starts.shape[0]:
        starts, lengths, head = starts[:num_tokens], lengths[:num_tokens], head[:num_tokens]
    if not keep.all():
        starts, lengths, head = starts[keep], lengths[keep], head[keep]
    # 'h' tokens (2022 WCNF hard marker).
    is_h = (head == ord("h")) & (lengths == 1)
    if is_h.any():
        if kind == "cnf":
            i = int(np.flatnonzero(is_h)[0])
            raise ValueError(f"line {_line_of(newlines, int(starts[i]))}: 'h' in a cnf file")
        kind = "wcnf"
    if kind is None and name.endswith((".wcnf", ".wcnf.gz", ".wcnf.xz", ".wcnf.bz2")):
        kind = "wcnf"
    kind = kind or "cnf"
    if declared_vars is None and not starts.shape[0]:
        raise ValueError("empty input: no 'p' header and no clauses")
    values = np.zeros(starts.shape[0], dtype=np.int64)
    numeric = ~is_h
    wide_index, wide_values = _wide_tokens(buf, starts, lengths, newlines)
    fast = numeric.copy()
    fast[wide_index] = False
    values[fast] = _parse_ints(buf, starts[fast], lengths[fast], newlines)
    values[wide_index] = 1  # never a clause terminator; only a weight may be wide
    zero = values == 0
    zero &= numeric
    # Clause structure: a clause ends at each 0; the last one must be terminated.
    if starts.shape[0] and not zero[-1]:
        raise ValueError(
            f"line {_line_of(newlines, int(starts[-1]))}: last clause is not terminated by 0"
        )
    clause_first = np.concatenate(([0], np.flatnonzero(zero)[:-1] + 1))
    clause_first = clause_first[clause_first < starts.shape[0]]
    clause_last = np.flatnonzero(zero)
    if kind == "wcnf":
        exact = values.astype(np.float64)
        exact[wide_index] = wide_values
        if clause_first.size:
            wt = exact[clause_first]
            hard = is_h[clause_first]
            bad = (~hard) & ((wt <= 0) | zero[clause_first])
            if bad.any():
                i = int(clause_first[np.flatnonzero(bad)[0]])
                raise ValueError(
                    f"line {_line_of(newlines, int(starts[i]))}: a WCNF clause must start with "
                    "a positive weight or 'h'"
                )
        else:
            wt, hard = np.zeros(0, np.float64), np.zeros(0, bool)
        stray_h = is_h.copy()
        stray_h[clause_first] = False
        if stray_h.any():
            i = int(np.flatnonzero(stray_h)[0])
            raise ValueError(f"line {_line_of(newlines, int(starts[i]))}: misplaced 'h'")
        _refuse_spanning(starts, clause_first, clause_last, newlines, "a WCNF clause")
        is_weight = np.zeros(starts.shape[0], dtype=bool)
        is_weight[clause_first] = True
        weights = wt
        if top is not None:
            hard = hard | (weights >= top)
        lit_mask = ~is_weight
    else:
        lit_mask = np.ones(starts.shape[0], dtype=bool)
    wide_literal = wide_index[lit_mask[wide_index]]
    if wide_literal.size:
        i = int(wide_literal[0])
        token = bytes(buf[starts[i] : starts[i] + lengths[i]]).decode("latin-1")
        raise ValueError(
            f"line {_line_of(newlines, int(starts[i]))}: literal {token!r} is not a variable "
            f"index (an integer of at most {np.iinfo(np.int32).max})"
        )
    lits = values[lit_mask]
    lit_starts = starts[lit_mask]
    lit_zero = lits == 0
    num_clauses = int(lit_zero.sum())
    if declared_clauses is not None and num_clauses != declared_clauses:
        _refuse_spanning(
            starts, clause_first, clause_last, newlines,
            f"the header declares {declared_clauses} clauses, {num_clauses} were read, and a "
            "clause",
        )  # fmt: skip
    ends_at = np.flatnonzero(lit_zero)
    clause_len = np.diff(np.concatenate(([-1], ends_at))) - 1
    max_var = int(np.abs(lits).max(initial=0))
    if max_var > np.iinfo(np.int32).max:
        i = int(np.flatnonzero(np.abs(lits) > np.iinfo(np.int32).max)[0])
        raise ValueError(
            f"line {_line_of(newlines, int(lit_starts[i]))}: literal {int(lits[i])} is out of "
            f"range (variable indices go up to {np.iinfo(np.int32).max})"
        )
    if declared_vars is not None and max_var > declared_vars:
        i = int(np.flatnonzero(np.abs(lits) > declared_vars)[0])
        raise ValueError(
            f"line {_line_of(newlines, int(lit_starts[i]))}: literal {int(lits[i])} exceeds the "
            f"declared {declared_vars} variables"
        )
    num_literals = lits.shape[0] - num_clauses
    if declared_vars is None and max_var > max(_SPARSE_LIMIT, 2 * num_literals):
        i = int(np.argmax(np.abs(lits)))
        raise ValueError(
            f"line {_line_of(newlines, int(lit_starts[i]))}: variable index {max_var} with no "
            f"'p' header and only {num_literals} literals: the instance would have {max_var} "
            "variables, nearly all unused (memory grows with the largest index); renumber the "
            "variables, or add a 'p' header to ask for that many"
        )
    num_vars = declared_vars if declared_vars is not None else max_var
    kmax = int(clause_len.max(initial=0))
    literals = np.zeros((num_clauses, max(kmax, 1)), dtype=np.int32)
    nonzero = lits[~lit_zero]
    row = np.repeat(np.arange(num_clauses), clause_len)
    col = np.arange(nonzero.shape[0]) - np.repeat(np.cumsum(clause_len) - clause_len, clause_len)
    literals[row, col] = nonzero
    if kind == "wcnf":
        soft_total = float(weights[~hard].sum())
        if top is None:  # above any soft cost, also where + 1 is lost to float64 rounding
            top = max(soft_total + 1.0, float(np.nextafter(soft_total, np.inf)))
        weights = np.where(hard, top, weights)
    else:
        weights = np.ones(num_clauses, dtype=np.float64)
        hard = np.zeros(num_clauses, dtype=bool)
    return MaxSATInstance(num_vars, literals, weights, hard, top=top, name=name)


def _refuse_spanning(
    starts: np.ndarray,
    clause_first: np.ndarray,
    clause_last: np.ndarray,
    newlines: np.ndarray,
    what: str,
) -> None:
    """Raise if a clause (tokens ``clause_first[i] .. clause_last[i]``) runs across a line end:
    the sign of a missing ``0`` that merged two clauses."""
    first_line = np.searchsorted(newlines, starts[clause_first])
    last_line = np.searchsorted(newlines, starts[clause_last])
    spans = np.flatnonzero(first_line != last_line)
    if spans.size:
        i = int(spans[0])
        raise ValueError(
            f"line {int(first_line[i]) + 1}: {what} runs on to line {int(last_line[i]) + 1} "
            "(a missing 0 at the end of the line?)"
        )


def read_dimacs(path: str | Path) -> MaxSATInstance:
    """Read a CNF or WCNF file (plain, .gz, .bz2 or .xz); errors name the file."""
    path = Path(path)
    name = path.name
    for suffix in (".gz", ".xz", ".bz2"):
        name = name.removesuffix(suffix)
    data = path.read_bytes()
    try:
        return parse_dimacs(data, name=name)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def write_dimacs(instance: MaxSATInstance, path: str | Path | None = None) -> str:
    """Write ``instance`` as DIMACS CNF (all-soft, unit weights) or 2022 WCNF; returns the text.

    Weights are written exactly: integers as integers, others in the shortest decimal form that
    reads back to the same float64. Vectorised enough for millions of clauses (one string join,
    no per-literal formatting loop in Python beyond numpy's).
    """
    lits = instance.literals
    unweighted = not instance.hard.any() and bool(np.all(instance.weights == 1.0))
    mask = lits != 0
    rows = []
    for r in range(lits.shape[1]):
        col = np.where(mask[:, r], lits[:, r].astype(str), "")
        rows.append(col)
    body = rows[0] if rows else np.full(lits.shape[0], "", dtype=str)
    for col in rows[1:]:
        body = np.char.add(np.char.add(body, np.where(col == "", "", " ")), col)
    body = np.char.add(body, np.where(mask.any(axis=1), " 0", "0"))
    if unweighted:
        header = f"p cnf {instance.num_vars} {instance.num_clauses}\n"
    else:
        w = instance.weights
        integral = np.char.mod("%d", np.where(w == np.floor(w), w, 0))
        text = np.where(w == np.floor(w), integral, np.char.mod("%s", w))
        body = np.char.add(np.char.add(np.where(instance.hard, "h", text), " "), body)
        header = ""
    text = header + "\n".join(body.tolist()) + "\n"
    if path is not None:
        Path(path).write_text(text)
    return text
