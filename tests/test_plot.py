"""Figures: what each one shows, read back from the matplotlib artists."""

import itertools
import math
import struct
import warnings

import numpy as np
import pytest

import neurosim as ns
from neurosim.behaviour import check_facts, load_facts, run_experiments
from neurosim.fit.signs import SignPattern
from neurosim.io.hdf5 import HDF5Recorder, load_result
from neurosim.plot import (force_layout, layered_layout, plot_experiments, plot_fit, plot_graph,
                           plot_signs, plot_traces, save_figure, stimulus_intervals)
from neurosim.record import Result
from helpers import EXAMPLE, FACTS, TW, TW_FITTED


def spans(ax, name):
    """(start, end) of the shaded spans of stimulus ``name`` on ``ax``, in ms."""
    boxes = [p.get_bbox() for p in ax.patches if p.get_gid() == f"stimulus:{name}"]
    return sorted((b.x0, b.x1) for b in boxes)


def legend_texts(legend):
    return [t.get_text() for t in legend.get_texts()]


def png_size(path):
    width, height = struct.unpack(">II", path.read_bytes()[16:24])
    return width, height


# --- traces -------------------------------------------------------------------------

def test_trace_panels_shade_the_stimulus_window_and_name_it():
    circuit = ns.load_circuit(EXAMPLE)
    result = ns.simulate(circuit, "baseline", dt_out=1.0)
    fig = plot_traces(result, circuit=circuit)
    axes = fig.axes
    assert len(axes) == 3
    # the file's pulse: start 100 ms, duration 50 ms, on every panel
    assert all(spans(ax, "tap") == [(100.0, 150.0)] for ax in axes)
    assert "tap: pulse +20 pA → S" in legend_texts(axes[0].get_legend())
    # each panel's y-range fits its own trace
    for ax, name in zip(axes, result.neuron_names):
        low, high = ax.get_ylim()
        assert low <= result.v(name).min() and high >= result.v(name).max()
        assert high - low < 1.5 * np.ptp(result.v(name)) + 2.0


def test_a_result_file_brings_its_circuit_for_the_windows(tmp_path):
    circuit = ns.load_circuit(EXAMPLE).replace(stimuli={
        "train": ns.Stimulus("pulse_train", "S", amplitude=5.0, start=10.0, duration=5.0,
                             period=20.0, count=3),
        "hold": ns.Stimulus("step", "A", quantity="voltage", amplitude=-3.0, start=80.0)},
        protocols={"both": ns.Protocol(120.0, ("train", "hold"))})
    ns.simulate(circuit, "both", recorder=HDF5Recorder(tmp_path / "run.h5"))
    fig = plot_traces(load_result(tmp_path / "run.h5"))
    assert spans(fig.axes[0], "train") == [(10.0, 15.0), (30.0, 35.0), (50.0, 55.0)]
    assert spans(fig.axes[0], "hold") == [(80.0, 120.0)]
    assert "hold: step -3 mV on the clamp → A" in legend_texts(fig.axes[0].get_legend())


@pytest.mark.parametrize("stimulus,t_end,expected", [
    (ns.Stimulus("pulse", "S", start=100.0, duration=50.0), 500.0, [(100.0, 150.0)]),
    (ns.Stimulus("pulse", "S", start=100.0, duration=50.0), 120.0, [(100.0, 120.0)]),
    (ns.Stimulus("pulse_train", "S", start=0.0, duration=2.0, period=10.0), 35.0,
     [(0.0, 2.0), (10.0, 12.0), (20.0, 22.0), (30.0, 32.0)]),
    (ns.Stimulus("sine", "S", start=5.0, duration=1000.0, frequency=1.0), 100.0, [(5.0, 100.0)]),
    (ns.Stimulus("steps", "S", times=(0.0, 10.0, 20.0), values=(0.0, 2.0, 0.0)), 50.0,
     [(10.0, 20.0)]),
    (ns.Stimulus("pulse", "S", amplitude=0.0, start=1.0, duration=2.0), 10.0, []),
])
def test_stimulus_intervals_are_where_the_waveform_leaves_its_offset(stimulus, t_end, expected):
    assert stimulus_intervals(stimulus, t_end) == expected


