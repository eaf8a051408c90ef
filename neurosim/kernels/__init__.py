"""Numba kernels: arrays and scalars in, numbers out.

Only :mod:`neurosim.integrators` and the tests import these.  Array conventions:
``i`` is a postsynaptic neuron, ``j`` a presynaptic one, ``k`` an edge.  The parameter
vector ``theta`` is laid out by :func:`neurosim.compile.parameter_layout`.

The kernels compile into a cache folder named after a digest of this package's source
(see :func:`cache_dir`); where ``NUMBA_CACHE_DIR`` names a folder, that folder holds it.
"""

import hashlib
import os
import shutil
from pathlib import Path

import numba


def source_digest(folder: Path) -> str:
    """A short digest of every ``.py`` file in ``folder`` (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def cache_dir(folder: Path = Path(__file__).parent, base: str = "") -> Path:
    """Where the kernels in ``folder`` cache their machine code: ``numba-<digest>``.

    Numba invalidates a cached function when its own file changes, not when a function
    it calls changes in another file, so an edit to ``network.py`` (or a ``git pull``
    into an editable install, or an upgrade) would leave callers in ``adaptive.py``
    running the old right-hand side.  A folder per source digest makes any change start
    a fresh cache.  It lives under ``base`` (``NUMBA_CACHE_DIR``) if given, else in the
    package's ``__pycache__`` if writable, else in the user's cache.
    """
    name = f"numba-{source_digest(folder)}"
    if base:
        return Path(base) / "neurosim" / name
    local = folder / "__pycache__"
    if _writable(local):
        return local / name
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return home / "neurosim" / name


def _use_cache_dir() -> str:
    """Point Numba at :func:`cache_dir` while the kernel modules are defined (their cache
    locations are fixed then), remove folders of earlier sources, and return the setting
    to restore, so that other packages' caches are untouched (``NUMBA_CACHE_DIR`` too:
    the user's folder holds ours in a subfolder per source digest)."""
    previous = numba.config.CACHE_DIR
    target = cache_dir(base=previous)
    target.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob("numba-*"):
        if stale != target:
            shutil.rmtree(stale, ignore_errors=True)
    numba.config.CACHE_DIR = str(target)
    return previous


_previous_cache_dir = _use_cache_dir()
try:
    from neurosim.kernels import (adaptive, batch, fixed, lockstep, network,  # noqa: F401,E402
                                  sensitivity, steady)
finally:
    numba.config.CACHE_DIR = _previous_cache_dir
