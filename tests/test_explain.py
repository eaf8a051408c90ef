"""Current decomposition, pathways, motif circuits and counts, robustness estimates."""

import numpy as np
import pytest

import neurosim as ns
from neurosim import ml
from neurosim.explain import (MOTIFS, circuit_as_run, control_result, decompose, dominant_pathways,
                              edge_charges, find_motifs, linear_form,
                              lipschitz_estimate, motif_table)
from helpers import ROOT, TW, neurosim, tw_script
from reference import ReferenceModel, random_circuit

MOTIF_DIR = ROOT / "circuits" / "motifs"


@pytest.mark.parametrize("seed,n", [(1, 4), (2, 9), (3, 15)])
def test_currents_sum_to_C_dV_dt(seed, n):
    circuit, stimuli = random_circuit(seed, n, p_gap=0.3, kappa=None)
    r = ns.simulate(circuit, duration=8.0, stimuli=stimuli, dt_out=0.25)
    ref = ReferenceModel(circuit, stimuli)
    for neuron in circuit.neuron_names:
        d = decompose(circuit, r, neuron, stimuli=stimuli)
        expected = np.array([ref.dVdt(t, V) for t, V in zip(r.t, r.V)])[:, circuit.neuron_names.index(neuron)]
        np.testing.assert_allclose(d.total, d.C * expected, rtol=1e-9, atol=1e-9 * np.abs(d.C * expected).max())
        a, b = linear_form(d)
        np.testing.assert_allclose(-a * r.v(neuron) + b, d.total / d.C, rtol=1e-9, atol=1e-9)
        assert np.all(d.tau > 0)


def test_decomposition_needs_the_inputs_recorded():
    c = ns.load_circuit(TW)
    r = ns.simulate(c, "tap", record=["AVA", "REV"])
    with pytest.raises(ns.CircuitError, match="record the inputs of 'AVA' too: AVB, AVD, PLM, PVC, PVD"):
        decompose(c, r, "AVA")


def test_dominant_pathway_of_anterior_touch_runs_through_the_command_neuron():
    c = ns.load_circuit(TW)
    r = ns.simulate(c, "anterior", dt_out=1.0)
    paths = dominant_pathways(c, r, "AVM", "REV")
    assert paths and all(p.neurons[0] == "AVM" and p.neurons[-1] == "REV" for p in paths)
    assert all(p.neurons[-2] == "AVA" for p in paths)          # REV's only input
    assert paths[0].neurons == ("AVM", "AVD", "AVA", "REV") and paths[0].charge > 0
    assert [abs(p.charge) for p in paths] == sorted((abs(p.charge) for p in paths), reverse=True)
    # ALM's evoked signal (inhibiting PVC) is overridden downstream: no chain carries it
    assert dominant_pathways(c, r, "ALM", "AVA") == []


def two_routes():
    """S reaches T through A and through B.  S → A and A → T sit on their sigmoids'
    plateau (μ far below any potential): the largest tonic currents, but nearly blind to
    the stimulus.  B is silent at rest, opened by the stimulus, and inhibits T."""
    neurons = (ns.Neuron("S", clamp=-70.0), ns.Neuron("A", C=10.0), ns.Neuron("B", C=10.0),
               ns.Neuron("T", C=10.0))
    synapses = (ns.Synapse("S", "A", w=2.0, E=0.0, mu=-120.0, nu=0.2),
                ns.Synapse("A", "T", w=3.0, E=0.0, mu=-120.0, nu=0.2),
                ns.Synapse("S", "B", w=2.0, E=0.0, mu=-45.0, nu=0.3),
                ns.Synapse("B", "T", w=2.0, E=-90.0, mu=-60.0, nu=0.3))
    touch = ns.Stimulus("pulse", "S", quantity="voltage", amplitude=50.0, start=50.0,
                        duration=100.0)
    return ns.Circuit("two routes", neurons, synapses, stimuli={"touch": touch},
                      protocols={"touch": ns.Protocol(300.0, ("touch",)),
                                 "quiet": ns.Protocol(300.0)})


