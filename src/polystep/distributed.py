"""Scale-out on ``torch.distributed``: candidates sharded across ranks, losses gathered.

Every rank runs the same script with the same seed, so every rank draws the same rotations,
subspace and candidates and sees the same minibatch. At each step a front end hands its
candidate-scoring callable to :meth:`Shard.score`: the rank scores ITS rows of the step's
candidates, every rank sends its losses to every other rank with one ``all_to_all_single`` (an
all-gather of unequal shares: one number per candidate, plus a header of :data:`HEADER` numbers
per rank, no padding), and every rank applies the identical move. Parameters are never
broadcast: per step each rank receives ``N - own + (W - 1) * HEADER`` numbers, whatever the
model size.

Wire format: float32 while every loss is a float32 number (then the cast is exact); the first
step with a loss that float32 would round is sent again in float64 and the shard stays in
float64 from then on, so the gathered losses are always bit-identical to what one process
computes. The evaluators of :mod:`polystep.evaluate` return float64 means, so a network step
sends 8 bytes a candidate; MAX-SAT costs and float32 objectives send 4.

Without an initialised process group of two or more ranks (and no ``torchrun`` environment)
:meth:`Shard.score` just calls the scorer: nothing changes for a single process.

Checks and faults: every ``check_every`` calls (the first included) each rank hashes its state
(the front end says what: parameters, optimizer or engine state) and the digests are gathered;
a mismatch raises :class:`RankError` on every rank, naming the ranks that differ from rank 0.
A collective that fails (a rank died, or stalled past the process-group timeout) raises
:class:`RankError` naming this rank, the step and the timeout; a scorer that raises on one rank
raises its error there and :class:`RankError` on every other rank at once.

Load balance: rank ``r`` scores one contiguous range of rows (candidates of one layer or expert
stay together, so per-layer work is not repeated on every rank). The ranges are cut so that
their estimated costs are equal: a cost profile over the rows, learned from each rank's
scoring cost (gathered with the losses) and smoothed over steps, says where rows are dear. The
cost is the rank's CPU seconds on a CPU backend (what it computed: other jobs that share its core
do not move the cuts) and wall seconds under NCCL. Candidates of different cost and a slower
rank both shift the cuts; per-rank seconds, rows and candidates/s are in
:attr:`Shard.metrics`.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import itertools
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass, replace
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from polystep.blocks import BlockCandidates

TIMEOUT_ENV = "POLYSTEP_DIST_TIMEOUT_S"  # seconds a collective may wait for a peer
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_CHECK_EVERY = 100
HEADER = 6  # per rank: wall and cost seconds, rows scored, float32-exact flag, dtype code, total
CHECK_MODULUS = 2**16  # the total travels modulo this (exact in float32)
CELLS = 256  # resolution of the cost profile over a step's rows
SMOOTHING = 0.5  # weight of the newest measurement in the running cost profile
FLOOR = 0.01  # cost added to every slice (a fraction of the mean): no slice is free
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)  # dtype codes 0..3
NARROW = (torch.float32, torch.float16, torch.bfloat16)  # exact in float32
FAILED = -2  # dtype code of a rank whose scorer raised (-1: a rank with no rows)


class RankError(RuntimeError):
    """A rank died, stalled past the timeout, or holds a state that differs from rank 0's."""


def timeout_s() -> float:
    """The collective timeout used by :func:`init`: ``$POLYSTEP_DIST_TIMEOUT_S`` or 300 s."""
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return value


