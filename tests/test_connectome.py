"""neurosim.connectome and `neurosim connectome`: circuits built from connectome tables.

Every expected number here is worked out by hand from the rules (w = count × chemical
weight, g = count × gap weight, E from the presynaptic transmitter, overrides, merged
classes, autapses) or re-read from the shipped CSVs with the csv module; none is copied
from the code's output.  The simulations are checked against a plain SciPy model of the
circuit equation of the README (C dV/dt = g_L (E_L − V) + Σ w σ(ν (V_pre − μ)) (E − κ V)
+ Σ g (V_other − V) + I).
"""

import contextlib
import csv
import errno
import io
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import fsolve

import neurosim
from neurosim import CircuitError
from neurosim._version import __version__
from neurosim.connectome import build_circuit, circuit_yaml, load_connectome
from neurosim.io import yaml as nyaml
from neurosim.io.yaml import loads_circuit, write_text_atomically

DATA = Path(neurosim.__file__).resolve().parent / "data"

# ---------------------------------------------------------------- a hand-written table

# 8 nodes: AVAL/AVAR, AVBL/AVBR (acetylcholine), DD1 (GABA), PLML (glutamate), ADEL
# (dopamine, a monoamine), XYZ (not in the neuron table, no transmitter).  Line numbers
# matter for the error tests: the header is line 3, the first row line 4.
SMALL = """\
# A hand-written test table
# second header line
pre,post,count,kind,neurotransmitter
AVAL,AVBL,3,chemical,acetylcholine
AVAR,AVBL,4,chemical,acetylcholine
AVAL,AVBR,5,chemical,Acetylcholine
AVAL,AVAL,2,chemical,acetylcholine
AVAL,AVAR,6,chemical,acetylcholine
AVBL,AVAL,7,chemical,acetylcholine
DD1,AVBR,8,chemical,gaba
PLML,AVAR,9,chemical,glutamate
ADEL,AVAL,10,chemical,dopamine
XYZ,AVBL,11,chemical,
PLML,XYZ,2.5,chemical,glutamate
AVAL,AVBL,2,gap,
AVAR,AVBL,3,gap,
AVAL,AVAR,4,gap,
PLML,PLML,1,gap,
"""
CW, GW = 0.1, 0.2  # nS per count used in most tests (round numbers to check by hand)

# resolved, unknown="drop", autapses=False: (pre, post) -> (w, E) by hand
RESOLVED = {
    ("AVAL", "AVBL"): (3 * CW, 0.0),
    ("AVAR", "AVBL"): (4 * CW, 0.0),
    ("AVAL", "AVBR"): (5 * CW, 0.0),    # 'Acetylcholine' is read case-insensitively
    ("AVAL", "AVAR"): (6 * CW, 0.0),
    ("AVBL", "AVAL"): (7 * CW, 0.0),
    ("DD1", "AVBR"): (8 * CW, -90.0),   # GABA
    ("PLML", "AVAR"): (9 * CW, 0.0),    # glutamate, default 0 mV
    ("PLML", "XYZ"): (2.5 * CW, 0.0),   # fractional count
}                                       # AVAL->AVAL autapse, ADEL (dopamine), XYZ (none): out
RESOLVED_GAPS = {frozenset(("AVAL", "AVBL")): 2 * GW, frozenset(("AVAR", "AVBL")): 3 * GW,
                 frozenset(("AVAL", "AVAR")): 4 * GW}  # PLML-PLML: a self-junction, out

# merge_classes: AVAL,AVAR -> AVA; AVBL,AVBR -> AVB; DD1 -> DD; PLML -> PLM; ADEL -> ADE
MERGED = {
    ("AVA", "AVB"): ((3 + 4 + 5) * CW, 0.0),
    ("AVB", "AVA"): (7 * CW, 0.0),
    ("DD", "AVB"): (8 * CW, -90.0),
    ("PLM", "AVA"): (9 * CW, 0.0),
    ("PLM", "XYZ"): (2.5 * CW, 0.0),
}                                       # AVA->AVA (2 + 6) is a class autapse: out
MERGED_GAPS = {frozenset(("AVA", "AVB")): (2 + 3) * GW}  # AVA-AVA (4), PLM-PLM (1): out


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.csv"
    path.write_text(SMALL)
    return path


def table_order():
    """Neuron names in the order of neurons_herm.csv, read with the csv module."""
    with open(DATA / "neurons_herm.csv", newline="") as stream:
        rows = csv.DictReader(line for line in stream if not line.startswith("#"))
        return [row["name"] for row in rows]


def syn_map(circuit):
    out = {}
    for s in circuit.synapses:
        assert (s.pre, s.post) not in out, f"synapse {s.pre}->{s.post} twice"
        out[(s.pre, s.post)] = (s.w, s.E)
    return out


def gap_map(circuit):
    out = {}
    for g in circuit.gap_junctions:
        key = frozenset((g.a, g.b))
        assert len(key) == 2 and key not in out, f"bad or repeated gap {g.a}-{g.b}"
        out[key] = g.g
    return out


def assert_synapses(circuit, expected):
    got = syn_map(circuit)
    assert set(got) == set(expected)
    for key, (w, E) in expected.items():
        assert got[key][0] == pytest.approx(w, rel=1e-12), key
        assert got[key][1] == E, key


def assert_gaps(circuit, expected):
    got = gap_map(circuit)
    assert set(got) == set(expected)
    for key, g in expected.items():
        assert got[key] == pytest.approx(g, rel=1e-12), key


# ---------------------------------------------------------------- reading a table

def test_load_connectome_reads_header_rows_and_defaults(small):
    c = load_connectome(small)
    assert c.name == "small"
    assert c.header == ("A hand-written test table", "second header line")
    assert len(c.connections) == 15
    assert (c.chemical_weight, c.gap_weight) == (0.05, 0.05)  # a CSV of one's own
    frac = [x for x in c.connections if x.pre == "PLML" and x.post == "XYZ"]
    assert len(frac) == 1 and frac[0].count == 2.5 and frac[0].kind == "chemical"
    assert all(x.transmitter == "" for x in c.connections if x.kind == "gap")
    assert {x.transmitter for x in c.connections if x.pre == "AVAL" and x.kind == "chemical"} \
        == {"acetylcholine"}
    present = {"AVAL", "AVAR", "AVBL", "AVBR", "DD1", "PLML", "ADEL", "XYZ"}
    assert c.neuron_names == [n for n in table_order() if n in present] + ["XYZ"]
    assert (c.class_of("AVAL"), c.class_of("DD1"), c.class_of("ADEL"), c.class_of("XYZ")) \
        == ("AVA", "DD", "ADE", "XYZ")
    assert c.members("AVA") == ["AVAL", "AVAR"] and c.members("XYZ") == ["XYZ"]


def test_shipped_tables_have_their_stated_weights_per_count():
    # Cook's counts are EM sections, Varshney's contacts: 0.018 and 0.05 nS per count
    cook, varshney = load_connectome("cook2019"), load_connectome("varshney2011")
    assert (cook.chemical_weight, cook.gap_weight) == (0.018, 0.018)
    assert (varshney.chemical_weight, varshney.gap_weight) == (0.05, 0.05)
    assert len([x for x in cook.connections if x.kind == "chemical"]) == 3709
    assert len([x for x in cook.connections if x.kind == "gap"]) == 1105
    assert len(cook.neuron_names) == 302 and len(varshney.neuron_names) == 279


