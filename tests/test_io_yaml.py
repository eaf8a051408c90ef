"""Circuit YAML: the example, every class of bad input, round trips, fuzzing."""

import math
import pathlib

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import neurosim as ns
from reference import ReferenceModel

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "circuits" / "examples" / "three_cells.yaml"


def test_example_loads_with_units_converted_and_defaults_applied():
    c = ns.load_circuit(EXAMPLE)
    assert c.neuron_names == ("S", "A", "B")
    b = c.neuron("B")
    assert b.C == pytest.approx(4.0) and b.g_L == 0.5 and b.E_L == -70.0
    assert c.neuron("A").V0 == -60.0 and c.neuron("S").C == 2.0
    s0, s1 = c.synapses
    assert (s0.E, s0.mu, s0.nu, s0.kappa) == (0.0, -40.0, 0.1, 1.0)
    assert (s1.E, s1.nu) == (-90.0, 0.2)
    assert c.stimuli["tap"].amplitude == 20.0
    assert c.protocols["no_A"].ablate == ("A",)


def test_example_runs_and_matches_the_reference():
    c = ns.load_circuit(EXAMPLE)
    r = ns.simulate(c, "baseline", rtol=1e-9, atol=1e-9, dt_out=5.0)
    stim = [c.stimuli["tap"]]
    expected = ReferenceModel(c, stim).solve(r.t, stim[0].breakpoints(500.0))
    assert np.max(np.abs(r.V - expected)) < 1e-6
    ablated = ns.simulate(c, "no_A", dt_out=5.0)
    assert ablated.neuron_names == ("S", "B")


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


BASE = "name: x\nneurons:\n  - {name: AVA}\n  - {name: AVB}\n"


@pytest.mark.parametrize("text,line,match", [
    (BASE + "  - {name: A, CC: 3}\n", 5,
     r"neurons\[2\].CC: unknown key 'CC'; allowed: C, g_L, E_L, V0, clamp, name. Did you mean 'C'\?"),
    (BASE + "synapses:\n  - {pre: AVA, post: AVX}\n", 6,
     r"synapses\[0\].post: unknown neuron 'AVX'; known: AVA, AVB. Did you mean"),
    (BASE + "  - {name: A, C: '3 mV'}\n", 5, r"neurons\[2\].C: '3 mV' is not a capacitance; allowed units: pF"),
    (BASE + "  - {name: A, g_L: 'lots'}\n", 5, r"neurons\[2\].g_L: cannot read 'lots' as a quantity"),
    (BASE + "  - {name: A, C: -3}\n", 5, r"neurons\[2\].C: must be > 0, got -3"),
    (BASE + "  - {name: AVA}\n", 5, r"neurons\[2\].name: duplicate neuron name 'AVA'"),
    (BASE + "synapses:\n  - {pre: AVA, post: AVB, type: excit}\n", 6,
     r"synapses\[0\].type: got 'excit'; allowed: 'excitatory' or 'inhibitory'"),
    (BASE + "synapses:\n  - {pre: AVA, post: AVB,\n     nu: '0.1 mV'}\n", 7, r"synapses\[0\].nu: .*allowed units: 1/mV"),
    (BASE + "stimuli:\n  s: {kind: pulse, target: AVA, amplitude: '2 mV', duration: 1}\n", 6,
     r"stimuli.s.amplitude: '2 mV' is not a current"),
    (BASE + "protocols:\n  p: {duration: 10, ablate: [AVC]}\n", 6,
     r"protocols.p.ablate\[0\]: unknown neuron 'AVC'"),
    (BASE + "protocols:\n  p: {stimuli: []}\n", 6, r"protocols.p.duration: missing required key"),
    ("name: x\nneurons: [{name: A}\n", 3, r"invalid YAML"),
    ("name: x\nname: y\nneurons: [{name: A}]\n", 2, r"name: duplicate key 'name'"),
    ("", 1, r"a circuit file is a mapping"),
    (BASE + "gap_junctions:\n  - {a: AVA, b: AVA}\n", 6, r"two different neurons"),
    (BASE + "  - {name: A, E_L: .nan}\n", 5, r"neurons\[2\].E_L: must be a finite number, got nan"),
    (BASE + "synapse:\n  - {pre: AVA, post: AVB}\n", 5, r"unknown key 'synapse'.*Did you mean 'synapses'"),
])
def test_bad_input_names_file_line_key_and_allowed_values(tmp_path, text, line, match):
    path = write(tmp_path, text)
    with pytest.raises(ns.CircuitError, match=match) as info:
        ns.load_circuit(path)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert info.value.line == line


