"""NeuroML 2 / LEMS interchange (neurosim.neuroml): export, schema validation, import,
and the cross-check against jNeuroML, the independent reference."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import neurosim as ns
from helpers import EXAMPLE, ROOT, TW, run_main
from helpers import tw_script as script

neuroml_lib = pytest.importorskip("neuroml", reason="libNeuroML (the neuroml extra) is not installed")
pytest.importorskip("pyneuroml", reason="pyNeuroML (the neuroml extra) is not installed")
from neuroml.loaders import read_neuroml2_file  # noqa: E402
from neuroml.utils import validate_neuroml2  # noqa: E402

from neurosim.errors import CircuitError  # noqa: E402
from neurosim.neuroml import (NeuroMLToolError, crosscheck, export,  # noqa: E402
                              import_network)

needs_java = pytest.mark.skipif(shutil.which("java") is None,
                                reason="no java on this machine: jNeuroML cannot run")

#: two free neurons and a clamped one: a gap junction, a synapse of each sign (one of
#: them half current-based), a current pulse, a ramp and a clamp command; V0 given
SMALL = """name: small net
initial: as_given
neurons:
  - {name: S, C: 2.0, g_L: 0.2, E_L: -70.0, V0: -65.0, role: sensory}
  - {name: A, C: 3.0, g_L: 0.3, E_L: -60.0}
  - {name: K, C: 5.0, g_L: 1.0, E_L: -70.0, clamp: -70.0}
synapses:
  - {pre: S, post: A, w: 0.8, E: 0.0, mu: -55.0, nu: 0.15, kappa: 1.0}
  - {pre: A, post: S, w: 0.5, E: -90.0, mu: -50.0, nu: 0.2, kappa: 0.5}
  - {pre: K, post: A, w: 0.4, E: -90.0, mu: -45.0, nu: 0.1, kappa: 1.0}
gap_junctions:
  - {a: S, b: A, g: 0.07}
stimuli:
  kick: {kind: pulse, target: S, amplitude: 15.0, start: 20.0, duration: 40.0}
  slope: {kind: ramp, target: [A, S], amplitude: -6.0, start: 80.0, duration: 50.0}
  hold: {kind: pulse, quantity: voltage, target: K, amplitude: 40.0, start: 50.0, duration: 60.0}
protocols:
  trial: {duration: 200.0, stimuli: [slope, kick, hold], description: "a short trial"}