# ---------------------------------------------------------------- building, by hand

def test_weights_signs_and_drops_of_the_resolved_circuit(small):
    circuit, report = build_circuit(small, chemical_weight=CW, gap_weight=GW)
    assert_synapses(circuit, RESOLVED)
    assert_gaps(circuit, RESOLVED_GAPS)
    order = [n for n in table_order() if n in {"AVAL", "AVAR", "AVBL", "AVBR", "DD1", "PLML",
                                                "ADEL"}] + ["XYZ"]
    assert [n.name for n in circuit.neurons] == order
    for n in circuit.neurons:
        assert (n.C, n.g_L, n.E_L, n.clamp) == (50.0, 1.0, -70.0, None)
    assert {n.name: n.role for n in circuit.neurons} == {
        "ADEL": "sensory", "AVAL": "inter", "AVAR": "inter", "AVBL": "inter", "AVBR": "inter",
        "DD1": "motor", "PLML": "sensory", "XYZ": None}
    for s in circuit.synapses:
        assert (s.mu, s.nu, s.kappa) == (-40.0, 0.1, 1.0)
    assert not circuit.protocols and not circuit.stimuli
    # the report: one chemical autapse and one gap self-junction left out, two presynaptic
    # neurons without a usable transmitter (dopamine ADEL, none XYZ), their 2 rows dropped
    assert (report.neurons, report.synapses, report.gap_junctions) == (8, 8, 3)
    assert report.autapses_dropped == 1 and report.unknown_dropped == 2
    assert report.unknown == {"dopamine": ["ADEL"], "": ["XYZ"]}
    lines = report.lines()
    assert lines[0].startswith("8 neurons, 8 chemical synapses, 3 gap junctions from small")
    assert any(re.match(r"1 chemical autapses? left out", line) for line in lines), lines
    assert any(re.match(r"1 gap junctions? of a node with itself left out", line)
               for line in lines), lines
    assert "dopamine: synapses of 1 presynaptic neuron left out (ADEL)" in lines
    assert "no known transmitter: synapses of 1 presynaptic neuron left out (XYZ)" in lines


def test_default_weight_of_a_csv_is_005_per_count(small):
    circuit, _ = build_circuit(small)
    expected = {k: (w / CW * 0.05, E) for k, (w, E) in RESOLVED.items()}
    assert_synapses(circuit, expected)
    assert_gaps(circuit, {k: g / GW * 0.05 for k, g in RESOLVED_GAPS.items()})


def test_weights_are_written_without_float_noise(small):
    # 3 x 0.1 is 0.30000000000000004 in floating point; the circuit (and its YAML) says 0.3
    circuit, report = build_circuit(small, chemical_weight=CW, gap_weight=GW)
    assert syn_map(circuit)[("AVAL", "AVBL")][0] == 0.3
    assert "{pre: AVAL, post: AVBL, w: 0.3, E: 0.0," in circuit_yaml(circuit, report)
    assert "{a: AVAR, b: AVBL, g: 0.6}" in circuit_yaml(circuit, report)  # not 0.6000000000000001


def test_unknown_transmitters_get_the_given_reversal(small):
    circuit, report = build_circuit(small, chemical_weight=CW, gap_weight=GW, unknown=-20.0)
    expected = dict(RESOLVED)
    expected[("ADEL", "AVAL")] = (10 * CW, -20.0)
    expected[("XYZ", "AVBL")] = (11 * CW, -20.0)
    assert_synapses(circuit, expected)
    assert report.unknown_dropped == 0 and report.unknown == {"dopamine": ["ADEL"], "": ["XYZ"]}
    assert "dopamine: synapses of 1 presynaptic neuron E = -20 mV (ADEL)" in report.lines()
    assert "no known transmitter: synapses of 1 presynaptic neuron E = -20 mV (XYZ)" \
        in report.lines()
    circuit, _ = build_circuit(small, chemical_weight=CW, unknown=0)  # an int is a number
    assert syn_map(circuit)[("ADEL", "AVAL")][1] == 0.0


def test_glutamate_reversal_is_the_argument(small):
    circuit, _ = build_circuit(small, chemical_weight=CW, gap_weight=GW, glutamate=-75.0)
    expected = dict(RESOLVED)
    expected[("PLML", "AVAR")] = (9 * CW, -75.0)
    expected[("PLML", "XYZ")] = (2.5 * CW, -75.0)
    assert_synapses(circuit, expected)


def test_chemical_autapses_kept_on_request_gap_self_junctions_never(small):
    circuit, report = build_circuit(small, chemical_weight=CW, gap_weight=GW, autapses=True)
    expected = dict(RESOLVED)
    expected[("AVAL", "AVAL")] = (2 * CW, 0.0)
    assert_synapses(circuit, expected)
    assert_gaps(circuit, RESOLVED_GAPS)  # PLML-PLML still left out
    assert report.autapses_dropped == 0
    assert not any("chemical autapse" in line for line in report.lines())


def test_merged_classes_sum_counts_and_drop_class_autapses(small):
    circuit, report = build_circuit(small, merge_classes=True, chemical_weight=CW,
                                    gap_weight=GW)
    assert_synapses(circuit, MERGED)
    assert_gaps(circuit, MERGED_GAPS)
    assert [n.name for n in circuit.neurons] == ["ADE", "AVA", "AVB", "DD", "PLM", "XYZ"]
    assert {n.name: n.role for n in circuit.neurons} == {
        "ADE": "sensory", "AVA": "inter", "AVB": "inter", "DD": "motor", "PLM": "sensory",
        "XYZ": None}
    # AVAL->AVAL and AVAL->AVAR both became AVA->AVA; AVAL-AVAR and PLML-PLML gaps too
    assert report.autapses_dropped == 2
    assert any(re.match(r"2 chemical autapses left out", line) for line in report.lines())
    assert any(re.match(r"2 gap junctions of a node with itself", line)
               for line in report.lines())
    assert report.unknown == {"dopamine": ["ADE"], "": ["XYZ"]}
    kept, _ = build_circuit(small, merge_classes=True, chemical_weight=CW, gap_weight=GW,
                            autapses=True)
    assert_synapses(kept, {**MERGED, ("AVA", "AVA"): ((2 + 6) * CW, 0.0)})
    assert_gaps(kept, MERGED_GAPS)


def test_merged_classes_with_unknown_value(small):
    circuit, _ = build_circuit(small, merge_classes=True, chemical_weight=CW, gap_weight=GW,
                               unknown=-20.0)
    assert_synapses(circuit, {**MERGED, ("ADE", "AVA"): (10 * CW, -20.0),
                              ("XYZ", "AVB"): (11 * CW, -20.0)})


