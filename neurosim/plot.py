"""Pictures: voltage traces, the circuit's connectivity, behaviour and fits.

Functions return a :class:`matplotlib.figure.Figure` built without pyplot, so they work
on machines without a display and never touch global plotting state.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

import numpy as np

from neurosim.errors import CircuitError
from neurosim.model import NEURON_ROLES, Circuit, Stimulus
from neurosim.record import Result

#: a synapse whose reversal potential lies above this is drawn as excitatory (mV)
EXCITATORY_ABOVE = -50.0

COLORS = {"excitatory": "#c0392b", "inhibitory": "#2c6fbb", "gap": "#27ae60"}
#: the shade behind traces while a stimulus is on, one colour per stimulus of a protocol
STIMULUS_COLORS = ("#f1c40f", "#9b59b6", "#1abc9c", "#e67e22", "#7f8c8d", "#e84393")
#: a highlighted pathway: a broad translucent stroke under its connections, in a colour
#: none of the connection kinds uses
PATHWAY_COLOR = "#f39c12"
#: a stimulus with more edges than this (a fast pulse train, a long sampled table) is
#: shaded as one window from when it first turns on to when it last is on (drawing every
#: pulse would take minutes and show a solid block anyway)
MAX_SHADED_EDGES = 2000
#: traces whose range is smaller than this get this range, so that a flat trace reads
#: as flat instead of as rounding noise magnified to fill the panel (mV)
MIN_TRACE_SPAN = 2.0


# --- stimulus windows -----------------------------------------------------------------

@dataclass(frozen=True)
class StimulusWindow:
    """When one stimulus of a run is on: ``intervals`` of (start, end) in ms, and a legend
    label naming the stimulus, its targets and its amplitude with the unit."""

    name: str
    label: str
    intervals: tuple[tuple[float, float], ...]


def stimulus_intervals(stimulus: Stimulus, t_end: float) -> list[tuple[float, float]]:
    """The intervals of ``[0, t_end]`` where ``stimulus`` differs from its offset (ms).

    The waveform is piecewise smooth between its :meth:`~Stimulus.breakpoints`, so each
    piece is either off throughout or on somewhere; a piece is sampled at a few interior
    points to tell which (a sine crosses zero at isolated points only).
    """
    if stimulus.edge_count(t_end) > MAX_SHADED_EDGES:
        grid = np.linspace(0.0, t_end, 20_001)
        on = np.flatnonzero(stimulus.value(grid) != stimulus.offset)
        if not on.size:
            return []
        return [(float(grid[on[0]]), float(grid[min(on[-1] + 1, grid.size - 1)]))]
    edges = np.concatenate([[0.0], stimulus.breakpoints(t_end), [t_end]])
    intervals: list[tuple[float, float]] = []
    for a, b in zip(edges[:-1], edges[1:]):
        if b <= a:
            continue
        probes = a + (b - a) * np.array([0.13, 0.37, 0.5, 0.71, 0.94])
        if np.any(stimulus.value(probes) != stimulus.offset):
            if intervals and intervals[-1][1] == a:
                intervals[-1] = (intervals[-1][0], float(b))
            else:
                intervals.append((float(a), float(b)))
    return intervals


def _stimulus_label(name: str, stimulus: Stimulus) -> str:
    """'tap: pulse +20 pA → PLM' (a voltage stimulus: 'mV on the clamp')."""
    unit = "pA" if stimulus.quantity == "current" else "mV on the clamp"
    if stimulus.kind in ("table", "steps"):
        values = stimulus.amplitude * np.array(stimulus.values) + stimulus.offset
        size = f"{values.min():g} … {values.max():g} {unit}"
    elif stimulus.kind == "sine":
        size = f"±{abs(stimulus.amplitude):g} {unit} at {stimulus.frequency:g} Hz"
    else:
        size = f"{stimulus.amplitude:+g} {unit}"
    return f"{name}: {stimulus.kind} {size} → {', '.join(stimulus.targets)}"


def stimulus_windows(result: Result, circuit: Circuit | None = None) -> list[StimulusWindow]:
    """The stimulus windows of ``result``'s protocol.

    The circuit is ``circuit`` if given, else the one a result file holds
    (``metadata["circuit_yaml"]``).  Without either, or for a protocol the circuit does
    not define (a run with inline stimuli), there are none.  Stimuli whose targets were
    all ablated in the run are left out.
    """
    meta = result.metadata
    if circuit is None and "circuit_yaml" in meta:
        from neurosim.io.yaml import loads_circuit
        try:
            circuit = loads_circuit(meta["circuit_yaml"], "(the result's circuit)")
        except CircuitError:  # a file of another version: the traces are still worth drawing
            return []
    protocol = meta.get("protocol")
    if circuit is None or protocol not in circuit.protocols:
        return []
    proto = circuit.protocols[protocol]
    t_end = float(meta.get("duration_ms", proto.duration))
    gone = set(meta.get("ablated", proto.ablate))
    windows = []
    for k, stim in enumerate(circuit.resolve_stimuli(proto)):
        name = proto.stimuli[k] if isinstance(proto.stimuli[k], str) else stim.kind
        if set(stim.targets) <= gone:
            continue
        intervals = stimulus_intervals(stim, t_end)
        if intervals:
            windows.append(StimulusWindow(name, _stimulus_label(name, stim), tuple(intervals)))
    return windows


def _shade(ax, windows, *, legend: bool) -> None:
    """Shade every window on ``ax``; label the first span of each (for a legend)."""
    for k, window in enumerate(windows):
        color = STIMULUS_COLORS[k % len(STIMULUS_COLORS)]
        for j, (a, b) in enumerate(window.intervals):
            span = ax.axvspan(a, b, color=color, alpha=0.22, lw=0, zorder=0,
                              label=window.label if legend and j == 0 else "_nolegend_")
            span.set_gid(f"stimulus:{window.name}")


def _finite(values) -> np.ndarray:
    """``values`` with inf turned into NaN: a diverged sample leaves a gap, not a spike
    that stretches the axis to 1e308."""
    values = np.array(values, dtype=float)
    values[~np.isfinite(values)] = np.nan
    return values


def _ylim(ax, traces) -> None:
    """Limits that hold every trace, at least :data:`MIN_TRACE_SPAN` mV apart."""
    finite = np.concatenate([np.ravel(v)[np.isfinite(np.ravel(v))] for v in traces] or [[]])
    if not finite.size:
        return
    low, high = float(finite.min()), float(finite.max())
    pad = max(0.06 * (high - low), 0.5 * max(0.0, MIN_TRACE_SPAN - (high - low)))
    ax.set_ylim(low - pad, high + pad)
    ax.ticklabel_format(axis="y", useOffset=False)


def _status_line(result: Result) -> str:
    """'FAILED after 12.3 of 500 ms (1,234 samples): non-finite V in ...' for a run that
    did not complete; '' for one that did."""
    if result.complete:
        return ""
    t = result.t
    planned = result.metadata.get("duration_ms")
    reached = f"after {t[-1]:g}" if t.size else "before the first sample,"
    of = f" of {planned:g} ms" if planned else " ms"
    head = f"{result.status.upper()} {reached}{of} ({t.size:,} sample{'' if t.size == 1 else 's'})"
    return textwrap.fill(f"{head}: {result.message}" if result.message else head, 110)


def plot_traces(result: Result, neurons=None, *, circuit: Circuit | None = None,
                title: str | None = None, figure=None):
    """One panel per neuron, shared time axis, potentials in mV, stimuli shaded.

    Each stimulus of the run's protocol is shaded while it is on and named in the legend
    with its target and amplitude (see :func:`stimulus_windows` for where the circuit
    comes from).  A failed or interrupted run shows the samples it kept, the time where
    it stopped, and its status and message in the title.

    Parameters
    ----------
    result : Result
    neurons : sequence of str, optional
        Which traces and in which order (default: all recorded).
    circuit : Circuit, optional
        The circuit the run simulated, for its stimulus windows (a result read from a
        file brings its own).
    title : str, optional
        Default: circuit and protocol from the result's metadata.
    """
    from matplotlib.figure import Figure

    names = list(result.neuron_names if neurons is None else neurons)
    for name in names:
        result.v(name)  # an unknown name fails here, with the recorded ones
    windows = stimulus_windows(result, circuit)
    fig = figure or Figure(figsize=(8, 1.5 + 0.9 * len(names)), layout="constrained")
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    t = result.t
    planned = result.metadata.get("duration_ms")
    for ax, name in zip(axes, names):
        _shade(ax, windows, legend=ax is axes[0])
        v = _finite(result.v(name))
        # a lone sample is a point, not an invisible line of length zero
        ax.plot(t, v, lw=1.2, color="#34495e", marker="o" if t.size == 1 else None, ms=4)
        _ylim(ax, [v])
        if not t.size:
            ax.text(0.5, 0.5, "no samples recorded", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9, color="#c0392b")
        ax.set_ylabel(f"{name}\n(mV)", rotation=0, ha="right", va="center", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    if not result.complete and t.size:
        for ax in axes:
            ax.axvline(t[-1], color="#c0392b", ls=":", lw=1.2,
                       label=f"run stopped at {t[-1]:g} ms" if ax is axes[0] else "_nolegend_")
    if planned:  # the whole planned run, so a run cut short shows how far it got
        axes[-1].set_xlim(0, planned)
    axes[-1].set_xlabel("time (ms)")
    if windows or not result.complete:
        axes[0].legend(fontsize=7, loc="upper right", frameon=False,
                       title="stimuli (shaded while on)" if windows else None, title_fontsize=7)
    meta = result.metadata
    if title is None:
        title = f"{meta.get('circuit', '')} — {meta.get('protocol', '')}".strip(" —")
    status = _status_line(result)
    fig.suptitle(f"{title}\n{status}" if status else title, fontsize=11 if not status else 9,
                 color="#c0392b" if status else "black")
    return fig


# --- connectivity ---------------------------------------------------------------------

def _neighbours(circuit: Circuit) -> dict[str, set[str]]:
    """Who connects to whom, either way, by synapse or gap junction."""
    out: dict[str, set[str]] = {n: set() for n in circuit.neuron_names}
    pairs = [(s.pre, s.post) for s in circuit.synapses] + \
        [(g.a, g.b) for g in circuit.gap_junctions]
    for a, b in pairs:
        if a != b:
            out[a].add(b)
            out[b].add(a)
    return out


def layered_layout(circuit: Circuit) -> dict[str, tuple[float, float]]:
    """One row per :data:`~neurosim.model.NEURON_ROLES` role, sensory on top, motor at
    the bottom, 1 unit apart; every neuron needs a role.

    Within a row, neurons are ordered by the mean position of their neighbours in the
    other rows (the barycentre heuristic of layered graph drawing), sweeping down and up a
    few times, so that connections cross less than in file order.
    """
    missing = [n.name for n in circuit.neurons if n.role is None]
    if missing:
        raise CircuitError(f"a layered layout needs every neuron's role; {', '.join(missing)} "
                           f"{'has' if len(missing) == 1 else 'have'} none "
                           f"(allowed: {', '.join(NEURON_ROLES)})")
    rows = [[n.name for n in circuit.neurons if n.role == role] for role in NEURON_ROLES]
    rows = [row for row in rows if row]
    neighbours = _neighbours(circuit)

    def x_of(row):
        return {name: k - (len(row) - 1) / 2 for k, name in enumerate(row)}

    def place():
        return {name: x for row in rows for name, x in x_of(row).items()}

    for sweep in range(4):
        order = range(len(rows)) if sweep % 2 == 0 else reversed(range(len(rows)))
        for r in order:
            x = place()
            others = {n for k, row in enumerate(rows) if k != r for n in row}

            def barycentre(name, x=x, others=others):
                linked = [x[m] for m in neighbours[name] if m in others]
                return np.mean(linked) if linked else x[name]
            rows[r] = sorted(rows[r], key=lambda name: (barycentre(name), x[name]))
    x = place()
    return {name: (x[name], -float(r)) for r, row in enumerate(rows) for name in row}


def force_layout(circuit: Circuit, *, iterations: int = 400) -> dict[str, tuple[float, float]]:
    """A force-directed layout (Fruchterman & Reingold 1991): every pair of neurons repels,
    connected ones attract, and the step shrinks as it goes.  Deterministic (from a circle,
    slightly perturbed by a fixed seed); positions scaled to span about ``√n`` units.

    References
    ----------
    Fruchterman TMJ, Reingold EM (1991). Graph drawing by force-directed placement.
    Software: Practice and Experience 21:1129–1164.
    """
    names = list(circuit.neuron_names)
    n = len(names)
    if n == 1:
        return {names[0]: (0.0, 0.0)}
    index = {name: k for k, name in enumerate(names)}
    linked = np.zeros((n, n))
    for a, others in _neighbours(circuit).items():
        for b in others:
            linked[index[a], index[b]] = 1.0
    angle = 2 * np.pi * np.arange(n) / n + np.pi / 2
    pos = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    pos += np.random.default_rng(0).normal(scale=0.05, size=pos.shape)
    k = math.sqrt(4.0 / n)  # the ideal distance in a 2 × 2 box
    for step in range(iterations):
        delta = pos[:, None, :] - pos[None, :, :]
        dist = np.maximum(np.linalg.norm(delta, axis=2), 1e-3)
        # repulsion k²/d between all, attraction d²/k along connections (the paper's forces)
        force = k ** 2 / dist - linked * dist ** 2 / k
        np.fill_diagonal(force, 0.0)
        move = np.sum(delta / dist[..., None] * force[..., None], axis=1)
        length = np.maximum(np.linalg.norm(move, axis=1), 1e-12)
        limit = 0.1 * (1 - step / iterations) + 1e-3
        pos += move / length[:, None] * np.minimum(length, limit)[:, None]
    pos -= pos.mean(axis=0)
    scale = max(1.0, 0.7 * math.sqrt(n)) / max(np.abs(pos).max(), 1e-12)
    return {name: (float(x), float(y)) for name, (x, y) in zip(names, pos * scale)}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _chain_name(pairs) -> str:
    """'PLM → AVD → AVA' when the pairs chain up, else 'PLM → AVD, AVM → AVA'."""
    pairs = [tuple(p) for p in pairs]
    if all(a[1] == b[0] for a, b in zip(pairs, pairs[1:])):
        return " → ".join([pairs[0][0]] + [b for _, b in pairs])
    return ", ".join(f"{a} → {b}" for a, b in pairs)


def plot_graph(circuit: Circuit, *, positions=None, highlight=(), figure=None):
    """Connectivity: excitatory (red arrows), inhibitory (blue, bar heads), gap (green dashed).

    Neurons with a ``role`` are drawn in rows, sensory on top and motor at the bottom
    (:func:`layered_layout`); a circuit where some neuron has no role gets a
    force-directed layout (:func:`force_layout`).  Line width grows with the synaptic
    weight ``w`` (or ``ĝ``).  Clamped neurons are drawn as squares.  ``highlight`` is a
    sequence of (pre, post) pairs, e.g. a pathway's consecutive neurons: their
    connections are drawn over a broad orange stroke and the pathway is named in the
    legend and the title.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if positions is not None:
        pos = dict(positions)
    elif all(n.role is not None for n in circuit.neurons):
        pos = layered_layout(circuit)
    else:
        pos = force_layout(circuit)
    xs, ys = zip(*pos.values())
    width, height = max(xs) - min(xs), max(ys) - min(ys)
    # at least as wide as the legend's three columns
    fig = figure or Figure(figsize=(min(14.0, max(8.5, 3.5 + 1.5 * width)),
                                    min(12.0, 3.5 + 1.5 * height)), layout="constrained")
    ax = fig.subplots()
    weights = [s.w for s in circuit.synapses] + [g.g for g in circuit.gap_junctions]
    scale = 3.0 / max(weights) if weights and max(weights) > 0 else 1.0
    highlighted = [tuple(p) for p in highlight]
    on_path = set(highlighted) | {(b, a) for a, b in highlighted}
    row_of = {name: y for name, (_, y) in pos.items()}

    def bend(a, b, rad=0.12):
        # neighbours in one row would run straight through the neurons between them
        return f"arc3,rad={0.35 if row_of[a] == row_of[b] else rad}"

    def underlay(a, b, connection):
        stroke = ax.annotate("", xy=pos[b], xytext=pos[a], zorder=1.5,
                             arrowprops=dict(arrowstyle="-", color=PATHWAY_COLOR, lw=9,
                                             alpha=0.6, shrinkA=8, shrinkB=8,
                                             connectionstyle=connection))
        stroke.set_gid("pathway")

    for gap in circuit.gap_junctions:
        connection = bend(gap.a, gap.b, rad=0.0)
        if (gap.a, gap.b) in on_path and not any(
                (s.pre, s.post) in set(highlighted) for s in circuit.synapses
                if {s.pre, s.post} == {gap.a, gap.b}):
            underlay(gap.a, gap.b, connection)
        ax.annotate("", xy=pos[gap.b], xytext=pos[gap.a], zorder=1,
                    arrowprops=dict(arrowstyle="-", ls="--", color=COLORS["gap"],
                                    lw=0.6 + gap.g * scale, shrinkA=14, shrinkB=14,
                                    connectionstyle=connection))
    for syn in circuit.synapses:
        kind = "excitatory" if syn.E > EXCITATORY_ABOVE else "inhibitory"
        start, end = pos[syn.pre], pos[syn.post]
        lw = 0.6 + syn.w * scale
        if syn.pre == syn.post:
            ax.annotate("", xy=(end[0] + 0.12, end[1] + 0.14), xytext=end,
                        arrowprops=dict(arrowstyle="->", color=COLORS[kind], lw=lw,
                                        connectionstyle="arc3,rad=1.5"))
            continue
        connection = bend(syn.pre, syn.post)
        if (syn.pre, syn.post) in highlighted:
            underlay(syn.pre, syn.post, connection)
        # heads end just outside the neuron's marker (radius 15 pt), where the heads of
        # several inputs do not overlap; an inhibitory head is a short flat bar (⊣)
        ax.annotate("", xy=end, xytext=start, zorder=2,
                    arrowprops=dict(arrowstyle="-|>" if kind == "excitatory"
                                    else "-[, widthB=0.35, lengthB=0.0",
                                    color=COLORS[kind], lw=lw, shrinkA=14, shrinkB=17,
                                    connectionstyle=connection, mutation_scale=14))
    path_neurons = {name for pair in highlighted for name in pair}
    for neuron in circuit.neurons:
        x, y = pos[neuron.name]
        ax.scatter([x], [y], s=900, marker="s" if neuron.clamp is not None else "o",
                   color="#fdebd0" if neuron.name in path_neurons else "white",
                   edgecolor=PATHWAY_COLOR if neuron.name in path_neurons else "#2c3e50",
                   lw=2.5 if neuron.name in path_neurons else 1.5, zorder=3)
        ax.text(x, y, neuron.name, ha="center", va="center", fontsize=8, zorder=4)
    if positions is None and all(n.role is not None for n in circuit.neurons):
        for role in NEURON_ROLES:
            members = [n.name for n in circuit.neurons if n.role == role]
            if members:
                ax.text(min(xs) - 0.75, pos[members[0]][1], role, ha="right", va="center",
                        fontsize=9, style="italic", color="#7f8c8d")
    handles = [Line2D([], [], color=COLORS["excitatory"], marker=">", ms=6,
                      label="excitatory synapse (arrow head)"),
               Line2D([], [], color=COLORS["inhibitory"], marker="|", ms=8,
                      label="inhibitory synapse (bar head)"),
               Line2D([], [], color=COLORS["gap"], ls="--", label="gap junction"),
               Line2D([], [], ls="", marker="o", ms=11, mfc="white", mec="#2c3e50",
                      label="neuron"),
               Line2D([], [], ls="", marker="s", ms=11, mfc="white", mec="#2c3e50",
                      label="clamped neuron (held at its clamp potential)")]
    name = _chain_name(highlighted) if highlighted else ""
    if highlighted:
        handles.append(Line2D([], [], color=PATHWAY_COLOR, lw=7, alpha=0.6,
                              label=f"pathway {name}"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=3,
              frameon=False, fontsize=8, title="line width ∝ synaptic weight w or gap "
              "conductance ĝ (nS)", title_fontsize=8)
    pad = 0.45
    left = min(xs) - (1.6 if positions is None and all(n.role for n in circuit.neurons) else pad)
    ax.set_xlim(left, max(xs) + pad)
    ax.set_ylim(min(ys) - pad, max(ys) + pad)
    ax.set_aspect("equal")
    ax.axis("off")
    summary = (f"{circuit.name}: {_count(circuit.n_neurons, 'neuron')}, "
               f"{_count(len(circuit.synapses), 'synapse')}, "
               f"{_count(len(circuit.gap_junctions), 'gap junction')}")
    ax.set_title(f"{summary}\npathway {name}" if highlighted else summary, fontsize=10)
    return fig


LABEL_COLORS = {"reversal": "#c0392b", "forward": "#2c6fbb", "none": "#95a5a6"}


def plot_experiments(rows, results: dict, *, threshold: float, neurons=None,
                     trace_protocols=None, title: str = "", checks=None, circuit=None,
                     figure=None):
    """Traces of key neurons for a few protocols above a bar chart of every protocol's score.

    Each neuron's traces share one y-scale across the protocols, fitted to the traces
    (not stretched to 0 mV); stimuli are shaded while on (given ``circuit``, or results
    read from files) and named under each protocol.  Bars are coloured by the behaviour
    the circuit shows; the label thresholds are drawn and named; a legend explains both.

    Parameters
    ----------
    rows : list of ExperimentRow
        From :func:`neurosim.behaviour.run_experiments`.
    results : dict of str to Result
    threshold : float
        The read-out's label threshold: a score above it is a reversal, below minus it
        forward movement.
    neurons : sequence of str, optional
        Traces to draw (default: the first four recorded neurons).
    trace_protocols : sequence of str, optional
        Protocols whose traces are drawn (default: the first three).
    checks : list of FactCheck, optional
        Facts checked against ``rows``: each protocol with a fact gets a mark above its
        bar (✓ reproduced, ✗ not; faded for facts quoted secondhand), and the legend
        says what biology expects of it.
    circuit : Circuit, optional
        The circuit the results ran, for the stimulus windows.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    shown = list(trace_protocols or [r.protocol for r in rows[:3]])
    first = results[shown[0]]
    names = list(neurons or first.neuron_names[:4])
    fig = figure or Figure(figsize=(max(10.0, 4 * len(shown)), 4.6 + 0.8 * len(names)),
                           layout="constrained")
    grid = fig.add_gridspec(len(names) + 3, len(shown))
    columns = [[] for _ in shown]
    for row, name in enumerate(names):
        axes = [fig.add_subplot(grid[row, col], sharex=columns[col][0] if row else None)
                for col in range(len(shown))]
        traces = []
        for col, (ax, protocol) in enumerate(zip(axes, shown)):
            columns[col].append(ax)
            result = results[protocol]
            windows = stimulus_windows(result, circuit)
            _shade(ax, windows, legend=False)
            if name in result.neuron_names:
                traces.append(_finite(result.v(name)))
                ax.plot(result.t, traces[-1], lw=1.2, color="#34495e")
            else:
                ax.text(0.5, 0.5, "ablated", ha="center", va="center", transform=ax.transAxes)
            ax.tick_params(labelsize=7, labelbottom=row == len(names) - 1)
            ax.spines[["top", "right"]].set_visible(False)
            if row == 0:
                ax.set_title(protocol, fontsize=10)
            if col == 0:
                ax.set_ylabel(f"{name}\n(mV)", rotation=0, ha="right", va="center", fontsize=8)
            if row == len(names) - 1:
                ax.set_xlabel("\n".join(["time (ms)"] + [textwrap.fill("shaded: " + w.label, 60)
                                                         for w in windows]), fontsize=8)
        for ax in axes:
            _ylim(ax, traces)
    bars = fig.add_subplot(grid[len(names):, :])
    scores = [r.score for r in rows]
    bars.bar(range(len(rows)), scores, color=[LABEL_COLORS[r.label] for r in rows])
    bars.axhline(0, lw=0.8, color="k")
    for level, meaning in ((threshold, "reversal"), (-threshold, "forward")):
        bars.axhline(level, ls="--", lw=0.8, color="k")
        bars.text(1.0, level, f" {level:+.3g}: {meaning}", transform=bars.get_yaxis_transform(),
                  ha="left", va="bottom" if level > 0 else "top", fontsize=7)
    bars.set_xticks(range(len(rows)), [r.protocol for r in rows], rotation=35, ha="right",
                    fontsize=8)
    bars.set_xlim(-0.6, len(rows) - 0.4)
    bars.set_ylabel("score (+ reversal / − forward)", fontsize=8)
    bars.spines[["top", "right"]].set_visible(False)
    handles = [Patch(color=LABEL_COLORS["reversal"],
                     label=f"circuit reverses (score > {threshold:g})"),
               Patch(color=LABEL_COLORS["forward"],
                     label=f"circuit moves forward (score < {-threshold:g})"),
               Patch(color=LABEL_COLORS["none"], label="no behaviour (|score| ≤ threshold)")]
    if checks:
        handles += _mark_facts(bars, rows, checks)
    # the threshold lines and their labels stay inside, however small the scores
    low, high = bars.get_ylim()
    margin = 0.3 * threshold
    bars.set_ylim(min(low, -threshold - margin), max(high, threshold + margin))
    bars.legend(handles=handles, fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0),
                ncol=3, frameon=False, title="bars: what the circuit does; dashed: the read-out's "
                "thresholds" + ("; ✓/✗: what biology expects, reproduced or not (faded: quoted "
                                "second-hand)" if checks else ""), title_fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _mark_facts(ax, rows, checks):
    """A ✓ or ✗ above (or below) each bar whose protocol a fact is about; returns legend
    handles that say, per fact, what biology expects."""
    from matplotlib.lines import Line2D

    top = max(abs(r.score) for r in rows) or 1.0
    handles = []
    for i, row in enumerate(rows):
        for k, check in enumerate(c for c in checks if c.fact.protocol == row.protocol):
            if check.reproduced is None:
                continue
            y = row.score + np.sign(row.score or 1.0) * top * (0.12 + 0.14 * k)
            color = "#27ae60" if check.reproduced else "#c0392b"
            mark = "✓" if check.reproduced else "✗"
            alpha = 1.0 if check.fact.verified else 0.55
            ax.text(i, y, mark, ha="center", va="center", fontsize=11, color=color, alpha=alpha,
                    fontweight="bold")
            handles.append(Line2D([], [], ls="", marker=f"${mark}$", color=color, alpha=alpha,
                                  label=f"{row.protocol}: {check.fact.expected}"))
    ax.set_ylim(-1.35 * top, 1.35 * top)
    return handles


#: the normal quantile of the 95 % intervals the fit report draws
Z_95 = 1.959963984540054


def wilson_interval(p: float, n: float, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ``p`` observed in ``n`` trials
    (95 % for the default ``z``); unlike p ± z·√(p(1−p)/n) it stays inside [0, 1] and is
    not empty at p = 0 or 1.

    References
    ----------
    Wilson EB (1927). Probable inference, the law of succession, and statistical
    inference. J Am Stat Assoc 22:209–212.
    """
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def plot_fit(history, predictions, *, title: str = "", figure=None):
    """Loss against evaluations, and per experiment the circuit as given (initial), as
    fitted and as observed.

    Reversal probabilities carry 95 % Wilson intervals from the number of animals ``n``
    (:func:`wilson_interval`); graded scores (such as the control "no stimulus → no
    behaviour") carry ± one standard error ``se``, in a panel of their own.  Rows come
    from :attr:`neurosim.fit.run.FitReport.predictions`; rows without ``initial``,
    ``n`` or ``se`` are drawn without them.
    """
    from matplotlib.figure import Figure

    kept = [p for p in predictions if p["observed"] == p["observed"]]  # drop NaN (traces)
    probabilities = [p for p in kept if p["measure"] == "reversal_probability"]
    scores = [p for p in kept if p["measure"] != "reversal_probability"]
    panels = [bool(probabilities) or not scores, bool(scores)]
    ratios = [1.0] + [max(1.0, 0.45 * len(probabilities)) if panels[0] else None,
                      max(0.6, 0.45 * len(scores)) if panels[1] else None]
    ratios = [r for r in ratios if r is not None]
    fig = figure or Figure(figsize=(min(15.0, 4 + 2.2 * sum(ratios[1:]) + 3), 4.4),
                           layout="constrained")
    axes = fig.subplots(1, len(ratios), width_ratios=ratios, squeeze=False)[0]
    curve = axes[0]
    evals, losses = zip(*history) if history else ((), ())
    curve.plot(evals, losses, color="#34495e")
    if losses and min(losses) > 0:
        curve.set_yscale("log")
    curve.set_xlabel("objective evaluations")
    curve.set_ylabel("best loss (−log L + const)")
    curve.spines[["top", "right"]].set_visible(False)
    rest = list(axes[1:])
    if panels[0]:
        _compare(rest.pop(0), probabilities, "reversal probability", (0.0, 1.0),
                 "error bars: 95 % Wilson interval\nfrom the n animals observed")
    if panels[1]:
        _compare(rest.pop(0), scores, "score (read-out)", None,
                 "error bars: ± 1 standard error")
    fig.legend(handles=axes[1].get_legend_handles_labels()[0], loc="outside lower center",
               ncol=3, frameon=False, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _observed_error(row) -> tuple[float, float] | None:
    """(below, above) the observation: a Wilson interval for a probability with ``n``,
    ± se for a score with ``se``; None without them."""
    if row["measure"] == "reversal_probability" and row.get("n"):
        low, high = wilson_interval(row["observed"], row["n"])
        # at p = 0 or 1 one end is p itself, up to rounding
        return max(0.0, row["observed"] - low), max(0.0, high - row["observed"])
    if row.get("se"):
        return row["se"], row["se"]
    return None


def _compare(ax, rows, ylabel: str, limits, error_note: str) -> None:
    """Grouped bars: initial (hollow), fitted, observed with its error bar."""
    from matplotlib.container import BarContainer

    x = np.arange(len(rows))
    have_initial = any(r.get("initial") is not None for r in rows)
    width = 0.27 if have_initial else 0.4
    offsets = (-width, 0.0, width) if have_initial else (None, -width / 2, width / 2)
    if have_initial:
        ax.bar(x + offsets[0], [r.get("initial", np.nan) for r in rows], width=width,
               label="initial (circuit as given)", color="white", edgecolor="#34495e",
               hatch="///", lw=0.8)
    ax.bar(x + offsets[1], [r["predicted"] for r in rows], width=width, label="fitted",
           color="#c0392b")
    errors = [_observed_error(r) for r in rows]
    ax.bar(x + offsets[2], [r["observed"] for r in rows], width=width, label="observed",
           color="#95a5a6")
    if any(e is not None for e in errors):
        below = [e[0] if e else 0.0 for e in errors]
        above = [e[1] if e else 0.0 for e in errors]
        ax.errorbar(x + offsets[2], [r["observed"] for r in rows], yerr=[below, above],
                    fmt="none", ecolor="k", capsize=3, lw=1)
    labels = [r["protocol"] + (f"\n(n = {r['n']:g})" if r.get("n") else "") for r in rows]
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if limits:
        ax.set_ylim(*limits)
    else:  # scores near 0 (the control's) leave bars too short to see: print them
        ax.axhline(0, lw=0.6, color="k")
        for bars in ax.containers:
            if isinstance(bars, BarContainer):
                ax.bar_label(bars, fmt="%.2g", fontsize=6.5, padding=2)
    ax.set_title(error_note, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)


#: the most sign patterns :func:`plot_signs` draws one row each (the rest are summed up
#: per class)
SIGN_ROWS = 32


def plot_signs(patterns, *, threshold: float = 2.0, top: int = SIGN_ROWS, title: str = "",
               figure=None):
    """Sign patterns ranked by loss, best on top: a grid of +/− per class beside each
    pattern's loss above the best (its log-likelihood ratio), with the tie threshold.

    At most ``top`` patterns get a row; beneath, every class's best loss with each sign
    over all patterns (what :func:`neurosim.fit.signs.sign_association` compares), so
    the figure stays readable for any number of patterns.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    classes = list(patterns[0].signs)
    shown = patterns[:top]
    fig = figure or Figure(figsize=(min(12.0, max(8.0, 5 + 0.55 * len(classes))),
                                    min(9.0, 3.4 + 0.17 * len(shown))), layout="constrained")
    upper, lower = fig.subfigures(2, 1, height_ratios=[max(3.0, 0.17 * len(shown)), 1.6])
    grid, loss = upper.subplots(1, 2, sharey=True, width_ratios=[len(classes), 3])
    signs = [[1 if p.signs[c] == "+" else 0 for c in classes] for p in shown]
    grid.imshow(signs, aspect="auto", interpolation="nearest", origin="upper",
                cmap=ListedColormap([COLORS["inhibitory"], COLORS["excitatory"]]), vmin=0, vmax=1)
    grid.set_xticks(range(len(classes)), classes, rotation=45, fontsize=8)
    grid.set_ylabel("pattern rank")
    grid.set_yticks(range(len(shown)), [str(k + 1) for k in range(len(shown))],
                    fontsize=7 if len(shown) > 20 else 8)
    best = patterns[0].loss
    delta = np.array([p.loss - best for p in shown])
    tied = delta < threshold
    colors = np.where(tied, "#e67e22", "#7f8c8d")
    bars = loss.barh(range(len(shown)), delta, color=colors, height=0.8)
    for bar, pattern in zip(bars, shown):
        if not pattern.converged:
            bar.set_hatch("///")
    loss.axvline(threshold, ls="--", lw=0.8, color="k")
    loss.set_xscale("symlog", linthresh=1.0)
    loss.set_xlim(0, max(2 * threshold, 2 * float(delta.max())))
    loss.set_xlabel("−Δ log L from the best")
    loss.legend(handles=[Patch(color="#e67e22", label=f"tie (< {threshold:g}, dashed)"),
                         Patch(color="#7f8c8d", label="worse"),
                         Patch(facecolor="white", edgecolor="k", hatch="///",
                               label="fit stopped at maxiter")],
                fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0), frameon=False)
    # rank 1 on top: the y axis runs downwards (imshow's origin="upper" sets it so, and
    # the shared bar axis follows)
    grid.set_ylim(len(shown) - 0.5, -0.5)
    per_class = lower.subplots()
    x = np.arange(len(classes))
    highest = 2.0 * threshold
    for offset, sign, kind in ((-0.2, "+", "excitatory"), (0.2, "-", "inhibitory")):
        best_with = [min(p.loss for p in patterns if p.signs[c] == sign) - best for c in classes]
        per_class.bar(x + offset, best_with, width=0.4, color=COLORS[kind],
                      label=f"best with {kind} ({sign})")
        highest = max(highest, 1.5 * max(best_with))
    per_class.axhline(threshold, ls="--", lw=0.8, color="k")
    per_class.set_yscale("symlog", linthresh=1.0)
    per_class.set_ylim(0, highest)
    per_class.set_xticks(x, classes, fontsize=8)
    per_class.set_ylabel("−Δ log L", fontsize=8)
    per_class.set_title(f"per class, over all {len(patterns)} patterns: the best fit with each "
                        "sign (a bar above the dashed line: that sign is disfavoured)",
                        fontsize=8, loc="left")
    per_class.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for axis in (loss.xaxis, per_class.yaxis):  # symlog labels 10^0 alone; say 1, 10, 100
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    per_class.spines[["top", "right"]].set_visible(False)
    which = (f"the best {len(shown)} of {len(patterns)} sign patterns" if len(shown) < len(patterns)
             else f"all {len(patterns)} sign patterns")
    fig.suptitle(title or f"{which}, rank 1 on top (red excitatory, blue inhibitory)",
                 fontsize=10)
    return fig


def plot_profile(profile, *, level: float | None = None, figure=None):
    """A profile likelihood: loss above its minimum against the parameter's value, with
    the fitted value and the 95 % level."""
    from matplotlib.figure import Figure

    from neurosim.fit.identify import PROFILE_LEVEL

    level = PROFILE_LEVEL if level is None else level
    fig = figure or Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(profile.values, profile.delta, "o-", color="#34495e", ms=3)
    ax.axhline(level, ls="--", lw=0.8, color="k", label=f"95 % level (Δ = {level:.2f})")
    ax.axvline(profile.fitted, lw=0.8, color="#c0392b", label="fitted value")
    low, high = profile.interval(level)
    ax.set_xlabel(profile.name)
    ax.set_ylabel("loss − minimum (−Δ log L)")
    ax.set_title(f"profile: 95 % interval {low:.4g} .. {high:.4g}", fontsize=9)
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_currents(decomposition, *, top: int = 8, figure=None):
    """Stacked currents into one neuron (pA), their sum C·dV/dt, and the liquid τ = C/G."""
    from matplotlib.figure import Figure

    d = decomposition
    order = np.argsort(-np.abs(d.currents).max(axis=0))
    keep, rest = order[:top], order[top:]
    series = [d.currents[:, k] for k in keep]
    labels = [d.names[k] for k in keep]
    if rest.size:
        series.append(d.currents[:, rest].sum(axis=1))
        labels.append(f"{rest.size} others")
    fig = figure or Figure(figsize=(9, 6), layout="constrained")
    ax, tau_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    positive = np.clip(np.array(series), 0, None)
    negative = np.clip(np.array(series), None, 0)
    colors = [f"C{k}" for k in range(len(series))]
    ax.stackplot(d.t, positive, colors=colors, labels=labels, alpha=0.85)
    ax.stackplot(d.t, negative, colors=colors, alpha=0.85)
    ax.plot(d.t, d.total, color="k", lw=1.2, label="C·dV/dt (sum)")
    ax.set_ylabel("current into neuron (pA)")
    ax.legend(fontsize=7, ncol=2, frameon=False, loc="upper right")
    ax.set_title(f"currents into {d.neuron}", fontsize=10)
    tau_ax.plot(d.t, d.tau, color="#34495e")
    tau_ax.set_ylabel("τ = C/G (ms)")
    tau_ax.set_xlabel("time (ms)")
    for a in (ax, tau_ax):
        a.spines[["top", "right"]].set_visible(False)
    return fig


def save_figure(fig, path) -> None:
    fig.savefig(path, dpi=130)


__all__ = ["StimulusWindow", "force_layout", "layered_layout", "plot_currents",
           "plot_experiments", "plot_fit", "plot_graph", "plot_profile", "plot_signs",
           "plot_traces", "save_figure", "stimulus_intervals", "stimulus_windows",
           "wilson_interval"]
