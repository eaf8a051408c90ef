"""Reliability: signals, output safety, numerical guards, concurrency, CLI fuzzing."""

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import neurosim as ns
from neurosim.cli import main
from neurosim.errors import ResultFileError
from helpers import EXAMPLE, LONG, ROOT, start, wait_for

@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_run_keeps_a_valid_incomplete_file(tmp_path, signum):
    (tmp_path / "long.yaml").write_text(LONG)
    proc = start(["run", "long.yaml", "-i", "euler", "--dt", "0.01", "--dt-out", "1.0",
                  "-o", "out.h5"], tmp_path)
    wait_for(tmp_path / "out.h5.partial")
    time.sleep(2.0)  # past loading the kernels: the run is computing and writing
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "interrupted" in err and "incomplete" in err and "Traceback" not in err
    assert not (tmp_path / "out.h5.partial").exists()
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert not f.attrs["complete"] and f.attrs["status"] == "interrupted"
        assert 0 < f["time"].shape[0] == f["V"].shape[0] < 4_000_001
    result = ns.load_result(tmp_path / "out.h5")
    assert result.status == "interrupted" and np.all(np.isfinite(result.V))


@pytest.mark.slow
def test_interrupted_fit_resumes_from_its_checkpoint(tmp_path):
    (tmp_path / "fit.yaml").write_text(
        "free:\n  - {select: 'synapses[*].w', bounds: [0, 3]}\n"
        "optimizer: {generations: 100000, polish: false}\nsimulation: {dt_out: 10.0}\n")
    tw, data = ROOT / "circuits" / "tap_withdrawal.yaml", ROOT / "circuits" / "data" / "tap_withdrawal_behaviour.csv"
    proc = start(["fit", tw, data, "--fit", "fit.yaml", "-o", "f.yaml"], tmp_path)
    wait_for(tmp_path / "f_checkpoint.json")
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "--resume" in err
    (tmp_path / "fit.yaml").write_text(
        "free:\n  - {select: 'synapses[*].w', bounds: [0, 3]}\n"
        "optimizer: {method: gradient, maxiter: 3}\nsimulation: {dt_out: 10.0}\n")
    resumed = start(["fit", tw, data, "--fit", "fit.yaml", "-o", "f.yaml", "--resume"], tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert (tmp_path / "f.yaml").exists() and not (tmp_path / "f_checkpoint.json").exists()


def test_results_are_written_under_a_temporary_name(tmp_path):
    c = ns.load_circuit(EXAMPLE)
    seen = []

    class Spy(ns.HDF5Recorder):
        def append(self, t, V):
            seen.append((self.partial.exists(), self.path.exists()))
            super().append(t, V)

    ns.simulate(c, "baseline", recorder=Spy(tmp_path / "r.h5"))
    assert seen and all(partial and not final for partial, final in seen)
    assert (tmp_path / "r.h5").exists() and not (tmp_path / "r.h5.partial").exists()


@pytest.mark.parametrize("target,match", [
    ("missing_dir/r.h5", "no directory"),
    (".", "is a directory"),
    ("/proc/neurosim_test.h5", "cannot write"),
])
def test_unwritable_outputs_are_refused_clearly(tmp_path, target, match):
    path = target if target.startswith("/") else tmp_path / target
    with pytest.raises(ResultFileError, match=match):
        ns.simulate(ns.load_circuit(EXAMPLE), "baseline", recorder=ns.HDF5Recorder(path))


def test_run_exceeding_max_steps_stops_with_a_hint():
    c = ns.Circuit("stiff", (ns.Neuron("A", C=1e-4, g_L=10.0, V0=0.0),))
    stepper = ns.METHODS["dopri5"](max_steps=50)
    with pytest.raises(ns.SimulationError, match="more than max_steps = 50 steps .*'dopri5'.*"
                                                 "rosenbrock23.*stiff"):
        ns.simulate(c, duration=10.0, integrator=stepper)
    assert ns.simulate(c, duration=10.0, integrator="rosenbrock23").stats["steps"] < 200


def test_runaway_potential_beyond_the_bound_is_reported():
    c = ns.Circuit("runaway", (ns.Neuron("A", C=1.0, g_L=0.0, E_L=0.0),),
                   stimuli={"push": ns.Stimulus("step", "A", amplitude=1000.0)},
                   protocols={"p": ns.Protocol(100.0, ("push",))})
    with pytest.raises(ns.SimulationError, match=r"\|V\| beyond the bound of 5000 mV in neuron 'A'"):
        ns.simulate(c, "p", v_bound=5000.0, initial="as_given")


def test_stability_warning_names_the_limit():
    c = ns.Circuit("fast", (ns.Neuron("A", C=1.0, g_L=10.0),))
    with pytest.warns(RuntimeWarning, match=r"dt = 0.5 ms is above the stability limit of 'euler' "
                                            r"\(2 x tau = 0.2 ms for neuron 'A'"):
        ns.simulate(c, duration=1.0, integrator="euler", dt=0.5, raise_on_failure=False)


@pytest.mark.slow
def test_two_processes_share_a_fresh_compile_cache(tmp_path):
    code = ("import neurosim as ns, numpy as np, sys;"
            "c = ns.load_circuit(sys.argv[1]);"
            "r = ns.simulate(c, 'baseline', integrator='euler', dt=0.1, dt_out=1.0);"
            "np.save(sys.argv[2], r.V)")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(EXAMPLE), str(tmp_path / f"{k}.npy")],
                              env=env, stderr=subprocess.PIPE, text=True) for k in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "0.npy"), np.load(tmp_path / "1.npy"))
    third = subprocess.run([sys.executable, "-c", code, str(EXAMPLE), str(tmp_path / "2.npy")],
                           env=env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "0.npy"), np.load(tmp_path / "2.npy"))
    assert any((tmp_path / "cache").rglob("*.nbi"))