def init() -> bool:
    """Join the process group that ``torchrun`` describes (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``) unless one is initialised already; returns whether two or
    more ranks take part. The backend is NCCL when CUDA is available (the GPU ``LOCAL_RANK``),
    else gloo; the collective timeout is :func:`timeout_s`. To choose either yourself, call
    ``torch.distributed.init_process_group`` first."""
    if not dist.is_available():
        return False
    if not dist.is_initialized():
        text = os.environ.get("WORLD_SIZE", "1")
        if not text.isdigit():
            raise ValueError(f"WORLD_SIZE must be a positive int, got {text!r}")
        if int(text) < 2:
            return False
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        seconds = timeout_s()
        _import_group_defaults()
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=seconds))
        except dist.DistError as exc:  # the rendezvous timed out or broke
            why = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise RankError(
                f"rank {os.environ.get('RANK', '?')} of {text}: the process group did not form "
                f"within {seconds:g} s (${TIMEOUT_ENV}): a rank failed or was not started "
                f"before it joined; see that rank's log ({why})"
            ) from exc
        atexit.register(_leave)  # a group left to interpreter exit can abort the process
    return dist.get_world_size() > 1


def _import_group_defaults() -> None:
    """Import ``torch.distributed.nn.functional`` before the group forms. Its functions take
    ``group=group.WORLD`` as a default argument, evaluated at import: imported after the group
    formed (``torch.optim`` imports it through ``torch._dynamo`` when the first optimizer is
    built), those defaults hold the live default group, so ``destroy_process_group`` cannot
    free it. The gloo backend's worker threads then live on into interpreter shutdown, and a
    worker that drops the last reference to a finished collective (tensors whose Python
    objects it must release, which needs the GIL) after shutdown began exits its thread
    inside a destructor: ``terminate called without an active exception``. Imported first, the
    defaults are None and the group, its threads and its store go at :func:`_leave`."""
    import torch.distributed.nn.functional  # noqa: F401


def _leave() -> None:
    """Destroy the process group :func:`init` created (at exit), joining gloo's threads while
    the interpreter is whole (see :func:`_import_group_defaults`). After a clean run every rank
    first waits for the others, so that no rank closes its connections while a peer still uses
    them. A rank leaving on an uncaught exception (``sys.last_value``) does not wait: its peers
    are stopped by the fault handling instead."""
    if not dist.is_initialized():
        return
    if getattr(sys, "last_value", None) is None:
        with contextlib.suppress(Exception):  # a peer already gone: nothing left to wait for
            dist.barrier()
    dist.destroy_process_group()


def is_writer() -> bool:
    """Whether this process writes files (checkpoints, records): rank 0, or a lone process."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def world_size() -> int:
    """Ranks in the default process group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


# -- which rows a rank scores --------------------------------------------------------------------
def bounds_for(profile: torch.Tensor, total: int, world: int) -> torch.Tensor:
    """Row boundaries ``(W + 1,)`` cutting ``total`` rows into ``W`` contiguous ranges of equal
    estimated cost; ``profile (G,)``: the relative cost of each of ``G`` equal slices of the rows
    (positions scale with ``total``)."""
    return torch.tensor(_cuts(_cumulative(profile.double().numpy()), total, world))


def measured_profile(bounds: torch.Tensor, seconds: torch.Tensor, cells: int) -> torch.Tensor:
    """The cost profile ``(cells,)`` that ranges ``bounds (W + 1,)`` taking ``seconds (W,)``
    imply (each range's seconds spread evenly over its rows), normalised to sum 1."""
    bounds_list = [int(b) for b in bounds.tolist()]
    values = [float(v) for v in seconds.tolist()]
    return torch.from_numpy(_measured(bounds_list, values, cells))


# The two above on numpy arrays: a step's bookkeeping is a few hundred numbers, where a numpy
# call costs a microsecond or two, a torch op a few and a Python loop over them tens.
def _cumulative(profile: np.ndarray) -> np.ndarray:
    """The cumulative share ``(G + 1,)`` of the cost up to each cell edge of ``profile (G,)``
    (negative costs count as 0, and every cell costs at least :data:`FLOOR` of the mean)."""
    cells = np.maximum(profile, 0.0)
    floor = cells.sum() * FLOOR / len(cells) + 1e-300  # no slice is free
    cum = np.empty(len(cells) + 1)
    cum[0] = 0.0
    np.cumsum(cells + floor, out=cum[1:])
    cum /= cum[-1]
    return cum


