"""Build and load the fused candidate kernels (``fused_kernels.cpp``) on first use.

The kernels are plain C++ on raw arrays (no torch headers; about 15 s of one core to build,
once), so they are compiled with the system's C++ compiler (``$CXX``, else ``g++``, ``c++`` or
``clang++``) into a per-user cache (``$XDG_CACHE_HOME/polystep`` or ``~/.cache/polystep``),
keyed by the source, the flags and the compiler's version, and loaded with ``ctypes``. A
ctypes call releases the GIL, so chunks scored on a thread pool run in parallel.

:func:`library` returns the loaded library, or the reason it is unavailable (no compiler, a
failed build); the evaluator then keeps the eager torch path and says why once.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

SOURCE = Path(__file__).with_name("fused_kernels.cpp")
# -ffp-contract=off: no fused multiply-add (the eager path rounds after each operation);
# -fno-trapping-math: selects on a spike may compute both sides (vectorizes; same values).
FLAGS = ("-O3", "-std=c++17", "-ffp-contract=off", "-fno-trapping-math", "-shared", "-fPIC")

_lock = threading.Lock()
_loaded: ctypes.CDLL | str | None = None

_P = ctypes.c_void_p
_I = ctypes.c_int64
_SINK = "ppppp"  # logits, pair; targets, base, totals (float64; null: logits mode)
_SIGNATURES = {  # argument kinds: "i" int64, "p" pointer, "f" a scalar of the kernel's type
    "lif_trace": "iiipffpp",
    "lif_spikes": "iiipffp",
    "lif_units": "iiiipffp",
    "transpose": "iipp",
    "snn_hidden": "iiiiii" + "pppppppp" + "ffff" + _SINK,
    "snn_output": "iiiii" + "ppppp" + "ff" + _SINK,
    "relu_output": "iiii" + "ppppp" + "i" + _SINK,
    "linear_output": "iiii" + "ppp" + _SINK,
    "relu_relu_hidden": "iiiii" + "ppppppp" + "i" + _SINK,
}


# The kernels that return the number of (candidate, sample) pairs they wrote; others return none.
_PAIRS = {"snn_hidden", "snn_output", "relu_output", "linear_output", "relu_relu_hidden"}


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "polystep"


def _build() -> ctypes.CDLL | str:
    cxx = _compiler()
    if cxx is None:
        return "no C++ compiler found (set CXX, or install g++)"
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
        key = hashlib.sha256(
            "\0".join([SOURCE.read_text(), *FLAGS, version, platform.machine()]).encode()
        ).hexdigest()[:16]
        target = _cache_dir() / f"fused_kernels-{key}.so"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
            os.close(fd)
            done = subprocess.run(
                [cxx, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True
            )
            if done.returncode != 0:
                os.unlink(tmp)
                first = (done.stderr.strip().splitlines() or ["?"])[0]
                return f"building the fused kernels with {cxx} failed: {first}"
            os.replace(tmp, target)  # atomic: a concurrent build never sees half a library
        lib = ctypes.CDLL(str(target))
    except OSError as exc:
        return f"the fused kernels could not be built or loaded: {exc}"
    for name, kinds in _SIGNATURES.items():
        for suffix, scalar in (("_f32", ctypes.c_float), ("_f64", ctypes.c_double)):
            fn = getattr(lib, name + suffix)
            fn.argtypes = [{"i": _I, "p": _P, "f": scalar}[c] for c in kinds]
            fn.restype = _I if name in _PAIRS else None
    return lib


def library() -> ctypes.CDLL | str:
    """The kernel library (built at first call, then cached), or why it is unavailable."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _build()
        return _loaded