def numpy_currents(circuit, result, control=None):
    """Current into post of every synapse, straight from the equation (pA); with a
    control run, the part that the presynaptic change drove: w·(σ − σ_control)·(E − κV)."""
    V = {n: result.v(n) for n in result.neuron_names}
    sig = lambda s, V: 1 / (1 + np.exp(-s.nu * (V[s.pre] - s.mu)))  # noqa: E731
    before = {n: control.v(n) for n in control.neuron_names} if control else None
    return {(s.pre, s.post): s.w * (sig(s, V) - (sig(s, before) if before else 0.0))
            * (s.E - s.kappa * V[s.post]) for s in circuit.synapses}


def test_pathways_rank_evoked_not_tonic_charge_and_keep_the_sign():
    c = two_routes()
    run, quiet = ns.simulate(c, "touch", dt_out=0.5), ns.simulate(c, "quiet", dt_out=0.5)
    now = numpy_currents(c, run)
    tonic = {k: abs(np.trapezoid(i, run.t)) * 1e-3 for k, i in now.items()}
    evoked = {k: np.trapezoid(i, run.t) * 1e-3 for k, i in numpy_currents(c, run, quiet).items()}
    # the construction: the tonic bottleneck favours A, the evoked one B
    assert min(tonic[("S", "A")], tonic[("A", "T")]) > 2 * min(tonic[("S", "B")], tonic[("B", "T")])
    assert abs(evoked[("B", "T")]) > 100 * abs(evoked[("S", "A")])
    charges = edge_charges(c, run)
    for key, value in evoked.items():
        assert charges[key] == pytest.approx(value, rel=1e-6, abs=1e-9)
    assert edge_charges(c, run, control="quiet") == pytest.approx(charges, rel=1e-6, abs=1e-9)
    paths = dominant_pathways(c, run, "S", "T")
    assert paths[0].neurons == ("S", "B", "T")
    assert paths[0].charge == pytest.approx(-min(abs(evoked[("S", "B")]), abs(evoked[("B", "T")])))
    assert paths[0].effect == "hyperpolarising"   # an inhibitory link inverts the signal
    assert abs(paths[-1].charge) < 1e-2 * abs(paths[0].charge)


def test_a_saturated_link_passes_no_signal_however_its_current_changes():
    """A follows S, but A → T sits on its sigmoid's plateau: T's own fall (through B)
    raises A → T's driving force and so its current, yet nothing travels from A."""
    c = two_routes()
    c = c.replace(neurons=tuple(ns.Neuron(n.name, C=n.C, E_L=-60.0, clamp=n.clamp)
                                if n.name == "A" else n for n in c.neurons),
                  synapses=tuple(ns.Synapse("S", "A", w=8.0, E=0.0, mu=-45.0, nu=0.2)
                                 if (s.pre, s.post) == ("S", "A") else s for s in c.synapses))
    run, quiet = ns.simulate(c, "touch", dt_out=0.5), ns.simulate(c, "quiet", dt_out=0.5)
    assert np.ptp(run.v("A")) > 10                          # A responds
    now, before = numpy_currents(c, run), numpy_currents(c, quiet)
    change = np.trapezoid(now[("A", "T")] - before[("A", "T")], run.t) * 1e-3
    transmitted = edge_charges(c, run)
    assert abs(change) > 1.0 and abs(transmitted[("A", "T")]) < 1e-3 * abs(change)
    paths = dominant_pathways(c, run, "S", "T")
    assert paths[0].neurons == ("S", "B", "T") and paths[0].charge < 0
    assert all(abs(p.charge) < 1e-3 * abs(paths[0].charge) for p in paths[1:])