def _cuts(cum: np.ndarray, total: int, world: int) -> list[int]:
    """Boundaries ``W + 1`` at the equal shares ``r / W`` of the cumulative cost ``cum``."""
    cells = len(cum) - 1
    bounds = [0]
    for r, k in enumerate(cum.searchsorted(_shares(world), side="right").tolist(), start=1):
        k = min(k - 1, cells - 1)  # the last cell edge at or below the share r / W
        lo, hi = float(cum[k]), float(cum[k + 1])
        frac = min(max((r / world - lo) / (hi - lo), 0.0), 1.0)
        bounds.append(max(bounds[-1], round((k + frac) / cells * total)))
    return [*bounds, total]


@functools.cache
def _shares(world: int) -> np.ndarray:
    return np.arange(1, world) / world


@functools.lru_cache(maxsize=8)  # a run's step has one size (a few, at most)
def _edges(cells: int, total: int) -> np.ndarray:
    """The rows ``(cells + 1,)`` at the cell edges of ``total`` rows (fractional)."""
    return np.linspace(0.0, 1.0, cells + 1) * total


def _measured(bounds: list[int], seconds: list[float], cells: int) -> np.ndarray:
    """Each range's seconds spread evenly over its rows, summed per cell, normalised."""
    total = bounds[-1]
    kept = [r for r in range(len(seconds)) if bounds[r + 1] > bounds[r]]  # empty ranges: none
    if total <= 0 or not kept:
        return np.full(cells, 1 / cells)
    rows = [bounds[kept[0]], *(bounds[r + 1] for r in kept)]
    spent = [0.0, *itertools.accumulate(seconds[r] for r in kept)]
    # cost up to each cell edge: piecewise linear in the row between range boundaries
    up_to = np.interp(_edges(cells, total), rows, spent)
    cost = up_to[1:] - up_to[:-1]
    whole = cost.sum()
    return cost / whole if whole > 0 else np.full(cells, 1 / cells)


def take(candidates: Any, lo: int, hi: int) -> Any:
    """Candidates ``lo:hi`` of a step (views where the type allows): dense rows ``(N, ...)``,
    :class:`BlockCandidates`, or a MAX-SAT flip-group step (pairs ``var``/``cand`` of ``num``
    candidates, renumbered)."""
    if isinstance(candidates, torch.Tensor):
        return candidates[lo:hi]
    if isinstance(candidates, BlockCandidates):
        return BlockCandidates(candidates.block[lo:hi], candidates.offset[lo:hi], candidates.dim)
    if all(hasattr(candidates, name) for name in ("var", "cand", "num")):
        keep = (candidates.cand >= lo) & (candidates.cand < hi)
        return replace(
            candidates, var=candidates.var[keep], cand=candidates.cand[keep] - lo, num=hi - lo
        )
    raise TypeError(
        f"cannot split candidates of type {type(candidates).__name__} across ranks: expected "
        "a tensor of rows, BlockCandidates or flip-group candidates"
    )


def count(candidates: Any) -> int:
    """Number of candidates in ``candidates`` (any type :func:`take` splits)."""
    if hasattr(candidates, "num"):
        return int(candidates.num)
    return len(candidates)


# -- state digests -------------------------------------------------------------------------------
def digest(value: Any) -> bytes:
    """SHA-256 of ``value``: tensors (dtype, shape, bytes), generators (their state), modules
    and objects with ``state_dict()``, dataclasses (their fields), containers, plain values."""
    sha = hashlib.sha256()
    _feed(sha, value)
    return sha.digest()


