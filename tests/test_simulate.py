"""The public run API (neurosim/simulate.py): forward sensitivities against finite
differences of simulate; simulate's argument checks and failures."""

import numpy as np
import pytest

import neurosim as ns
from neurosim.compile import circuit_with_theta, compile_circuit
from helpers import EXAMPLE, TW


def changed(circuit, protocol, name, h):
    """The circuit with parameter ``name`` (a name of the layout after the protocol's
    ablations, which keeps the circuit's own names) moved by ``h``."""
    compiled = compile_circuit(circuit)
    theta = compiled.theta.copy()
    theta[compiled.layout.index(name)] += h
    return circuit_with_theta(compiled, theta)


@pytest.mark.parametrize("protocol,initial", [("tap", None), ("tap_no_PLM", "as_given")])
def test_sensitivities_are_the_derivatives_of_the_runs(protocol, initial):
    """Central differences of simulate() at tight tolerance (h = 1e-4, error O(h²) plus
    the solver's, both far below the tolerance used), from rest (the rest moves with θ)
    and as given."""
    circuit = ns.load_circuit(TW)
    names = ["synapses[AVD->AVA].w", "neurons[AVA].g_L", "gap_junctions[AVM-AVD].g"]
    options = dict(rtol=1e-10, atol=1e-10, dt_out=50.0, record=["AVA", "AVB", "REV"],
                   initial=initial)
    sens = ns.sensitivities(circuit, protocol, names, **options)
    assert sens.S.shape == (31, 3, 3) and sens.initial == (initial or "rest")
    plain = ns.simulate(circuit, protocol, **options)
    np.testing.assert_allclose(sens.V, plain.V, atol=1e-9)
    h = 1e-4
    for k, name in enumerate(names):
        up = ns.simulate(changed(circuit, protocol, name, h), protocol, **options).V
        down = ns.simulate(changed(circuit, protocol, name, -h), protocol, **options).V
        np.testing.assert_allclose(sens.S[:, :, k], (up - down) / (2 * h), atol=2e-5,
                                   err_msg=name)
    assert np.abs(sens.dv("AVA", names[0])).max() > 1e-3  # not trivially zero


def test_sensitivities_refuse_what_they_cannot_do():
    circuit = ns.load_circuit(TW)
    with pytest.raises(ns.CircuitError, match="unknown parameter 'synapses\\[AVD->AVX\\].w'"):
        ns.sensitivities(circuit, "tap", ["synapses[AVD->AVX].w"])
    with pytest.raises(ns.CircuitError, match="names no parameter"):
        ns.sensitivities(circuit, "tap", [])
    with pytest.raises(ns.CircuitError, match="gradients are available for"):
        ns.sensitivities(circuit, "tap", ["neurons[AVA].C"], integrator="rosenbrock23")


@pytest.mark.parametrize("kwargs,match", [
    ({"integrator": "rk45"}, "unknown integrator 'rk45'; allowed: euler, rk4"),
    ({"integrator": "rk4", "dt": 0.03, "dt_out": 0.1}, "whole multiple of dt"),
    ({"integrator": "rk4", "rtol": 1e-3}, "fixed-step method"),
    ({"rtol": -1.0}, "`rtol` must be a positive number"),
    ({"record": []}, "nothing would be recorded"),
    ({"record": ["B"]}, "unknown neuron 'B'"),
    ({"v0": [1.0, 2.0]}, "v0 must have shape"),
    ({"dt_out": 50.0}, "longer than the run"),
])
def test_simulate_refuses_bad_arguments(kwargs, match):
    circuit = ns.Circuit("c", (ns.Neuron("A"),))
    with pytest.raises(ns.CircuitError, match=match):
        ns.simulate(circuit, duration=10.0, **kwargs)


def test_nonfinite_parameter_run_fails_loudly():
    circuit = ns.Circuit("c", (ns.Neuron("A", C=1e-9, g_L=100.0, V0=0.0),))
    with pytest.raises(ns.SimulationError, match="neuron 'A' in the step from t = 0 to 0.1 ms .*try a smaller dt") as info, \
            pytest.warns(RuntimeWarning, match="stability limit"):
        ns.simulate(circuit, duration=1.0, integrator="euler", dt=0.1)
    assert info.value.result.status == "failed"


