"""What the data determine: Fisher information against finite-difference Hessians, and
identifiability on constructed circuits with a known answer."""

import numpy as np
import pytest

import neurosim as ns
from neurosim.fit import BehaviourTarget, Objective, Parameterization, TraceTarget
from neurosim.fit.identify import identifiability
from helpers import ROOT, neurosim


def chain():
    """S (clamped, stepped) → A → B, with S → B too and a gap A–B."""
    neurons = (ns.Neuron("S", clamp=-70.0), ns.Neuron("A", C=20.0), ns.Neuron("B", C=30.0))
    synapses = (ns.Synapse("S", "A", w=1.2, E=0.0), ns.Synapse("A", "B", w=0.8, E=-90.0, mu=-55.0),
                ns.Synapse("S", "B", w=0.5, E=0.0))
    touch = ns.Stimulus("pulse", "S", quantity="voltage", amplitude=50.0, start=20.0,
                        duration=60.0)
    return ns.Circuit("chain", neurons, synapses, (ns.GapJunction("A", "B", g=0.1),),
                      stimuli={"touch": touch}, protocols={"touch": ns.Protocol(150.0, ("touch",))})


def planted_traces(circuit, neurons, sigma=0.5, times=np.arange(10.0, 150.0, 10.0)):
    """Noise-free traces of the circuit itself: a fit at the truth has zero residuals."""
    run = ns.simulate(circuit, "touch", rtol=1e-10, atol=1e-10, dt_out=1.0)
    return [TraceTarget("touch", n, tuple(times), tuple(np.interp(times, run.t, run.v(n))), sigma)
            for n in neurons]


def fd_hessian(objective, x, h=1e-4):
    """Central differences of the engine's gradient (itself checked against differences
    of the loss in tests/test_gradients.py)."""
    columns = []
    for k in range(x.size):
        e = np.zeros_like(x)
        e[k] = h
        columns.append((objective.value_and_grad(x + e)[1] - objective.value_and_grad(x - e)[1])
                       / (2 * h))
    H = np.stack(columns, axis=1)
    return 0.5 * (H + H.T)


@pytest.mark.parametrize("transform", ["none", "log"])
def test_fisher_information_equals_the_hessian_at_an_exact_fit(transform):
    circuit = chain()
    targets = planted_traces(circuit, ["A", "B"])
    free = [{"select": "synapses[*].w", "bounds": [0.01, 3], "transform": transform},
            {"select": "gap_junctions[*].g", "bounds": [0.01, 3], "transform": transform}]
    objective = Objective(Parameterization(circuit, free), targets, rtol=1e-10, atol=1e-10,
                          dt_out=1.0)
    x = objective.par.x0
    assert objective(x) < 1e-12                       # the truth: residuals zero
    F, H = objective.fisher(x), fd_hessian(objective, x)
    np.testing.assert_allclose(F, H, rtol=0, atol=2e-4 * np.abs(H).max())
    assert np.all(np.linalg.eigvalsh(F) > 0)          # every weight is seen by A or B


def test_binomial_and_gaussian_score_information_match_the_hessian():
    tw = ns.load_circuit("circuits/tap_withdrawal.yaml")
    free = [{"select": "synapses[post=AVA].w", "bounds": [0, 3]}]
    par = Parameterization(tw, free)
    probe = Objective(par, [BehaviourTarget("anterior", "score", 0.0, se=1.0)], rtol=1e-10,
                      atol=1e-10, dt_out=5.0)
    score = probe.predictions(par.x0)[0]["score"]     # the circuit's own behaviour
    p = 1 / (1 + np.exp(-score / tw.readout().probability_scale))
    for target in (BehaviourTarget("anterior", "reversal_probability", p, n=40),
                   BehaviourTarget("anterior", "score", score, se=0.05)):
        objective = Objective(par, [target], rtol=1e-10, atol=1e-10, dt_out=5.0)
        assert objective(par.x0) < 1e-10
        F, H = objective.fisher(par.x0), fd_hessian(objective, par.x0)
        np.testing.assert_allclose(F, H, rtol=0, atol=1e-3 * np.abs(H).max())
        assert np.linalg.matrix_rank(F, tol=1e-9 * np.abs(F).max()) == 1   # one number seen