@pytest.mark.parametrize("reversal,changes", [
    # by neuron: AVAL's three synapses, AVAR's unchanged
    ({"AVAL": -90.0}, {("AVAL", "AVBL"): -90.0, ("AVAL", "AVBR"): -90.0,
                       ("AVAL", "AVAR"): -90.0}),
    # by class: all members
    ({"AVA": -80.0}, {("AVAL", "AVBL"): -80.0, ("AVAL", "AVBR"): -80.0,
                      ("AVAL", "AVAR"): -80.0, ("AVAR", "AVBL"): -80.0}),
    # the neuron's entry beats its class's
    ({"AVA": -80.0, "AVAL": -90.0}, {("AVAL", "AVBL"): -90.0, ("AVAL", "AVBR"): -90.0,
                                     ("AVAL", "AVAR"): -90.0, ("AVAR", "AVBL"): -80.0}),
    ({"DD": 0.0}, {("DD1", "AVBR"): 0.0}),                 # GABA made excitatory
    ({"PLML": -70.0}, {("PLML", "AVAR"): -70.0, ("PLML", "XYZ"): -70.0}),
])
def test_reversal_overrides(small, reversal, changes):
    circuit, report = build_circuit(small, chemical_weight=CW, gap_weight=GW,
                                    reversal=reversal)
    expected = {k: (w, changes.get(k, E)) for k, (w, E) in RESOLVED.items()}
    assert_synapses(circuit, expected)
    assert report.options["reversal"] == reversal


@pytest.mark.parametrize("reversal", [{"ADEL": -30.0}, {"ADE": -30.0}])
def test_reversal_rescues_a_monoamine_neuron_from_drop(small, reversal):
    circuit, report = build_circuit(small, chemical_weight=CW, gap_weight=GW,
                                    reversal=reversal)
    assert_synapses(circuit, {**RESOLVED, ("ADEL", "AVAL"): (10 * CW, -30.0)})
    assert report.unknown == {"": ["XYZ"]} and report.unknown_dropped == 1
    circuit, _ = build_circuit(small, chemical_weight=CW, reversal={"XYZ": 10.0})
    assert syn_map(circuit)[("XYZ", "AVBL")] == (pytest.approx(11 * CW), 10.0)


def test_reversal_of_merged_classes(small):
    circuit, _ = build_circuit(small, merge_classes=True, chemical_weight=CW, gap_weight=GW,
                               reversal={"AVA": -90.0, "ADEL": -10.0})
    assert_synapses(circuit, {**MERGED, ("AVA", "AVB"): (12 * CW, -90.0),
                              ("ADE", "AVA"): (10 * CW, -10.0)})
    # one member overridden, the other not: one node with two reversal potentials
    with pytest.raises(CircuitError, match="AVA"):
        build_circuit(small, merge_classes=True, reversal={"AVAL": -90.0})


