"""Fitting: parameter selection, data files, recovery of known parameters, signs, CLI."""

import time

import numpy as np
import pytest

import neurosim as ns
from neurosim.behaviour import classify, window_weights
from neurosim.fit import (BehaviourTarget, FreeParameter, Objective, Parameterization,
                          TraceTarget, load_behaviour)
from neurosim.fit.optimize import fit_cmaes, fit_gradient
from neurosim.fit.signs import enumerate_signs, sign_association, with_signs
from neurosim.fit.spec import loads_fit_spec
from helpers import ROOT, TW, neurosim, oscillator

DATA = ROOT / "circuits" / "data" / "tap_withdrawal_behaviour.csv"


@pytest.mark.parametrize("pattern,expected", [
    ("synapses[*].w", 26), ("synapses[pre=AVD].nu", 3), ("synapses[post=AVA].w", 5),
    ("synapses[PVD->AVA].w", 1), ("synapses[pre=PVC,post=AVB].mu", 1), ("neurons[AVA].g_L", 1),
    ("neurons[*].C", 11), ("gap_junctions[*].g", 2), ("gap_junctions[AVD-AVM].g", 1),
])
def test_selectors_pick_the_right_parameters(pattern, expected):
    par = Parameterization(ns.load_circuit(TW), [FreeParameter(pattern)])
    assert par.n_free == expected
    field = pattern.rsplit(".", 1)[1]
    assert all(name.endswith("." + field) for name in par.names)


@pytest.mark.parametrize("entry,match", [
    ({"select": "synapses[*].weight"}, "synapses have no parameter 'weight'; allowed: w, E"),
    ({"select": "synapses[pre=AVX].w"}, "matches no parameter"),
    ({"select": "neurons[AVAA].C"}, "Did you mean 'AVA'"),
    ({"select": "axons[*].w"}, "cannot read selector"),
    ({"select": "synapses[*].w", "transform": "exp"}, "unknown transform 'exp'"),
    ({"select": "synapses[*].w", "transform": "log", "bounds": [0, 3]}, "positive lower bound"),
])
def test_bad_selectors_are_explained(entry, match):
    with pytest.raises(ns.CircuitError, match=match):
        Parameterization(ns.load_circuit(TW), [entry])


def test_ties_transforms_and_apply():
    c = ns.load_circuit(TW)
    par = Parameterization(c, [{"select": "neurons[*].g_L", "tie": True, "transform": "log",
                                "bounds": [0.1, 10]},
                               {"select": "synapses[AVD->AVA].w", "bounds": [0, 3]}])
    assert par.n_free == 2 and par.x0[0] == pytest.approx(0.0)
    fitted = par.apply(np.array([np.log(2.0), 0.5]))
    assert all(n.g_L == pytest.approx(2.0) for n in fitted.neurons)
    assert {(s.pre, s.post): s.w for s in fitted.synapses}[("AVD", "AVA")] == 0.5
    assert ns.loads_circuit(ns.dump_circuit(fitted)) == fitted
    # the chain rule sums a tie and multiplies by the log transform's derivative
    grad_theta = np.ones(par.indices.size)
    np.testing.assert_allclose(par.chain(np.array([np.log(2.0), 0.5]), grad_theta), [22.0, 1.0])


def test_shipped_behaviour_table_loads():
    targets = load_behaviour(DATA)
    assert [t.protocol for t in targets] == ["tap", "anterior", "posterior_gentle", "tap_no_PLM",
                                              "tap_half_PLM"]
    assert all(t.measure == "reversal_probability" and t.n == 20 for t in targets)
    assert "qualitative" in targets[0].note


