"""The version of the code a bench record was measured with.

``source`` is a SHA-256 over the path and bytes of every ``.py`` file of the installed
``polystep`` package: it changes exactly when the library code changes (uncommitted edits
included; committing records does not change it), so it is what records are compared on.
``commit`` is the git commit of the checkout, when the package runs from one (``+dirty`` when its
sources have uncommitted changes), for finding that code again; ``package`` is the version string.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

import polystep

PACKAGE_DIR = Path(polystep.__file__).resolve().parent


def source_digest(root: Path = PACKAGE_DIR) -> str:
    """SHA-256 (hex) over the relative path and content of every ``.py`` file under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def git_commit(root: Path = PACKAGE_DIR) -> str | None:
    """HEAD of the git checkout holding ``root`` (``+dirty`` if ``root`` has uncommitted
    changes), or None outside a checkout or without git."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


@functools.cache
def code_version() -> dict[str, str | None]:
    """``{"source": sha256, "commit": git commit or None, "package": version}`` (once per
    process: the code does not change under a running bench)."""
    return {
        "source": source_digest(),
        "commit": git_commit(),
        "package": polystep.__version__,
    }
