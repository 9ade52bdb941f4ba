"""Output folders of the benches: checked before any work, and records matched to their config.

A bench never loses a record: it refuses an ``--out`` it cannot write before training (not after),
and a record already in ``--out`` counts as done only when its configuration equals the one asked
for; a record of the same run under another configuration stops the bench with a message that
names the file and the differing settings (pick another ``--out`` or delete the record).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


class StaleRecordError(ValueError):
    """A record in ``--out`` is the same run under another configuration."""


def ensure_writable(path: Path) -> Path:
    """Create ``path`` (a folder) and check a file can be written in it; ``ValueError`` if not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-check")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"cannot write to {path}: {err.strerror or err}") from None
    return path


def config_mismatch(stored: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: stored -> wanted`` for every key of ``wanted`` whose stored value differs (nested
    dicts compared key by key, named ``outer.inner``)."""
    out = []
    for key, value in wanted.items():
        have = stored.get(key, "<missing>")
        if isinstance(have, dict) and isinstance(value, dict):
            out += config_mismatch(have, value, f"{prefix}{key}.")
        elif have != value:
            out.append(f"{prefix}{key}: {have!r} -> {value!r}")
    return out


def refuse_stale(where: str, run: str, differences: list[str]) -> None:
    """Raise :class:`StaleRecordError` if ``differences`` is not empty."""
    if differences:
        raise StaleRecordError(
            f"{where} already holds {run} under another configuration "
            f"({'; '.join(differences)}); use another --out, or delete that record to rerun it"
        )