def test_a_fast_train_is_shaded_as_one_window():
    train = ns.Stimulus("pulse_train", "S", start=3.0, duration=0.01, period=0.02)
    assert stimulus_intervals(train, 1000.0) == [(pytest.approx(3.0, abs=0.06), 1000.0)]


def test_runs_without_a_known_protocol_have_no_windows():
    circuit = ns.load_circuit(EXAMPLE)
    inline = ns.simulate(circuit, duration=50.0,
                         stimuli=[ns.Stimulus("pulse", "S", start=10.0, duration=5.0)])
    fig = plot_traces(inline, circuit=circuit)
    assert not any(p.get_gid() for ax in fig.axes for p in ax.patches)


def test_an_interrupted_run_shows_its_samples_where_it_stopped_and_why():
    circuit = ns.load_circuit(EXAMPLE)
    full = ns.simulate(circuit, "baseline", dt_out=1.0)
    cut = Result(full.t[:130], full.V[:130], full.neuron_names, "interrupted",
                 "interrupted by SIGINT", metadata=full.metadata)
    fig = plot_traces(cut, circuit=circuit)
    line = fig.axes[0].get_lines()[0]
    np.testing.assert_array_equal(line.get_xdata(), full.t[:130])
    np.testing.assert_array_equal(line.get_ydata(), full.v("S")[:130])
    title = fig._suptitle.get_text()
    assert "INTERRUPTED after 129 of 500 ms (130 samples): interrupted by SIGINT" in title
    assert fig.axes[0].get_xlim() == (0.0, 500.0)   # the planned run, to see how far it got
    assert "run stopped at 129 ms" in legend_texts(fig.axes[0].get_legend())


@pytest.mark.parametrize("n", [0, 1])
def test_a_run_with_no_or_one_sample_still_draws(n, tmp_path):
    circuit = ns.load_circuit(EXAMPLE)
    full = ns.simulate(circuit, "baseline", dt_out=1.0)
    failed = Result(full.t[:n], full.V[:n], full.neuron_names, "failed",
                    "non-finite V in neuron 'A'", metadata=full.metadata)
    fig = plot_traces(failed, circuit=circuit)
    assert "FAILED" in fig._suptitle.get_text() and "non-finite V" in fig._suptitle.get_text()
    if n == 0:
        assert any(t.get_text() == "no samples recorded" for t in fig.axes[0].texts)
    else:
        assert fig.axes[0].get_lines()[0].get_marker() == "o"
    save_figure(fig, tmp_path / "f.png")


# --- connectivity -------------------------------------------------------------------

def node_positions(fig, circuit):
    return {t.get_text(): t.get_position() for t in fig.axes[0].texts
            if t.get_text() in circuit.neuron_names}


def test_graph_rows_follow_roles_sensory_on_top():
    circuit = ns.load_circuit(TW)
    fig = plot_graph(circuit)
    y = {name: xy[1] for name, xy in node_positions(fig, circuit).items()}
    rows = {role: {y[n.name] for n in circuit.neurons if n.role == role}
            for role in ("sensory", "inter", "command", "motor")}
    assert all(len(levels) == 1 for levels in rows.values())
    levels = [rows[r].pop() for r in ("sensory", "inter", "command", "motor")]
    assert levels == sorted(levels, reverse=True)
    labels = legend_texts(fig.axes[0].get_legend())
    assert "clamped neuron (held at its clamp potential)" in labels
    assert {"excitatory synapse (arrow head)", "inhibitory synapse (bar head)",
            "gap junction"} <= set(labels)


