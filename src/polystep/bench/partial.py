"""Mid-run checkpoints ("partials") of bench runs: a run killed part-way resumes later from its
last checkpoint and ends with the record an uninterrupted run writes.

Every method writes ``OUT/partial/<task>__<method>__seed<seed>.ckpt`` (a
:mod:`polystep.checkpoint` file) every :data:`EVERY_SECONDS` wall seconds. A PolyStep or Adam
run trains through :func:`polystep.training.train`, whose checkpoint (written when the run ends
too) holds the model, the optimizer, the loop state (data order, forward passes and training
seconds spent) and the state of its callbacks: the selection (curve, best weights) and a
:class:`RunLedger` (the run's configuration and code version, its wall seconds so far and how
often it was resumed). A vector baseline (OpenAI-ES, SPSA, CMA-ES) writes the same
``callbacks`` list (selection, then ledger) beside the baseline's ``state_dict()``, the data
stream's position and the budget spent (:mod:`polystep.bench.methods`). When the partial was
written under the configuration and code version asked for, the run resumes it; otherwise it is
moved to ``OUT/partial/stale/`` and the run starts over. The partial is deleted once the run's
JSON record is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polystep.bench.outdir import archive
from polystep.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from polystep.distributed import is_writer

# Wall seconds between two checkpoints of a run: a resume redoes at most this much. A write
# (about 1 MB for the full-scale MoE, with the selected weights) takes some 20 ms.
EVERY_SECONDS = 120.0
LEDGER_KEYS = frozenset({"identity", "wall_seconds", "resumes"})


def partial_path(out_dir: Path, task: str, method: str, seed: int) -> Path:
    return out_dir / "partial" / f"{task}__{method}__seed{seed}.ckpt"


class RunLedger:
    """A ``train()`` callback with state only: the run's ``identity`` (what the runner compares
    a partial with: task, scale, configuration, code version), its wall seconds over all the
    sessions that ran it (each counted up to its last checkpoint; the session that finishes, in
    full) and the number of times it was resumed."""

    def __init__(self, identity: dict[str, Any]) -> None:
        self.identity = identity
        self.resumes = 0
        self.earlier_seconds = 0.0  # wall seconds of the earlier sessions
        self._started = time.perf_counter()

    @property
    def wall_seconds(self) -> float:
        return self.earlier_seconds + time.perf_counter() - self._started

    def state_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "wall_seconds": self.wall_seconds,
            "resumes": self.resumes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the ledger of an earlier session (the runner has checked the identity)."""
        if not isinstance(state, dict) or set(state) != LEDGER_KEYS:
            raise ValueError(f"not a RunLedger state (keys: {sorted(LEDGER_KEYS)})")
        if type(state["resumes"]) is not int or type(state["wall_seconds"]) not in (int, float):
            raise ValueError("a RunLedger state needs an int resumes and a number wall_seconds")
        self.earlier_seconds = float(state["wall_seconds"])
        self.resumes = state["resumes"] + 1


@dataclass
class Partial:
    """Where a run's checkpoints go, whether to resume from the one there, and its ledger."""

    path: Path
    resume: bool
    ledger: RunLedger
    last_write: float = field(default_factory=time.perf_counter)

    def train_settings(self) -> dict[str, Any]:
        """The :class:`~polystep.training.TrainConfig` fields that checkpoint and resume."""
        return {
            "checkpoint_path": self.path,
            "checkpoint_every_seconds": EVERY_SECONDS,
            "resume": self.path if self.resume else None,
        }

    def load(self) -> dict[str, Any] | None:
        """The payload to resume from; None when the run starts over."""
        return load_checkpoint(self.path) if self.resume else None

    def save_if_due(self, payload: Callable[[], dict[str, Any]]) -> None:
        """Write ``payload()`` (plain data) when :data:`EVERY_SECONDS` wall seconds have passed
        since the last write (or since this object was made); rank 0 writes."""
        if time.perf_counter() - self.last_write < EVERY_SECONDS:
            return
        if is_writer():
            save_checkpoint(self.path, payload())
        self.last_write = time.perf_counter()

    def discard(self) -> None:
        """Delete the checkpoint (the run's record is written); rank 0 only."""
        discard(self.path)


def discard(path: Path) -> None:
    """Delete the partial at ``path`` and a temporary file a killed write left; rank 0 only."""
    if is_writer():
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".tmp").unlink(missing_ok=True)


def stored_identity(path: Path) -> dict[str, Any]:
    """The identity a bench partial was written under; CheckpointError if it has none."""
    payload = load_checkpoint(path)
    callbacks = payload.get("callbacks") if isinstance(payload, dict) else None
    ledger = callbacks[-1] if isinstance(callbacks, list) and callbacks else None
    if not (
        isinstance(ledger, dict)
        and set(ledger) == LEDGER_KEYS
        and isinstance(ledger["identity"], dict)
    ):
        raise CheckpointError(f"{str(path)!r} is not a bench partial (no run ledger)")
    return ledger["identity"]


def open_partial(
    path: Path,
    identity: dict[str, Any],
    differences: Callable[[dict[str, Any]], list[str]],
    log: Any = print,
) -> Partial:
    """The partial of a run about to start: resumed when the file at ``path`` was written under
    ``identity`` (``differences(stored identity)`` is empty); otherwise moved aside (rank 0),
    with the reason logged, and the run starts over."""
    ledger = RunLedger(identity)
    if not path.exists():
        return Partial(path, False, ledger)
    stored: dict[str, Any] | None = None
    try:
        stored = stored_identity(path)
        reasons = differences(stored)
    except CheckpointError as err:
        reasons = [str(err)]
    if not reasons:
        log(f"resume {path.name} (same configuration and code)")
        return Partial(path, True, ledger)
    if is_writer():  # under torchrun every rank decides the same; rank 0 moves the file
        dest = archive(path, ((stored or {}).get("code") or {}).get("source"))
        moved = f"{dest.parent.name}/{dest.name}"
        log(f"start over: {path.name} moved to {moved} ({'; '.join(reasons)})")
    return Partial(path, False, ledger)