def test_explain_follows_ablations_and_lesions():
    """The currents are those of the circuit as run: without ablated neurons, with
    lesion factors; they sum to C·dV/dt, and the control rest is that circuit's."""
    c = ns.load_circuit(TW)
    for protocol in ("tap_no_AVB", "tap_half_PLM"):
        r = ns.simulate(c, protocol, dt_out=0.5, rtol=1e-10, atol=1e-10)
        run = circuit_as_run(c, r)
        d = decompose(c, r, "AVA")
        model = ReferenceModel(run, list(run.resolve_stimuli(run.protocols[protocol])))
        V = np.stack([r.v(n) for n in run.neuron_names], axis=1)
        expected = np.array([model.dVdt(t, v) for t, v in zip(r.t, V)])[:, run.neuron_names.index("AVA")]
        inside = (np.abs(r.t - 200.0) > 1.0) & (np.abs(r.t - 400.0) > 1.0)  # off the edges
        np.testing.assert_allclose(d.total[inside], d.C * expected[inside], atol=1e-6)
        rest = control_result(c, r)
        assert rest.v("AVA")[0] == r.v("AVA")[0]         # the run started at that rest
    assert "syn AVB->AVA" not in decompose(c, ns.simulate(c, "tap_no_AVB"), "AVA").names
    extra = ns.simulate(c, "tap", ablate=["DVA"], dt_out=1.0)
    assert control_result(c, extra).v("AVA")[0] == extra.v("AVA")[0]
    with pytest.raises(ns.CircuitError, match="control protocol 'rest' lasts 100 ms but the run 1500"):
        short = c.replace(protocols=dict(c.protocols, rest=ns.Protocol(100.0)))
        control_result(short, ns.simulate(short, "tap", dt_out=1.0), "rest")


# --- motifs: each signature, and its failure without the defining synapse ---------------

def flipped(c, *pairs):
    return c.replace(synapses=tuple(
        ns.Synapse(s.pre, s.post, s.w, -90.0 if s.E > -50 else 0.0, s.mu, s.nu, s.kappa)
        if (s.pre, s.post) in pairs else s for s in c.synapses))


def removed(c, *pairs):
    return c.replace(synapses=tuple(s for s in c.synapses if (s.pre, s.post) not in pairs))


def response(c):
    r = ns.simulate(c, "pulse")
    a = r.v("A")
    return a[(r.t > 100) & (r.t < 150)].mean() - a[(r.t > 20) & (r.t < 50)].mean()


def latency(c):
    """t(B at half its peak response) − t(A at half its peak response), ms."""
    r = ns.simulate(c, "pulse")

    def half(name):
        v = r.v(name) - r.v(name)[0]
        return r.t[np.argmax(v >= v.max() / 2)] if v.max() > 1.0 else np.inf
    return half("B") - half("A")


def final_states(c):
    return [tuple(ns.simulate(c, "settle", v0=v0).V[-1])
            for v0 in ({"A": -30.0, "B": -70.0}, {"A": -70.0, "B": -30.0})]


def bistable(c):
    (a1, b1), (a2, b2) = final_states(c)
    return a1 - b1 > 20 and b2 - a2 > 20


def correlation(c):
    r = ns.simulate(c, "drive")
    keep = r.t > 200
    return np.corrcoef(r.v("A")[keep], r.v("B")[keep])[0, 1]


def test_activation_motif():
    c = ns.load_circuit(MOTIF_DIR / "activation.yaml")
    assert response(c) > 10
    assert abs(response(removed(c, ("S", "A")))) < 1e-9
    assert response(flipped(c, ("S", "A"))) < 0


def test_inhibition_motif():
    c = ns.load_circuit(MOTIF_DIR / "inhibition.yaml")
    assert response(c) < -10
    assert abs(response(removed(c, ("S", "A")))) < 1e-9
    assert response(flipped(c, ("S", "A"))) > 0


def test_sequentialization_motif():
    c = ns.load_circuit(MOTIF_DIR / "sequentialization.yaml")
    assert 5 < latency(c) < 100
    assert latency(removed(c, ("A", "B"))) == np.inf
    assert latency(flipped(c, ("A", "B"))) == np.inf


def test_mutual_exclusion_motif_is_bistable():
    c = ns.load_circuit(MOTIF_DIR / "mutual_exclusion.yaml")
    assert bistable(c)
    assert not bistable(removed(c, ("A", "B")))
    assert not bistable(flipped(c, ("A", "B"), ("B", "A")))