@pytest.mark.parametrize("text,line,match", [
    ("protocol,measure,observed,n\ntap,reversal_probability,1.5,20\n", 2, "must be in \\[0, 1\\]"),
    ("protocol,measure,observed,n\ntap,probability,0.5,20\n", 2, "unknown measure 'probability'"),
    ("protocol,measure,observed\ntap,score,0.5\n", 2, "standard error se > 0"),
    ("protocol,measure,observed,n\ntap,reversal_probability,x,20\n", 2, "not a number: 'x'"),
    ("protocol,measure,value\n", 1, "unknown column"),
    ("protocol,measure,observed,n\ntap,reversal_probability,0.5\n", 2, "expected 4 fields"),
])
def test_bad_data_files_name_the_line(tmp_path, text, line, match):
    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(ns.CircuitError, match=match) as info:
        load_behaviour(path)
    assert info.value.line == line and str(info.value).startswith(f"{path}:{line}:")


def test_window_weights_integrate_linear_interpolants():
    t = np.linspace(0, 10, 11)
    y = 3.0 * t + 1.0
    a = window_weights(t, (2.5, 7.25))
    assert a @ y == pytest.approx(3.0 * (2.5 + 7.25) / 2 + 1.0)
    assert a.sum() == pytest.approx(1.0)


def test_recovers_behaviour_it_was_generated_from():
    """Scores of all 12 TW protocols from known weights; fit from perturbed weights."""
    circuit = ns.load_circuit(TW)
    truth = Parameterization(circuit, [{"select": "synapses[*].w", "bounds": [0, 3]}])
    objective = Objective(truth, [BehaviourTarget(p, "score", 0.0, se=0.01)
                                  for p in circuit.protocols], dt_out=5.0)
    true_scores = [p["score"] for p in objective.predictions(truth.x0)]
    targets = [BehaviourTarget(p, "score", s, se=0.01) for p, s in zip(circuit.protocols, true_scores)]
    rng = np.random.default_rng(3)
    start = np.clip(truth.x0 * rng.uniform(0.7, 1.3, truth.n_free), 0, 3)
    objective = Objective(truth, targets, dt_out=5.0)
    initial = objective(start)
    result = fit_gradient(objective, start, maxiter=150)
    fitted = [p["score"] for p in objective.predictions(result.x)]
    assert result.loss < initial / 100
    np.testing.assert_allclose(fitted, true_scores, atol=0.01)


def test_recovers_parameters_from_traces():
    """A 3-neuron chain: weights and slope recovered from the traces they produced."""
    neurons = (ns.Neuron("S", clamp=-70.0), ns.Neuron("A", C=20.0), ns.Neuron("B", C=20.0))
    synapses = (ns.Synapse("S", "A", w=1.5, E=0.0), ns.Synapse("A", "B", w=0.8, E=-90.0, nu=0.2))
    circuit = ns.Circuit("chain", neurons, synapses, stimuli={
        "drive": ns.Stimulus("sine", "S", quantity="voltage", amplitude=40.0, frequency=5.0)},
        protocols={"p": ns.Protocol(600.0, ("drive",))})
    truth = ns.simulate(circuit, "p", dt_out=5.0, rtol=1e-9, atol=1e-9)
    targets = [TraceTarget("p", name, tuple(truth.t), tuple(truth.v(name)), sigma=0.1)
               for name in ("A", "B")]
    par = Parameterization(circuit, [{"select": "synapses[*].w", "bounds": [0.01, 5],
                                      "transform": "log"},
                                     {"select": "synapses[A->B].nu", "bounds": [0.01, 1]}])
    objective = Objective(par, targets, dt_out=5.0, rtol=1e-9, atol=1e-9)
    start = par.x0 + np.array([0.4, -0.3, 0.1])
    result = fit_gradient(objective, start, maxiter=200)
    np.testing.assert_allclose(par.values(result.x), [1.5, 0.8, 0.2], rtol=1e-3)


def test_cmaes_evaluates_populations_in_batches_and_improves():
    circuit = ns.load_circuit(TW)
    par = Parameterization(circuit, [{"select": "synapses[post=AVA].w", "bounds": [0, 3]}])
    objective = Objective(par, load_behaviour(DATA), dt_out=10.0)
    start = objective(par.x0)
    result = fit_cmaes(objective, generations=8, seed=2, popsize=8)
    assert result.loss < start
    assert result.evaluations == 8 * len(result.history)
    assert result.simulations == 5 * result.evaluations
    assert objective(result.x) == pytest.approx(result.loss, rel=1e-9)