def test_binary_and_missing_files_are_reported(tmp_path):
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ns.CircuitError, match="not a UTF-8 text file"):
        ns.load_circuit(binary)
    with pytest.raises(ns.CircuitError, match="cannot read circuit file"):
        ns.load_circuit(tmp_path / "missing.yaml")


def test_round_trip_is_the_identity(tmp_path):
    c = ns.load_circuit(EXAMPLE)
    ns.save_circuit(c, tmp_path / "out.yaml")
    assert ns.load_circuit(tmp_path / "out.yaml") == c
    rich = c.replace(stimuli={**c.stimuli,
                              "wave": ns.Stimulus("sine", ("A", "B"), amplitude=3.0, frequency=20.0,
                                                  phase=0.5, start=5.0, duration=50.0),
                              "tab": ns.Stimulus("table", "S", quantity="voltage",
                                                 times=(0.0, 1.5), values=(-70.0, -20.0)),
                              "train": ns.Stimulus("pulse_train", "S", duration=1.0, period=5.0,
                                                   count=4, offset=1.0)})
    assert ns.loads_circuit(ns.dump_circuit(rich)) == rich


names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", min_size=1, max_size=6)
finite = st.floats(-200, 200, allow_nan=False)


@st.composite
def circuits(draw):
    neuron_names = draw(st.lists(names, min_size=1, max_size=6, unique=True))
    neurons = tuple(ns.Neuron(n, C=draw(st.floats(1e-3, 1e3)), g_L=draw(st.floats(0, 100)),
                              E_L=draw(finite), V0=draw(st.none() | finite),
                              clamp=draw(st.none() | finite)) for n in neuron_names)
    pairs = draw(st.lists(st.tuples(st.sampled_from(neuron_names), st.sampled_from(neuron_names)),
                          unique=True, max_size=8))
    synapses = tuple(ns.Synapse(a, b, w=draw(st.floats(0, 10)), E=draw(finite), mu=draw(finite),
                                nu=draw(st.floats(-1, 1)), kappa=draw(st.floats(0, 1)))
                     for a, b in pairs)
    gap_pairs = {frozenset(p) for p in pairs if p[0] != p[1]}
    gaps = tuple(ns.GapJunction(*sorted(p), g=draw(st.floats(0, 5))) for p in gap_pairs)
    stimuli = {"s": ns.Stimulus("pulse", neuron_names[0], amplitude=draw(finite),
                                start=draw(st.floats(0, 100)), duration=draw(st.floats(0.1, 50)))}
    protocols = {"p": ns.Protocol(draw(st.floats(1, 1000)), stimuli=("s",))}
    return ns.Circuit(draw(names), neurons, synapses, gaps, stimuli, protocols)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(circuits())
def test_random_valid_circuits_round_trip(circuit):
    assert ns.loads_circuit(ns.dump_circuit(circuit)) == circuit


MUTATIONS = st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                      st.just("1e999 pF"), st.just("nan"), st.just("-inf mV"), st.just("∞"),
                      st.lists(st.integers(), max_size=2), st.dictionaries(names, st.integers(), max_size=2))


@settings(max_examples=350, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_files_load_or_raise_circuit_error(data):
    doc = yaml.safe_load(EXAMPLE.read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        node = doc
        while True:  # walk to a random leaf or branch
            key = None
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = data.draw(st.sampled_from(keys))
            if not isinstance(node[key], (dict, list)) or data.draw(st.booleans()):
                break
            node = node[key]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if key is None or action == "add":
            if isinstance(node, dict):
                node[data.draw(names)] = data.draw(MUTATIONS)
            else:
                node.append(data.draw(MUTATIONS))
        elif action == "delete":
            del node[key]
        else:
            node[key] = data.draw(MUTATIONS)
    text = yaml.safe_dump(doc, allow_unicode=True)
    try:
        circuit = ns.loads_circuit(text, "mutant.yaml")
    except ns.CircuitError as exc:
        assert str(exc).startswith("mutant.yaml")
        return
    assert isinstance(circuit, ns.Circuit)
    assert all(math.isfinite(n.C) for n in circuit.neurons)
