"""Kernel right-hand side, Jacobian and waveforms against the independent reference."""

import numpy as np
import pytest

import neurosim as ns
from neurosim.compile import compile_circuit, compile_drive
from neurosim.kernels.constants import WORK_ROWS
from neurosim.kernels.network import jacobian, rhs, waveform
from reference import ReferenceModel, random_circuit


def kernel_rhs(compiled, drive, t, V):
    out = np.empty_like(V)
    rhs(t, False, V, compiled.theta, compiled.net, drive.arrays, np.empty((WORK_ROWS, V.size)), out)
    return out


@pytest.mark.parametrize("seed,n,n_clamped,kappa", [
    (0, 1, 0, 1.0), (1, 3, 0, 0.0), (2, 8, 1, None), (3, 15, 2, 1.0), (4, 30, 3, None),
    (5, 5, 0, None)])
def test_rhs_matches_reference(seed, n, n_clamped, kappa):
    circuit, stimuli = random_circuit(seed, n, n_clamped=n_clamped, kappa=kappa)
    compiled = compile_circuit(circuit)
    drive = compile_drive(compiled, stimuli, 10.0)
    ref = ReferenceModel(circuit, stimuli)
    rng = np.random.default_rng(seed)
    for t in (0.0, 2.5, 3.7, 9.0):
        V = rng.uniform(-90, 10, n)
        np.testing.assert_allclose(kernel_rhs(compiled, drive, t, V), ref.dVdt(t, V),
                                   rtol=1e-12, atol=1e-12)


def test_stimuli_with_many_targets_match_reference():
    """A stimulus's waveform is computed once for all its targets: each target, with
    other stimuli on the same and on other neurons between them, still gets its value
    (tables, a sine, a clamp pulse on two neurons)."""
    circuit, _ = random_circuit(6, 6, kappa=None, with_stimuli=False)
    stimuli = [ns.Stimulus("table", ("N0", "N3", "N5"), times=(0.0, 2.0, 6.0),
                           values=(1.0, -4.0, 7.0)),
               ns.Stimulus("sine", ("N3", "N1"), amplitude=5.0, frequency=80.0, offset=1.0),
               ns.Stimulus("steps", ("N2", "N0"), times=(1.0, 4.0), values=(3.0, -6.0)),
               ns.Stimulus("pulse", ("N4", "N5"), quantity="voltage", amplitude=20.0,
                           start=2.0, duration=3.0)]
    compiled = compile_circuit(circuit)
    drive = compile_drive(compiled, stimuli, 10.0)
    ref = ReferenceModel(circuit, stimuli)
    rng = np.random.default_rng(6)
    for t in (0.0, 1.5, 3.2, 4.0, 7.7):
        V = rng.uniform(-90, 10, 6)
        np.testing.assert_allclose(kernel_rhs(compiled, drive, t, V), ref.dVdt(t, V),
                                   rtol=1e-12, atol=1e-12)


