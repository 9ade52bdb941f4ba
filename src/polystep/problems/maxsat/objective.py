"""MAX-SAT objectives over real vectors: ``theta -> assignment 1[theta > 0] -> unsatisfied weight``.

* :class:`ClauseTensors` / :func:`unsat_weight`: batched full evaluation of candidates
  ``(N, n)`` on CPU or CUDA, chunked so memory stays bounded.
* :class:`DeltaEvaluator`: exact costs of :class:`~polystep.blocks.BlockCandidates` (each moves one
  block of ``p`` coordinates away from an incumbent) in time proportional to the clauses the
  candidates touch, from an inverted variable -> clause index built once, vectorised.

The cost of an assignment is the total weight of its unsatisfied clauses (hard clauses weigh
``instance.top``), so for plain CNF it is the number of unsatisfied clauses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from polystep.blocks import BlockCandidates, num_blocks
from polystep.problems.maxsat.io import MaxSATInstance


@dataclass
class ClauseTensors:
    """An instance on a device: ``var (m, k)`` 0-based (padding -> 0), ``positive (m, k)``,
    ``valid (m, k)`` (False on padding), ``weights (m,)`` float64."""

    num_vars: int
    var: torch.Tensor
    positive: torch.Tensor
    valid: torch.Tensor
    weights: torch.Tensor

    @classmethod
    def from_instance(
        cls, instance: MaxSATInstance, device: torch.device | str = "cpu"
    ) -> ClauseTensors:
        lits = torch.as_tensor(instance.literals, dtype=torch.int64)
        valid = lits != 0
        var = torch.where(valid, lits.abs() - 1, torch.zeros_like(lits))
        return cls(
            num_vars=instance.num_vars,
            var=var.to(device),
            positive=(lits > 0).to(device),
            valid=valid.to(device),
            weights=torch.as_tensor(instance.weights, dtype=torch.float64).to(device),
        )


def assignment(theta: torch.Tensor) -> torch.Tensor:
    """The hard assignment ``1[theta > 0]`` (bool, same shape)."""
    return theta > 0


def clause_true_counts(clauses: ClauseTensors, x: torch.Tensor) -> torch.Tensor:
    """Number of true literals per clause for one assignment ``x (n,)`` bool: ``(m,)`` int32."""
    lit_true = (x[clauses.var] == clauses.positive) & clauses.valid
    return lit_true.sum(dim=1, dtype=torch.int32)


def pack_bits(x: torch.Tensor) -> torch.Tensor:
    """Pack up to 64 boolean rows ``(N, n)`` into one int64 word per column: ``(n,)``.

    Bit ``j`` of word ``i`` is ``x[j, i]``."""
    if x.shape[0] > 64:
        raise ValueError(f"at most 64 rows per word, got {x.shape[0]}")
    packed = torch.zeros(x.shape[1], dtype=torch.int64, device=x.device)
    for j in range(x.shape[0]):
        packed |= x[j].to(torch.int64) << j
    return packed


def column_popcount(words: torch.Tensor) -> torch.Tensor:
    """For each bit position ``j`` of int64 ``words (c,)``, how many words have bit ``j`` set:
    ``(64,)`` int64. Bit-sliced adder tree: about 10 word operations per input word."""
    slices = [words]
    while slices[0].shape[0] > 1:
        if slices[0].shape[0] % 2:
            slices = [torch.cat([sl, sl.new_zeros(1)]) for sl in slices]
        a = [sl[0::2] for sl in slices]
        b = [sl[1::2] for sl in slices]
        carry = torch.zeros_like(a[0])
        out = []
        for ai, bi in zip(a, b, strict=True):
            half = ai ^ bi
            out.append(half ^ carry)
            carry = (ai & bi) | (carry & half)
        out.append(carry)
        slices = out
    bits = torch.arange(64, device=words.device)
    counts = torch.zeros(64, dtype=torch.int64, device=words.device)
    if words.shape[0] == 0:
        return counts
    for level, sl in enumerate(slices):
        counts += ((sl[0] >> bits) & 1) << level
    return counts


def unsat_weight(
    clauses: ClauseTensors,
    theta: torch.Tensor,
    *,
    chunk_clauses: int = 1 << 17,
    dense_limit: int = 1 << 21,
) -> torch.Tensor:
    """Weighted unsatisfied count of every candidate: ``theta (N, n)`` or ``(n,)`` -> ``(N,)``
    float64 (a 1-D input gives a 0-d result). Works on any device.

    Candidates are bit-packed 64 to an int64 word, so one gather per literal serves 64
    candidates; clauses are processed in chunks of ``chunk_clauses``. Small problems (at most
    ``dense_limit`` candidate-literal pairs) use a plain boolean gather instead."""
    single = theta.ndim == 1
    x = assignment(theta.reshape(1, -1) if single else theta)
    if x.shape[1] != clauses.num_vars:
        raise ValueError(f"theta must have {clauses.num_vars} columns, got {x.shape[1]}")
    num, m = x.shape[0], clauses.var.shape[0]
    if num * m * max(1, clauses.var.shape[1]) <= dense_limit:  # small: plain boolean gather
        lit_true = (x[:, clauses.var] == clauses.positive) & clauses.valid
        out = (~lit_true.any(dim=2)).to(torch.float64) @ clauses.weights
        return out[0] if single else out
    out = torch.zeros(num, dtype=torch.float64, device=x.device)
    bits = torch.arange(64, device=x.device)
    for g0 in range(0, num, 64):
        rows = min(64, num - g0)
        packed = pack_bits(x[g0 : g0 + rows])
        acc = torch.zeros(rows, dtype=torch.float64, device=x.device)
        for start in range(0, m, chunk_clauses):
            sl = slice(start, start + chunk_clauses)
            words = packed[clauses.var[sl]]
            words = torch.where(clauses.positive[sl], words, ~words)
            words = torch.where(clauses.valid[sl], words, torch.zeros_like(words))
            sat = words[:, 0].clone()
            for col in range(1, words.shape[1]):
                sat |= words[:, col]
            unsat = ~sat
            weights = clauses.weights[sl]
            values = torch.unique(weights)
            if values.numel() <= 8:
                for value in values.tolist():
                    masked = torch.where(weights == value, unsat, torch.zeros_like(unsat))
                    acc += value * column_popcount(masked)[:rows].to(torch.float64)
            else:
                unpacked = ((unsat[:, None] >> bits[:rows]) & 1).to(torch.float64)
                acc += weights @ unpacked
        out[g0 : g0 + rows] = acc
    return out[0] if single else out


def unsat_weight_numpy(instance: MaxSATInstance, x: np.ndarray) -> float:
    """Reference count for one boolean assignment ``x (n,)`` (numpy, used as an oracle)."""
    lits = instance.literals
    valid = lits != 0
    var = np.where(valid, np.abs(lits) - 1, 0)
    lit_true = (np.asarray(x, dtype=bool)[var] == (lits > 0)) & valid
    return float(instance.weights[~lit_true.any(axis=1)].sum())


class DeltaEvaluator:
    """Exact costs of block candidates around an incumbent, touching only the clauses they touch.

    Static index (built once, vectorised): the variable -> literal-occurrence CSR, and the
    "shared" clause groups: a clause holding two or more literals whose variables fall in the same
    block of ``block_dim`` consecutive variables (or the same variable twice). Everything else is
    additive: flipping a set of variables of one block changes the cost by the sum of their
    single-flip scores ``make/break``, except in the shared groups, which are re-counted exactly.

    Per incumbent: ``ntrue (m,)`` true literals per clause, ``score (n,)`` the cost change of
    flipping each variable alone (shared-group literals excluded), ``cost`` the incumbent's cost.
    :meth:`set_assignment` updates them incrementally from the previous incumbent (work
    proportional to the clauses of the variables that changed).
    """

    def __init__(
        self,
        instance: MaxSATInstance,
        block_dim: int,
        *,
        device: torch.device | str = "cpu",
    ) -> None:
        if isinstance(block_dim, bool) or not isinstance(block_dim, int) or block_dim < 1:
            raise ValueError(f"block_dim must be a positive int, got {block_dim!r}")
        self.instance = instance
        self.block_dim = block_dim
        self.device = torch.device(device)
        self.num_vars = n = instance.num_vars
        self.clauses = ClauseTensors.from_instance(instance, self.device)
        var, valid = self.clauses.var, self.clauses.valid
        m, k = var.shape
        self.weights = self.clauses.weights
        # Shared groups: (clause, block) pairs with >= 2 literals.
        num_blk = num_blocks(max(n, 1), block_dim)
        flat_valid = valid.reshape(-1)
        lit_index = torch.nonzero(flat_valid).squeeze(1)
        lit_clause = lit_index // k
        lit_block = var.reshape(-1)[lit_index] // block_dim
        key = lit_clause * num_blk + lit_block
        uniq, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
        in_group = counts[inverse] >= 2
        exact = torch.zeros(m * k, dtype=torch.bool, device=self.device)
        exact[lit_index[in_group]] = True
        self.additive = (flat_valid & ~exact).reshape(m, k)
        group_keys = uniq[counts >= 2]
        self.num_groups = int(group_keys.shape[0])
        if self.num_groups:
            g_lits = lit_index[in_group]
            g_key = key[in_group]
            order = torch.argsort(g_key, stable=True)
            g_lits, g_key = g_lits[order], g_key[order]
            gid = torch.searchsorted(group_keys, g_key)
            first = torch.searchsorted(gid, torch.arange(self.num_groups, device=self.device))
            slot = torch.arange(gid.shape[0], device=self.device) - first[gid]
            width = int(slot.max()) + 1
            g_clause = group_keys // num_blk
            g_block = group_keys % num_blk
            # Re-order groups by block; CSR block -> groups.
            border = torch.argsort(g_block, stable=True)
            rank = torch.empty_like(border)
            rank[border] = torch.arange(self.num_groups, device=self.device)
            self.g_clause = g_clause[border]
            self.g_block = g_block[border]
            self.g_local = torch.zeros(self.num_groups, width, dtype=torch.int64, device=device)
            self.g_positive = torch.zeros(self.num_groups, width, dtype=torch.bool, device=device)
            self.g_valid = torch.zeros(self.num_groups, width, dtype=torch.bool, device=device)
            row = rank[gid]
            lit_var = var.reshape(-1)[g_lits]
            self.g_local[row, slot] = lit_var - self.g_block[row] * block_dim
            self.g_positive[row, slot] = self.clauses.positive.reshape(-1)[g_lits]
            self.g_valid[row, slot] = True
            counts_per_block = torch.bincount(self.g_block, minlength=num_blk)
            self.block_ptr = torch.zeros(num_blk + 1, dtype=torch.int64, device=self.device)
            self.block_ptr[1:] = torch.cumsum(counts_per_block, 0)
        # Variable -> occurrence CSR over all valid literals (flat index into (m, k)).
        occ_var = var.reshape(-1)[lit_index]
        order = torch.argsort(occ_var, stable=True)
        self.occ_lit = lit_index[order]
        self.var_ptr = torch.zeros(n + 1, dtype=torch.int64, device=self.device)
        self.var_ptr[1:] = torch.cumsum(torch.bincount(occ_var, minlength=n), 0)
        self.x: torch.Tensor | None = None
        self.ntrue: torch.Tensor | None = None
        self.score: torch.Tensor | None = None
        self.cost = float("nan")

    # ----- incumbent -------------------------------------------------------------------------
    def _contributions(self, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-literal single-flip score contributions of clauses ``rows`` (all when None):
        returns ``(var (r, k), contribution (r, k))``."""
        c = self.clauses
        if rows is None:
            var, pos, add, w, nt = c.var, c.positive, self.additive, self.weights, self.ntrue
        else:
            var, pos, add = c.var[rows], c.positive[rows], self.additive[rows]
            w, nt = self.weights[rows], self.ntrue[rows]
        lit_true = self.x[var] == pos
        nt = nt[:, None]
        contrib = torch.where(
            lit_true & (nt == 1), w[:, None], torch.zeros((), dtype=w.dtype, device=w.device)
        )
        contrib = contrib - torch.where((~lit_true) & (nt == 0), w[:, None], 0.0)
        return var, torch.where(add, contrib, 0.0)

    def _full_refresh(self, x: torch.Tensor) -> None:
        self.x = x.clone()
        self.ntrue = clause_true_counts(self.clauses, self.x)
        var, contrib = self._contributions(None)
        self.score = torch.bincount(
            var.reshape(-1), weights=contrib.reshape(-1), minlength=self.num_vars
        ).to(torch.float64)
        self.cost = float(self.weights[self.ntrue == 0].sum())

    def set_assignment(self, x: torch.Tensor) -> float:
        """Make ``x (n,)`` bool the incumbent; returns its cost. Incremental from the last one."""
        x = x.to(device=self.device, dtype=torch.bool).reshape(-1)
        if x.shape[0] != self.num_vars:
            raise ValueError(f"assignment must have {self.num_vars} entries, got {x.shape[0]}")
        if self.x is None:
            self._full_refresh(x)
            return self.cost
        changed = torch.nonzero(x != self.x).squeeze(1)
        if changed.numel() == 0:
            return self.cost
        starts, stops = self.var_ptr[changed], self.var_ptr[changed + 1]
        lens = stops - starts
        total = int(lens.sum())
        if total * 4 > self.occ_lit.shape[0]:
            self._full_refresh(x)
            return self.cost
        offs = torch.arange(total, device=self.device) - torch.repeat_interleave(
            torch.cumsum(lens, 0) - lens, lens
        )
        lits = self.occ_lit[torch.repeat_interleave(starts, lens) + offs]
        rows = torch.unique(lits // self.clauses.var.shape[1])
        var, old = self._contributions(rows)
        unsat_before = self.weights[rows][self.ntrue[rows] == 0].sum()
        self.x = x.clone()
        self.ntrue[rows] = clause_true_counts(
            ClauseTensors(
                self.num_vars,
                self.clauses.var[rows],
                self.clauses.positive[rows],
                self.clauses.valid[rows],
                self.weights[rows],
            ),
            self.x,
        )
        _, new = self._contributions(rows)
        self.score += torch.bincount(
            var.reshape(-1), weights=(new - old).reshape(-1), minlength=self.num_vars
        ).to(torch.float64)
        unsat_after = self.weights[rows][self.ntrue[rows] == 0].sum()
        self.cost += float(unsat_after - unsat_before)
        return self.cost

    # ----- candidates ------------------------------------------------------------------------
    def flips(self, z: torch.Tensor, candidates: BlockCandidates) -> torch.Tensor:
        """Which block coordinates each candidate flips relative to the incumbent: ``(N, p)``."""
        coords = candidates.coordinates()
        inside = coords < self.num_vars
        safe = torch.where(inside, coords, torch.zeros_like(coords))
        new_positive = (z[safe] + candidates.offset.to(z.dtype)) > 0
        return (new_positive != self.x[safe]) & inside

    def costs(self, z: torch.Tensor, candidates: BlockCandidates) -> torch.Tensor:
        """Exact cost of every candidate ``(N,)`` float64; the incumbent must be ``1[z > 0]``."""
        if self.x is None:
            raise RuntimeError("call set_assignment() first")
        if candidates.offset.shape[1] != self.block_dim:
            raise ValueError(
                f"candidates have block dim {candidates.offset.shape[1]}, "
                f"evaluator {self.block_dim}"
            )
        flip = self.flips(z, candidates)
        coords = candidates.coordinates()
        safe = torch.where(coords < self.num_vars, coords, torch.zeros_like(coords))
        delta = (self.score[safe] * flip).sum(dim=1)
        if self.num_groups:
            delta = delta + self._group_delta(candidates.block, flip)
        return self.cost + delta

    def _group_delta(self, block: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        gstart = self.block_ptr[block]
        gcount = self.block_ptr[block + 1] - gstart
        total = int(gcount.sum())
        delta = torch.zeros(block.shape[0], dtype=torch.float64, device=self.device)
        if total == 0:
            return delta
        cand = torch.repeat_interleave(torch.arange(block.shape[0], device=self.device), gcount)
        offs = torch.arange(total, device=self.device) - torch.repeat_interleave(
            torch.cumsum(gcount, 0) - gcount, gcount
        )
        group = gstart[cand] + offs
        local = self.g_local[group]
        valid = self.g_valid[group]
        var = self.g_block[group][:, None] * self.block_dim + local
        var = torch.where(valid, var, torch.zeros_like(var))
        lit_true = self.x[var] == self.g_positive[group]
        flipped = flip[cand[:, None], local] & valid
        change = torch.where(flipped, torch.where(lit_true, -1, 1), 0).sum(dim=1)
        clause = self.g_clause[group]
        before = self.ntrue[clause]
        after = before + change
        d = self.weights[clause] * ((after == 0).double() - (before == 0).double())
        return delta.index_add_(0, cand, d)

    def flip_costs(self, var: torch.Tensor, cand: torch.Tensor, num: int) -> torch.Tensor:
        """Exact costs ``(num,)`` of candidates that each flip a set of variables of the incumbent.

        Candidate ``cand[i]`` flips variable ``var[i]`` (no duplicate pairs). Every clause a
        candidate touches is re-counted, so overlaps between its flips are handled exactly."""
        if self.x is None:
            raise RuntimeError("call set_assignment() first")
        out = torch.full((num,), self.cost, dtype=torch.float64, device=self.device)
        if var.numel() == 0:
            return out
        starts, lens = self.var_ptr[var], self.var_ptr[var + 1] - self.var_ptr[var]
        total = int(lens.sum())
        offs = torch.arange(total, device=self.device) - torch.repeat_interleave(
            torch.cumsum(lens, 0) - lens, lens
        )
        lits = self.occ_lit[torch.repeat_interleave(starts, lens) + offs]
        owner = torch.repeat_interleave(cand, lens)
        clause = lits // self.clauses.var.shape[1]
        lit_var = self.clauses.var.reshape(-1)[lits]
        lit_true = self.x[lit_var] == self.clauses.positive.reshape(-1)[lits]
        change = torch.where(lit_true, -1, 1)
        key, inverse = torch.unique(owner * self.ntrue.shape[0] + clause, return_inverse=True)
        summed = torch.zeros(key.shape[0], dtype=torch.int64, device=self.device)
        summed.index_add_(0, inverse, change)
        rows = key % self.ntrue.shape[0]
        before = self.ntrue[rows]
        after = before.to(torch.int64) + summed
        d = self.weights[rows] * ((after == 0).double() - (before == 0).double())
        return out.index_add_(0, key // self.ntrue.shape[0], d)