def test_single_precision_populations_score_like_double():
    """precision='float32' runs CMA-ES's populations in single precision: their losses
    match float64 ones closely; a precision the integrator cannot run is refused."""
    circuit = ns.load_circuit(TW)
    par = Parameterization(circuit, [{"select": "synapses[post=AVA].w", "bounds": [0, 3]}])
    options = dict(dt_out=10.0, rtol=1e-5, atol=1e-5)
    double = Objective(par, load_behaviour(DATA), **options)
    single = Objective(par, load_behaviour(DATA), precision="float32", **options)
    X = par.x0 + np.random.default_rng(1).normal(0, 0.2, (6, par.x0.size))
    losses = double.batch(X)
    assert np.ptp(losses) > 1e-3  # the points differ, so the comparison means something
    np.testing.assert_allclose(single.batch(X), losses, rtol=1e-4)
    with pytest.raises(ns.CircuitError, match="precision='float32' is available for"):
        Objective(par, load_behaviour(DATA), integrator="rk4", dt=0.05, precision="float32")


@pytest.mark.slow
def test_tw_fit_reaches_the_qualitative_targets():
    """The whole default fit: every target within 0.05 of its encoded probability."""
    circuit = ns.load_circuit(TW)
    spec = loads_fit_spec("free:\n  - {select: 'synapses[*].w', bounds: [0, 3]}\n"
                          "  - {select: 'gap_junctions[*].g', bounds: [0, 3]}\n"
                          "optimizer: {generations: 40, seed: 1}\n")
    from neurosim.fit.run import run_fit
    report = run_fit(circuit, load_behaviour(DATA), spec)
    for row in report.predictions:
        assert abs(row["predicted"] - row["observed"]) < 0.05, row
    labels = {r.protocol: r.label for r in
              __import__("neurosim.behaviour", fromlist=["x"]).run_experiments(
                  report.circuit, ["tap", "anterior", "posterior_gentle"])[0]}
    assert labels == {"tap": "reversal", "anterior": "reversal", "posterior_gentle": "forward"}
    assert "# fitted by neurosim" in report.fitted_yaml("data.csv")


def test_sign_enumeration_finds_the_generating_signs():
    """Behaviour made with known signs; the true pattern ranks first."""
    neurons = (ns.Neuron("S", clamp=-70.0), ns.Neuron("I", C=20.0), ns.Neuron("REV", C=20.0),
               ns.Neuron("FWD", C=20.0))
    synapses = (ns.Synapse("S", "I", w=1.0, E=0.0), ns.Synapse("I", "REV", w=1.5, E=0.0),
                ns.Synapse("I", "FWD", w=1.5, E=-90.0))
    circuit = ns.Circuit("toy", neurons, synapses,
                         stimuli={"touch": ns.Stimulus("pulse", "S", quantity="voltage",
                                                       amplitude=50.0, start=100.0, duration=200.0)},
                         protocols={"touch": ns.Protocol(600.0, ("touch",))},
                         readouts={"behaviour": ns.model.Readout("REV", "FWD", (100.0, 400.0),
                                                                 (50.0, 100.0))})
    targets = [BehaviourTarget("touch", "reversal_probability", 0.95, n=20)]
    scrambled = with_signs(circuit, {"S": "-", "I": "-"})
    patterns = enumerate_signs(scrambled, targets, ["S", "I"],
                               [{"select": "synapses[*].w", "bounds": [0, 3]}], maxiter=30,
                               objective_options={"dt_out": 10.0})
    assert len(patterns) == 4
    assert patterns[0].signs == {"S": "+", "I": "+"}
    assert sign_association(patterns)["S"]["predicted"] == "+"


