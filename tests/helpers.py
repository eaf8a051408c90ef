"""Names the test modules share: the shipped files they read, and small plain functions.

Only what a test module needs by name lives here: paths used in ``parametrize`` lists
at import time, YAML texts, functions called with arguments.  Setup with a lifetime
(a mounted disk, a temporary file, a patched module) is a fixture in ``conftest.py``;
the independent model is ``reference.py``.  Test modules import from these two modules
and never from one another (see ``conftest.py``).
"""

import contextlib
import importlib
import io
import subprocess
import sys
import time
from pathlib import Path

import neurosim as ns

# ---------------------------------------------------------------- shipped files

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "circuits" / "examples" / "three_cells.yaml"
TW = ROOT / "circuits" / "tap_withdrawal.yaml"
TW_ANATOMICAL = ROOT / "circuits" / "tap_withdrawal_anatomical.yaml"
TW_FITTED = ROOT / "circuits" / "tap_withdrawal_fitted.yaml"
FACTS = ROOT / "circuits" / "data" / "tap_withdrawal_facts.yaml"


def tw_script(name):
    """The script ``scripts/<name>.py``, imported as a module."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


# ---------------------------------------------------------------- the command line

def neurosim(*args, cwd):
    """``python -m neurosim.cli ARGS`` in ``cwd``, as a user runs it: the finished process."""
    return subprocess.run([sys.executable, "-m", "neurosim.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def run_main(monkeypatch, tmp_path, *args):
    """main() in tmp_path: (exit status, stdout, stderr)."""
    from neurosim.cli import main
    monkeypatch.chdir(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(map(str, args)))
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- a run that lasts

#: a run of about an hour of computing: long enough to be signalled or watched
LONG = """name: long
neurons:
  - {name: S, C: 2.0, g_L: 0.2}
  - {name: A, C: 2.0, g_L: 0.2}
synapses:
  - {pre: S, post: A, w: 0.8, type: excitatory}
stimuli:
  drive: {kind: sine, target: S, amplitude: 20.0, frequency: 10.0}
protocols:
  long: {duration: 4000000.0, stimuli: [drive]}
"""


def start(args, cwd):
    """The neurosim command started in the background: the running process."""
    return subprocess.Popen([sys.executable, "-m", "neurosim.cli", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


# ---------------------------------------------------------------- circuits

def oscillator():
    """A fast self-exciting neuron with slow inhibitory feedback: a limit cycle around an
    unstable steady state (checked in test_rest with the reference Jacobian)."""
    return ns.Circuit(
        "relaxation oscillator",
        (ns.Neuron("A", C=10.0, g_L=1.0, E_L=-40.0), ns.Neuron("B", C=100.0, g_L=1.0, E_L=-70.0)),
        (ns.Synapse("A", "A", w=5.0, E=0.0, mu=-40.0, nu=0.5),
         ns.Synapse("A", "B", w=5.0, E=0.0, mu=-40.0, nu=0.5),
         ns.Synapse("B", "A", w=3.0, E=-90.0, mu=-40.0, nu=0.5)),
        protocols={"p": ns.Protocol(400.0)})
