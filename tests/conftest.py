"""Fixtures and hooks for the whole suite; no test module imports this file.

How the tests share code (one convention, checked by test_layering):

* A test module is named after the module of neurosim it checks (test_compile.py,
  test_simulate.py, test_record.py, test_units.py, ...); a few are named after a shipped
  circuit or a cross-cutting property (test_tap_withdrawal.py, test_data_safety.py).
* Test modules never import one another, nor this file (pytest's maintainers advise
  importing from neither, pytest-dev/pytest#13148): a constant borrowed from another
  test module ties both files' names and layout together, and a bare ``import conftest``
  may find another project's conftest on sys.path.
* Setup with a lifetime (a mounted disk, a temporary file, a patched module) is a
  fixture here, found by name.
* Plain names shared by several modules (paths of shipped files, YAML texts, small
  functions such as ``neurosim(*args, cwd)``) live in ``helpers.py``: a parametrize list
  needs them at import time, where a fixture cannot be used.
* The independent plain-NumPy model is ``reference.py``; it shares no code with the
  kernels.
* Long tests carry ``@pytest.mark.slow``: ``python -m pytest -m "not slow"`` is the quick
  tier, and CI runs everything (``python -m pytest``).
"""

import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs, where this machine allows mounting one (disk-full tests)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root on Linux)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)
