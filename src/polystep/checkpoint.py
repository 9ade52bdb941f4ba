"""Checkpoint files: plain data only, verified by a SHA-256 digest, written atomically.

A file is a fixed header (magic bytes, format version, payload length, SHA-256 of the payload)
followed by the payload: ``torch.save`` of tensors, numbers, strings, None and lists, tuples and
dicts of them. Reading checks the header, the length and the digest before unpickling anything,
then unpickles with ``weights_only=True``: a foreign, truncated or altered file raises a
:class:`CheckpointError` naming its path, and a payload that would run code is refused unrun.
A write goes to a temporary file in the same folder, is fsynced, then renamed over the target:
a crash at any point leaves the previous checkpoint or the new one, never part of one.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

MAGIC = b"polystep-ckpt\n\x00\x00"
FORMAT_VERSION = 1
HEADER = struct.Struct("<16sIQ32s")  # magic, version, payload bytes, SHA-256 of the payload
PLAIN = (str, int, float, bool, type(None))  # exact types: np.float64 and namedtuples do not load


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: foreign, truncated, corrupted, unsafe or mismatched."""


def check_plain(value: Any, where: str = "payload") -> None:
    """Raise a TypeError naming the entry unless ``value`` holds only tensors, numbers, strings,
    None, and lists, tuples and dicts (string or int keys) of them."""
    if isinstance(value, torch.Tensor) or type(value) in PLAIN:
        return
    if type(value) in (list, tuple):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
        return
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            if type(key) not in (str, int):
                raise TypeError(f"checkpoint {where} has a key of type {type(key).__name__}")
            check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"checkpoint {where} is a {type(value).__name__}: checkpoints hold only tensors, "
        "numbers, strings, None and lists/tuples/dicts of them (so they load with weights_only)"
    )


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plain data, see :func:`check_plain`) to ``path`` atomically."""
    path = Path(path)
    check_plain(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getbuffer()
    header = HEADER.pack(MAGIC, FORMAT_VERSION, len(body), hashlib.sha256(body).digest())
    atomic_write(path, header, body)


def atomic_write(path: Path, *parts: bytes | memoryview) -> None:
    """``parts`` to a temporary file next to ``path``, fsync, rename over ``path``, fsync the
    folder. On any error the temporary file is removed and ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            for part in parts:
                fh.write(part)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # make the rename itself durable
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def load_checkpoint(path: str | Path) -> Any:
    """The payload of the checkpoint at ``path``, verified; a :class:`CheckpointError` naming
    the path when the file is not a complete, unaltered polystep checkpoint of plain data."""
    path = Path(path)
    name = repr(str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {name}: {exc.strerror or exc}") from exc
    if len(data) < HEADER.size or not data.startswith(MAGIC):
        raise CheckpointError(
            f"{name} is not a polystep checkpoint (no polystep header; only files written by "
            "polystep's save_checkpoint are read)"
        )
    _, version, length, digest = HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {name} has format version {version}, this polystep reads version "
            f"{FORMAT_VERSION}"
        )
    body = memoryview(data)[HEADER.size :]
    if len(body) != length:
        raise CheckpointError(
            f"checkpoint {name} is truncated or has trailing bytes: {len(body)} payload bytes, "
            f"the header says {length}"
        )
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(
            f"checkpoint {name} is corrupted: the SHA-256 of its payload does not match the "
            "digest stored when it was written"
        )
    try:
        return torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as exc:  # anything torch refuses: the file is unusable, say which one
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        raise CheckpointError(
            f"checkpoint {name} was refused without running it: it holds more than tensors and "
            f"plain data ({reason})"
        ) from exc
