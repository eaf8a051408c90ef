"""Compilation of the kernels: announced, kept out of run times, done up front by warmup."""

import logging
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from numba import njit
from numba.core.registry import CPUDispatcher

import neurosim as ns
import neurosim.kernels as kernels
from neurosim.cli import _show_compilation
from neurosim.compile import compile_circuit
from neurosim.fit import Objective, Parameterization, load_behaviour
from neurosim.integrators import compile_seconds, load_kernels
from neurosim.kernels import network
from neurosim.integrators import one_compile_notice
from neurosim.warmup import compile_ahead, features, warmup
from helpers import ROOT, TW

THREE = ROOT / "circuits" / "examples" / "three_cells.yaml"


def kernel_specialisations() -> int:
    """How many (kernel, argument types) pairs are loaded in this process."""
    modules = (getattr(kernels, name) for name in ("adaptive", "batch", "fixed", "lockstep",
                                                  "network", "sensitivity", "steady"))
    return sum(len(value.overloads) for module in modules for value in vars(module).values()
               if isinstance(value, CPUDispatcher))


def every_feature():
    """The README's runs, batches and gradients, on the tap-withdrawal circuit."""
    circuit = ns.load_circuit(TW)
    ns.simulate(circuit, "tap", dt_out=1.0)
    ns.simulate(circuit, "tap", integrator="rk4", dt=0.05, dt_out=1.0, initial="as_given")
    ns.simulate(ns.load_circuit(THREE), "baseline", integrator="rosenbrock23", dt_out=1.0)
    ns.rest_state(circuit, "tap_no_AVB")
    theta = np.tile(compile_circuit(circuit).theta, (3, 1))
    ns.simulate_batch(circuit, theta, ["tap", "tap_no_PLM"], dt_out=5.0)
    ns.simulate_batch(circuit, theta, "tap", rtol=1e-4, dt_out=5.0, precision="float32")
    ns.simulate_batch(circuit, theta, "tap", integrator="exp_euler", dt_out=5.0)
    par = Parameterization(circuit, [{"select": "synapses[*].w", "bounds": [0, 3]}])
    targets = load_behaviour(ROOT / "circuits" / "data" / "tap_withdrawal_behaviour.csv")
    for name in ("dopri5", "ltc"):
        objective = Objective(par, targets, integrator=name, dt_out=5.0)
        objective.value_and_grad(par.x0)
        objective.batch([par.x0])


def test_after_warmup_no_feature_loads_a_kernel():
    """warmup covers the argument types of every public call: nothing is compiled, or even
    loaded from the disk cache, afterwards."""
    done = warmup()
    assert [what for what, _, _ in done] == list(features())
    before = kernel_specialisations()
    every_feature()
    assert kernel_specialisations() == before


def test_constants_do_not_specialise_kernels():
    """A kernel called with a constant (is_on(t, False, ...)) is compiled for its type,
    as it is for a variable: once."""
    @njit
    def with_constant(t):
        return network.is_on(t, False, 0.0, 1.0)

    @njit
    def with_variable(t, left):
        return network.is_on(t, left, 0.0, 1.0)

    assert with_constant(1.0) == with_variable(1.0, False) == 0
    assert len(network.is_on.overloads) == 1
    assert "Literal" not in str(network.is_on.signatures)


def test_a_compilation_is_announced_before_and_after(caplog):
    @njit
    def fresh(x):
        return x + 1.0

    with caplog.at_level(logging.INFO, logger="neurosim"):
        load_kernels((fresh, (1.0,)))
        load_kernels((fresh, (2.0,)))  # compiled: nothing to say
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == "compiling simulation kernels (first use only) …"
    assert messages[1].startswith("… compiled in ") and messages[1].endswith(" s")
    assert len(messages) == 2


def test_loads_inside_one_notice_are_announced_once(caplog):
    """A run compiling its rest's kernel, resting, then compiling its time loop is one
    announced wait, with the compile seconds of both."""
    @njit
    def first(x):
        return x - 1.0

    @njit
    def second(x):
        return x * 3.0

    before = compile_seconds()
    with caplog.at_level(logging.INFO, logger="neurosim"), one_compile_notice():
        load_kernels((first, (1.0,)))
        load_kernels((second, (1.0,)))
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2 and messages[1].startswith("… compiled in ")
    assert compile_seconds() - before == pytest.approx(float(messages[1].split()[3]), abs=0.06)


