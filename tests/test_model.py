"""The model (neurosim/model/): validation with the field named, ablation, relabelling."""

import numpy as np
import pytest

import neurosim as ns
from neurosim.compile import compile_circuit
from reference import random_circuit


def test_ablation_equals_deleting_the_neuron():
    circuit, stimuli = random_circuit(3, 8, p_syn=0.4, p_gap=0.3)
    ablated = ns.simulate(circuit, duration=10.0, stimuli=stimuli, ablate=["N2", "N5"],
                          integrator="rk4", dt=0.01, dt_out=0.1)
    kept = lambda *names: not {"N2", "N5"} & set(names)  # noqa: E731
    deleted = ns.Circuit(
        "by hand", tuple(n for n in circuit.neurons if kept(n.name)),
        tuple(s for s in circuit.synapses if kept(s.pre, s.post)),
        tuple(g for g in circuit.gap_junctions if kept(g.a, g.b)))
    expected = ns.simulate(deleted, duration=10.0, stimuli=stimuli, integrator="rk4", dt=0.01,
                           dt_out=0.1)
    assert ablated.neuron_names == expected.neuron_names
    np.testing.assert_array_equal(ablated.V, expected.V)
    assert len(compile_circuit(circuit, ablate=["N2", "N5"]).circuit.synapses) == \
        sum(kept(s.pre, s.post) for s in circuit.synapses)


def test_relabelling_neurons_permutes_the_traces():
    circuit, stimuli = random_circuit(4, 7, n_clamped=1)
    order = [3, 0, 6, 1, 5, 2, 4]
    shuffled = circuit.replace(neurons=tuple(circuit.neurons[i] for i in order))
    a = ns.simulate(circuit, duration=8.0, stimuli=stimuli, rtol=1e-10, atol=1e-10)
    b = ns.simulate(shuffled, duration=8.0, stimuli=stimuli, rtol=1e-10, atol=1e-10)
    for name in circuit.neuron_names:
        np.testing.assert_allclose(a.v(name), b.v(name), atol=1e-7)


@pytest.mark.parametrize("build,match", [
    (lambda: ns.Neuron("A", C=0.0), "C: must be > 0"),
    (lambda: ns.Neuron("A", g_L=-1.0), "g_L: must be >= 0"),
    (lambda: ns.Neuron("A", E_L=float("nan")), "E_L: must be a finite number"),
    (lambda: ns.Neuron(""), "non-empty name"),
    (lambda: ns.Neuron("A", role="interneuron"),
     r"^role: unknown role 'interneuron'; allowed: sensory, inter, command, motor$"),
    (lambda: ns.Synapse("A", "B", w=-0.1), "w: must be >= 0"),
    (lambda: ns.Synapse("A", "B", kappa=2.0), r"kappa: must be in \[0, 1\]"),
    (lambda: ns.GapJunction("A", "A"), "two different neurons"),
    (lambda: ns.Stimulus("spike", "A"), "unknown stimulus kind 'spike'; allowed: step, pulse"),
    (lambda: ns.Stimulus("pulse", "A"), "needs a finite duration"),
    (lambda: ns.Stimulus("pulse_train", "A", duration=2.0, period=1.0), "period"),
    (lambda: ns.Stimulus("table", "A", times=(1.0, 0.5), values=(1.0, 2.0)), "increase"),
    (lambda: ns.Stimulus("step", "A", quantity="charge"), "allowed: current, voltage"),
    (lambda: ns.Protocol(duration=-5.0), "duration: must be a finite number of ms > 0"),
    (lambda: ns.Neuron("A", C=5e-324),
     r"^C: must be at least 2.225e-308 pF \(the smallest normal float; the kernels divide by C\), got 5e-324$"),
    (lambda: ns.Neuron("A", C=10**400),
     r"^C: must be a finite number, got an integer too large for a float \(more than 10\^308\)$"),
    (lambda: ns.Synapse("A", "B", mu=-10**309), r"^mu: must be a finite number, got an integer too large"),
    (lambda: ns.Neuron("A", E_L=None), r"^E_L: must be a number, got None$"),
])
def test_invalid_objects_are_refused_with_the_field_named(build, match):
    with pytest.raises(ns.CircuitError, match=match):
        build()


def two_neurons(**extra):
    return dict(name="c", neurons=(ns.Neuron("AVA"), ns.Neuron("AVB")), **extra)


@pytest.mark.parametrize("extra,match", [
    ({"synapses": (ns.Synapse("AVA", "AVX"),)},
     r"synapses\[0\].post: unknown neuron 'AVX'; known: AVA, AVB. Did you mean 'AV[AB]'\?"),
    ({"synapses": (ns.Synapse("AVA", "AVB"), ns.Synapse("AVA", "AVB"))}, "duplicate synapse"),
    ({"gap_junctions": (ns.GapJunction("AVA", "AVB"), ns.GapJunction("AVB", "AVA"))},
     "duplicate gap junction"),
    ({"protocols": {"p": ns.Protocol(10.0, stimuli=("nope",))}},
     r"protocols.p.stimuli\[0\]: unknown stimulus 'nope'"),
    ({"protocols": {"p": ns.Protocol(10.0, ablate=("AVC",))}}, r"protocols.p.ablate\[0\]"),
    ({"stimuli": {"s": ns.Stimulus("step", "XYZ")}}, "stimuli.s.target: unknown neuron 'XYZ'"),
    ({"protocols": {"p": ns.Protocol(10.0, ablate=("AVB", "AVB"))}},
     r"^protocols.p.ablate\[1\]: neuron 'AVB' is named twice \(first at ablate\[0\]\)$"),
    ({"stimuli": {"s": ns.Stimulus("step", ("AVA", "AVB", "AVA"))}},
     r"^stimuli.s.target\[2\]: target neuron 'AVA' is named twice \(first at stimuli.s.target\[0\]\)$"),
    ({"stimuli": {"s": ns.Stimulus("step", "AVA")}, "protocols": {"p": ns.Protocol(10.0, stimuli=("s", "s"))}},
     r"^protocols.p.stimuli\[1\]: stimulus 's' is named twice \(first at stimuli\[0\]\)$"),
    ({"protocols": {"p": ns.Protocol(10.0, stimuli=(ns.Stimulus("step", ("AVB", "AVB")),))}},
     r"^protocols.p.stimuli\[0\].target\[1\]: target neuron 'AVB' is named twice"),
])
def test_invalid_circuits_name_the_path(extra, match):
    with pytest.raises(ns.CircuitError, match=match):
        ns.Circuit(**two_neurons(**extra))


def test_an_ablation_named_twice_at_run_time_is_one_ablation():
    # Circuit.without takes a set: simulate joins a protocol's ablations with its own
    circuit = ns.Circuit(**two_neurons(synapses=(ns.Synapse("AVA", "AVB"),)))
    assert circuit.without(["AVA", "AVA"]).neuron_names == ("AVB",)


def test_duplicate_neuron_names_are_refused():
    with pytest.raises(ns.CircuitError, match=r"neurons\[1\].name: duplicate neuron name 'A'"):
        ns.Circuit("c", (ns.Neuron("A"), ns.Neuron("A")))
