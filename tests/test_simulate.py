"""The public run API: forward sensitivities against finite differences of simulate."""

import numpy as np
import pytest

import neurosim as ns
from neurosim.compile import circuit_with_theta, compile_circuit
from helpers import TW


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