def test_runs_from_several_threads_share_one_notice(caplog):
    """Runs started from several threads at once share one notice, and what compiles
    while any of them is open is announced once.  (A run that read the notice another
    thread had just ended failed, about one time in a few thousand; the switch interval
    is made tiny here, so that the threads interleave everywhere.)"""
    @njit
    def third(x):
        return x / 3.0

    failures = []
    together = threading.Barrier(4)

    def runs(k):
        try:
            together.wait()
            for i in range(1000):
                with one_compile_notice():
                    if k == 0 and i == 500:
                        load_kernels((third, (1.0,)))
        except Exception as exc:  # noqa: BLE001 - shown by the assertion below
            failures.append(repr(exc))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with caplog.at_level(logging.INFO, logger="neurosim"):
            threads = [threading.Thread(target=runs, args=(k,)) for k in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == "compiling simulation kernels (first use only) …"
    assert len(messages) == 2 and messages[1].startswith("… compiled in ")


def test_warmup_in_processes_and_ahead():
    """Features compile in worker processes (sharing the disk cache) and in a background
    process; unknown names and job counts are refused."""
    done = warmup(jobs=2, only=["single runs, euler", "single runs, rk4"])
    assert sorted(what for what, _, _ in done) == ["single runs, euler", "single runs, rk4"]
    ahead = compile_ahead(["single runs, ltc"])
    ahead.wait()
    assert ahead._process.exitcode == 0
    with pytest.raises(ValueError, match="unknown warmup features"):
        warmup(only=["single runs, nope"])
    with pytest.raises(ValueError, match="unknown warmup features"):
        compile_ahead(["gradients, nope"])
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        warmup(jobs=0)


def test_compile_time_is_counted_apart():
    @njit
    def another(x):
        return x * 2.0

    before = compile_seconds()
    load_kernels((another, (1.0,)))
    assert compile_seconds() > before


def test_compile_time_is_counted_on_the_thread_that_compiled():
    """A batch's wall time once lost another thread's compilation (19 s of its 21): each
    thread's clock subtracts only what it compiled itself."""
    @njit
    def elsewhere(x):
        return x * 5.0

    counted = []

    def compile_there():
        before = compile_seconds()
        load_kernels((elsewhere, (1.0,)))
        counted.append(compile_seconds() - before)
    before = compile_seconds()
    thread = threading.Thread(target=compile_there)
    thread.start()
    thread.join()
    assert counted[0] > 0.0 and compile_seconds() == before


def test_command_line_shows_the_lines_on_stderr(capsys):
    _show_compilation()
    _show_compilation()  # a second main() in one process: still one line per record
    logging.getLogger("neurosim").info("compiling simulation kernels (first use only) …")
    assert capsys.readouterr().err == "neurosim: compiling simulation kernels (first use only) …\n"


def neurosim(*args, env):
    return subprocess.run([sys.executable, "-m", "neurosim.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=900, cwd=ROOT)


@pytest.mark.slow
def test_cold_cache_run_announces_and_warmup_compiles_everything(tmp_path):
    """With an empty cache: a run announces its compilation and reports run time without
    it; after ``neurosim warmup`` (in a fresh cache) a run compiles nothing."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "first"))
    run = neurosim("run", TW, "-p", "tap", "-o", tmp_path / "a.h5", env=env)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("neurosim: compiling simulation kernels (first use only) …") == 1
    assert "neurosim: … compiled in " in run.stderr
    seconds = float(run.stdout.split(" ms in ")[1].split(" s")[0])
    assert seconds < 1.0  # the run itself, not the compilation before it
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "second"))
    warm = neurosim("warmup", env=env)
    assert warm.returncode == 0, warm.stderr
    assert "every kernel ready" in warm.stdout and "compiled in" in warm.stdout
    again = neurosim("run", TW, "-p", "tap", "-o", tmp_path / "b.h5", env=env)
    assert again.returncode == 0 and "compiling" not in again.stderr