def twins():
    """S1 and S2 are identical and drive REV alike: REV's trace fixes the sum of their
    weights, not the difference."""
    neurons = (ns.Neuron("S1", clamp=-70.0), ns.Neuron("S2", clamp=-70.0),
               ns.Neuron("REV", C=20.0))
    synapses = (ns.Synapse("S1", "REV", w=1.0, E=0.0), ns.Synapse("S2", "REV", w=0.6, E=0.0))
    touch = ns.Stimulus("pulse", ("S1", "S2"), quantity="voltage", amplitude=50.0, start=20.0,
                        duration=60.0)
    return ns.Circuit("twins", neurons, synapses, stimuli={"touch": touch},
                      protocols={"touch": ns.Protocol(150.0, ("touch",))})


def test_a_sum_is_determined_and_a_difference_is_not():
    circuit = twins()
    objective = Objective(Parameterization(circuit, [{"select": "synapses[*].w",
                                                      "bounds": [0, 3]}]),
                          planted_traces(circuit, ["REV"]), rtol=1e-10, atol=1e-10, dt_out=1.0)
    report = identifiability(objective, objective.par.x0)
    assert not report.determined.any() and np.all(np.isinf(report.standard_errors))
    errors = report.direction_errors
    assert np.isinf(errors).sum() == 1 and np.isfinite(errors).sum() == 1
    tight = int(np.argmin(errors))
    assert report.combination(tight) == "0.71·w(S1->REV) + 0.71·w(S2->REV)"
    assert report.combination(int(np.argmax(errors))) == "0.71·w(S1->REV) − 0.71·w(S2->REV)"
    page = (ROOT / "docs" / "fitting.md").read_text()
    quoted = page.split("```\nthe data determine 0 of 2")[1].split("```")[0]
    assert ("the data determine 0 of 2" + quoted).strip().splitlines() == report.summary()


def test_standard_errors_are_the_marginal_ones():
    """On a well-posed fit the marginal standard error is √(F⁻¹)ⱼⱼ."""
    circuit = chain()
    objective = Objective(Parameterization(circuit, [{"select": "synapses[*].w",
                                                      "bounds": [0, 3]}]),
                          planted_traces(circuit, ["A", "B"], sigma=2.0), rtol=1e-10,
                          atol=1e-10, dt_out=1.0)
    report = identifiability(objective, objective.par.x0, tolerance=0.05)
    np.testing.assert_allclose(report.standard_errors,
                               np.sqrt(np.diag(np.linalg.inv(report.fisher))), rtol=1e-8)
    assert report.determined.tolist() == list(report.standard_errors <= 0.05)