def test_members_with_different_transmitters_cannot_be_merged(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("pre,post,count,kind,neurotransmitter\n"
                    "AVAL,AVBL,10,chemical,acetylcholine\n"
                    "AVAR,AVBL,20,chemical,gaba\n"
                    "ADER,AVBL,5,chemical,dopamine\n"
                    "ADEL,AVBL,6,chemical,acetylcholine\n")
    circuit, _ = build_circuit(path, chemical_weight=0.1)
    assert_synapses(circuit, {("AVAL", "AVBL"): (1.0, 0.0), ("AVAR", "AVBL"): (2.0, -90.0),
                              ("ADEL", "AVBL"): (0.6, 0.0)})
    with pytest.raises(CircuitError, match="AVA") as info:
        build_circuit(path, ["AVA", "AVB"], merge_classes=True)
    assert "\n" not in str(info.value)
    circuit, _ = build_circuit(path, ["AVA", "AVB"], merge_classes=True, chemical_weight=0.1,
                               reversal={"AVA": -90.0})
    assert_synapses(circuit, {("AVA", "AVB"): (3.0, -90.0)})
    # ADE: ADER's dopamine rows are dropped, so ADEL's acetylcholine alone decides ...
    circuit, report = build_circuit(path, ["ADE", "AVB"], merge_classes=True,
                                    chemical_weight=0.1)
    assert_synapses(circuit, {("ADE", "AVB"): (0.6, 0.0)})
    assert report.unknown == {"dopamine": ["ADE"]}
    # ... but with unknown = -20 mV the class has two reversal potentials
    with pytest.raises(CircuitError, match="ADE"):
        build_circuit(path, ["ADE", "AVB"], merge_classes=True, unknown=-20.0)


def test_choosing_neurons_and_classes(small):
    circuit, report = build_circuit(small, ["AVA", "DD1"], chemical_weight=CW, gap_weight=GW)
    assert [n.name for n in circuit.neurons] == ["AVAL", "AVAR", "DD1"]
    assert_synapses(circuit, {("AVAL", "AVAR"): (6 * CW, 0.0)})  # DD1->AVBR: AVBR not chosen
    assert_gaps(circuit, {frozenset(("AVAL", "AVAR")): 4 * GW})
    assert report.autapses_dropped == 1
    one, _ = build_circuit(small, "AVB", chemical_weight=CW)  # a class as a string
    assert [n.name for n in one.neurons] == ["AVBL", "AVBR"] and not one.synapses
    twice, _ = build_circuit(small, ["AVAL", "AVA", "AVAL"], chemical_weight=CW)
    assert [n.name for n in twice.neurons] == ["AVAL", "AVAR"]
    merged, _ = build_circuit(small, ["AVA", "AVB", "DD"], merge_classes=True,
                              chemical_weight=CW, gap_weight=GW)
    assert_synapses(merged, {k: v for k, v in MERGED.items()
                             if set(k) <= {"AVA", "AVB", "DD"}})
    assert_gaps(merged, MERGED_GAPS)
    assert build_circuit(small, name="tiny")[0].name == "tiny"


def test_yaml_has_provenance_and_reads_back(small, tmp_path):
    circuit, report = build_circuit(small, merge_classes=True, chemical_weight=CW,
                                    gap_weight=GW, unknown=-20.0, reversal={"DD": -80.0})
    text = circuit_yaml(circuit, report, "neurosim connectome small.csv -o x.yaml")
    lines = text.splitlines()
    assert lines[0] == (f"# Built by neurosim {__version__} from the connectome table 'small' "
                        "with: neurosim connectome small.csv -o x.yaml")
    assert lines[1:3] == ["#   A hand-written test table", "#   second header line"]
    options = next(line for line in lines if line.startswith("# Options: "))
    for part in ("merge_classes=True", "chemical_weight=0.1", "gap_weight=0.2",
                 "unknown=-20.0", "reversal={'DD': -80.0}", "autapses=False"):
        assert part in options
    for line in report.lines():
        assert f"# {line}" in lines
    back = loads_circuit(text, "x.yaml")
    assert_synapses(back, {**MERGED, ("ADE", "AVA"): (10 * CW, -20.0),
                           ("XYZ", "AVB"): (11 * CW, -20.0), ("DD", "AVB"): (8 * CW, -80.0)})
    assert_gaps(back, MERGED_GAPS)
    assert [n.name for n in back.neurons] == [n.name for n in circuit.neurons]
    assert [(n.C, n.g_L, n.E_L, n.role) for n in back.neurons] == \
        [(n.C, n.g_L, n.E_L, n.role) for n in circuit.neurons]
    path = tmp_path / "x.yaml"
    path.write_text(text)
    assert_synapses(neurosim.load_circuit(path), syn_map(back))


def test_built_circuits_simulate(small):
    for merge in (False, True):
        circuit, _ = build_circuit(small, merge_classes=merge, unknown=-20.0, autapses=True)
        result = neurosim.simulate(circuit, duration=100.0)
        assert result.status == "complete"
        assert np.all(np.isfinite(result.V)) and result.t[-1] == pytest.approx(100.0)
        assert set(result.neuron_names) == {n.name for n in circuit.neurons}


# ---------------------------------------------------------------- against plain SciPy

def sigma(z):
    return 1.0 / (1.0 + np.exp(-z))


def reference_rhs(names, synapses, gaps, current):
    """dV/dt of neurons of C 50 pF, g_L 1 nS, E_L -70 mV, written out from the README."""
    index = {n: i for i, n in enumerate(names)}

    def rhs(t, V):
        total = 1.0 * (-70.0 - V)
        for pre, post, w, E in synapses:
            total[index[post]] += w * sigma(0.1 * (V[index[pre]] + 40.0)) * (E - V[index[post]])
        for a, b, g in gaps:
            total[index[a]] += g * (V[index[b]] - V[index[a]])
            total[index[b]] += g * (V[index[a]] - V[index[b]])
        total = total + current(t)
        return total / 50.0
    return rhs


def test_a_built_circuit_runs_as_the_equation_says(tmp_path):
    """Three neurons from a table, run by neurosim, against solve_ivp on the equation
    with the weights derived by hand (0.05 nS per count, E 0 / -90 mV)."""
    path = tmp_path / "three.csv"
    path.write_text("# three cells\npre,post,count,kind,neurotransmitter\n"
                    "AVAL,AVBL,20,chemical,acetylcholine\n"
                    "DD1,AVBL,30,chemical,gaba\n"
                    "AVBL,DD1,10,chemical,acetylcholine\n"
                    "AVBL,AVAL,4,gap,\n")
    circuit, _ = build_circuit(path)
    names = [n.name for n in circuit.neurons]
    assert set(names) == {"AVAL", "AVBL", "DD1"}
    synapses = [("AVAL", "AVBL", 1.0, 0.0), ("DD1", "AVBL", 1.5, -90.0),
                ("AVBL", "DD1", 0.5, 0.0)]
    gaps = [("AVAL", "AVBL", 0.2)]
    stim = neurosim.Stimulus("pulse", "AVAL", amplitude=40.0, start=20.0, duration=100.0)
    k = names.index("AVAL")

    def current(t):
        out = np.zeros(3)
        out[k] = 40.0 if 20.0 <= t < 120.0 else 0.0
        return out

    rhs = reference_rhs(names, synapses, gaps, current)
    result = neurosim.simulate(circuit, duration=200.0, stimuli=[stim], initial="as_given",
                               rtol=1e-10, atol=1e-10, dt_out=1.0)
    t = np.asarray(result.t)
    expected = np.empty((len(t), 3))
    V = np.full(3, -70.0)
    for a, b in ((0.0, 20.0), (20.0, 120.0), (120.0, 200.0)):
        inside = (t >= a) & (t <= b)
        sol = solve_ivp(rhs, (a, b), V, method="DOP853", rtol=1e-11, atol=1e-11,
                        dense_output=True)
        assert sol.success
        expected[inside] = sol.sol(t[inside]).T
        V = sol.y[:, -1]
    got = np.column_stack([result.v(n) for n in names])
    assert np.max(np.abs(got - expected)) < 1e-5
    assert got[119, k] - got[19, k] > 10.0  # the pulse did something (not a trivial match)
    # and the default start: the rest of the equation without the stimulus
    rest_rhs = reference_rhs(names, synapses, gaps, lambda t: np.zeros(3))
    rest = fsolve(lambda V: rest_rhs(0.0, V), np.full(3, -70.0), xtol=1e-13)
    started = neurosim.simulate(circuit, duration=10.0)
    assert np.allclose([started.v(n)[0] for n in names], rest, atol=1e-7)
    assert np.allclose([started.v(n)[-1] for n in names], rest, atol=1e-5)


# ---------------------------------------------------------------- the shipped tables

def read_cook():
    with open(DATA / "connectome_cook2019_herm.csv", newline="") as stream:
        return list(csv.DictReader(line for line in stream if not line.startswith("#")))


def class_table():
    with open(DATA / "neurons_herm.csv", newline="") as stream:
        rows = csv.DictReader(line for line in stream if not line.startswith("#"))
        return {row["name"]: row["class"] for row in rows}


def summed(rows, kind, pre_cls, post_cls, cls):
    return sum(int(r["count"]) for r in rows if r["kind"] == kind and (
        (cls[r["pre"]], cls[r["post"]]) == (pre_cls, post_cls) or
        (kind == "gap" and (cls[r["post"]], cls[r["pre"]]) == (pre_cls, post_cls))))


def test_cook_class_sums_are_the_published_ones():
    # Cook et al. 2019, class-summed: AVD -> AVA 167 sections, PVD -> PVC 107, gap AVA-PVC 52
    rows, cls = read_cook(), class_table()
    assert summed(rows, "chemical", "AVD", "AVA", cls) == 167
    assert summed(rows, "chemical", "PVD", "PVC", cls) == 107
    assert summed(rows, "gap", "AVA", "PVC", cls) == 52
    circuit, _ = build_circuit("cook2019", ["AVD", "AVA", "PVD", "PVC"], merge_classes=True)
    syn, gap = syn_map(circuit), gap_map(circuit)
    assert syn[("AVD", "AVA")] == (pytest.approx(167 * 0.018, rel=1e-12), 0.0)  # acetylcholine
    assert syn[("PVD", "PVC")] == (pytest.approx(107 * 0.018, rel=1e-12), 0.0)  # glutamate
    assert gap[frozenset(("AVA", "PVC"))] == pytest.approx(52 * 0.018, rel=1e-12)
    # the resolved pieces: AVDR -> AVAR 52 sections, AVAR-PVCR gap 22 (from the table)
    resolved, _ = build_circuit("cook2019", ["AVD", "AVA", "PVC"])
    assert syn_map(resolved)[("AVDR", "AVAR")][0] == pytest.approx(52 * 0.018)
    assert gap_map(resolved)[frozenset(("AVAR", "PVCR"))] == pytest.approx(22 * 0.018)


TAP = ("PVD", "PLM", "AVM", "ALM", "AVD", "PVC", "DVA", "AVA", "AVB")
SENSORY = {"PVDL", "PVDR", "PLML", "PLMR", "AVM", "ALML", "ALMR"}
TAP_PROTOCOLS = {"rest", "tap", "anterior", "posterior_gentle", "posterior_harsh",
                 "anterior_no_AVD", "posterior_gentle_no_PVC", "tap_no_PLM", "tap_no_PLML",
                 "tap_no_PLMR", "tap_no_anterior", "tap_no_AVD", "tap_no_PVC", "tap_no_AVA",
                 "tap_no_AVB", "tap_no_DVA"}


@pytest.fixture(scope="module")
def tap_resolved():
    return build_circuit("cook2019", "tap_withdrawal")


@pytest.fixture(scope="module")
def tap_merged():
    return build_circuit("cook2019", "tap_withdrawal", merge_classes=True)


def test_tap_withdrawal_resolved(tap_resolved):
    circuit, _ = tap_resolved
    rows, cls = read_cook(), class_table()
    members = {n for n, c in cls.items() if c in TAP}
    assert len(members) == 16
    names = [n.name for n in circuit.neurons]
    assert len(names) == 18 and set(names) == members | {"FWD", "REV"}
    by_name = {n.name: n for n in circuit.neurons}
    for n in members:
        assert by_name[n].clamp == (-70.0 if n in SENSORY else None), n
    assert {by_name[n].role for n in SENSORY} == {"sensory"}
    assert {by_name[n].role for n in ("AVAL", "AVBR")} == {"command"}
    assert {by_name[n].role for n in ("AVDL", "PVCR", "DVA")} == {"inter"}
    assert by_name["FWD"].role == by_name["REV"].role == "motor"
    syn = syn_map(circuit)
    # the read-outs: 2 nS from the class, split over its two members, excitatory
    assert {k: v for k, v in syn.items() if k[1] in ("FWD", "REV")} == {
        ("AVBL", "FWD"): (1.0, 0.0), ("AVBR", "FWD"): (1.0, 0.0),
        ("AVAL", "REV"): (1.0, 0.0), ("AVAR", "REV"): (1.0, 0.0)}
    # every table row between two different chosen neurons, and nothing else
    chem = {(r["pre"], r["post"]): int(r["count"]) for r in rows if r["kind"] == "chemical"
            and r["pre"] in members and r["post"] in members and r["pre"] != r["post"]}
    assert set(syn) == set(chem) | {("AVBL", "FWD"), ("AVBR", "FWD"), ("AVAL", "REV"),
                                    ("AVAR", "REV")}
    for key, count in chem.items():
        # the named set's signs: AVD and PVC excitatory, the other classes inhibitory
        E = 0.0 if cls[key[0]] in ("AVD", "PVC") else -90.0
        assert syn[key] == (pytest.approx(count * 0.018, rel=1e-12), E), key
    gaps = {frozenset((r["pre"], r["post"])): int(r["count"]) for r in rows
            if r["kind"] == "gap" and r["pre"] in members and r["post"] in members
            and r["pre"] != r["post"]}
    assert_gaps(circuit, {k: c * 0.018 for k, c in gaps.items()})
    # spot values from the table: AVAL -> PVCL 21 (acetylcholine, but AVA is inhibitory
    # in the model), PVDL -> PVCR 36 (glutamate, PVD inhibitory)
    assert syn[("AVAL", "PVCL")] == (pytest.approx(21 * 0.018), -90.0)
    assert syn[("PVDL", "PVCR")] == (pytest.approx(36 * 0.018), -90.0)


def test_tap_withdrawal_protocols_resolved(tap_resolved):
    circuit, _ = tap_resolved
    assert set(circuit.protocols) == TAP_PROTOCOLS and len(circuit.protocols) == 16
    p = circuit.protocols
    assert set(p["tap_no_PLM"].ablate) == {"PLML", "PLMR"}
    assert tuple(p["tap_no_PLML"].ablate) == ("PLML",)
    assert tuple(p["tap_no_PLMR"].ablate) == ("PLMR",)
    assert set(p["tap_no_anterior"].ablate) == {"ALML", "ALMR", "AVM"}
    assert all(q.duration == 1500.0 for q in p.values())
    tap = circuit.stimuli["tap_touch"]
    assert set(tap.targets) == SENSORY
    assert (tap.kind, tap.quantity, tap.amplitude, tap.start, tap.duration) == \
        ("pulse", "voltage", 50.0, 200.0, 200.0)
    assert set(circuit.stimuli["posterior_harsh_touch"].targets) == {"PLML", "PLMR", "PVDL",
                                                                     "PVDR"}
    readout = circuit.readouts["behaviour"]
    assert (readout.reverse, readout.forward) == ("REV", "FWD")


def test_tap_withdrawal_merged(tap_merged):
    circuit, _ = tap_merged
    rows, cls = read_cook(), class_table()
    assert [n.name for n in circuit.neurons] == list(TAP) + ["FWD", "REV"]
    assert {n.name for n in circuit.neurons if n.clamp == -70.0} == {"PVD", "PLM", "AVM", "ALM"}
    syn = syn_map(circuit)
    assert syn[("AVB", "FWD")] == (2.0, 0.0) and syn[("AVA", "REV")] == (2.0, 0.0)
    assert syn[("AVD", "AVA")] == (pytest.approx(167 * 0.018, rel=1e-12), 0.0)
    assert syn[("PVD", "PVC")] == (pytest.approx(107 * 0.018, rel=1e-12), -90.0)
    assert gap_map(circuit)[frozenset(("AVA", "PVC"))] == pytest.approx(52 * 0.018)
    pairs = {(cls[r["pre"]], cls[r["post"]]) for r in rows if r["kind"] == "chemical"
             and cls[r["pre"]] in TAP and cls[r["post"]] in TAP
             and cls[r["pre"]] != cls[r["post"]]}
    assert set(syn) == pairs | {("AVB", "FWD"), ("AVA", "REV")}
    for a, b in pairs:
        assert syn[(a, b)][0] == pytest.approx(summed(rows, "chemical", a, b, cls) * 0.018)
    assert set(circuit.protocols) == (TAP_PROTOCOLS - {"tap_no_PLML", "tap_no_PLMR"}) | \
        {"tap_half_PLM"}
    half = circuit.protocols["tap_half_PLM"]
    assert dict(half.scale) == {"PLM": 0.5} and not half.ablate
    assert tuple(circuit.protocols["tap_no_PLM"].ablate) == ("PLM",)
    assert set(circuit.stimuli["tap_touch"].targets) == {"ALM", "AVM", "PLM", "PVD"}


def test_given_reversal_beats_the_named_sets_signs():
    circuit, _ = build_circuit("cook2019", "tap_withdrawal", reversal={"AVA": 0.0,
                                                                       "PVDL": -60.0})
    syn = syn_map(circuit)
    assert syn[("AVAL", "PVCL")] == (pytest.approx(21 * 0.018), 0.0)
    assert syn[("PVDL", "PVCR")] == (pytest.approx(36 * 0.018), -60.0)
    assert syn[("PVDR", "PVCR")][1] == -90.0  # the set's sign for the other member


def test_tap_withdrawal_runs_its_protocols(tap_resolved, tap_merged):
    circuit, _ = tap_resolved
    tap = neurosim.simulate(circuit, "tap", dt_out=1.0)
    assert tap.status == "complete" and np.all(np.isfinite(tap.V))
    t = np.asarray(tap.t)
    before, during = np.argmin(np.abs(t - 100.0)), np.argmin(np.abs(t - 300.0))
    # the clamped touch cells follow the command: -70 mV, then -70 + 50 mV
    assert tap.v("PLML")[before] == pytest.approx(-70.0)
    assert tap.v("PLML")[during] == pytest.approx(-20.0)
    one = neurosim.simulate(circuit, "tap_no_PLML", dt_out=1.0)
    assert "PLML" not in one.neuron_names and "PLMR" in one.neuron_names
    assert one.v("PLMR")[during] == pytest.approx(-20.0)
    merged, _ = tap_merged
    half = neurosim.simulate(merged, "tap_half_PLM", dt_out=1.0)
    assert half.status == "complete" and np.all(np.isfinite(half.V))


def test_whole_worm_from_cook_runs_posterior_touch():
    circuit, report = build_circuit("cook2019", "whole_worm")
    rows = read_cook()
    usable = [r for r in rows if r["kind"] == "chemical" and r["pre"] != r["post"]
              and r["neurotransmitter"] in ("acetylcholine", "gaba", "glutamate")]
    assert len(circuit.neurons) == 302
    assert len(circuit.synapses) == len(usable)
    assert len(circuit.gap_junctions) == 1105 - 14
    assert report.autapses_dropped == 38
    assert all(n.clamp is None for n in circuit.neurons)
    roles = {n.name: n.role for n in circuit.neurons}
    assert (roles["AVAL"], roles["PLML"], roles["DD1"], roles["M1"], roles["CANL"]) == \
        ("inter", "sensory", "motor", None, None)
    assert set(circuit.protocols) == {"rest", "anterior_touch", "posterior_touch"}
    assert set(circuit.stimuli["posterior_touch"].targets) == {"PLML", "PLMR"}
    result = neurosim.simulate(circuit, "posterior_touch", integrator="dopri5", dt_out=1.0)
    assert result.status == "complete" and result.t[-1] == pytest.approx(1000.0)
    assert np.all(np.isfinite(result.V))
    t = np.asarray(result.t)
    plm = result.v("PLML")
    # 30 pA for 200 ms into a cell of 1 nS leak: up, then back down after 400 ms
    assert plm[np.argmin(np.abs(t - 399.0))] - plm[np.argmin(np.abs(t - 199.0))] > 5.0
    assert abs(plm[-1] - plm[np.argmin(np.abs(t - 199.0))]) < 1.0


# ---------------------------------------------------------------- hostile tables

H = "pre,post,count,kind,neurotransmitter\n"
ROW = "AVAL,AVBL,3,chemical,acetylcholine\n"


@pytest.mark.parametrize("text,line,needle", [
    ("pre,post,count,kind\n" + "AVAL,AVBL,3,chemical\n", 1, "missing neurotransmitter"),
    ("# c\npre,count,kind,neurotransmitter\n" + ROW, 2, "missing post"),
    (H + "AVAL,AVBL,3,electrical,\n", 2, "kind"),
    (H + "AVAL,AVBL,3,Chemical,acetylcholine\n", 2, "kind"),
    (H + "AVAL,AVBL,0,chemical,acetylcholine\n", 2, "positive"),
    (H + ROW + "AVAR,AVBL,-2,chemical,acetylcholine\n", 3, "a number such as 3 or 2.5"),
    (H + "AVAL,AVBL,nan,chemical,acetylcholine\n", 2, "a number such as 3 or 2.5"),
    (H + "AVAL,AVBL,inf,chemical,acetylcholine\n", 2, "a number such as 3 or 2.5"),
    (H + "AVAL,AVBL,-inf,gap,\n", 2, "a number such as 3 or 2.5"),
    (H + "AVAL,AVBL,three,chemical,acetylcholine\n", 2, "number"),
    (H + "AVAL,AVBL,,chemical,acetylcholine\n", 2, "number"),
    (H + ROW + "# a comment\n" + ROW, 4, "twice"),
    (H + "AVAL,AVBL,3,gap,\nAVBL,AVAL,3,gap,\n", 3, "twice"),
    (H + "AVAL,AVBL,3,chemical\n", 2, "fields"),
    (H + "AVAL,AVBL,3,chemical,acetylcholine,extra\n", 2, "fields"),
    (H + ",AVBL,3,chemical,acetylcholine\n", 2, "neuron"),
    (H + '"AVAL,AVBL,3,chemical,acetylcholine\n', 2, "fields"),
])
def test_bad_rows_name_file_and_line(tmp_path, text, line, needle):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(CircuitError) as info:
        load_connectome(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ") and needle in message
    assert "\n" not in message
    with pytest.raises(CircuitError):  # and the same through build_circuit
        build_circuit(str(path))


@pytest.mark.parametrize("content,needle", [
    ("", "no header"), ("# only\n# comments\n\n", "no header"), (H, "no connections"),
    (b"\x89PNG\r\n\x1a\n\x00\xff", "UTF-8"),
])
def test_empty_or_binary_tables(tmp_path, content, needle):
    path = tmp_path / "t.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(CircuitError, match=needle) as info:
        load_connectome(path)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("source,needle", [
    ("cook2020", "unknown connectome 'cook2020'"),
    ("table.txt", "cook2019, varshney2011 or a .csv"),
    ("missing.csv", "cannot read"),
])
def test_unknown_sources(tmp_path, monkeypatch, source, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "table.txt").write_text(H + ROW)  # exists, but is not a .csv
    with pytest.raises(CircuitError, match=re.escape(needle)):
        load_connectome(source)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(neurons=["AVAQ"]), "Did you mean 'AVA'"),
    (dict(neurons="AVBX"), "unknown neuron or class 'AVBX'"),
    (dict(neurons=["AVA", "RIML"]), "'RIML' has no connection in small"),
    (dict(neurons=[]), "at least one neuron"),
    (dict(neurons="tap_withdrawal"), "no connection"),  # the set needs PVD, ALM, ...
    (dict(chemical_weight=0.0), "chemical_weight must be a positive number"),
    (dict(chemical_weight=-0.1), "chemical_weight must be a positive number"),
    (dict(chemical_weight=float("nan")), "chemical_weight must be a positive number"),
    (dict(chemical_weight=float("inf")), "chemical_weight"),
    (dict(chemical_weight="0.1"), "chemical_weight"),
    (dict(gap_weight=0.0), "gap_weight must be a positive number"),
    (dict(gap_weight=float("nan")), "gap_weight"),
    (dict(glutamate=float("nan")), "glutamate must be a number"),
    (dict(unknown="keep"), "'drop'"),
    (dict(unknown=float("nan")), "'drop'"),
    (dict(unknown=None), "'drop'"),
    (dict(unknown="-20"), "'drop'"),
])
def test_bad_build_arguments(small, kwargs, needle):
    with pytest.raises(CircuitError) as info:
        build_circuit(small, **kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_overflowing_weights_are_a_circuit_error(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text(H + "AVAL,AVBL,1e308,chemical,acetylcholine\n"
                        "AVAR,AVBL,1e308,chemical,acetylcholine\n")
    with pytest.raises(CircuitError):  # the class sum is inf
        build_circuit(path, merge_classes=True)
    with pytest.raises(CircuitError):  # count × weight is inf
        build_circuit(path, chemical_weight=10.0)


# ---------------------------------------------------------------- the command line

def run_main(monkeypatch, tmp_path, *args):
    """neurosim.cli.main in tmp_path: (exit status, stdout, stderr)."""
    from neurosim.cli import main
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main replaces it
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(map(str, args)))
    return code, out.getvalue(), err.getvalue()


def listing(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def test_cli_builds_a_circuit_that_validates(monkeypatch, tmp_path, small):
    code, out, err = run_main(monkeypatch, tmp_path, "connectome", small, "-o", "tiny.yaml",
                              "--merge-classes", "--chemical-weight", CW, "--gap-weight", GW,
                              "--unknown", "-20", "--reversal", "DD=0", "AVA=-80",
                              "--autapses", "--glutamate", "-60", "--name", "tiny")
    assert code == 0, err
    circuit = neurosim.load_circuit(tmp_path / "tiny.yaml")
    assert circuit.name == "tiny"
    assert_synapses(circuit, {
        ("AVA", "AVB"): (12 * CW, -80.0), ("AVA", "AVA"): (8 * CW, -80.0),
        ("AVB", "AVA"): (7 * CW, 0.0), ("DD", "AVB"): (8 * CW, 0.0),
        ("PLM", "AVA"): (9 * CW, -60.0), ("PLM", "XYZ"): (2.5 * CW, -60.0),
        ("ADE", "AVA"): (10 * CW, -20.0), ("XYZ", "AVB"): (11 * CW, -20.0)})
    assert_gaps(circuit, MERGED_GAPS)
    lines = out.splitlines()
    assert lines[0].startswith("6 neurons, 8 chemical synapses, 1 gap junction")
    assert lines[-1] == "circuit -> tiny.yaml"
    assert "dopamine: synapses of 1 presynaptic neuron E = -20 mV (ADE)" in lines
    text = (tmp_path / "tiny.yaml").read_text()
    assert text.startswith(f"# Built by neurosim {__version__} from the connectome table "
                           "'small'")
    assert "#   A hand-written test table" in text
    assert listing(tmp_path) == ["small.csv", "tiny.yaml"]  # no temporary file left
    code, out, err = run_main(monkeypatch, tmp_path, "validate", "tiny.yaml")
    assert code == 0 and err == "" and "tiny" in out


def test_cli_default_is_the_whole_table_with_its_weights(monkeypatch, tmp_path, small):
    code, out, _ = run_main(monkeypatch, tmp_path, "connectome", small, "-o", "all.yml")
    assert code == 0
    circuit = neurosim.load_circuit(tmp_path / "all.yml")
    assert_synapses(circuit, {k: (w / CW * 0.05, E) for k, (w, E) in RESOLVED.items()})
    assert "1 chemical autapse left out (--autapses keeps them)" in out.splitlines()


def test_cli_neuron_list(monkeypatch, tmp_path, small):
    code, _, err = run_main(monkeypatch, tmp_path, "connectome", small, "-o", "x.yaml",
                            "--neurons", "AVA,DD1,AVBR", "--chemical-weight", CW)
    assert code == 0, err
    circuit = neurosim.load_circuit(tmp_path / "x.yaml")
    assert [n.name for n in circuit.neurons] == ["AVAL", "AVAR", "DD1", "AVBR"]  # as listed
    assert_synapses(circuit, {("AVAL", "AVBR"): (5 * CW, 0.0), ("AVAL", "AVAR"): (6 * CW, 0.0),
                              ("DD1", "AVBR"): (8 * CW, -90.0)})


@pytest.mark.parametrize("args,needle", [
    (["-o", "x.json"], "end its name in .yaml"),
    (["-o", "x"], "end its name in .yaml"),
    (["-o", "missing_folder/x.yaml"], "does not exist"),
    (["-o", "x.yaml", "--reversal", "AVA=x"], "--reversal takes NAME=MV"),
    (["-o", "x.yaml", "--reversal", "AVA"], "--reversal takes NAME=MV"),
    (["-o", "x.yaml", "--reversal", "=3"], "--reversal takes NAME=MV"),
    (["-o", "x.yaml", "--reversal", "AVA=nan"], "finite"),
    (["-o", "x.yaml", "--unknown", "keep"], "--unknown takes a reversal potential"),
    (["-o", "x.yaml", "--unknown", "nan"], "'drop'"),
    (["-o", "x.yaml", "--chemical-weight", "0"], "--chemical-weight must be a positive"),
    (["-o", "x.yaml", "--chemical-weight", "nan"], "--chemical-weight must be a positive"),
    (["-o", "x.yaml", "--gap-weight", "-1"], "--gap-weight must be a positive"),
    (["-o", "x.yaml", "--neurons", "AVAQ"], "Did you mean 'AVA'"),
    (["-o", "x.yaml", "--merge-classes", "--reversal", "AVAL=-90"], "AVA"),
])
def test_cli_bad_input_is_one_line_exit_2_and_no_file(monkeypatch, tmp_path, small, args,
                                                      needle):
    code, out, err = run_main(monkeypatch, tmp_path, "connectome", small, *args)
    assert code == 2 and out == ""
    assert err.startswith("neurosim: error: ") and len(err.strip().splitlines()) == 1
    assert needle in err and "Traceback" not in err
    assert listing(tmp_path) == ["small.csv"]


@pytest.mark.parametrize("source,text,needle", [
    ("cook2020", None, "unknown connectome 'cook2020'"),
    ("table.tsv", H + ROW, "unknown connectome 'table.tsv'"),
    ("bad.csv", H + ROW + "AVAR,AVBL,nan,chemical,acetylcholine\n", "bad.csv:3: count"),
    ("bad.csv", H + ROW + ROW, "bad.csv:3: chemical AVAL->AVBL appears twice"),
    ("bad.csv", "", "bad.csv: no header"),
])
def test_cli_bad_tables(monkeypatch, tmp_path, source, text, needle):
    if text is not None:
        (tmp_path / source).write_text(text)
    before = listing(tmp_path)
    code, out, err = run_main(monkeypatch, tmp_path, "connectome", source, "-o", "x.yaml")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("neurosim: error: ") and needle in err
    assert listing(tmp_path) == before


def test_cli_keeps_an_existing_output(monkeypatch, tmp_path, small):
    target = tmp_path / "out.yaml"
    target.write_text("precious\n")
    stamp = target.stat().st_mtime_ns
    code, out, err = run_main(monkeypatch, tmp_path, "connectome", small, "-o", "out.yaml")
    assert code == 2 and out == "" and "--overwrite" in err
    assert err.startswith("neurosim: error: ") and len(err.strip().splitlines()) == 1
    assert target.read_text() == "precious\n" and target.stat().st_mtime_ns == stamp
    # --overwrite with a bad table: the old file stays too
    (tmp_path / "bad.csv").write_text(H + "AVAL,AVBL,0,chemical,acetylcholine\n")
    code, _, err = run_main(monkeypatch, tmp_path, "connectome", "bad.csv", "-o", "out.yaml",
                            "--overwrite")
    assert code == 2 and "bad.csv:2:" in err
    assert target.read_text() == "precious\n"
    assert listing(tmp_path) == ["bad.csv", "out.yaml", "small.csv"]
    # --overwrite with a good one replaces it
    code, _, err = run_main(monkeypatch, tmp_path, "connectome", small, "-o", "out.yaml",
                            "--overwrite")
    assert code == 0, err
    assert len(neurosim.load_circuit(target).synapses) == len(RESOLVED)
    assert listing(tmp_path) == ["bad.csv", "out.yaml", "small.csv"]


def test_cli_as_a_process(tmp_path, small):
    """A real process: exit codes and a one-line error, no traceback."""
    def neurosim_cli(*args):
        return subprocess.run([sys.executable, "-m", "neurosim.cli", *map(str, args)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    bad = neurosim_cli("connectome", small, "-o", "x.yaml", "--reversal", "AVA=x")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip() == ("neurosim: error: --reversal takes NAME=MV (e.g. AVA=-90), "
                                  "got 'AVA=x'")
    good = neurosim_cli("connectome", small, "-o", "x.yaml", "--neurons", "AVA,AVB")
    assert good.returncode == 0, good.stderr
    first = (tmp_path / "x.yaml").read_text().splitlines()[0]
    assert first.endswith(f"with: neurosim connectome {small} -o x.yaml --neurons AVA,AVB")


# ---------------------------------------------------------------- the atomic writer

class FailingStream:
    """A text stream that writes half of what it is given, then fails (a full disk)."""

    def __init__(self, stream):
        self.stream = stream

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.close()
        return False

    def write(self, text):
        self.stream.write(text[:len(text) // 2])
        self.stream.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.stream, name)


def failing_open(*args, **kwargs):
    return FailingStream(open(*args, **kwargs))


def test_atomic_writer_replaces_whole(tmp_path):
    target = tmp_path / "c.yaml"
    write_text_atomically(target, "first\n")
    write_text_atomically(str(target), "second\n" * 1000)
    assert target.read_text() == "second\n" * 1000
    assert listing(tmp_path) == ["c.yaml"]


@pytest.mark.parametrize("existing", [True, False])
def test_atomic_writer_failure_keeps_the_old_file(tmp_path, monkeypatch, existing):
    target = tmp_path / "c.yaml"
    if existing:
        target.write_text("old content\n")
    monkeypatch.setattr(nyaml, "open", failing_open, raising=False)
    with pytest.raises(neurosim.errors.StorageError, match="No space left on device; the previous file"):
        write_text_atomically(target, "new content that will not fit\n" * 100)
    if existing:
        assert target.read_text() == "old content\n"
        assert listing(tmp_path) == ["c.yaml"]  # no temporary file behind
    else:
        assert listing(tmp_path) == []


def test_atomic_writer_interrupted_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "c.yaml"
    target.write_text("old\n")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(nyaml.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomically(target, "new\n")
    assert target.read_text() == "old\n" and listing(tmp_path) == ["c.yaml"]


# ---------------------------------------------------------------- bugs found, fixed

def test_provenance_names_the_command_that_was_run(monkeypatch, tmp_path, small):
    monkeypatch.setattr(sys, "argv", ["pytest", "-q", "some_other_thing"])
    code, _, err = run_main(monkeypatch, tmp_path, "connectome", small, "-o", "x.yaml")
    assert code == 0, err
    first = (tmp_path / "x.yaml").read_text().splitlines()[0]
    assert "some_other_thing" not in first
    assert first.endswith(f"neurosim connectome {small} -o x.yaml")


def test_a_line_break_in_an_argument_stays_in_the_comment(tmp_path, small):
    done = subprocess.run([sys.executable, "-m", "neurosim.cli", "connectome", str(small),
                           "-o", "x.yaml", "--name", "evil\ninitial: as_given"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 2)
    if done.returncode == 0:
        text = (tmp_path / "x.yaml").read_text()
        header = text[:text.index("\nname:")].splitlines()
        assert all(line.startswith("#") for line in header), header
        assert neurosim.load_circuit(tmp_path / "x.yaml").initial is None


def test_cli_full_disk_is_exit_74(monkeypatch, tmp_path, small):
    target = tmp_path / "out.yaml"
    target.write_text("precious\n")
    monkeypatch.setattr(nyaml, "open", failing_open, raising=False)
    code, _, err = run_main(monkeypatch, tmp_path, "connectome", small, "-o", "out.yaml",
                            "--overwrite")
    assert code == 74 and err.startswith("neurosim: error: ")
    assert len(err.strip().splitlines()) == 1
    assert target.read_text() == "precious\n"


def test_reversal_of_an_unknown_name_is_refused(small):
    with pytest.raises((CircuitError, Warning), match="AVQ"):
        build_circuit(small, reversal={"AVQ": -90.0})


def test_non_finite_reversal_is_named_as_such(small):
    with pytest.raises(CircuitError) as info:
        build_circuit(small, reversal={"AVAL": float("nan")})
    assert "different transmitters" not in str(info.value)
    assert "reversal" in str(info.value)


def test_named_set_inside_a_list_is_not_suggested_as_itself(small):
    with pytest.raises(CircuitError) as info:
        build_circuit(small, ["AVA", "tap_withdrawal"])
    assert "Did you mean 'tap_withdrawal'" not in str(info.value)


def test_a_folder_named_csv_is_not_called_yaml(tmp_path):
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(CircuitError) as info:
        load_connectome(tmp_path / "d.csv")
    assert "YAML" not in str(info.value)


def test_a_byte_order_mark_is_not_a_missing_column(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(("\ufeff" + H + ROW).encode("utf-8"))
    try:
        c = load_connectome(path)
    except CircuitError as exc:
        assert "missing pre" not in str(exc)
    else:
        assert [(x.pre, x.post, x.count) for x in c.connections] == [("AVAL", "AVBL", 3.0)]


def test_smaller_edges_are_one_line_errors_in_flag_words(small, tmp_path, monkeypatch):
    with pytest.raises(CircuitError, match="neurons must be 'all', a named set"):
        build_circuit(load_connectome(small), None)
    repeated = tmp_path / "repeated.csv"
    repeated.write_text("pre,post,count,kind,neurotransmitter,count\nAVAL,AVBL,1,chemical,,2\n")
    with pytest.raises(CircuitError, match="repeated.csv:1: the header names count more than once"):
        load_connectome(repeated)
    for flag in ("--glutamate", "--unknown"):
        code, _, err = run_main(monkeypatch, tmp_path, "connectome", str(small), "-o", "x.yaml",
                                flag, "nan")
        assert code == 2 and f"neurosim: error: {flag} must be" in err, err
    for chosen in (["AVAL", "AVBL"], ["AVAL", "AVAR", "AVBL", "AVBR"]):
        circuit, report = build_circuit(load_connectome(small), chosen)
        gaps = len(circuit.gap_junctions)
        word = "gap junction" if gaps == 1 else "gap junctions"
        assert report.lines()[0].endswith(f" {gaps} {word} from small"), report.lines()[0]


@pytest.mark.parametrize("count", ["1_000", "\u0663", "1e", "0x10", " "])
def test_counts_are_plain_numbers(tmp_path, count):
    path = tmp_path / "odd.csv"
    path.write_text(H + f"AVAL,AVBL,{count},chemical,acetylcholine\n")
    with pytest.raises(CircuitError, match="odd.csv:2: count must be a number such as 3"):
        load_connectome(path)


def test_a_line_separator_inside_a_field_is_not_a_line_break(tmp_path):
    path = tmp_path / "sep.csv"
    path.write_text("# a comment \u2028 with a separator\n" + H
                    + "AVAL,AVBL,2,chemical,acetylcholine\n")
    table = load_connectome(path)
    assert [(c.pre, c.post, c.count) for c in table.connections] == [("AVAL", "AVBL", 2.0)]
