"""Output folders of the benches: checked before any work, and records matched to their config.

A bench never loses a record: it refuses an ``--out`` it cannot write before training (not after),
and a record already in ``--out`` counts as done only when its configuration equals the one asked
for; a record of the same run under another configuration stops the bench with a message that
names the file and the differing settings (pick another ``--out`` or delete the record). A
record or partial that is replaced is never deleted: :func:`archive` moves it to ``stale/``.
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


def archive(path: Path, source: str | None) -> Path:
    """Move ``path`` (a run record or a partial being replaced) to ``stale/`` beside it, named
    ``<stem>.<version><suffix>`` after the code version that wrote it (the first 12 characters
    of its ``source`` digest, ``unrecorded`` when it has none); a name already taken gets
    ``.1``, ``.2``, ... before the suffix, so no earlier stale file is ever overwritten. Returns
    the new path."""
    version = str(source)[:12] if source else "unrecorded"
    folder = path.parent / "stale"
    folder.mkdir(exist_ok=True)
    dest, n = folder / f"{path.stem}.{version}{path.suffix}", 1
    while dest.exists():
        dest, n = folder / f"{path.stem}.{version}.{n}{path.suffix}", n + 1
    os.replace(path, dest)
    return dest