def test_rhs_of_edge_free_circuit_is_the_leak():
    circuit = ns.Circuit("lonely", tuple(ns.Neuron(f"N{i}", C=2.0 + i, g_L=0.5, E_L=-65.0)
                                         for i in range(4)))
    compiled = compile_circuit(circuit)
    drive = compile_drive(compiled, [], 1.0)
    V = np.array([-80.0, -65.0, -50.0, 0.0])
    expected = 0.5 * (-65.0 - V) / np.array([2.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(kernel_rhs(compiled, drive, 0.0, V), expected, rtol=1e-14)


def test_gap_currents_sum_to_zero():
    circuit, _ = random_circuit(11, 12, p_syn=0.0, p_gap=0.4, with_stimuli=False)
    circuit = circuit.replace(neurons=tuple(ns.Neuron(n.name, C=n.C, g_L=0.0, E_L=0.0)
                                            for n in circuit.neurons))
    compiled = compile_circuit(circuit)
    drive = compile_drive(compiled, [], 1.0)
    V = np.random.default_rng(0).uniform(-80, 0, 12)
    currents = kernel_rhs(compiled, drive, 0.0, V) * np.array([n.C for n in circuit.neurons])
    assert len(circuit.gap_junctions) > 5
    assert abs(currents.sum()) < 1e-10 * np.abs(currents).sum()


@pytest.mark.parametrize("seed,n,n_clamped", [(0, 2, 0), (7, 10, 2), (8, 20, 1)])
def test_jacobian_matches_finite_differences(seed, n, n_clamped):
    circuit, stimuli = random_circuit(seed, n, n_clamped=n_clamped)
    compiled = compile_circuit(circuit)
    drive = compile_drive(compiled, stimuli, 10.0)
    ref = ReferenceModel(circuit, stimuli)
    V = np.random.default_rng(seed).uniform(-80, -10, n)
    J = np.empty((n, n))
    jacobian(4.0, V, compiled.theta, compiled.net, drive.arrays, np.empty((WORK_ROWS, n)), J)
    h = 1e-5
    fd = np.empty((n, n))
    for j in range(n):
        e = np.zeros(n)
        e[j] = h
        fd[:, j] = (ref.dVdt(4.0, V + e) - ref.dVdt(4.0, V - e)) / (2 * h)
    np.testing.assert_allclose(J, fd, rtol=1e-6, atol=1e-9)


STIMULI = [
    ns.Stimulus("step", "A", amplitude=3.0, start=2.0, offset=1.0),
    ns.Stimulus("pulse", "A", amplitude=-2.0, start=1.0, duration=2.5),
    ns.Stimulus("pulse_train", "A", amplitude=4.0, start=0.5, duration=0.7, period=2.0, count=3),
    ns.Stimulus("pulse_train", "A", amplitude=4.0, start=0.0, duration=0.3, period=1.0),
    ns.Stimulus("ramp", "A", amplitude=5.0, start=1.0, duration=4.0),
    ns.Stimulus("sine", "A", amplitude=2.0, start=1.0, duration=5.0, frequency=250.0, phase=0.4),
    ns.Stimulus("table", "A", amplitude=2.0, times=(1.0, 2.0, 4.0), values=(0.0, 3.0, -1.0)),
    ns.Stimulus("steps", "A", amplitude=2.0, offset=0.5, times=(1.0, 2.0, 4.0), values=(1.0, 3.0, -1.0)),
]


@pytest.mark.parametrize("stim", STIMULI, ids=lambda s: s.kind)
def test_waveform_kernel_matches_stimulus_value(stim):
    circuit = ns.Circuit("one", (ns.Neuron("A"),))
    drive = compile_drive(compile_circuit(circuit), [stim], 10.0)
    kind, _, _, par, ptr, tab_t, tab_v = drive.arrays[:7]
    t_grid = np.concatenate([np.linspace(0, 10, 1001), drive.breakpoints])
    got = [waveform(kind[0], par, 0, t, False, tab_t, tab_v, ptr[0], ptr[1]) for t in t_grid]
    np.testing.assert_allclose(got, stim.value(t_grid), rtol=1e-12, atol=1e-12)
    # the limit from below at each breakpoint equals the value just before it
    for b in drive.breakpoints:
        left = waveform(kind[0], par, 0, b, True, tab_t, tab_v, ptr[0], ptr[1])
        assert left == pytest.approx(float(stim.value(b - 1e-9)), abs=1e-6)


def test_sigmoid_is_accurate_to_a_few_ulp():
    """The kernels' sigmoid (range reduction and a Padé exponential, no library call)
    against 1/(1 + e^−z) in extended precision, over the range where it is not 0 or 1,
    and its limits: saturation, NaN propagation, symmetry σ(z) + σ(−z) = 1."""
    from neurosim.kernels.network import sigmoid
    rng = np.random.default_rng(3)
    z = np.concatenate([rng.uniform(-40, 40, 20000), rng.uniform(-690, 36, 20000),
                        rng.uniform(-1e-6, 1e-6, 2000), [0.0, 1.0, -1.0, 36.0, -690.0]])
    got = np.array([sigmoid(v) for v in z])
    exact = (1 / (1 + np.exp(-z.astype(np.longdouble)))).astype(np.float64)
    assert np.max(np.abs(got - exact) / np.spacing(exact)) <= 3
    assert sigmoid(800.0) == 1.0 and sigmoid(-800.0) == 0.0 and sigmoid(0.0) == 0.5
    assert sigmoid(np.inf) == 1.0 and sigmoid(-np.inf) == 0.0 and np.isnan(sigmoid(np.nan))
    sym = np.array([sigmoid(v) + sigmoid(-v) for v in z[:2000]])
    np.testing.assert_allclose(sym, 1.0, rtol=0, atol=4e-16)


def test_single_precision_sigmoid_is_accurate_to_a_few_ulp():
    """sigmoid32 (float32 lanes) in float32 arithmetic against 1/(1 + e^−z) in double
    precision: within 3 ulp of float32 where σ is a normal number above 1e−36, 0 below."""
    from neurosim.kernels.network import sigmoid32
    rng = np.random.default_rng(4)
    z = np.concatenate([rng.uniform(-20, 20, 20000), rng.uniform(-82.9, 17, 20000),
                        [0.0, 1.0, -1.0, 16.0, -82.0]]).astype(np.float32)
    got = np.array([sigmoid32(v) for v in z])  # float32 values, boxed as Python floats
    assert np.array_equal(got, got.astype(np.float32))
    exact = 1 / (1 + np.exp(-z.astype(np.float64)))
    assert np.max(np.abs(got - exact) / np.spacing(exact.astype(np.float32))) <= 3
    assert sigmoid32(np.float32(0.0)) == 0.5 and sigmoid32(np.float32(100.0)) == 1.0
    assert 0.0 <= sigmoid32(np.float32(-85.0)) <= 1e-36 and sigmoid32(np.float32(-200.0)) == 0.0
    assert np.isnan(sigmoid32(np.float32(np.nan)))