def test_synchronization_motif():
    c = ns.load_circuit(MOTIF_DIR / "synchronization.yaml")
    assert correlation(c) > 0.8
    assert abs(correlation(removed(c, ("A", "B"), ("B", "A")))) < 0.2
    assert correlation(flipped(c, ("A", "B"), ("B", "A"))) < 0


def test_motif_counts_on_a_hand_checked_circuit():
    #   A → B → C (excitatory), C ⊣ A, D ⊣ E, E ⊣ D, B ↔ D gap, A → C excitatory
    names = ("A", "B", "C", "D", "E")
    exc, inh = 0.0, -90.0
    synapses = (ns.Synapse("A", "B", E=exc), ns.Synapse("B", "C", E=exc), ns.Synapse("C", "A", E=inh),
                ns.Synapse("D", "E", E=inh), ns.Synapse("E", "D", E=inh), ns.Synapse("A", "C", E=exc))
    c = ns.Circuit("hand", tuple(ns.Neuron(n) for n in names), synapses,
                   (ns.GapJunction("B", "D", g=0.1),))
    found = find_motifs(c)
    assert found["activation"] == [("A", "B"), ("A", "C"), ("B", "C")]
    assert found["inhibition"] == [("C", "A"), ("D", "E"), ("E", "D")]
    assert found["sequentialization"] == [("A", "B", "C")]
    assert found["mutual_exclusion"] == [("D", "E")]
    assert found["synchronization"] == [("B", "D")]
    table = motif_table(c)
    assert all(m in table for m in MOTIFS)


@pytest.mark.parametrize("name", ["activation", "inhibition", "sequentialization",
                                  "mutual_exclusion", "synchronization"])
def test_each_motif_circuit_contains_its_motif(name):
    assert find_motifs(ns.load_circuit(MOTIF_DIR / f"{name}.yaml"))[name]


def test_lipschitz_estimate_of_a_linear_circuit_is_its_gain():
    """dx/dt = -x: the final state is x0·e^{-T}, so the gain is e^{-T} exactly."""
    c = ml.ctrnn(np.zeros((1, 1)), 1.0, x0=[0.5])
    c = c.replace(protocols={"p": ns.Protocol(2.0)})
    L = lipschitz_estimate(c, "p", inputs=["x0"], output="x0", epsilon=1e-4, n_directions=4,
                           rtol=1e-10, atol=1e-12)
    assert L == pytest.approx(np.exp(-2.0), rel=1e-6)