"""


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return ns.load_circuit(path)


def schema_errors(path: Path) -> list[str]:
    """Errors of ``path`` against the NeuroML 2 XML schema that libNeuroML ships."""
    from lxml import etree
    xsd = sorted((Path(neuroml_lib.__file__).parent / "nml").glob("NeuroML_v2.3*.xsd"))[-1]
    schema = etree.XMLSchema(etree.parse(str(xsd)))
    schema.validate(etree.parse(str(path)))
    return [str(e) for e in schema.error_log]


# --- export, schema, import ---------------------------------------------------------------

def test_export_is_valid_neuroml_and_comes_back_equal(small, tmp_path):
    files = export(small, tmp_path / "out")
    assert [p.name for p in files.paths] == ["small_net.net.nml", "small_net.components.xml",
                                            "LEMS_small_net.xml"]
    assert schema_errors(files.network) == []
    validate_neuroml2(str(files.network))  # libNeuroML's own check
    doc = read_neuroml2_file(str(files.network))
    net = doc.networks[0]
    assert [p.id for p in net.populations] == ["S", "A", "K"]
    assert len(net.continuous_projections) == 3 and len(net.electrical_projections) == 1
    assert [g.id for g in doc.pulse_generators] == ["stim_kick"]
    assert doc.pulse_generators[0].delay == "20.0ms" and doc.pulse_generators[0].amplitude == "15.0pA"
    back = import_network(files.network)
    assert back == small                               # every parameter, name and stimulus
    assert back.stimuli["slope"].targets == ("A", "S")  # in the order given
    assert ns.load_circuit(files.network) == small      # load_circuit reads .nml too


def test_the_lems_files_hold_the_model_equation_and_the_protocol(small, tmp_path):
    files = export(small, tmp_path, dt=0.02)
    components = files.components.read_text()
    assert ('value="weight * conductance / (1 + exp(nu * (mu - vpeer))) * (erev - kappa * v)"'
            in components)
    assert re.search(r'id="cell_K" type="neurosimClampedCell" holding="-70.0mV"', components)
    assert 'stimulus="hold" position="0" delay="50.0ms" duration="60.0ms" amplitude="40.0mV"' \
        in components
    # the run starts as given: V0 of S, E_L of A, the holding potential of K
    assert re.search(r'id="cell_S"[^>]*V0="-65.0mV"', components)
    assert re.search(r'id="cell_A"[^>]*V0="-60.0mV"', components)
    simulation = files.simulation.read_text()
    assert 'length="200.0ms" step="0.02ms" target="net_small_net"' in simulation
    assert 'quantity="K/0/cell_K/v"' in simulation


def test_the_example_and_tap_withdrawal_come_back_as_their_protocols_run(tmp_path):
    c = ns.load_circuit(EXAMPLE)
    files = export(c, tmp_path / "base", "baseline")
    assert import_network(files.network) == c.replace(protocols={"baseline": c.protocols["baseline"]})
    assert files.left_out == ("protocol no_A",)
    assert schema_errors(files.network) == []
    # an ablation: the network is the circuit without A, the protocol without its ablate
    files = export(c, tmp_path / "no_A", "no_A")
    assert import_network(files.network) == c.without(["A"]).replace(
        protocols={"no_A": ns.Protocol(500.0, ("tap",))})
    tw = ns.load_circuit(TW)
    files = export(tw, tmp_path / "tw", "tap")
    expected = tw.replace(protocols={"tap": tw.protocols["tap"]},
                          stimuli={"tap_touch": tw.stimuli["tap_touch"]}, readouts={})
    assert import_network(files.network) == expected
    assert schema_errors(files.network) == []
    assert "readout behaviour" in files.left_out and "protocol tap_no_PLM" in files.left_out
    # the rest the run starts from: Newton's, written into the cells
    rest = ns.rest_state(tw, "tap").V
    written = dict(re.findall(r'id="cell_(\w+)"[^>]*V0="([-\d.e]+)mV"', files.components.read_text()))
    assert {k: float(v) for k, v in written.items()} == rest


def test_existing_files_are_kept_without_overwrite(small, tmp_path):
    files = export(small, tmp_path)
    before = files.network.read_text()
    files.network.write_text("mine")
    with pytest.raises(CircuitError, match=r"small_net.net.nml, .* exist; pass overwrite=True"):
        export(small, tmp_path)
    assert files.network.read_text() == "mine"
    export(small, tmp_path, overwrite=True)
    assert files.network.read_text() == before


# --- what is refused, in one line ------------------------------------------------------

@pytest.mark.parametrize("stimulus,refusal", [
    ("{kind: sine, target: S, amplitude: 1.0, frequency: 10.0, duration: 50.0}",
     "a current sine stimulus has no NeuroML counterpart"),
    ("{kind: step, target: S, amplitude: 1.0, start: 5.0}",
     "a current step stimulus has no NeuroML counterpart; .*pulse lasting to the end"),
    ("{kind: table, target: S, times: [0.0, 10.0], values: [0.0, 1.0]}", "a current table stimulus"),
    ("{kind: pulse_train, target: S, duration: 1.0, period: 5.0}", "a current pulse_train stimulus"),
    ("{kind: pulse, target: S, offset: 2.0, duration: 5.0}", "a current pulse stimulus with an offset"),
    ("{kind: pulse, quantity: voltage, target: S, duration: 5.0}",
     "a voltage stimulus on 'S', which has no clamp"),
])
def test_stimuli_without_a_counterpart_are_refused_naming_them(small, tmp_path, stimulus, refusal):
    text = SMALL.replace("  kick: {kind: pulse", f"  odd: {stimulus}\n  kick: {{kind: pulse")
    text = text.replace("stimuli: [slope, kick, hold]", "stimuli: [odd, kick]")
    (tmp_path / "odd.yaml").write_text(text)
    with pytest.raises(CircuitError, match=f"^stimuli.odd: {refusal}") as info:
        export(ns.load_circuit(tmp_path / "odd.yaml"), tmp_path / "out")
    message = str(info.value)
    assert "\n" not in message
    assert "supported: current pulse" in message or "give the neuron a clamp" in message
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_names_that_are_no_neuroml_ids_and_schedules_are_refused(small, tmp_path):
    renamed = ns.Circuit("x", (ns.Neuron("AVA L"),), protocols={"p": ns.Protocol(1.0)})
    with pytest.raises(CircuitError, match=r"neurons\[0\].name: neuron name 'AVA L' cannot be a "
                                           r"NeuroML id"):
        export(renamed, tmp_path)
    scheduled = small.replace(schedule=ns.model.Schedule(1.0, {"neurons[A].E_L": [-60.0]}))
    with pytest.raises(CircuitError, match="^schedule: time-varying parameters have no NeuroML"):
        export(scheduled, tmp_path)
    with pytest.raises(CircuitError, match=r"choose a protocol to export \(one of: baseline, no_A\)"):
        export(ns.load_circuit(EXAMPLE), tmp_path)


def _nml(tmp_path, small, edit):
    files = export(small, tmp_path / "net")
    files.network.write_text(edit(files.network.read_text()))
    return files.network


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace("<network", '<iafCell id="i" C="1pF" thresh="1mV" reset="0mV" '
                                      'leakConductance="1nS" leakReversal="0mV"/>\n<network'),
     r":\d+: <iafCell id='i'>: element <iafCell> is not supported by neurosim's import; "
     r"supported here: <notes>, <network>"),
    (lambda t: t.replace("<inputList", '<projection id="p" presynapticPopulation="S" '
                                       'postsynapticPopulation="A" synapse="x"/>\n<inputList', 1),
     r"<projection id='p'>: element <projection> is not supported .* <continuousProjection>"),
    (lambda t: t.replace('component="stim_kick"', 'component="nothing"'),
     r"component: no component 'nothing'"),
    (lambda t: t.replace('postComponent="syn_0"', 'postComponent="silent"'),
     r"postComponent: component 'silent' is a silentSynapse; supported here: neurosimGradedSynapse"),
    (lambda t: t.replace('weight="0.8"', 'weight="a lot"'), r"weight: cannot read 'a lot'"),
    (lambda t: t.replace('conductance="1.0nS"', 'conductance="1.0mV"'),
     r"conductance: '1.0mV' is not a conductance"),
    (lambda t: t.replace('<property tag="neurosim.components" value="small_net.components.xml"/>', ''),
     r"no <property tag=\"neurosim.components\">"),
    (lambda t: t.replace('value="small_net.components.xml"', 'value="../elsewhere.xml"'),
     r"must be a file name in the network file's folder"),
    (lambda t: t.replace('value="small_net.components.xml"', 'value="gone.xml"'),
     r"gone.xml: cannot read LEMS components file: No such file"),
    (lambda t: t[:200], r":\d+: invalid XML"),
])
def test_unsupported_or_broken_networks_are_one_line_errors(small, tmp_path, edit, message):
    path = _nml(tmp_path, small, edit)
    with pytest.raises(CircuitError, match=message) as info:
        import_network(path)
    assert "\n" not in str(info.value)


def test_unsupported_lems_components_and_missing_files(small, tmp_path, monkeypatch):
    files = export(small, tmp_path)
    files.components.write_text(files.components.read_text().replace(
        'type="neurosimGradedSynapse"', 'type="gradedSynapse"', 1))
    with pytest.raises(CircuitError, match=r"components.xml:\d+: <Component id='syn_0'>: component "
                                           r"type 'gradedSynapse' is not supported; supported: "
                                           r"neurosimCell, neurosimClampedCell, neurosimGradedSynapse"):
        import_network(files.network)
    with pytest.raises(CircuitError, match=r"missing.nml: cannot read NeuroML network file: No such"):
        import_network(tmp_path / "missing.nml")
    code, out, err = run_main(monkeypatch, tmp_path, "import-neuroml", "missing.nml",
                              "-o", "x.yaml")
    assert code == 2 and err.count("\n") == 1 and "No such file" in err
    assert not (tmp_path / "x.yaml").exists()


def test_java_missing_is_a_one_line_error(small, monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(NeuroMLToolError, match="^java not found: the cross-check runs jNeuroML, "
                                               "which needs a Java runtime"):
        crosscheck(small)
    (tmp_path / "small.yaml").write_text(SMALL)
    code, out, err = run_main(monkeypatch, tmp_path, "crosscheck", "small.yaml")
    assert code == 2 and out == "" and err.startswith("neurosim: error: java not found")
    assert err.count("\n") == 1


# --- the command line ------------------------------------------------------------------

def test_export_and_import_from_the_command_line(monkeypatch, tmp_path):
    (tmp_path / "small.yaml").write_text(SMALL)
    code, out, err = run_main(monkeypatch, tmp_path, "export", "small.yaml", "--neuroml", "nml")
    assert code == 0 and "nml/small_net.net.nml" in out, err
    code, out, err = run_main(monkeypatch, tmp_path, "export", "small.yaml", "--neuroml", "nml")
    assert code == 2 and "pass --overwrite to replace them" in err and err.count("\n") == 1
    code, out, err = run_main(monkeypatch, tmp_path, "import-neuroml", "nml/small_net.net.nml",
                              "-o", "back.yaml")
    assert code == 0, err
    assert ns.load_circuit(tmp_path / "back.yaml") == ns.load_circuit(tmp_path / "small.yaml")
    code, out, err = run_main(monkeypatch, tmp_path, "import-neuroml", "nml/small_net.net.nml",
                              "-o", "back.yaml")
    assert code == 2 and "back.yaml exists; pass --overwrite" in err
    code, out, err = run_main(monkeypatch, tmp_path, "export", "small.yaml", "--neuroml", "x",
                              "--dt", "-1")
    assert code == 2 and "dt must be a finite number of ms > 0, got -1.0" in err


# --- against jNeuroML ------------------------------------------------------------------

@needs_java
def test_jneuroml_converges_to_neurosim_at_first_order(small):
    """jLEMS is forward Euler: its difference from neurosim's dopri5 (rtol 1e-10) halves
    with its step, for the synapses of both signs, the gap junction and the clamp."""
    lines = []
    check = crosscheck(small, dt=0.01, progress=lines.append)
    assert check.neurons == ("S", "A")  # K follows its command
    assert check.steps == (0.01, 0.005)
    assert np.all(check.max_difference[1] <= 0.2)
    assert np.all(check.max_difference[1] > 1e-4)  # a real difference, not a copy
    assert np.allclose(check.ratio, 2.0, atol=0.15), check.lines()
    assert any(line.startswith("jNeuroML: dt = 0.005 ms done in") for line in lines)
    assert sum(check.jneuroml_s) < 30


# --- the docs --------------------------------------------------------------------------

@needs_java
@pytest.mark.slow
def test_the_documented_crosscheck_is_what_the_code_gives_today():
    make_docs = script("make_docs")
    documented = make_docs.generated_sections(ROOT)[("docs/neuroml.md", "scripts/neuroml_examples.py", 0)]
    assert make_docs.differences(documented, script("neuroml_examples").section()) == []


def test_weights_come_back_to_the_last_bit(tmp_path):
    """Weights and gap conductances of a fitted circuit (17 significant digits), one of
    1e-17 and one beyond 15 decimals survive export and import exactly."""
    fitted = ns.load_circuit(ROOT / "circuits" / "tap_withdrawal_fitted.yaml")
    export(fitted, tmp_path / "fitted", "tap")
    back = ns.load_circuit(next((tmp_path / "fitted").glob("*.net.nml")))
    assert {s.key: s.w for s in back.synapses} == {s.key: s.w for s in fitted.synapses}
    tiny = ns.Circuit("tiny", (ns.Neuron("A"), ns.Neuron("B")), (ns.Synapse("A", "B", w=1e-17),),
                      (ns.GapJunction("A", "B", g=0.0123456789012345678),), {},
                      {"p": ns.Protocol(10.0)})
    export(tiny, tmp_path / "tiny", "p")
    path = next((tmp_path / "tiny").glob("*.net.nml"))
    assert schema_errors(path) == []
    back = ns.load_circuit(path)
    assert back.synapses[0].w == 1e-17
    assert back.gap_junctions[0].g == 0.0123456789012345678
