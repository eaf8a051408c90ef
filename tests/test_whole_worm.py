"""circuits/whole_worm.yaml: the 302-neuron hermaphrodite from Cook et al. 2019.

The shipped file is what the importer builds today, it validates, and neurosim's dopri5
integrates it as scipy's solve_ivp integrates an independent NumPy right-hand side
written here from the model equation (README, "The model")."""

import re
import subprocess
import sys

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import neurosim as ns
from neurosim.connectome import build_circuit, circuit_yaml
from helpers import ROOT

FILE = ROOT / "circuits" / "whole_worm.yaml"
COMMAND = "neurosim connectome cook2019 --neurons whole_worm -o circuits/whole_worm.yaml"


@pytest.fixture(scope="module")
def circuit():
    return ns.load_circuit(FILE)


def test_the_shipped_circuit_validates():
    done = subprocess.run([sys.executable, "-m", "neurosim.cli", "validate", str(FILE)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "neurons       302:" in done.stdout
    assert "synapses      3194 (2984 excitatory, 210 inhibitory)" in done.stdout
    assert "gap junctions 1091" in done.stdout


def test_the_shipped_circuit_is_what_the_importer_builds_today(circuit):
    """Rebuilt from the shipped table with the shipped code: the same neurons, synapses,
    weights, gap junctions, stimuli and protocols (the file cannot drift from the code;
    after a change to the importer, regenerate it with the command in its header)."""
    built, report = build_circuit("cook2019", "whole_worm")
    assert circuit.n_neurons == 302
    assert circuit.neuron_names == built.neuron_names
    assert circuit.neurons == built.neurons
    assert circuit.synapses == built.synapses     # pre, post, w, E, mu, nu, kappa, in order
    assert circuit.gap_junctions == built.gap_junctions
    assert circuit.stimuli == built.stimuli
    assert circuit.protocols == built.protocols
    assert circuit == built
    assert (len(circuit.synapses), len(circuit.gap_junctions)) == (3194, 1091)
    # and the file is the importer's text, provenance header included (not edited by hand);
    # only the version that wrote it may differ
    shipped, fresh = FILE.read_text(), circuit_yaml(built, report, COMMAND)
    assert shipped.splitlines()[0].endswith(f"with: {COMMAND}")
    version = re.compile(r"^# Built by neurosim \S+ ")
    assert version.sub("", shipped) == version.sub("", fresh)


# --- an independent right-hand side ------------------------------------------------------

def reference_rhs(circuit, current):
    """dV/dt of the README's equation, from the circuit's fields alone, vectorised:

        C dV/dt = g_L (E_L − V) + Σ_syn w σ(ν (V_pre − μ)) (E − κ V)
                  + Σ_gap ĝ (V_other − V) + I

    with σ(z) = 1/(1 + e^−z) and ``current`` (pA per neuron) held constant; no neuron of
    this circuit is clamped."""
    assert all(n.clamp is None for n in circuit.neurons)
    index = {name: i for i, name in enumerate(circuit.neuron_names)}
    n = circuit.n_neurons
    C, g_L, E_L = (np.array([getattr(x, k) for x in circuit.neurons]) for k in ("C", "g_L", "E_L"))
    pre = np.array([index[s.pre] for s in circuit.synapses])
    post = np.array([index[s.post] for s in circuit.synapses])
    w, E, mu, nu, kappa = (np.array([getattr(s, k) for s in circuit.synapses])
                           for k in ("w", "E", "mu", "nu", "kappa"))
    a = np.array([index[j.a] for j in circuit.gap_junctions])
    b = np.array([index[j.b] for j in circuit.gap_junctions])
    g = np.array([j.g for j in circuit.gap_junctions])

    def f(t, V):
        s = 1.0 / (1.0 + np.exp(-nu * (V[pre] - mu)))
        I = g_L * (E_L - V) + current
        I += np.bincount(post, w * s * (E - kappa * V[post]), minlength=n)
        gap = g * (V[b] - V[a])                 # into a, and its opposite into b
        I += np.bincount(a, gap, minlength=n) - np.bincount(b, gap, minlength=n)
        return I / C

    def jacobian(t, V):
        s = 1.0 / (1.0 + np.exp(-nu * (V[pre] - mu)))
        J = np.diag(-g_L).astype(float)
        np.add.at(J, (post, post), -w * s * kappa)
        np.add.at(J, (post, pre), w * nu * s * (1.0 - s) * (E - kappa * V[post]))
        np.add.at(J, (a, b), g)
        np.add.at(J, (b, a), g)
        np.add.at(J, (a, a), -g)
        np.add.at(J, (b, b), -g)
        return J / C[:, None]

    return f, jacobian


def reference_run(circuit, protocol, V0, t_out):
    """solve_ivp LSODA at rtol = atol = 1e-9 over the pieces between the protocol's
    current pulses (each piece has a constant current), sampled at ``t_out``."""
    proto = circuit.protocol(protocol)
    index = {name: i for i, name in enumerate(circuit.neuron_names)}
    pulses = [circuit.stimuli[name] for name in proto.stimuli]
    assert all(p.kind == "pulse" and p.quantity == "current" for p in pulses)
    edges = sorted({0.0, proto.duration} | {t for p in pulses
                                            for t in (p.start, p.start + p.duration)})
    out, V = np.empty((t_out.size, circuit.n_neurons)), np.asarray(V0, float)
    for lo, hi in zip(edges, edges[1:]):
        current = np.zeros(circuit.n_neurons)
        for p in pulses:                            # on over [start, start + duration)
            if p.start <= lo < p.start + p.duration:
                current[[index[t] for t in p.targets]] += p.amplitude
        f, jac = reference_rhs(circuit, current)
        sol = solve_ivp(f, (lo, hi), V, method="LSODA", jac=jac, rtol=1e-9, atol=1e-9,
                        dense_output=True)
        assert sol.success, sol.message
        inside = (t_out >= lo) & (t_out <= hi)
        out[inside] = sol.sol(t_out[inside]).T
        V = sol.y[:, -1]
    return out


#: dopri5 controls the RMS over neurons of its local error estimate scaled by
#: atol + rtol·|V|, so one neuron may carry sqrt(n) times the tolerance in a step:
#: sqrt(302)·(1e-6 + 1e-6·70 mV) = 1.2e-3 mV.  On this circuit the steps are limited by
#: dopri5's stability, not its accuracy (its fastest mode decays in 1.6 ms, the steps are
#: ~5.7 ms; 174 steps at rtol 1e-6, 183 at 1e-8), and at that limit the controller lets
#: the fast modes ring at the scale of the tolerance: measured 1.3e-3 mV from rest,
#: 1.0e-3 mV as given, and scipy's own RK45 at the same tolerances deviates as much
#: (1.4e-3 mV) from the same reference.  Twice the per-step bound:
TOLERANCE_RTOL_1E6 = 2 * np.sqrt(302) * (1e-6 + 1e-6 * 70.0)   # 2.5e-3 mV
#: at rtol 1e-9 the same comparison measures the model, not the method: measured
#: 1.2e-6 mV; the LSODA reference agrees with Radau (rtol 1e-9) to 2e-7 mV.  This is the
#: comparison that pins the equations: a 1 % change of one median synapse's weight moves
#: the traces by 1.6e-3 mV, within the rtol 1e-6 tolerance but not this one.
TOLERANCE_RTOL_1E9 = 1e-5


@pytest.fixture(scope="module")
def posterior_from_rest(circuit):
    """(neurosim's rest, the LSODA reference from it, sampling times) for posterior_touch."""
    rest = ns.rest_state(circuit, "posterior_touch")
    V0 = np.array([rest.V[name] for name in circuit.neuron_names])
    t = np.arange(0.0, 1000.0 + 0.5, 1.0)
    return V0, reference_run(circuit, "posterior_touch", V0, t), t


def test_the_rest_is_a_rest_of_the_independent_equation(circuit, posterior_from_rest):
    V0, _, _ = posterior_from_rest
    f, _ = reference_rhs(circuit, np.zeros(circuit.n_neurons))
    assert np.max(np.abs(f(0.0, V0))) < 1e-10          # mV/ms
    assert np.ptp(V0) > 30.0                             # a network rest, not E_L everywhere


@pytest.mark.slow
def test_a_touch_from_rest_with_dopri5_agrees_with_solve_ivp(circuit, posterior_from_rest):
    """1000 ms of posterior_touch from the rest, dopri5 at rtol 1e-6 (the default) and at
    rtol 1e-9, against LSODA on the independent right-hand side."""
    V0, reference, t = posterior_from_rest
    plm = [circuit.neuron_names.index(name) for name in ("PLML", "PLMR")]
    assert np.all(reference[300, plm] - V0[plm] > 10.0)  # the touch does something
    run = ns.simulate(circuit, "posterior_touch", integrator="dopri5", rtol=1e-6, atol=1e-6,
                      dt_out=1.0)
    assert np.array_equal(run.t, t)
    assert np.array_equal(run.V[0], V0)
    assert np.max(np.abs(run.V - reference)) < TOLERANCE_RTOL_1E6
    tight = ns.simulate(circuit, "posterior_touch", integrator="dopri5", rtol=1e-9,
                        atol=1e-9, dt_out=1.0)
    assert np.max(np.abs(tight.V - reference)) < TOLERANCE_RTOL_1E9


def test_a_touch_as_given_agrees_with_solve_ivp(circuit):
    """anterior_touch from E_L = −70 mV everywhere (the settling into rest included)."""
    t = np.arange(0.0, 1000.0 + 0.5, 1.0)
    V0 = np.array([n.E_L for n in circuit.neurons])
    reference = reference_run(circuit, "anterior_touch", V0, t)
    run = ns.simulate(circuit, "anterior_touch", rtol=1e-6, atol=1e-6, dt_out=1.0,
                      initial="as_given")
    assert np.array_equal(run.V[0], V0)
    assert np.max(np.abs(run.V - reference)) < TOLERANCE_RTOL_1E6
