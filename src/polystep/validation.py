"""Argument checks shared by every module: each error names the parameter and what it allows."""

from __future__ import annotations

from typing import Any

import torch


def check_int(name: str, value: Any, *, minimum: int, allow_none: bool = False) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an int >= ``minimum`` (a bool is
    not), or None if allowed."""
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        allowed = f"None or {allowed}" if allow_none else allowed
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an int >= 1 (or None if allowed)."""
    check_int(name, value, minimum=1, allow_none=allow_none)


def check_float_dtype(name: str, value: Any) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is ``torch.float32`` or
    ``torch.float64`` (the dtypes a search runs in)."""
    if value not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must be torch.float32 or torch.float64, got {value!r}")