def test_kernel_cache_folder_changes_with_any_kernel_source(tmp_path):
    """Numba alone keeps a cached caller when a callee in another file changes; the cache
    folder is named after all kernel sources, so editing one file moves every kernel."""
    import numba
    import shutil
    from neurosim import kernels
    source = Path(kernels.__file__).parent
    for path in source.glob("*.py"):
        shutil.copy(path, tmp_path / path.name)
    before = kernels.cache_dir(tmp_path)
    assert before.name == f"numba-{kernels.source_digest(tmp_path)}"
    with open(tmp_path / "network.py", "a") as f:
        f.write("\n# an edit\n")
    after = kernels.cache_dir(tmp_path)
    assert after != before and after.parent == before.parent
    user = os.environ.get("NUMBA_CACHE_DIR", "")
    ours = kernels.cache_dir(base=user)
    assert Path(kernels.network.rhs._cache._cache_path).is_relative_to(ours)
    assert Path(kernels.adaptive.run_adaptive._cache._cache_path).is_relative_to(ours)
    assert numba.config.CACHE_DIR == user  # restored for other packages


def run_cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(map(str, args)))
    return code, out.getvalue(), err.getvalue()


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=300),
                 st.text(max_size=300).map(lambda s: s.encode("utf-8")),
                 st.sampled_from([b"", b"\x00\x01", b"name: [" * 50, b"- " * 200 + b"x",
                                  ("name: x\nneurons: [" + "{name: A}, " * 3 + "]\n").encode(),
                                  "name: ✓\nneurons:\n  - {name: é, C: '1e999 pF'}\n".encode()])))
def test_cli_validate_survives_any_file(tmp_path, content):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(content)
    code, _, err = run_cli("validate", path)
    assert code in (0, 2)
    if code == 2:
        assert err.startswith("neurosim: error: ") and len(err.strip().splitlines()) == 1


def test_a_users_cache_folder_holds_ours_per_source_digest(tmp_path):
    """With NUMBA_CACHE_DIR set, the kernels still cache per source digest (inside it):
    an edit or upgrade in one kernel file must not leave its callers' stale code."""
    import subprocess
    import sys
    from neurosim import kernels
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    code = ("import numba, neurosim.kernels as k; from pathlib import Path; "
            "print(Path(k.network.rhs._cache._cache_path).parent.name, numba.config.CACHE_DIR)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    assert out == [f"numba-{kernels.source_digest(Path(kernels.__file__).parent)}", str(tmp_path)]
