"""Pictures: stacked voltage traces and the circuit's connectivity.

Functions return a :class:`matplotlib.figure.Figure` built without pyplot, so they work
on machines without a display and never touch global plotting state.
"""

from __future__ import annotations

import math

import numpy as np

from neurosim.model import Circuit
from neurosim.record import Result

#: a synapse whose reversal potential lies above this is drawn as excitatory (mV)
EXCITATORY_ABOVE = -50.0

COLORS = {"excitatory": "#c0392b", "inhibitory": "#2c6fbb", "gap": "#27ae60"}


def plot_traces(result: Result, neurons=None, *, title: str | None = None, figure=None):
    """One panel per neuron, shared time axis, potentials in mV.

    Parameters
    ----------
    result : Result
    neurons : sequence of str, optional
        Which traces and in which order (default: all recorded).
    title : str, optional
        Default: circuit and protocol from the result's metadata.
    """
    from matplotlib.figure import Figure

    names = list(result.neuron_names if neurons is None else neurons)
    fig = figure or Figure(figsize=(8, 1.1 + 0.9 * len(names)), layout="constrained")
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names):
        ax.plot(result.t, result.v(name), lw=1.2, color="#34495e")
        ax.set_ylabel(f"{name}\n(mV)", rotation=0, ha="right", va="center", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    axes[-1].set_xlabel("time (ms)")
    meta = result.metadata
    if title is None:
        title = f"{meta.get('circuit', '')} — {meta.get('protocol', '')}".strip(" —")
        if not result.complete:
            title += f" [{result.status}]"
    fig.suptitle(title, fontsize=11)
    return fig


def circle_layout(names) -> dict[str, tuple[float, float]]:
    n = len(names)
    return {name: (math.cos(2 * math.pi * k / n + math.pi / 2),
                   math.sin(2 * math.pi * k / n + math.pi / 2)) for k, name in enumerate(names)}


def plot_graph(circuit: Circuit, *, positions=None, highlight=(), figure=None):
    """Connectivity: excitatory (red arrows), inhibitory (blue, bar heads), gap (green dashed).

    Line width grows with the synaptic weight ``w`` (or ``ĝ``).  Clamped neurons are drawn
    as squares.  ``highlight`` is a collection of (pre, post) pairs drawn on top, thicker.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    pos = positions or circle_layout(circuit.neuron_names)
    fig = figure or Figure(figsize=(7, 7), layout="constrained")
    ax = fig.subplots()
    weights = [s.w for s in circuit.synapses] + [g.g for g in circuit.gap_junctions]
    scale = 3.0 / max(weights) if weights and max(weights) > 0 else 1.0
    for gap in circuit.gap_junctions:
        (xa, ya), (xb, yb) = pos[gap.a], pos[gap.b]
        ax.plot([xa, xb], [ya, yb], ls="--", color=COLORS["gap"], lw=0.6 + gap.g * scale, zorder=1)
    highlighted = set(map(tuple, highlight))
    for syn in circuit.synapses:
        kind = "excitatory" if syn.E > EXCITATORY_ABOVE else "inhibitory"
        start, end = pos[syn.pre], pos[syn.post]
        lw = 0.6 + syn.w * scale + (2.0 if (syn.pre, syn.post) in highlighted else 0.0)
        if syn.pre == syn.post:
            ax.annotate("", xy=(end[0] * 1.12, end[1] * 1.12 + 0.02), xytext=end,
                        arrowprops=dict(arrowstyle="->", color=COLORS[kind], lw=lw,
                                        connectionstyle="arc3,rad=1.5"))
            continue
        ax.annotate("", xy=end, xytext=start, zorder=2,
                    arrowprops=dict(arrowstyle="-|>" if kind == "excitatory" else "-[",
                                    color=COLORS[kind], lw=lw, shrinkA=14, shrinkB=14,
                                    connectionstyle="arc3,rad=0.12", mutation_scale=14))
    for neuron in circuit.neurons:
        x, y = pos[neuron.name]
        ax.scatter([x], [y], s=900, marker="s" if neuron.clamp is not None else "o",
                   color="white", edgecolor="#2c3e50", lw=1.5, zorder=3)
        ax.text(x, y, neuron.name, ha="center", va="center", fontsize=8, zorder=4)
    ax.legend(handles=[Line2D([], [], color=COLORS["excitatory"], label="excitatory synapse"),
                       Line2D([], [], color=COLORS["inhibitory"], label="inhibitory synapse"),
                       Line2D([], [], color=COLORS["gap"], ls="--", label="gap junction")],
              loc="lower center", bbox_to_anchor=(0.5, -0.06), ncol=3, frameon=False, fontsize=8)
    xs, ys = zip(*pos.values())
    pad = 0.25
    ax.set_xlim(min(xs) - pad, max(xs) + pad)
    ax.set_ylim(min(ys) - pad, max(ys) + pad)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"{circuit.name}: {circuit.n_neurons} neurons, {len(circuit.synapses)} synapses, "
                 f"{len(circuit.gap_junctions)} gap junctions", fontsize=10)
    return fig


LABEL_COLORS = {"reversal": "#c0392b", "forward": "#2c6fbb", "none": "#95a5a6"}


def plot_experiments(rows, results: dict, *, threshold: float, neurons=None,
                     trace_protocols=None, title: str = "", checks=None, figure=None):
    """Traces of key neurons for a few protocols above a bar chart of every protocol's score.

    Parameters
    ----------
    rows : list of ExperimentRow
        From :func:`neurosim.behaviour.run_experiments`.
    results : dict of str to Result
    threshold : float
        The read-out's label threshold, drawn as dashed lines.
    neurons : sequence of str, optional
        Traces to draw (default: the first four recorded neurons).
    trace_protocols : sequence of str, optional
        Protocols whose traces are drawn (default: the first three).
    checks : list of FactCheck, optional
        Facts checked against ``rows``: each protocol with a fact gets a mark above its
        bar (✓ reproduced, ✗ not; hollow for facts quoted secondhand).
    """
    from matplotlib.figure import Figure

    shown = list(trace_protocols or [r.protocol for r in rows[:3]])
    first = results[shown[0]]
    names = list(neurons or first.neuron_names[:4])
    fig = figure or Figure(figsize=(4 * len(shown), 3.2 + 0.9 * len(names)), layout="constrained")
    grid = fig.add_gridspec(len(names) + 2, len(shown))
    for col, protocol in enumerate(shown):
        result = results[protocol]
        for row, name in enumerate(names):
            ax = fig.add_subplot(grid[row, col])
            if name in result.neuron_names:
                ax.plot(result.t, result.v(name), lw=1.2, color="#34495e")
            else:
                ax.text(0.5, 0.5, "ablated", ha="center", va="center", transform=ax.transAxes)
            ax.set_ylim(-95, 0)
            ax.tick_params(labelsize=7)
            ax.spines[["top", "right"]].set_visible(False)
            if row == 0:
                ax.set_title(protocol, fontsize=10)
            if col == 0:
                ax.set_ylabel(f"{name}\n(mV)", rotation=0, ha="right", va="center", fontsize=8)
            if row == len(names) - 1:
                ax.set_xlabel("time (ms)", fontsize=8)
    bars = fig.add_subplot(grid[len(names):, :])
    scores = [r.score for r in rows]
    bars.bar(range(len(rows)), scores, color=[LABEL_COLORS[r.label] for r in rows])
    for level in (threshold, -threshold):
        bars.axhline(level, ls="--", lw=0.8, color="k")
    bars.axhline(0, lw=0.8, color="k")
    bars.set_xticks(range(len(rows)), [r.protocol for r in rows], rotation=35, ha="right",
                    fontsize=8)
    bars.set_ylabel("score (+ reversal / − forward)", fontsize=8)
    bars.spines[["top", "right"]].set_visible(False)
    if checks:
        _mark_facts(bars, rows, checks)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _mark_facts(ax, rows, checks):
    """A ✓ or ✗ above (or below) each bar whose protocol a fact is about."""
    from matplotlib.lines import Line2D

    top = max(abs(r.score) for r in rows) or 1.0
    for i, row in enumerate(rows):
        for k, check in enumerate(c for c in checks if c.fact.protocol == row.protocol):
            if check.reproduced is None:
                continue
            y = row.score + np.sign(row.score or 1.0) * top * (0.12 + 0.14 * k)
            color = "#27ae60" if check.reproduced else "#c0392b"
            ax.text(i, y, "✓" if check.reproduced else "✗", ha="center", va="center",
                    fontsize=11, color=color, alpha=1.0 if check.fact.verified else 0.55,
                    fontweight="bold")
    ax.set_ylim(-1.35 * top, 1.35 * top)
    ax.legend(handles=[Line2D([], [], ls="", marker="$✓$", color="#27ae60", label="fact reproduced"),
                       Line2D([], [], ls="", marker="$✗$", color="#c0392b", label="fact not reproduced")],
              fontsize=7, loc="upper right", frameon=False)


def plot_fit(history, predictions, *, title: str = "", figure=None):
    """Loss against evaluations, and observed vs fitted response per experiment."""
    from matplotlib.figure import Figure

    fig = figure or Figure(figsize=(11, 4), layout="constrained")
    curve, bars = fig.subplots(1, 2, width_ratios=[1, 1.4])
    evals, losses = zip(*history) if history else ((), ())
    curve.plot(evals, losses, color="#34495e")
    curve.set_yscale("log")
    curve.set_xlabel("objective evaluations")
    curve.set_ylabel("best loss")
    curve.spines[["top", "right"]].set_visible(False)
    # one scale per panel: the first behavioural measure's rows; others (a score, such as
    # the control "no stimulus -> no behaviour") are listed beneath
    kept = [p for p in predictions if p["observed"] == p["observed"]]  # drop NaN (traces)
    rows = [p for p in kept if p["measure"] == kept[0]["measure"]] if kept else []
    others = [p for p in kept if p not in rows]
    if others:
        bars.set_title("; ".join(f"{p['protocol']} {p['measure'].replace('_', ' ')}: observed "
                                 f"{p['observed']:.3g}, fitted {p['predicted']:.2g}"
                                 for p in others), fontsize=8, loc="left")
    x = range(len(rows))
    bars.bar([i - 0.2 for i in x], [p["observed"] for p in rows], width=0.4, label="observed",
             color="#95a5a6")
    bars.bar([i + 0.2 for i in x], [p["predicted"] for p in rows], width=0.4, label="fitted",
             color="#c0392b")
    bars.set_xticks(list(x), [p["protocol"] for p in rows], rotation=30, ha="right", fontsize=8)
    bars.set_ylabel(rows[0]["measure"].replace("_", " ") if rows else "")
    bars.legend(frameon=False, fontsize=8)
    bars.spines[["top", "right"]].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_signs(patterns, *, threshold: float = 2.0, title: str = "", figure=None):
    """Sign patterns ranked by loss: a grid of +/− per class beside each pattern's loss
    above the best (its log-likelihood ratio), with the tie threshold drawn."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    classes = list(patterns[0].signs)
    fig = figure or Figure(figsize=(max(8.0, 5 + 0.5 * len(classes)), 1.2 + 0.18 * len(patterns)),
                           layout="constrained")
    grid, loss = fig.subplots(1, 2, sharey=True, width_ratios=[len(classes), 3])
    signs = [[1 if p.signs[c] == "+" else 0 for c in classes] for p in patterns]
    grid.imshow(signs, aspect="auto", interpolation="nearest",
                cmap=ListedColormap([COLORS["inhibitory"], COLORS["excitatory"]]), vmin=0, vmax=1)
    grid.set_xticks(range(len(classes)), classes, rotation=45, fontsize=8)
    grid.set_ylabel("pattern rank (best first)")
    delta = np.array([p.loss - patterns[0].loss for p in patterns])
    tied = delta < threshold
    loss.barh(range(len(patterns)), delta, color=np.where(tied, "#e67e22", "#7f8c8d"))
    for k in np.flatnonzero(tied):
        loss.text(max(delta[k], 0.0) + 0.05, k, "tie", va="center", fontsize=7, color="#e67e22")
    loss.axvline(threshold, ls="--", lw=0.8, color="k")
    loss.set_xscale("symlog", linthresh=1.0)
    loss.set_xlim(0, max(2 * threshold, 2 * delta.max()))
    loss.set_xlabel(f"−Δ log L from the best (ties: < {threshold:g}, dashed)")
    grid.set_ylim(len(patterns) - 0.5, -0.5)   # the best pattern on top
    fig.suptitle(title or "sign patterns, best first (red excitatory, blue inhibitory)",
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


__all__ = ["circle_layout", "plot_currents", "plot_experiments", "plot_fit", "plot_graph",
           "plot_profile", "plot_signs",
           "plot_traces", "save_figure"]
