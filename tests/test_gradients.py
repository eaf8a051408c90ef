"""Forward sensitivities against central finite differences of independent runs."""

import numpy as np
import pytest

import neurosim as ns
from neurosim.compile import compile_circuit, compile_drive
from neurosim.fit import BehaviourTarget, Objective, Parameterization
from neurosim.integrators import METHODS, integrate_with_sensitivity, make_integrator
from helpers import TW
from reference import random_circuit

FIELDS = ["C", "g_L", "E_L", "V0", "w", "E", "mu", "nu", "kappa", "g"]


def finite_difference(circuit, stimuli, integrator, theta, p, h, dt_out, duration):
    runs = []
    for sign in (1, -1):
        shifted = theta.copy()
        shifted[p] += sign * h
        runs.append(ns.simulate(circuit, duration=duration, stimuli=stimuli, integrator=integrator,
                                theta=shifted, dt_out=dt_out).V)
    return (runs[0] - runs[1]) / (2 * h)


@pytest.mark.parametrize("method,options", [
    ("euler", {"dt": 0.01}), ("rk4", {"dt": 0.02}), ("ltc", {"dt": 0.02}),
    ("dopri5", {"dt": 0.05, "adaptive": False}), ("dopri5", {"rtol": 1e-11, "atol": 1e-11})])
@pytest.mark.parametrize("seed", [0, 1])
def test_sensitivities_match_finite_differences(method, options, seed):
    circuit, stimuli = random_circuit(seed, 5, p_gap=0.5, n_clamped=1, smooth=True, kappa=0.6)
    compiled = compile_circuit(circuit)
    duration, dt_out = 4.0, 0.5
    drive = compile_drive(compiled, stimuli, duration)
    integrator = METHODS[method](**options) if "adaptive" in options else \
        make_integrator(method, **options)
    record = np.arange(compiled.n_neurons)
    free = np.arange(compiled.theta.size)
    status, V, S, _ = integrate_with_sensitivity(integrator, compiled, drive, free, record,
                                                 dt_out, int(duration / dt_out), 1e5)
    assert status == 0
    reference = ns.simulate(circuit, duration=duration, stimuli=stimuli, integrator=integrator,
                            dt_out=dt_out)
    np.testing.assert_allclose(V, reference.V, rtol=0, atol=1e-9)
    checked = set()
    for p, name in enumerate(compiled.layout.names):
        field = name.rsplit(".", 1)[1]
        h = 1e-4 * max(1.0, abs(compiled.theta[p]))
        low = {"C": 1e-3, "g_L": 0.0, "w": 0.0, "g": 0.0, "kappa": 0.0}.get(field, -np.inf)
        if compiled.theta[p] - h < low or (field == "kappa" and compiled.theta[p] + h > 1):
            continue
        fd = finite_difference(circuit, stimuli, integrator, compiled.theta, p, h, dt_out, duration)
        scale = np.linalg.norm(fd)
        if scale < 1e-6:
            continue  # no influence on the recorded traces (e.g. a clamped neuron's leak)
        assert np.linalg.norm(S[:, :, p] - fd) / scale < 1e-5, name
        checked.add(field)
    assert checked >= {"C", "g_L", "E_L", "V0", "w", "mu", "nu", "g"}


def test_objective_gradient_matches_finite_differences():
    circuit = ns.load_circuit(TW)
    targets = [BehaviourTarget("tap", "reversal_probability", 0.9, n=20),
               BehaviourTarget("tap_no_PLM", "score", 0.3, se=0.05),
               BehaviourTarget("posterior_gentle", "reversal_probability", 0.1, n=20)]
    par = Parameterization(circuit, [{"select": "synapses[*].w", "bounds": [0, 3]},
                                     {"select": "synapses[pre=AVD].nu", "transform": "log",
                                      "bounds": [0.01, 1], "tie": True},
                                     {"select": "neurons[AVA].C", "bounds": [10, 100]}])
    objective = Objective(par, targets, rtol=1e-10, atol=1e-10, dt_out=5.0, prior=0.1)
    x = par.x0 + 0.05
    value, grad = objective.value_and_grad(x)
    assert value == pytest.approx(objective(x), rel=1e-7)
    for k in (0, 4, 10, par.n_free - 2, par.n_free - 1):
        h = 1e-5
        e = np.zeros_like(x)
        e[k] = h
        fd = (objective(x + e) - objective(x - e)) / (2 * h)
        assert grad[k] == pytest.approx(fd, rel=2e-4, abs=1e-6), par.names[k]


CRASH_ORDER = """
import numpy as np
import neurosim as ns
from neurosim.compile import compile_circuit, compile_drive
from neurosim.integrators import integrate_with_sensitivity, make_integrator
from reference import random_circuit
circuit, stimuli = random_circuit(0, 5, p_gap=0.5, n_clamped=1, smooth=True, kappa=0.6)
compiled = compile_circuit(circuit)
drive = compile_drive(compiled, stimuli, 4.0)
status, V, S, _ = integrate_with_sensitivity(make_integrator("euler", dt=0.01), compiled, drive,
                                             np.arange(compiled.theta.size), np.arange(5), 0.5, 8,
                                             1e5)
assert status == 0 and np.isfinite(S).all()
tw = ns.load_circuit({tw!r})
theta = np.repeat(compile_circuit(tw).theta[None, :], 64, axis=0)
theta[:, tw.neurons.index(tw.neurons[0])] *= np.linspace(0.5, 2.0, 64)
batch = ns.simulate_batch(tw, theta=theta, protocols=["tap"], dt_out=5.0)
assert np.isfinite(batch.V).all()
print("survived")
"""


@pytest.mark.slow
def test_tangent_kernels_compiled_first_leave_threaded_rests_intact(tmp_path):
    """In a fresh compile cache, compiling the tangent kernels before the rest kernels once
    corrupted the heap when rests then ran on threads (malloc abort): a reference-counting
    kernel was called from a borrowing one."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", CRASH_ORDER.format(tw=str(TW))], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "survived" in done.stdout, done.stderr[-2000:]