def test_the_pathway_is_drawn_broad_and_named():
    circuit = ns.load_circuit(TW)
    fig = plot_graph(circuit, highlight=[("PLM", "AVD"), ("AVD", "AVA")])
    ax = fig.axes[0]
    arrows = [a for a in ax.texts if hasattr(a, "arrow_patch") and a.arrow_patch is not None]
    path = [a.arrow_patch.get_linewidth() for a in arrows if a.get_gid() == "pathway"]
    others = [a.arrow_patch.get_linewidth() for a in arrows if a.get_gid() != "pathway"]
    assert len(path) == 2 and min(path) > max(others)
    assert "pathway PLM → AVD → AVA" in legend_texts(ax.get_legend())
    assert "pathway PLM → AVD → AVA" in ax.get_title()


def test_without_roles_the_layout_is_force_directed_and_spread():
    circuit = ns.load_circuit(TW)
    bare = circuit.replace(neurons=tuple(n.__class__(n.name, n.C, n.g_L, n.E_L, n.V0, n.clamp)
                                         for n in circuit.neurons))
    with pytest.raises(ns.CircuitError, match="needs every neuron's role; PVD, PLM"):
        layered_layout(bare)
    pos = force_layout(bare)
    assert pos == force_layout(bare)   # deterministic
    xy = np.array(list(pos.values()))
    distances = np.linalg.norm(xy[:, None] - xy[None], axis=2)[np.triu_indices(len(xy), 1)]
    assert distances.min() > 0.25 * distances.max() / math.sqrt(len(xy))
    fig = plot_graph(bare)
    drawn = node_positions(fig, bare)
    assert drawn.keys() == pos.keys()
    np.testing.assert_allclose([drawn[k] for k in pos], [pos[k] for k in pos])


def test_a_single_neuron_graph_draws():
    fig = plot_graph(ns.Circuit("one", (ns.Neuron("A"),)))
    assert "one: 1 neuron, 0 synapses, 0 gap junctions" == fig.axes[0].get_title()


# --- behaviour ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def experiments():
    circuit = ns.load_circuit(TW_FITTED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ns.RestWarning)
        rows, results = run_experiments(circuit, ["tap", "anterior", "posterior_gentle"],
                                        dt_out=5.0)
    checks = check_facts(load_facts(FACTS), rows, circuit.readout().threshold)
    return circuit, rows, results, checks


def test_behave_traces_have_their_own_scale_and_the_bars_are_explained(experiments):
    circuit, rows, results, checks = experiments
    threshold = circuit.readout().threshold
    fig = plot_experiments(rows, results, threshold=threshold, neurons=["AVA", "REV"],
                           checks=checks, circuit=circuit)
    traces, bars = fig.axes[:6], fig.axes[6]
    for ax in traces:
        low, high = ax.get_ylim()
        assert high < 0.0   # not stretched to 0 mV: every trace here stays below -20 mV
    assert spans(traces[0], "tap_touch") == [(200.0, 400.0)]
    # one y-scale per neuron across protocols
    assert traces[0].get_ylim() == traces[1].get_ylim() == traces[2].get_ylim()
    texts = [t.get_text() for t in bars.texts]
    assert f" {threshold:+.3g}: reversal" in texts and f" {-threshold:+.3g}: forward" in texts
    labels = legend_texts(bars.get_legend())
    assert f"circuit reverses (score > {threshold:g})" in labels
    assert "no behaviour (|score| ≤ threshold)" in labels
    assert "tap: reversal" in labels and "posterior_gentle: forward" in labels


# --- fits ---------------------------------------------------------------------------

def wilson(p, n, z=1.959963984540054):
    """The 95 % Wilson score interval, written out from Wilson (1927)."""
    denominator = 1 + z ** 2 / n
    centre = (p + z ** 2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z ** 2 / (4 * n ** 2)) / denominator
    return centre - half, centre + half


