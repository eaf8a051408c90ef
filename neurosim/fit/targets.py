"""What a fit aims at: behavioural observations and recorded traces.

Every target knows its protocol and the neurons it reads, and returns its loss and the
derivative of the loss with respect to those neurons' sampled potentials, so gradients
(forward sensitivities) and populations (batched traces) share one definition.

Behavioural data file (CSV, one row per experiment)::

    protocol,measure,observed,n,se,source,note
    tap,reversal_probability,0.9,20,,Rankin et al. 1990,qualitative encoding ...
    anterior,score,0.2,,0.05,...

* ``reversal_probability`` rows: ``observed`` in [0, 1] out of ``n`` animals →
  binomial negative log-likelihood of the read-out's reversal probability;
* ``score`` rows: a graded response with standard error ``se`` → ½((pred − obs)/se)².
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurosim.behaviour import motor_output, score_weights
from neurosim.errors import CircuitError
from neurosim.model import Readout

MEASURES = ("reversal_probability", "score")
COLUMNS = ("protocol", "measure", "observed", "n", "se", "source", "note")


@dataclass(frozen=True)
class BehaviourTarget:
    """An observed behaviour under one protocol (see the module docstring)."""

    protocol: str
    measure: str
    observed: float
    n: float | None = None
    se: float | None = None
    source: str = ""
    note: str = ""

    def __post_init__(self):
        if self.measure not in MEASURES:
            raise CircuitError(f"unknown measure {self.measure!r}; allowed: {', '.join(MEASURES)}",
                               path="measure")
        if not math.isfinite(self.observed):
            raise CircuitError(f"observed must be a finite number, got {self.observed!r}",
                               path="observed")
        if self.measure == "reversal_probability":
            if not 0.0 <= self.observed <= 1.0:
                raise CircuitError(f"a probability must be in [0, 1], got {self.observed}",
                                   path="observed")
            if self.n is None or not self.n > 0:
                raise CircuitError(f"a probability needs the number of animals n > 0, got {self.n!r}",
                                   path="n")
        elif self.se is None or not self.se > 0:
            raise CircuitError(f"a graded score needs its standard error se > 0, got {self.se!r}",
                               path="se")

    def neurons(self, readout: Readout) -> tuple[str, ...]:
        return readout.neurons

    def score_and_grad(self, readout: Readout, t, V_rev, V_fwd):
        """Read-out score of traces (..., samples) and d score / dV of both traces."""
        a = score_weights(readout, t)
        slope = lambda V: ((V > readout.rest) & (V < readout.rest + readout.span)) / readout.span  # noqa: E731
        score = np.sum(a * (motor_output(readout, V_rev) - motor_output(readout, V_fwd)), axis=-1)
        return score, a * slope(V_rev), -a * slope(V_fwd)

    def loss_from_score(self, readout: Readout, score):
        """(loss, d loss / d score), vectorised over scores."""
        if self.measure == "score":
            r = (score - self.observed) / self.se
            return 0.5 * r ** 2, r / self.se
        z = score / readout.probability_scale
        k, n = self.observed * self.n, self.n
        # −[k log σ(z) + (n − k) log σ(−z)] (logaddexp for stability) minus the same for the
        # saturated model p = k/n, so a perfect fit has loss 0 (half the binomial deviance)
        loss = k * np.logaddexp(0.0, -z) + (n - k) * np.logaddexp(0.0, z) - self._saturated()
        p = 1.0 / (1.0 + np.exp(-z))
        return loss, (n * p - k) / readout.probability_scale

    def _saturated(self) -> float:
        k, n = self.observed * self.n, self.n
        xlogy = lambda a, b: a * math.log(b) if a > 0 else 0.0  # noqa: E731
        return -(xlogy(k, k / n) + xlogy(n - k, 1 - k / n))

    def information(self, readout: Readout, score: float, d_score: np.ndarray) -> np.ndarray:
        """Fisher information (m, m) about the parameters, given the score's gradient
        with respect to them: binomial n·p(1 − p)·(∂z/∂θ)(∂z/∂θ)ᵀ with z = score/scale,
        Gaussian (∂s/∂θ)(∂s/∂θ)ᵀ/se²."""
        if self.measure == "score":
            return np.outer(d_score, d_score) / self.se ** 2
        p = 1.0 / (1.0 + math.exp(-score / readout.probability_scale))
        dz = d_score / readout.probability_scale
        return self.n * p * (1.0 - p) * np.outer(dz, dz)

    def predicted(self, readout: Readout, score) -> float:
        if self.measure == "score":
            return float(score)
        return float(1.0 / (1.0 + math.exp(-score / readout.probability_scale)))


@dataclass(frozen=True)
class TraceTarget:
    """A recorded trace: ½ Σ ((V(t_k) − y_k)/σ)² over its samples."""

    protocol: str
    neuron: str
    times: tuple[float, ...]
    values: tuple[float, ...]
    sigma: float = 1.0

    def __post_init__(self):
        if len(self.times) != len(self.values) or not self.times:
            raise CircuitError("times and values must have the same, non-zero length")
        if not self.sigma > 0:
            raise CircuitError(f"sigma must be > 0 mV, got {self.sigma!r}")

    def sampling(self, t):
        """(idx, frac): the prediction at times[k] is V[idx−1]·(1 − frac) + V[idx]·frac."""
        times = np.asarray(self.times)
        idx = np.clip(np.searchsorted(t, times), 1, t.size - 1)
        return idx, (times - t[idx - 1]) / (t[idx] - t[idx - 1])

    def information(self, t, S):
        """Fisher information (m, m) of this trace about the parameters whose
        sensitivities of the sampled trace are S (samples, m): Jᵀ J / σ² with J the
        sensitivity of the interpolated prediction."""
        idx, frac = self.sampling(t)
        J = S[idx - 1] * (1 - frac)[:, None] + S[idx] * frac[:, None]
        return J.T @ J / self.sigma ** 2

    def loss_and_grad(self, t, V):
        """Loss of traces V (..., samples) sampled at t, and dL/dV."""
        times = np.asarray(self.times)
        idx, frac = self.sampling(t)
        pred = V[..., idx - 1] * (1 - frac) + V[..., idx] * frac
        r = (pred - np.asarray(self.values)) / self.sigma
        grad = np.zeros_like(V)
        np.add.at(grad.T, idx - 1, ((1 - frac) * r / self.sigma).T)
        np.add.at(grad.T, idx, (frac * r / self.sigma).T)
        return 0.5 * np.sum(r ** 2, axis=-1), grad


def load_behaviour(path) -> list[BehaviourTarget]:
    """Read a behavioural data CSV; errors name the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CircuitError(f"cannot read behavioural data: {exc}", file=str(path)) from None
    rows = [line for line in csv.reader(text.splitlines())]
    data_rows = [(k + 1, r) for k, r in enumerate(rows) if r and not r[0].lstrip().startswith("#")]
    if not data_rows:
        raise CircuitError("no header and no rows", file=str(path), line=1)
    header_line, header = data_rows[0]
    header = [h.strip() for h in header]
    unknown = [h for h in header if h not in COLUMNS]
    missing = [c for c in ("protocol", "measure", "observed") if c not in header]
    if unknown or missing:
        what = f"unknown column(s) {unknown}" if unknown else f"missing column(s) {missing}"
        raise CircuitError(f"{what}; columns: {', '.join(COLUMNS)}", file=str(path), line=header_line)
    targets = []
    for line, row in data_rows[1:]:
        if len(row) != len(header):
            raise CircuitError(f"expected {len(header)} fields, found {len(row)}",
                               file=str(path), line=line)
        fields = dict(zip(header, (c.strip() for c in row)))
        values = {}
        for key in ("observed", "n", "se"):
            if fields.get(key):
                try:
                    values[key] = float(fields[key])
                except ValueError:
                    raise CircuitError(f"not a number: {fields[key]!r}", path=key, file=str(path),
                                       line=line) from None
        try:
            targets.append(BehaviourTarget(fields["protocol"], fields["measure"],
                                           values.get("observed", math.nan), values.get("n"),
                                           values.get("se"), fields.get("source", ""),
                                           fields.get("note", "")))
        except CircuitError as err:
            raise err.located(str(path), line) from None
    if not targets:
        raise CircuitError("the file has a header but no experiments", file=str(path),
                           line=header_line)
    return targets