def test_sensitivities_take_a_parameter_vector_as_simulate_does():
    """theta= runs another parameter vector: its traces are simulate's with that theta, and
    its derivative is the finite difference of simulate's traces around it."""
    circuit = ns.load_circuit(EXAMPLE)
    protocol = next(iter(circuit.protocols))
    compiled = compile_circuit(circuit)
    name = compiled.layout.names[compiled.layout.block("synapses.w")][0]
    p = compiled.layout.index(name)
    theta = compiled.theta.copy()
    theta[p] *= 1.5
    sens = ns.sensitivities(circuit, protocol, [name], theta=theta, rtol=1e-10, atol=1e-10)
    plain = ns.simulate(circuit, protocol, theta=theta, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(sens.V, plain.V, rtol=0, atol=1e-8)
    h = 1e-5 * theta[p]
    runs = []
    for sign in (1, -1):
        shifted = theta.copy()
        shifted[p] += sign * h
        runs.append(ns.simulate(circuit, protocol, theta=shifted, rtol=1e-10, atol=1e-10).V)
    fd = (runs[0] - runs[1]) / (2 * h)
    assert np.abs(sens.S[..., 0] - fd).max() <= 1e-4 * max(np.abs(fd).max(), 1e-3)
    with pytest.raises(ns.CircuitError, match="theta must have shape"):
        ns.sensitivities(circuit, protocol, [name], theta=theta[:-1])


def test_theta_is_taken_before_a_protocols_lesions():
    """A lesion (scale) scales a given theta as it scales the circuit's own: the circuit's
    own theta reruns the lesioned protocol exactly, and the sensitivity to a lesioned
    weight is the derivative with respect to the weight as written (finite differences of
    simulate, and BatchPlan.sensitivities, agree)."""
    circuit = ns.load_circuit(TW)
    own = compile_circuit(circuit).theta
    lesioned = ns.simulate(circuit, "tap_half_PLM", dt_out=5.0)
    again = ns.simulate(circuit, "tap_half_PLM", theta=own, dt_out=5.0)
    np.testing.assert_array_equal(again.V, lesioned.V)
    name = "synapses[PLM->AVA].w"
    p = compile_circuit(circuit).layout.index(name)
    options = dict(integrator="rk4", dt=0.1, dt_out=5.0, record=["AVA"])
    sens = ns.sensitivities(circuit, "tap_half_PLM", [name], **options)
    h = 1e-4 * own[p]
    runs = []
    for sign in (1, -1):
        shifted = own.copy()
        shifted[p] += sign * h
        runs.append(ns.simulate(circuit, "tap_half_PLM", theta=shifted, **options).V[:, 0])
    fd = (runs[0] - runs[1]) / (2 * h)
    assert np.abs(sens.S[:, 0, 0] - fd).max() <= 1e-5 * np.abs(fd).max()
    plan = ns.BatchPlan(circuit, ["tap_half_PLM"], integrator="rk4", dt=0.1, dt_out=5.0,
                        record=["AVA"])
    _, _, S = plan.sensitivities(own, [p], 0)
    np.testing.assert_allclose(sens.S, S, rtol=1e-12, atol=1e-15)


def test_theta_of_an_ablating_protocol_names_its_layout():
    circuit = ns.load_circuit(TW)
    own = compile_circuit(circuit).theta
    with pytest.raises(ns.CircuitError, match=r"ablate=\['PVD'\]|ablate=\[") as info:
        ns.simulate(circuit, "tap_no_PLM", theta=own)
    assert "without its ablated neurons" in str(info.value)
    with pytest.raises(ns.CircuitError, match="ablates"):
        ns.sensitivities(circuit, "tap_no_PLM", ["synapses[PLM->AVA].w"])
    with pytest.raises(ns.CircuitError, match="array of numbers"):
        ns.simulate(circuit, "tap", theta=["a"] * own.size)