@pytest.mark.slow
def test_explain_and_motifs_commands(tmp_path):
    assert neurosim("run", TW, "-p", "anterior", "-o", "a.h5", cwd=tmp_path).returncode == 0
    out = neurosim("explain", "a.h5", "--neuron", "AVA", "--source", "AVM", "-o", "c.png",
                   "--graph", "g.png", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "syn AVD->AVA" in out.stdout and "AVM -> AVD -> AVA" in out.stdout
    assert "its change from the stimulus-free rest" in out.stdout
    lesioned = neurosim("run", TW, "-p", "tap_no_AVB", "-o", "b.h5", cwd=tmp_path)
    assert lesioned.returncode == 0
    out = neurosim("explain", "b.h5", "--neuron", "AVA", "--source", "PLM", cwd=tmp_path)
    assert out.returncode == 0 and "PLM -> AVA" in out.stdout and "AVB" not in out.stdout
    gone = neurosim("explain", "b.h5", "--neuron", "AVB", cwd=tmp_path)
    assert gone.returncode == 2 and "neuron 'AVB' was ablated in this run" in gone.stderr
    nowhere = neurosim("explain", "a.h5", "--neuron", "AVA", "-o", "no/such/c.png", cwd=tmp_path)
    assert nowhere.returncode == 2 and "folder" in nowhere.stderr and "does not exist" in nowhere.stderr
    assert (tmp_path / "c.png").stat().st_size > 10_000 and (tmp_path / "g.png").exists()
    none = neurosim("explain", "a.h5", "--neuron", "AVA", "--source", "ALM", cwd=tmp_path)
    assert "none: no chain from ALM passes its evoked signal on to AVA" in none.stdout
    quiet = neurosim("explain", "a.h5", "--neuron", "AVA", "--source", "AVM", "--control",
                     "rest", cwd=tmp_path)
    assert quiet.returncode == 0 and "AVM -> AVD -> AVA" in quiet.stdout
    bad = neurosim("explain", "a.h5", "--neuron", "AVA", "--control", "nap", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown protocol 'nap'" in bad.stderr
    lonely = neurosim("explain", "a.h5", "--neuron", "AVA", "--graph", "x.png", cwd=tmp_path)
    assert lonely.returncode == 2 and "give --source too" in lonely.stderr
    motifs = neurosim("motifs", TW, cwd=tmp_path)
    assert motifs.returncode == 0 and "mutual_exclusion       1  AVA-AVB" in motifs.stdout


def test_the_documented_explanation_is_what_the_code_gives_today():
    script = tw_script("explain_tap_withdrawal")
    circuit, result, d, evoked, paths = script.analysis()
    page = (ROOT / "docs" / "explain.md").read_text()
    assert f"{script.START}\n{script.markdown(d, evoked, paths)}{script.END}" in page
    # the prose: PVC -> AVA is second in total synaptic charge, but mostly tonic
    synaptic = [k for k, name in enumerate(d.names) if name.startswith("syn")]
    by_total = sorted(synaptic, key=lambda k: -d.charges[k])
    assert d.names[by_total[1]] == "syn PVC->AVA"
    assert abs(evoked[by_total[1]]) < 0.05 * d.charges[by_total[1]]


def test_pathways_survive_a_saturated_control_and_a_control_without_the_relay():
    """A link whose sigmoid is flat in the control still has a direction, and a control
    that ablates the relay still ranks the path through it."""
    neurons = (ns.Neuron("S", clamp=-70.0), ns.Neuron("A", C=10.0, E_L=-30.0),
               ns.Neuron("X", C=10.0), ns.Neuron("T", C=10.0))
    synapses = (ns.Synapse("S", "A", w=5.0, E=-90.0, mu=-50.0, nu=0.3),
                ns.Synapse("A", "T", w=2.0, E=0.0, mu=-80.0, nu=2.0),   # σ = 1.0 at rest
                ns.Synapse("S", "X", w=1.0, E=0.0), ns.Synapse("X", "T", w=1.0, E=0.0))
    touch = ns.Stimulus("pulse", "S", quantity="voltage", amplitude=50.0, start=50.0,
                        duration=100.0)
    c = ns.Circuit("flat", neurons, synapses, stimuli={"touch": touch},
                   protocols={"go": ns.Protocol(300.0, ("touch",)),
                              "go_no_X": ns.Protocol(300.0, ("touch",), ablate=("X",))})
    run = ns.simulate(c, "go", dt_out=0.5)
    paths = {p.neurons: p.charge for p in dominant_pathways(c, run, "S", "T")}
    assert paths[("S", "A", "T")] < 0          # S inhibits A, A excites T: T is pushed down
    assert ("S", "X", "T") in paths
    against = {p.neurons: p for p in dominant_pathways(c, run, "S", "T", control="go_no_X")}
    assert against[("S", "X", "T")].charge > 0
    assert against[("S", "X", "T")].per_edge == pytest.approx(
        (np.trapezoid(numpy_currents(c, run)[("S", "X")], run.t) * 1e-3,
         np.trapezoid(numpy_currents(c, run)[("X", "T")], run.t) * 1e-3), rel=1e-6)


def test_a_lesioned_run_explained_against_an_intact_control(tmp_path):
    assert neurosim("run", TW, "-p", "tap_no_AVD", "-o", "n.h5", cwd=tmp_path).returncode == 0
    out = neurosim("explain", "n.h5", "--neuron", "AVA", "--control", "tap", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "its change from protocol 'tap'" in out.stdout and "AVD->AVA" not in out.stdout
    for bad, message in (("x.xyz", "cannot tell the picture format"), ("sub", "it is a folder")):
        (tmp_path / "sub").mkdir(exist_ok=True)
        refused = neurosim("explain", "n.h5", "--neuron", "AVA", "-o", bad, cwd=tmp_path)
        assert refused.returncode == 2 and message in refused.stderr