@pytest.mark.slow
def test_fit_command_writes_fitted_circuit_report_and_traces(tmp_path):
    (tmp_path / "fit.yaml").write_text(
        "free:\n  - {select: 'synapses[post=AVA].w', bounds: [0, 3]}\n"
        "optimizer: {method: gradient, maxiter: 5}\nsimulation: {dt_out: 10.0}\n")
    out = neurosim("fit", TW, DATA, "--fit", "fit.yaml", "-o", "fitted.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    fitted = ns.load_circuit(tmp_path / "fitted.yaml")
    assert fitted.neuron_names == ns.load_circuit(TW).neuron_names
    assert (tmp_path / "fitted.yaml").read_text().startswith("# fitted by neurosim")
    assert (tmp_path / "fitted_report.png").stat().st_size > 10_000
    assert (tmp_path / "fitted_predictions.csv").read_text().startswith("protocol,measure")
    assert sorted(p.name for p in (tmp_path / "fitted_traces").iterdir()) == sorted(
        f"{p}.h5" for p in ("tap", "anterior", "posterior_gentle", "tap_no_PLM", "tap_half_PLM",
                            "rest"))   # the control
    bad = neurosim("fit", TW, DATA, "--fit", "fit.yaml", "-o", "fitted.yaml", cwd=tmp_path)
    assert bad.returncode == 2 and "--overwrite" in bad.stderr
    (tmp_path / "bad.yaml").write_text("free:\n  - {select: 'synapses[*].w', bonds: [0, 3]}\n")
    worse = neurosim("fit", TW, DATA, "--fit", "bad.yaml", "-o", "f2.yaml", cwd=tmp_path)
    assert worse.returncode == 2 and "bad.yaml:2: free[0].bonds: unknown key 'bonds'" in worse.stderr


def test_fits_add_the_no_stimulus_control_by_default():
    from neurosim.fit.run import with_rest_control
    from neurosim.fit.targets import TraceTarget
    tw = ns.load_circuit(TW)
    data = load_behaviour(DATA)
    circuit, targets = with_rest_control(tw, data)
    assert circuit is tw and targets[:-1] == data
    control = targets[-1]
    assert (control.protocol, control.measure, control.observed, control.se) == ("rest", "score", 0.0, 0.025)
    assert with_rest_control(tw, targets)[1] == targets            # already there: unchanged
    trace = [TraceTarget("tap", "AVA", (10.0,), (-60.0,))]
    assert with_rest_control(tw, trace)[1] == trace                # no behaviour, no control
    bare = tw.replace(protocols={k: v for k, v in tw.protocols.items() if k != "rest"})
    added, targets = with_rest_control(bare, data)
    assert added.protocol("rest").stimuli == () and added.protocol("rest").duration == 1500.0
    assert targets[-1].protocol == "rest"


def test_the_control_costs_a_circuit_that_moves_without_a_stimulus():
    """A relaxation oscillator has no stable rest: its quiet protocol scores, and the
    control target charges for it; a circuit at rest pays nothing."""
    from neurosim.fit.run import with_rest_control
    osc = oscillator()
    kick = ns.Stimulus("pulse", "A", amplitude=5.0, start=200.0, duration=20.0)
    readout = ns.model.Readout("A", "B", window=(150.0, 400.0), baseline=(0.0, 50.0))
    osc = osc.replace(stimuli={"kick": kick}, protocols={"kick": ns.Protocol(400.0, ("kick",))},
                      readouts={"behaviour": readout})
    circuit, targets = with_rest_control(osc, [BehaviourTarget("kick", "score", 0.3, se=1.0)])
    assert targets[-1].protocol == "rest" and circuit.protocol("rest").duration == 400.0
    par = Parameterization(circuit, [{"select": "synapses[A->A].w", "bounds": [0, 10]}])
    objective = Objective(par, [targets[-1]], dt_out=1.0)
    with pytest.warns(ns.RestWarning, match="no stable rest"):
        drift = classify(readout, ns.simulate(circuit, "rest", dt_out=1.0)).score
    assert abs(drift) > readout.threshold   # the oscillation reads as behaviour
    assert objective(par.x0) == pytest.approx(0.5 * (drift / targets[-1].se) ** 2, rel=1e-6)
    assert objective(np.array([0.0])) < 1e-6   # without self-excitation A rests: no cost


def test_a_fitted_leak_potential_leaves_the_start_at_rest():
    """Fitting E_L must not turn the circuit's default start into an explicit V0."""
    tw = ns.load_circuit(TW)
    par = Parameterization(tw, [{"select": "neurons[AVA].E_L", "bounds": [-80, -40]}])
    fitted = par.apply(np.array([-60.0]))
    assert fitted.neuron("AVA").E_L == -60.0
    assert fitted.initial_state(fitted.protocol("tap")) == "rest"
    assert ns.simulate(fitted, "tap", dt_out=5.0).V.tolist() == ns.simulate(
        tw, "tap", dt_out=5.0, theta=par.theta(np.array([-60.0]))).V.tolist()
    moved = Parameterization(tw, [{"select": "neurons[AVA].V0", "bounds": [-80, -40]}])
    kept = moved.apply(np.array([-50.0]))
    assert kept.neuron("AVA").V0 == -50.0 and kept.initial_state(kept.protocol("tap")) == "rest"


def test_a_fitted_leak_potential_keeps_an_as_given_start_where_it_was():
    """In a circuit that starts as given, the runs of the fit started at θ's V0 (the old
    E_L): the saved circuit must start there too, not at the new E_L."""
    three = ns.load_circuit(ROOT / "circuits" / "examples" / "three_cells.yaml")
    par = Parameterization(three, [{"select": "neurons[B].E_L", "bounds": [-90, -30]}])
    x = np.array([-50.0])
    saved = ns.loads_circuit(ns.dump_circuit(par.apply(x)))
    assert saved.initial_state(saved.protocol("baseline")) == "as_given"
    assert ns.simulate(saved, "baseline", dt_out=5.0).V.tolist() == ns.simulate(
        three, "baseline", dt_out=5.0, theta=par.theta(x)).V.tolist()


def test_the_control_uses_only_a_protocol_that_starts_at_rest_and_covers_the_readout():
    from neurosim.fit.run import with_rest_control
    tw = ns.load_circuit(TW)
    data = load_behaviour(DATA)
    for rest in (ns.Protocol(100.0), ns.Protocol(1500.0, initial="as_given")):
        circuit, targets = with_rest_control(tw.replace(protocols=dict(tw.protocols, rest=rest)), data)
        assert targets[-1].protocol == "rest_control"
        assert circuit.protocol("rest_control").duration == 1500.0
        assert circuit.initial_state(circuit.protocol("rest_control")) == "rest"


def twins():
    """S1 and S2 drive REV alike (free weights), T drives FWD (fixed weight): the data
    decide T's sign but not S1's or S2's, since either alone can carry the response."""
    neurons = (ns.Neuron("S1", clamp=-70.0), ns.Neuron("S2", clamp=-70.0), ns.Neuron("T", clamp=-70.0),
               ns.Neuron("REV", C=20.0), ns.Neuron("FWD", C=20.0))
    synapses = (ns.Synapse("S1", "REV", w=1.0, E=0.0), ns.Synapse("S2", "REV", w=1.0, E=0.0),
                ns.Synapse("T", "FWD", w=2.0, E=0.0))
    touch = ns.Stimulus("pulse", ("S1", "S2", "T"), quantity="voltage", amplitude=50.0,
                        start=100.0, duration=200.0)
    circuit = ns.Circuit("twins", neurons, synapses, stimuli={"touch": touch},
                         protocols={"touch": ns.Protocol(500.0, ("touch",))},
                         readouts={"behaviour": ns.model.Readout("REV", "FWD", (100.0, 400.0),
                                                                 (50.0, 100.0))})
    return circuit, [BehaviourTarget("touch", "reversal_probability", 0.9, n=50)], \
        [{"select": "synapses[post=REV].w", "bounds": [0, 3]}]


def test_tied_sign_patterns_leave_a_sign_undetermined():
    from neurosim.fit.signs import ties
    circuit, targets, free = twins()
    patterns = enumerate_signs(circuit, targets, ["S1", "S2", "T"], free, maxiter=40,
                               objective_options={"dt_out": 10.0})
    loss = {"".join(p.signs.values()): p.loss for p in patterns}
    assert loss["+--"] == pytest.approx(loss["-+-"], abs=1e-9)      # the symmetry, exactly
    tied = ties(patterns)
    assert {"".join(p.signs.values()) for p in tied} == {"++-", "+--", "-+-"}
    verdict = sign_association(patterns)
    assert verdict["S1"]["predicted"] == verdict["S2"]["predicted"] == "undetermined"
    assert verdict["T"]["predicted"] == "-" and verdict["T"]["log_likelihood_ratio"] > 2
    # a stricter threshold of 1e-12 separates nothing that the data do not
    assert sign_association(patterns, threshold=1e-12)["S1"]["predicted"] == "undetermined"


def test_an_interrupted_sign_enumeration_resumes_without_refitting(tmp_path, monkeypatch):
    import neurosim.fit.signs as signs
    circuit, targets, free = twins()
    options = dict(maxiter=20, objective_options={"dt_out": 10.0})
    whole = enumerate_signs(circuit, targets, ["S1", "T"], free, **options)
    saved = tmp_path / "signs.json"
    calls = []
    real = signs.fit_gradient

    def counted(objective, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(objective, **kw)

    monkeypatch.setattr(signs, "fit_gradient", counted)
    with pytest.raises(KeyboardInterrupt):
        enumerate_signs(circuit, targets, ["S1", "T"], free, checkpoint=saved, **options)
    calls.clear()
    monkeypatch.setattr(signs, "fit_gradient", lambda objective, **kw: (calls.append(1), real(objective, **kw))[1])
    resumed = enumerate_signs(circuit, targets, ["S1", "T"], free, checkpoint=saved, **options)
    assert len(calls) == 2                                   # two of four were saved
    assert [(p.signs, p.loss) for p in resumed] == [(p.signs, p.loss) for p in whole]
    with pytest.raises(ns.CircuitError, match="another circuit, data or specification"):
        enumerate_signs(circuit, targets[:0] + [BehaviourTarget("touch", "score", 0.1, se=0.1)],
                        ["S1", "T"], free, checkpoint=saved, **options)


@pytest.mark.slow
def test_fit_command_reports_ties_and_supported_signs(tmp_path):
    circuit, _, _ = twins()
    ns.save_circuit(circuit, tmp_path / "twins.yaml")
    (tmp_path / "data.csv").write_text("protocol,measure,observed,n\ntouch,reversal_probability,0.9,50\n")
    (tmp_path / "fit.yaml").write_text(
        "free:\n  - {select: 'synapses[post=REV].w', bounds: [0, 3]}\n"
        "optimizer: {method: gradient, maxiter: 40}\nsimulation: {dt_out: 10.0}\n"
        "loss: {control: false}\nsigns: {classes: [S1, S2, T], maxiter: 40}\n")
    out = neurosim("fit", "twins.yaml", "data.csv", "--fit", "fit.yaml", "-o", "f.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "3 of 8 patterns within 2 of the best log-likelihood" in out.stdout
    assert "sign patterns: 8 of 8" in out.stderr   # progress, without a terminal too
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("  ")}
    assert lines["S1"].endswith("undetermined") and lines["T"].endswith("supported -")
    rows = (tmp_path / "f_signs.csv").read_text().splitlines()
    assert rows[0] == "rank,S1,S2,T,loss,delta_log_likelihood,tie,converged"
    deltas = [float(r.split(",")[5]) for r in rows[1:]]
    assert deltas == sorted(deltas) and [r.split(",")[6] for r in rows[1:]].count("yes") == 3
    assert not (tmp_path / "f_signs_checkpoint.json").exists()
    page = (ROOT / "docs" / "fitting.md").read_text()
    quoted = page.split("```\nsign enumeration:")[1].split("```")[0]
    for line in ("sign enumeration:" + quoted).strip().splitlines():
        assert line in out.stdout, line   # the page quotes what the command prints


def test_a_resumed_cmaes_fit_ends_where_the_uninterrupted_one_does(tmp_path, monkeypatch):
    """Interrupted after 4 generations and resumed, CMA-ES continues from its saved state
    (distribution, random generator, best point), and the polish that follows is the same."""
    from neurosim.fit.objective import Objective as Obj
    from neurosim.fit.run import run_fit
    circuit, targets, _ = twins()
    spec = loads_fit_spec("free:\n  - {select: 'synapses[*].w', bounds: [0, 3]}\n"
                          "simulation: {dt_out: 10.0}\nloss: {control: false}\n"
                          "optimizer: {method: cmaes, generations: 12, seed: 3}\n")
    whole = run_fit(circuit, targets, spec).result
    real, calls = Obj.batch, []

    def interrupted(self, X):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, X)

    monkeypatch.setattr(Obj, "batch", interrupted)
    saved = tmp_path / "f_checkpoint.json"
    with pytest.raises(KeyboardInterrupt):
        run_fit(circuit, targets, spec, checkpoint=str(saved))
    assert saved.with_suffix(".state").exists()
    monkeypatch.setattr(Obj, "batch", real)
    flipped = [BehaviourTarget("touch", "reversal_probability", 0.1, n=50)]
    with pytest.raises(ns.CircuitError, match="another circuit, data or specification"):
        run_fit(circuit, flipped, spec, checkpoint=str(saved), resume=True)
    resumed = run_fit(circuit, targets, spec, checkpoint=str(saved), resume=True).result
    np.testing.assert_array_equal(resumed.x, whole.x)
    assert resumed.loss == whole.loss and resumed.evaluations == whole.evaluations
    assert not saved.exists() and not saved.with_suffix(".state").exists()


@pytest.mark.slow
def test_the_planted_truth_page_is_what_the_script_prints_today():
    """docs/fitting.md's planted-truth numbers, regenerated (about four minutes)."""
    import importlib
    import sys
    sys.path.insert(0, str(ROOT / "scripts"))
    try:  # the script's worker processes import it by this path too
        script = importlib.import_module("planted_truth")
        text = script.report()
    finally:
        sys.path.pop(0)
    page = (ROOT / "docs" / "fitting.md").read_text()
    assert f"{script.START}\n{text}{script.END}" in page


def test_an_unconverged_pattern_cannot_support_a_sign():
    """A loss that stopped at the iteration limit is an upper bound: the pattern might
    tie, so a sign it argues against is undetermined."""
    from neurosim.fit.signs import SignPattern
    x = np.zeros(1)
    done = [SignPattern({"A": "+"}, 0.0, x), SignPattern({"A": "-"}, 5.0, x, converged=True)]
    assert sign_association(done)["A"]["predicted"] == "+"
    stopped = [done[0], SignPattern({"A": "-"}, 5.0, x, converged=False)]
    verdict = sign_association(stopped)["A"]
    assert verdict["predicted"] == "undetermined" and verdict["unconverged"] == 1


def test_simulation_time_leaves_out_compiling(monkeypatch):
    """Seconds spent compiling kernels during an evaluation are not simulation time: a
    call that compiled for 5 s (stand-in clock) counts 5 s less than its wall time."""
    from neurosim.fit import objective as objective_module
    circuit = ns.load_circuit(TW)
    par = Parameterization(circuit, [{"select": "synapses[*].w", "bounds": [0, 3]}])
    objective = Objective(par, [BehaviourTarget("tap", "score", 0.0, se=0.01)], dt_out=5.0)
    objective(par.x0)  # compiled and loaded
    compiled_so_far = iter([100.0, 105.0])  # seconds: 5 s of compiling during the call
    monkeypatch.setattr(objective_module, "running_clock",
                        lambda: time.perf_counter() - next(compiled_so_far))
    before = objective.sim_seconds
    started = time.perf_counter()
    objective(par.x0)
    wall = time.perf_counter() - started
    assert objective.sim_seconds - before == pytest.approx(wall - 5.0, abs=0.05)
