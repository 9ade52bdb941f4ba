"""Argument types and help formatting shared by the ``polystep`` commands (no torch import).

Each type turns a bad value into an argparse error that names the option and the allowed values
(``argument --budget: must be a positive integer, got '0'``) instead of a traceback later.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from pathlib import Path

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj):`(~?)([^`]+)`")


def plain(doc: str | None) -> str:
    """reStructuredText docstring -> plain help text: ``code`` and :role:`~a.b` lose their
    markup (``~`` keeps the last dotted part), and a paragraph's trailing ``::`` becomes ``:``."""
    text = doc or ""
    text = _ROLE.sub(lambda m: m.group(2).split(".")[-1] if m.group(1) else m.group(2), text)
    text = text.replace("``", "")
    return re.sub(r"::\n", ":\n", text)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's paragraphs and lists, and shows each option's default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        hidden = action.default is None or action.default is False
        if not hidden and action.default != argparse.SUPPRESS and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` for ``prog`` whose description is ``doc`` as plain text."""
    return argparse.ArgumentParser(prog=prog, description=plain(doc), formatter_class=HelpFormatter)


def _number(text: str, kind: type) -> int | float:
    value = float(text)  # accepts 1e6 for integers
    if kind is int:
        if not value.is_integer():
            raise ValueError(text)
        return int(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(text)
    return value


def _sign_checked(kind: type, *, zero_ok: bool) -> Callable[[str], int | float]:
    """Type for positive numbers (or non-negative ones, ``zero_ok``) of ``kind``."""
    what = f"a {'non-negative' if zero_ok else 'positive'} {'integer' if kind is int else 'number'}"

    def convert(text: str) -> int | float:
        try:
            value = _number(text, kind)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < 0 or (value == 0 and not zero_ok):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    convert.__name__ = what
    return convert


positive_int = _sign_checked(int, zero_ok=False)
nonneg_int = _sign_checked(int, zero_ok=True)
positive_float = _sign_checked(float, zero_ok=False)


def int_list(item: Callable[[str], int | float] = nonneg_int) -> Callable[[str], list[int]]:
    """Type for a comma-separated list of at least one ``item``."""

    def convert(text: str) -> list[int]:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"must be a comma-separated list, got {text!r}")
        return [int(item(p)) for p in parts]

    return convert


def choice_list(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """Type for a comma-separated list of values from ``allowed`` (at least one)."""

    def convert(text: str) -> list[str]:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        wrong = [p for p in parts if p not in allowed]
        if wrong or not parts:
            raise argparse.ArgumentTypeError(
                f"must be a comma-separated list of {', '.join(allowed)}; got {text!r}"
            )
        return parts

    return convert


def existing_file(text: str) -> Path:
    """Type for a path that must be an existing file."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return path


def existing_dir(text: str) -> Path:
    """Type for a path that must be an existing folder."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {text!r}")
    return path


def torch_device(text: str) -> str:
    """Type for a torch device that exists here (``cpu``, ``cuda``, ``cuda:1``, ...)."""
    import torch  # only the commands that run something parse a device

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"must be a torch device such as cpu or cuda, got {text!r}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine")
    return text