def _feed(sha: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        flat = value.detach().reshape(-1).contiguous().cpu()
        sha.update(f"T{flat.dtype}{tuple(value.shape)}".encode())
        sha.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    elif isinstance(value, torch.Generator):
        _feed(sha, value.get_state())
    elif isinstance(value, torch.nn.Module):
        _feed(sha, value.state_dict())
    elif is_dataclass(value) and not isinstance(value, type):
        sha.update(type(value).__name__.encode())
        for item in fields(value):
            _feed(sha, (item.name, getattr(value, item.name)))
    elif isinstance(value, dict):
        sha.update(b"{")
        for key in sorted(value, key=repr):
            _feed(sha, (key, value[key]))
        sha.update(b"}")
    elif isinstance(value, list | tuple):
        sha.update(b"(")
        for item in value:
            _feed(sha, item)
        sha.update(b")")
    elif callable(getattr(value, "state_dict", None)):
        _feed(sha, value.state_dict())
    else:
        sha.update(repr(value).encode())


# -- the shard -----------------------------------------------------------------------------------
Scorer = Callable[..., torch.Tensor]


@dataclass
class Shard:
    """Splits each step's candidates over the ranks of the default process group.

    ``check_every``: calls between digest checks (the first call always checks).
    ``metrics`` after each distributed call: ``world_size``, ``rank``, ``candidates``,
    ``rank_candidates``, ``rank_seconds`` (wall), ``rank_cost_seconds`` (what the balancer
    equalises) and ``rank_evals_per_s`` (lists, one per rank),
    ``wire_dtype``, ``bytes_sent`` and ``bytes_received`` (this rank, to and from the others),
    ``comm_seconds``.
    """

    check_every: int = DEFAULT_CHECK_EVERY
    calls: int = 0
    wide: bool = False
    profile: np.ndarray = field(default_factory=lambda: np.full(CELLS, 1 / CELLS))
    sent: int = 0  # bytes this rank sent to the others in the last call
    received: int = 0  # ... and received from them
    _cum: np.ndarray | None = field(default=None, init=False, repr=False)  # of the profile
    _last: tuple[Any, ...] = field(default=(), init=False, repr=False)  # the last call, for metrics

    def __post_init__(self) -> None:
        if isinstance(self.check_every, bool) or not isinstance(self.check_every, int):
            raise ValueError(f"check_every must be a positive int, got {self.check_every!r}")
        if self.check_every < 1:
            raise ValueError(f"check_every must be a positive int, got {self.check_every!r}")
        init()  # join now: a rank that fails after this exits, and the others hear it at once

    @property
    def active(self) -> bool:
        """Whether two or more ranks share the work (joins a torchrun group on first use)."""
        return init()

    def score(self, fn: Scorer, candidates: Any, *args: Any, state: Any = None) -> torch.Tensor:
        """All losses ``(N,)`` of ``candidates``: this rank runs ``fn(its rows, *args)``, the
        ranks exchange losses. ``state`` (default: the candidates) is hashed every
        ``check_every`` calls and must be identical on every rank."""
        if not self.active:
            return fn(candidates, *args)
        world, rank, device = dist.get_world_size(), dist.get_rank(), _device()
        # what the balancer equalises: CPU seconds of this process on a CPU backend (the work
        # it did; other jobs sharing its core do not count), wall seconds where a GPU works
        clock = time.perf_counter if device.type == "cuda" else time.process_time
        if self.calls % self.check_every == 0:
            self.check(candidates if state is None else state)
        self.calls += 1
        self.sent = self.received = 0
        total = count(candidates)
        if self._cum is None:
            self._cum = _cumulative(self.profile)
        bounds = _cuts(self._cum, total, world)
        lo, hi = bounds[rank], bounds[rank + 1]
        start, cost = time.perf_counter(), clock()
        local, failure = None, None
        try:  # a failure is sent to the other ranks, so that they stop now, not at the timeout
            local = fn(take(candidates, lo, hi), *args) if hi > lo else None
            if local is not None:
                local = torch.as_tensor(local).reshape(-1)
                if local.shape[0] != hi - lo:
                    raise ValueError(f"scorer returned {local.shape[0]} losses for {hi - lo} rows")
        except Exception as exc:
            local, failure = None, exc
        seconds = (time.perf_counter() - start, clock() - cost)
        where = (world, rank, device)
        losses, headers = self._exchange(local, bounds, total, seconds, where, failure is not None)
        if failure is not None:  # the others know now: this rank raises its own error
            raise failure
        failed = [r for r, head in enumerate(headers) if head[4] == FAILED]
        if failed:
            raise RankError(
                f"rank {rank}: the scorer raised on ranks {failed} at call {self.calls} (their "
                "own error is raised there)"
            )
        self._record(headers, bounds, total, rank, time.perf_counter() - start - seconds[0])
        return losses

    def check(self, state: Any) -> None:
        """Raise :class:`RankError` on every rank unless all ranks hold the same ``state``."""
        mine = torch.frombuffer(bytearray(digest(state)[:8]), dtype=torch.int64).to(_device())
        every = torch.empty(dist.get_world_size(), dtype=torch.int64, device=_device())
        self._collective("digest check", lambda: dist.all_gather_single(every, mine))
        every = every.cpu()
        differ = torch.nonzero(every != every[0]).flatten().tolist()
        if differ:
            raise RankError(
                f"rank {dist.get_rank()}: ranks {differ} hold parameters or optimizer state that "
                f"differ from rank 0's (state digest check at call {self.calls}): every rank "
                "must run the same script with the same seed, data order and checkpoint"
            )

    def _exchange(
        self,
        local: torch.Tensor | None,
        bounds: list[int],
        total: int,
        seconds: tuple[float, float],
        where: tuple[int, int, torch.device],
        failed: bool = False,
    ) -> tuple[torch.Tensor, list[list[float]]]:
        """Send this rank's losses to every rank (NaN for rows of a ``failed`` scorer); returns
        all losses ``(N,)`` and every rank's header (``W`` lists of :data:`HEADER` numbers);
        ``where``: world size, this rank, the device collectives use."""
        code = -1.0 if local is None else float(_dtype_code(local.dtype))
        code = float(FAILED) if failed else code
        exact = 1.0
        if local is not None and not self.wide and local.dtype not in NARROW:
            local = local.detach()
            rounded = local.to(torch.float32).to(local.dtype)
            if not torch.equal(rounded, local):  # NaN differs from itself: look closer
                exact = float(bool(((rounded == local) | torch.isnan(local)).all()))
        size = 0 if local is None else len(local)
        header = [*seconds, float(size), exact, code, float(total % CHECK_MODULUS)]
        losses, headers = self._send(local, bounds, header, self.dtype, where)
        if any(head[5] != total % CHECK_MODULUS for head in headers):
            raise RankError(
                f"rank {where[1]}: ranks disagree on the number of candidates "
                f"({[head[5] for head in headers]}, modulo {CHECK_MODULUS}): their states have "
                "diverged"
            )
        if any(head[4] == FAILED for head in headers):
            return torch.empty(0), headers
        if not all(head[3] == 1 for head in headers):  # some loss is not a float32 number
            self.wide = True
            losses, headers = self._send(local, bounds, header, self.dtype, where)
        codes = [int(head[4]) for head in headers if head[4] >= 0]
        return losses.to(DTYPES[max(codes)] if codes else torch.float64), headers

    @property
    def dtype(self) -> torch.dtype:
        """The dtype losses travel in: float32 until a loss needs more."""
        return torch.float64 if self.wide else torch.float32

    def _send(
        self, local: torch.Tensor | None, bounds: list[int], header: list[float],
        dtype: torch.dtype, where: tuple[int, int, torch.device],
    ) -> tuple[torch.Tensor, list[list[float]]]:  # fmt: skip
        """One ``all_to_all_single``: this rank's header and losses to every rank (no padding:
        rank ``r`` sends ``HEADER`` numbers and its rows' losses); all losses ``(N,)`` in
        ``dtype`` and every rank's header. The buffers are put together and taken apart in
        numpy (a step's bookkeeping: a few numpy calls cost less than torch ops)."""
        world, rank, device = where
        sizes = [HEADER + hi - lo for lo, hi in itertools.pairwise(bounds)]
        starts = list(itertools.accumulate(sizes, initial=0))
        width = sizes[rank]
        rows = np.empty((world, width), np.float64 if dtype == torch.float64 else np.float32)
        rows[:, :HEADER] = header  # the same numbers to every rank
        if local is None:
            rows[:, HEADER:] = math.nan
        else:  # rounds to the wire dtype, moves to the CPU
            rows[:, HEADER:] = local.detach().to(device="cpu", dtype=dtype).numpy()
        send = torch.from_numpy(rows.reshape(-1)).to(device)
        out = torch.empty(starts[-1], dtype=dtype, device=device)
        self._collective(
            "loss exchange", lambda: dist.all_to_all_single(out, send, sizes, [width] * world)
        )
        self.sent += (world - 1) * width * rows.itemsize
        self.received += (starts[-1] - width) * rows.itemsize
        flat = out.cpu().numpy()
        headers = [flat[at : at + HEADER].tolist() for at in starts[:-1]]
        pieces = [flat[at + HEADER : end] for at, end in itertools.pairwise(starts)]
        return torch.from_numpy(np.concatenate(pieces)), headers

    def _collective(self, what: str, op: Callable[[], Any]) -> None:
        try:
            op()
        except (RuntimeError, ValueError) as exc:  # DistBackendError is a RuntimeError
            text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise RankError(
                f"rank {dist.get_rank()} of {dist.get_world_size()}: {what} at call "
                f"{self.calls} failed: another rank died, stalled past the process group's "
                f"timeout (${TIMEOUT_ENV} when polystep starts the group) or left the run "
                f"({text})"
            ) from exc

    def _record(
        self,
        headers: list[list[float]],
        bounds: list[int],
        total: int,
        rank: int,
        comm_seconds: float,
    ) -> None:
        cost = [max(head[1], 1e-9) for head in headers]
        self.profile = SMOOTHING * _measured(bounds, cost, CELLS) + (1 - SMOOTHING) * self.profile
        self._cum = _cumulative(self.profile)
        self._last = (headers, bounds, total, rank, comm_seconds)

    @property
    def metrics(self) -> dict[str, Any]:
        """The last distributed call's figures (see the class docstring); empty before one."""
        if not self._last:
            return {}
        headers, bounds, total, rank, comm_seconds = self._last
        counts = [hi - lo for lo, hi in itertools.pairwise(bounds)]
        seconds = [max(head[0], 1e-9) for head in headers]
        return {
            "world_size": len(counts),
            "rank": rank,
            "candidates": total,
            "rank_candidates": counts,
            "rank_rows": [list(pair) for pair in itertools.pairwise(bounds)],
            "rank_seconds": [round(s, 6) for s in seconds],
            "rank_cost_seconds": [round(max(head[1], 1e-9), 6) for head in headers],
            "rank_evals_per_s": [round(head[2] / s, 1) for head, s in zip(headers, seconds)],
            "wire_dtype": "float64" if self.wide else "float32",
            "bytes_sent": self.sent,
            "bytes_received": self.received,
            "comm_seconds": round(comm_seconds, 6),
        }


def _device() -> torch.device:
    """Where collective buffers live: the current CUDA device under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _dtype_code(dtype: torch.dtype) -> int:
    return DTYPES.index(dtype) if dtype in DTYPES else 1


def sharded(objective: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``objective: (N, dim) -> (N,)`` run on this rank's rows only; every rank gets all ``N``
    values (for ask/tell: ``es.tell(sharded(f)(es.ask()))``). A single process calls it as is."""
    shard = Shard()
    return lambda points: shard.score(objective, points)


def report(owner: Any) -> dict[str, Any]:
    """``owner.shard``'s last distributed step as flat metrics (empty for a single process):
    ``world_size``, ``rank{r}_evals_per_s`` (each rank's candidates/s while scoring),
    ``comm_bytes_sent`` and ``comm_bytes_received`` (this rank's loss exchange, in bytes)."""
    metrics = getattr(getattr(owner, "shard", None), "metrics", None)
    if not metrics:
        return {}
    row: dict[str, Any] = {"world_size": metrics["world_size"]}
    for rank, rate in enumerate(metrics["rank_evals_per_s"]):
        row[f"rank{rank}_evals_per_s"] = rate
    row["comm_bytes_sent"] = metrics["bytes_sent"]
    row["comm_bytes_received"] = metrics["bytes_received"]
    return row
