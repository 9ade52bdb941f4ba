"""Argument checks shared by every module: each error names the parameter and what it allows."""

from __future__ import annotations

from typing import Any


def check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an int >= 1 (or None if allowed)."""
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        allowed = "None or a positive int" if allow_none else "a positive int"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
