"""Behaviour from traces: reversal or forward movement, with a score and a probability.

The read-out itself (which neurons, which window, what scale) is data of the circuit
(:class:`neurosim.model.Readout`, the ``readouts`` section of a circuit file); this module
evaluates it on results and runs whole experiment tables.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass

import numpy as np

from neurosim.errors import CircuitError
from neurosim.model import Circuit, Readout
from neurosim.record import Result
from neurosim.simulate import simulate

LABELS = ("reversal", "none", "forward")


@dataclass(frozen=True)
class Behaviour:
    """What the animal does in one experiment, as read from its circuit."""

    score: float
    label: str
    p_reversal: float


def motor_output(readout: Readout, V: np.ndarray) -> np.ndarray:
    """(V − rest) / span clipped to [0, 1]."""
    return np.clip((np.asarray(V, dtype=float) - readout.rest) / readout.span, 0.0, 1.0)


def window_weights(t: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Weights a with Σ a·y = time average over the window of the linear interpolant of y."""
    start, end = window
    if t.size == 0 or t[0] > start or t[-1] < end:
        raise CircuitError(f"the run covers {t[0] if t.size else 0:g}..{t[-1] if t.size else 0:g} "
                           f"ms but the read-out window is {start:g}..{end:g} ms")
    a = np.zeros_like(t)
    for k in range(t.size - 1):
        lo, hi = max(t[k], start), min(t[k + 1], end)
        if hi <= lo:
            continue
        span = t[k + 1] - t[k]
        # ∫ over [lo, hi] of the hat functions of samples k and k+1
        u0, u1 = (lo - t[k]) / span, (hi - t[k]) / span
        a[k] += span * ((u1 - u0) - (u1 ** 2 - u0 ** 2) / 2)
        a[k + 1] += span * (u1 ** 2 - u0 ** 2) / 2
    return a / (end - start)


def score_weights(readout: Readout, t: np.ndarray) -> np.ndarray:
    """Weights a with score = Σ a·(out(reverse) − out(forward)) (window minus baseline)."""
    a = window_weights(t, readout.window)
    if readout.baseline is not None:
        a = a - window_weights(t, readout.baseline)
    return a


def contrast(readout: Readout, result: Result) -> np.ndarray:
    """out(reverse) − out(forward) at every sample; an ablated motor neuron gives 0."""
    def out(name):
        if name in result.neuron_names:
            return motor_output(readout, result.v(name))
        if name in result.metadata.get("ablated", ()):
            return np.zeros_like(result.t)
        raise CircuitError(f"read-out neuron {name!r} was not recorded; record it or all neurons")
    return out(readout.reverse) - out(readout.forward)


def classify(readout: Readout, result: Result) -> Behaviour:
    """Score, label and reversal probability of one run (see :class:`Readout`).

    Examples
    --------
    >>> import numpy as np
    >>> r = Result(np.array([0.0, 10.0]), np.array([[-45.0, -70.0], [-45.0, -70.0]]), ("REV", "FWD"))
    >>> classify(Readout("REV", "FWD", window=(0.0, 10.0)), r).label
    'reversal'
    """
    score = float(score_weights(readout, result.t) @ contrast(readout, result))
    label = ("reversal" if score > readout.threshold
             else "forward" if score < -readout.threshold else "none")
    return Behaviour(score, label, 1.0 / (1.0 + math.exp(-score / readout.probability_scale)))


@dataclass(frozen=True)
class ExperimentRow:
    """One protocol of an experiment table and the behaviour the circuit shows."""

    protocol: str
    description: str
    ablated: str
    score: float
    label: str
    p_reversal: float


def run_experiments(circuit: Circuit, protocols=None, *, readout: str = "behaviour",
                    progress=None, **simulate_options) -> tuple[list[ExperimentRow], dict]:
    """Run protocols (default: all) and read the behaviour of each.

    Returns the table rows and the results by protocol name.  ``simulate_options`` go to
    :func:`neurosim.simulate` (integrator, rtol, dt_out, ...).
    """
    spec = circuit.readout(readout)
    names = list(circuit.protocols) if protocols is None else list(protocols)
    if not names:
        raise CircuitError("the circuit defines no protocols to run")
    rows, results = [], {}
    for name in names:
        proto = circuit.protocol(name)
        result = simulate(circuit, name, **simulate_options)
        behaviour = classify(spec, result)
        lesions = list(proto.ablate) + [f"{k}x{v:g}" for k, v in proto.scale.items()]
        rows.append(ExperimentRow(name, proto.description, " ".join(lesions) or "-",
                                  behaviour.score, behaviour.label, behaviour.p_reversal))
        results[name] = result
        if progress:
            progress(1)
    return rows, results


def write_table(rows: list[ExperimentRow], path) -> None:
    """The experiment table as CSV (one row per protocol)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(ExperimentRow.__dataclass_fields__))
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))


def format_table(rows: list[ExperimentRow]) -> str:
    """A fixed-width text table."""
    width = max(len("protocol"), *(len(r.protocol) for r in rows))
    lines = [f"{'protocol':<{width}}  {'lesion':<14} {'score':>7}  {'P(rev)':>6}  behaviour"]
    for r in rows:
        lines.append(f"{r.protocol:<{width}}  {r.ablated:<14} {r.score:>+7.3f}  "
                     f"{r.p_reversal:>6.2f}  {r.label}")
    return "\n".join(lines)