PREDICTIONS = [
    {"protocol": "tap", "measure": "reversal_probability", "observed": 0.9, "predicted": 0.85,
     "score": 0.2, "initial": 0.5, "n": 20, "se": None},
    {"protocol": "posterior_gentle", "measure": "reversal_probability", "observed": 0.0,
     "predicted": 0.1, "score": -0.2, "initial": 0.45, "n": 12, "se": None},
    {"protocol": "rest", "measure": "score", "observed": 0.0, "predicted": 0.01, "score": 0.01,
     "initial": 0.03, "n": None, "se": 0.025},
    {"protocol": "tap", "measure": "trace AVA", "observed": math.nan, "predicted": math.nan,
     "score": 3.0},
]


def test_fit_report_shows_initial_fitted_observed_with_binomial_intervals():
    fig = plot_fit([(1, 5.0), (40, 0.5)], PREDICTIONS)
    probabilities, scores = fig.axes[1], fig.axes[2]
    assert "95 % Wilson interval" in probabilities.get_title()
    heights = {c.get_label(): [b.get_height() for b in c] for c in probabilities.containers
               if hasattr(c, "patches")}
    assert heights["initial (circuit as given)"] == [0.5, 0.45]
    assert heights["fitted"] == [0.85, 0.1] and heights["observed"] == [0.9, 0.0]
    errors = next(c for c in probabilities.containers if type(c).__name__ == "ErrorbarContainer")
    segments = errors.lines[2][0].get_segments()
    for segment, (p, n) in zip(segments, [(0.9, 20), (0.0, 12)]):
        assert (segment[0][1], segment[1][1]) == pytest.approx(wilson(p, n), abs=1e-12)
    errors = next(c for c in scores.containers if type(c).__name__ == "ErrorbarContainer")
    (low, high), = [(s[0][1], s[1][1]) for s in errors.lines[2][0].get_segments()]
    assert (low, high) == pytest.approx((-0.025, 0.025))
    assert "± 1 standard error" in scores.get_title()


def test_a_fit_report_records_the_initial_prediction_and_the_sample_sizes(tmp_path):
    from neurosim.fit.run import run_fit
    from neurosim.fit.spec import loads_fit_spec
    from neurosim.fit.targets import BehaviourTarget

    circuit = ns.load_circuit(TW)
    spec = loads_fit_spec("free:\n  - {select: 'synapses[post=AVA].w', bounds: [0, 3]}\n"
                          "optimizer: {method: gradient, maxiter: 2}\n"
                          "simulation: {dt_out: 10.0}\n")
    targets = [BehaviourTarget("tap", "reversal_probability", 0.9, n=20)]
    report = run_fit(circuit, targets, spec)
    tap, control = report.predictions
    start = report.objective.predictions(report.parameterization.x0)
    assert tap["initial"] == start[0]["predicted"] and tap["n"] == 20 and tap["se"] is None
    assert control["measure"] == "score" and control["se"] > 0 and control["n"] is None
    report.write(tmp_path / "fitted.yaml", dt_out=50.0)
    assert (tmp_path / "fitted_predictions.csv").read_text().splitlines()[0] == \
        "protocol,measure,observed,predicted,score,initial,n,se"


# --- sign patterns ------------------------------------------------------------------

def test_sign_figure_is_readable_for_128_patterns_best_first(tmp_path):
    classes = ["PVD", "PLM", "AVM", "ALM", "AVD", "PVC", "DVA"]
    rng = np.random.default_rng(3)
    patterns = sorted((SignPattern(dict(zip(classes, signs)), float(rng.gamma(2.0, 5.0)),
                                   np.zeros(1))
                       for signs in itertools.product("+-", repeat=len(classes))),
                      key=lambda p: p.loss)
    fig = plot_signs(patterns)
    save_figure(fig, tmp_path / "signs.png")
    width, height = png_size(tmp_path / "signs.png")
    assert width <= 1600 and height <= 1200
    grid = fig.axes[0]
    rows = grid.images[0].get_array()
    assert list(rows[0]) == [1 if patterns[0].signs[c] == "+" else 0 for c in classes]
    assert grid.yaxis_inverted()   # row 0, the best pattern, on top
    assert "the best 32 of 128 sign patterns" in fig._suptitle.get_text()
    assert grid.get_yticklabels()[0].get_text() == "1"