def write_trace_csv(path, targets, sigma_column=True):
    lines = ["protocol,neuron,time,value" + (",sigma" if sigma_column else "")]
    for t in targets:
        for time, value in zip(t.times, t.values):
            lines.append(f"{t.protocol},{t.neuron},{time},{value!r}" + (f",{t.sigma}" if sigma_column else ""))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_a_trace_fit_from_the_command_line_recovers_planted_weights(tmp_path):
    truth = chain()
    write_trace_csv(tmp_path / "traces.csv", planted_traces(truth, ["A", "B"], sigma=0.5))
    start = truth.replace(synapses=tuple(ns.Synapse(s.pre, s.post, w=s.w * f, E=s.E, mu=s.mu, nu=s.nu)
                                         for s, f in zip(truth.synapses, (0.6, 1.5, 1.8))))
    ns.save_circuit(start, tmp_path / "start.yaml")
    (tmp_path / "fit.yaml").write_text(
        "free:\n  - {select: 'synapses[*].w', bounds: [0, 3]}\n"
        "optimizer: {method: gradient, maxiter: 200}\nsimulation: {dt_out: 1.0, rtol: 1.0e-9}\n")
    out = neurosim("fit", "start.yaml", "traces.csv", "--fit", "fit.yaml", "-o", "fitted.yaml",
                   cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    fitted = ns.load_circuit(tmp_path / "fitted.yaml")
    for got, planted in zip(fitted.synapses, truth.synapses):
        assert got.w == pytest.approx(planted.w, abs=1e-3), got.key
    assert "the data determine 3 of 3 free parameters" in out.stdout
    again = neurosim("fit", "start.yaml", "traces.csv", "--fit", "fit.yaml", "-o", "fitted.yaml",
                     "--overwrite", "--starts", "3", "--profile", "synapses[S->A].w", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "3 starts: best loss" in again.stdout and "starts: 3 of 3" in again.stderr
    line = next(x for x in again.stdout.splitlines() if x.startswith("profile of synapses[S->A].w"))
    low, high = (float(v) for v in line.split("interval ")[1].split(" .. "))
    assert low < 1.2 < high and high - low < 0.2
    assert (tmp_path / "fitted_profile_synapses_S-to-A_w.png").stat().st_size > 10_000
    assert len((tmp_path / "fitted_starts.csv").read_text().splitlines()) == 4
    bad = neurosim("fit", "start.yaml", "traces.csv", "--fit", "fit.yaml", "-o", "x.yaml",
                   "--profile", "synapses[S->X].w", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown free parameter 'synapses[S->X].w'" in bad.stderr
    assert not (tmp_path / "x.yaml").exists()   # refused before fitting


def test_trace_data_in_every_form_and_its_mistakes(tmp_path):
    from neurosim.fit.targets import load_traces
    truth = chain()
    planted = planted_traces(truth, ["A"], sigma=0.5)
    write_trace_csv(tmp_path / "with.csv", planted)
    write_trace_csv(tmp_path / "without.csv", planted, sigma_column=False)
    assert load_traces(tmp_path / "with.csv") == planted
    assert load_traces(tmp_path / "without.csv", sigma=0.5) == planted
    with pytest.raises(ns.CircuitError, match=r"without.csv:2: sigma: no sigma .* --sigma"):
        load_traces(tmp_path / "without.csv")
    ns.simulate(truth, "touch", dt_out=5.0, record=["A", "B"],
                recorder=ns.HDF5Recorder(tmp_path / "run.h5"))
    from_file = load_traces(tmp_path / "run.h5", sigma=0.2)
    assert [(t.protocol, t.neuron, t.sigma, len(t.times)) for t in from_file] == [
        ("touch", "A", 0.2, 31), ("touch", "B", 0.2, 31)]
    with pytest.raises(ns.CircuitError, match="give --sigma"):
        load_traces(tmp_path / "run.h5")
    bad = tmp_path / "bad.csv"
    for text, match in [("protocol,neuron,time\ntouch,A,1\n", r"bad.csv:1: missing column\(s\) \['value'\]"),
                        ("protocol,neuron,time,value\ntouch,A,x,1\n", r"bad.csv:2: time: not a number"),
                        ("protocol,neuron,time,value,sigma\ntouch,A,1,-60,0\n", r"bad.csv:2: sigma: must be a finite number > 0"),
                        ("protocol,neuron,time,value,sigma\ntouch,A,1,-60,1\ntouch,A,1,-61,1\n",
                         r"bad.csv:3: time: a second sample of 'A' under 'touch' at 1 ms \(the first is on line 2\)")]:
        bad.write_text(text)
        with pytest.raises(ns.CircuitError, match=match):
            load_traces(bad)


def test_the_profile_is_lowest_at_the_fit_and_as_wide_as_the_fisher_information_says():
    from neurosim.fit.identify import profile
    circuit = chain()
    objective = Objective(Parameterization(circuit, [{"select": "synapses[*].w", "bounds": [0, 3]}]),
                          planted_traces(circuit, ["A", "B"], sigma=3.0), rtol=1e-10, atol=1e-10,
                          dt_out=1.0)
    x = objective.par.x0
    se = identifiability(objective, x).standard_errors[0]
    name = objective.par.names[0]
    p = profile(objective, x, name, values=x[0] + se * np.linspace(-3, 3, 25))
    assert p.fitted == x[0] and p.values[np.argmin(p.losses)] == pytest.approx(x[0])
    assert p.delta.min() == 0 and p.losses.min() < 1e-10
    low, high = p.interval()
    # near-quadratic: the 95 % profile interval is about the Fisher one, ±1.96 standard
    # errors (its skew, from the model's curvature, cancels in the width)
    assert (high - low) / (2 * se) == pytest.approx(1.96, rel=0.03)
    assert low < x[0] < high
    with pytest.raises(ns.CircuitError, match="unknown free parameter 'w'"):
        profile(objective, x, "w")
    with pytest.raises(ns.CircuitError, match=r"outside the bounds \[0, 3\]"):
        profile(objective, x, name, values=[-1.0, 0.5])


def test_an_ensemble_spreads_along_what_the_data_leave_free():
    from neurosim.fit.identify import ensemble
    circuit = twins()
    objective = Objective(Parameterization(circuit, [{"select": "synapses[*].w", "bounds": [0, 3]}]),
                          planted_traces(circuit, ["REV"], sigma=0.5), rtol=1e-9, atol=1e-9,
                          dt_out=1.0)
    fits = ensemble(objective, 6, seed=1, maxiter=100)
    tied = fits.members()
    assert tied.size >= 4 and fits.losses[0] < 1e-6
    spread = fits.spread()
    assert np.all(spread[:, 1] - spread[:, 0] > 0.3)         # each weight wanders
    sums = fits.values[tied].sum(axis=1)
    assert np.ptp(sums) < 1e-3                               # their sum does not
    assert fits.summary()[0].startswith("6 starts: best loss")


# --- calcium imaging ---------------------------------------------------------------------

def test_the_indicator_model_against_an_ode_solver():
    from scipy.integrate import solve_ivp
    from neurosim.fit.targets import Indicator
    ind = Indicator(tau=80.0, v_half=-45.0, slope=4.0, kd=0.4, hill=2.7, dff_max=1.5)
    t = np.arange(0.0, 400.0, 2.0)
    V = -60.0 + 25.0 * np.sin(t / 40.0) ** 2
    # c∞ between output samples is taken linear, as the model states
    u = lambda time: np.interp(time, t, 1 / (1 + np.exp(-(V - ind.v_half) / ind.slope)))  # noqa: E731
    sol = solve_ivp(lambda time, c: (u(time) - c) / ind.tau, (0, t[-1]), [u(0.0)], t_eval=t,
                    rtol=1e-11, atol=1e-13, max_step=1.0)
    h = lambda c: c ** ind.hill / (c ** ind.hill + ind.kd ** ind.hill)  # noqa: E731
    np.testing.assert_allclose(ind.calcium(t, V), sol.y[0], atol=1e-8)
    np.testing.assert_allclose(ind.dff(t, V), ind.dff_max * (h(sol.y[0]) - h(sol.y[0][0])), atol=1e-8)


def test_imaging_gradients_against_finite_differences():
    from neurosim.fit.targets import ImagingTarget, Indicator
    ind = Indicator(tau=60.0)
    t = np.arange(0.0, 300.0, 5.0)
    rng = np.random.default_rng(2)
    V = -55.0 + 15.0 * np.sin(t / 30.0) + rng.normal(0, 1, t.size)
    target = ImagingTarget("p", "A", tuple(np.arange(7.0, 290.0, 13.0)),
                           tuple(rng.normal(0.2, 0.1, 22)), 0.05, ind)
    loss, grad = target.loss_and_grad(t, V)
    for k in (0, 5, 30, t.size - 1):
        e = np.zeros_like(V)
        e[k] = 1e-5
        fd = (target.loss_and_grad(t, V + e)[0] - target.loss_and_grad(t, V - e)[0]) / 2e-5
        assert grad[k] == pytest.approx(fd, rel=1e-6, abs=1e-8)
    S = rng.normal(size=(t.size, 3))
    y, dY = ind.dff_tangent(t, V, S)
    fd = (ind.dff(t, V + 1e-6 * S[:, 1]) - ind.dff(t, V - 1e-6 * S[:, 1])) / 2e-6
    np.testing.assert_allclose(dY[:, 1], fd, rtol=1e-6, atol=1e-9)


def test_imaging_information_and_a_planted_weight():
    from neurosim.fit.targets import ImagingTarget, Indicator
    circuit = chain()
    ind = Indicator(tau=100.0, v_half=-50.0)
    run = ns.simulate(circuit, "touch", rtol=1e-10, atol=1e-10, dt_out=1.0)
    times = np.arange(5.0, 150.0, 5.0)
    targets = [ImagingTarget("touch", n, tuple(times),
                             tuple(np.interp(times, run.t, ind.dff(run.t, run.v(n)))), 0.02, ind)
               for n in ("A", "B")]
    free = [{"select": "synapses[*].w", "bounds": [0.01, 3]}]
    objective = Objective(Parameterization(circuit, free), targets, rtol=1e-10, atol=1e-10,
                          dt_out=1.0)
    x = objective.par.x0
    assert objective(x) < 1e-12
    F, H = objective.fisher(x), fd_hessian(objective, x)
    np.testing.assert_allclose(F, H, rtol=0, atol=1e-3 * np.abs(H).max())
    from neurosim.fit.optimize import fit_gradient
    start = x * np.array([0.7, 1.3, 1.4])
    fitted = fit_gradient(objective, start, maxiter=200)
    np.testing.assert_allclose(fitted.x, x, atol=2e-3)


@pytest.mark.slow
def test_imaging_data_from_the_command_line(tmp_path):
    from neurosim.fit.targets import Indicator, load_imaging
    truth = chain()
    ind = Indicator(tau=100.0, v_half=-50.0, slope=5.0, kd=0.5, hill=2.5, dff_max=1.0)
    run = ns.simulate(truth, "touch", rtol=1e-10, atol=1e-10, dt_out=1.0)
    times = np.arange(5.0, 150.0, 5.0)
    rows = ["protocol,neuron,time,dff"]
    for n in ("A", "B"):
        for time, y in zip(times, np.interp(times, run.t, ind.dff(run.t, run.v(n)))):
            rows.append(f"touch,{n},{time},{float(y)!r}")
    (tmp_path / "imaging.csv").write_text("\n".join(rows) + "\n")
    loaded = load_imaging(tmp_path / "imaging.csv", ind, sigma=0.02)
    assert [(t.neuron, len(t.times), t.sigma, t.indicator) for t in loaded] == [
        ("A", 29, 0.02, ind), ("B", 29, 0.02, ind)]
    start = truth.replace(synapses=tuple(ns.Synapse(s.pre, s.post, w=s.w * f, E=s.E, mu=s.mu, nu=s.nu)
                                         for s, f in zip(truth.synapses, (0.7, 1.3, 1.4))))
    ns.save_circuit(start, tmp_path / "start.yaml")
    (tmp_path / "fit.yaml").write_text(
        "free:\n  - {select: 'synapses[*].w', bounds: [0.01, 3]}\n"
        "optimizer: {method: gradient, maxiter: 200}\nsimulation: {dt_out: 1.0, rtol: 1.0e-9}\n"
        "imaging: {tau: 100, v_half: -50}\n")
    out = neurosim("fit", "start.yaml", "imaging.csv", "--sigma", "0.02", "--fit", "fit.yaml",
                   "-o", "fitted.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "imaging A" in out.stdout
    for got, planted in zip(ns.load_circuit(tmp_path / "fitted.yaml").synapses, truth.synapses):
        assert got.w == pytest.approx(planted.w, abs=5e-3), got.key
    missing = neurosim("fit", "start.yaml", "imaging.csv", "--fit", "fit.yaml", "-o", "x.yaml",
                       cwd=tmp_path)
    assert missing.returncode == 2 and "imaging.csv:2: sigma: no sigma" in missing.stderr


def test_losses_are_negative_log_likelihoods_up_to_a_constant():
    """Differences of losses are log-likelihood ratios: checked against scipy.stats."""
    from scipy import stats
    readout = ns.model.Readout("REV", "FWD", window=(0.0, 10.0))
    counts = BehaviourTarget("p", "reversal_probability", 14 / 20, n=20)
    graded = BehaviourTarget("p", "score", 0.3, se=0.07)
    trace = TraceTarget("p", "A", (1.0, 2.0, 3.0), (-60.0, -55.0, -58.0), (0.5, 1.0, 2.0))
    t = np.array([0.0, 1.0, 2.0, 3.0])
    for a, b in [(-0.2, 0.1), (0.05, 0.4), (0.3, -0.3)]:
        pa, pb = (1 / (1 + np.exp(-s / readout.probability_scale)) for s in (a, b))
        want = stats.binom.logpmf(14, 20, pb) - stats.binom.logpmf(14, 20, pa)
        got = counts.loss_from_score(readout, a)[0] - counts.loss_from_score(readout, b)[0]
        assert got == pytest.approx(want, rel=1e-10)
        want = stats.norm.logpdf(0.3, b, 0.07) - stats.norm.logpdf(0.3, a, 0.07)
        got = graded.loss_from_score(readout, a)[0] - graded.loss_from_score(readout, b)[0]
        assert got == pytest.approx(want, rel=1e-10)
        Va, Vb = np.array([-70.0, -61.0, -54.0, -58.0 + a]), np.array([-70.0, -59.5, -56.0, -57.0 + b])
        want = (stats.norm.logpdf(trace.values, Vb[1:], (0.5, 1.0, 2.0)).sum()
                - stats.norm.logpdf(trace.values, Va[1:], (0.5, 1.0, 2.0)).sum())
        got = trace.loss_and_grad(t, Va)[0] - trace.loss_and_grad(t, Vb)[0]
        assert got == pytest.approx(want, rel=1e-10)
