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
from scipy.special import expit

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
            if self.n is None or not (self.n > 0 and math.isfinite(self.n)):
                raise CircuitError(f"a probability needs the number of animals n > 0, got {self.n!r}",
                                   path="n")
        elif self.se is None or not (self.se > 0 and math.isfinite(self.se)):
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
        p = expit(z)
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
        p = float(expit(score / readout.probability_scale))  # no overflow at large |z|
        dz = d_score / readout.probability_scale
        return self.n * p * (1.0 - p) * np.outer(dz, dz)

    def predicted(self, readout: Readout, score) -> float:
        if self.measure == "score":
            return float(score)
        return float(expit(score / readout.probability_scale))


@dataclass(frozen=True)
class TraceTarget:
    """A recorded trace: Gaussian samples, loss ½ Σ ((V(t_k) − y_k)/σ_k)².

    ``sigma`` (mV) is one standard deviation for every sample or one per sample.  The
    model's trace is read between its output samples by linear interpolation.
    """

    protocol: str
    neuron: str
    times: tuple[float, ...]
    values: tuple[float, ...]
    sigma: float | tuple[float, ...] = 1.0

    def __post_init__(self):
        times = tuple(float(v) for v in self.times)
        values = tuple(float(v) for v in self.values)
        if len(times) != len(values) or not times:
            raise CircuitError("times and values must have the same, non-zero length")
        if not all(map(math.isfinite, times + values)):
            raise CircuitError("times and values must be finite numbers")
        if any(b <= a for a, b in zip(times, times[1:])):
            raise CircuitError("times must increase")
        if min(times) < 0:
            raise CircuitError(f"times must be >= 0 ms, got {min(times):g}")
        sigma = self.sigma
        if isinstance(sigma, (int, float)):
            sigma = float(sigma)
            ok = sigma > 0 and math.isfinite(sigma)
        else:
            sigma = tuple(float(v) for v in sigma)
            ok = len(sigma) == len(times) and all(v > 0 and math.isfinite(v) for v in sigma)
        if not ok:
            raise CircuitError(f"sigma must be a finite number of mV > 0, one or one per sample, "
                               f"got {self.sigma!r}")
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "sigma", sigma)

    @property
    def _sigma(self) -> np.ndarray | float:
        return np.asarray(self.sigma) if isinstance(self.sigma, tuple) else self.sigma

    def sampling(self, t):
        """(idx, frac): the prediction at times[k] is V[idx−1]·(1 − frac) + V[idx]·frac."""
        times = np.asarray(self.times)
        if times[-1] > t[-1] + 1e-9:
            raise CircuitError(f"the data of {self.neuron!r} under {self.protocol!r} reach "
                               f"{times[-1]:g} ms but the run's last output sample is at "
                               f"{t[-1]:g} ms: use a dt_out that divides the protocol's duration, "
                               "or drop the later samples")
        idx = np.clip(np.searchsorted(t, times), 1, t.size - 1)
        return idx, (times - t[idx - 1]) / (t[idx] - t[idx - 1])

    measure = "trace"

    def information(self, t, V, S):
        """Fisher information (m, m) of this trace about the parameters whose
        sensitivities of the sampled trace V are S (samples, m): Jᵀ Σ⁻¹ J with J the
        sensitivity of the interpolated prediction."""
        idx, frac = self.sampling(t)
        J = S[idx - 1] * (1 - frac)[:, None] + S[idx] * frac[:, None]
        weights = np.broadcast_to(1.0 / np.asarray(self._sigma) ** 2, frac.shape)
        return J.T @ (J * weights[:, None])

    def loss_and_grad(self, t, V):
        """Loss of traces V (..., samples) sampled at t, and dL/dV."""
        idx, frac = self.sampling(t)
        pred = V[..., idx - 1] * (1 - frac) + V[..., idx] * frac
        sigma = self._sigma
        r = (pred - np.asarray(self.values)) / sigma
        grad = np.zeros_like(V)
        np.add.at(grad.T, idx - 1, ((1 - frac) * r / sigma).T)
        np.add.at(grad.T, idx, (frac * r / sigma).T)
        return 0.5 * np.sum(r ** 2, axis=-1), grad


@dataclass(frozen=True)
class Indicator:
    """A calcium indicator: how a neuron's potential becomes ΔF/F.

    The calcium level c (0…1) relaxes to a voltage-dependent steady state with one time
    constant, and the fluorescence saturates with c (a Hill function)::

        tau · dc/dt = c∞(V) − c,        c∞(V) = 1 / (1 + exp(−(V − v_half) / slope))
        ΔF/F(t) = dff_max · (h(c(t)) − h(c(0))),   h(c) = cⁿ / (cⁿ + kdⁿ),  n = hill

    c starts at c∞(V(0)), so a run that starts at rest reads ΔF/F = 0 before a stimulus.
    The model's potentials are known at its output samples: c∞ is taken linear between
    them, and c is integrated exactly over each interval (so ``dt_out`` should be small
    against ``tau``).
    The defaults are round numbers of the order of GCaMP6 in C. elegans neurons (decay of
    a few hundred ms, Hill coefficient 2–3); they are not measurements: give the values
    of your indicator in the fit file (``imaging:``).
    """

    tau: float = 500.0
    v_half: float = -40.0
    slope: float = 5.0
    kd: float = 0.5
    hill: float = 2.5
    dff_max: float = 1.0

    def __post_init__(self):
        for name in ("tau", "slope", "kd", "hill", "dff_max"):
            value = float(getattr(self, name))
            if not (value > 0 and math.isfinite(value)):
                raise CircuitError(f"must be a finite number > 0, got {getattr(self, name)!r}",
                                   path=name)
            object.__setattr__(self, name, value)
        if not math.isfinite(float(self.v_half)):
            raise CircuitError(f"must be a finite number of mV, got {self.v_half!r}", path="v_half")
        object.__setattr__(self, "v_half", float(self.v_half))

    def _steady(self, V):
        u = 1.0 / (1.0 + np.exp(-(V - self.v_half) / self.slope))
        return u, u * (1.0 - u) / self.slope

    def _hill(self, c):
        cn = np.maximum(c, 0.0) ** self.hill
        h = cn / (cn + self.kd ** self.hill)
        with np.errstate(divide="ignore", invalid="ignore"):
            dh = np.where(c > 0, self.hill * h * (1.0 - h) / np.where(c > 0, c, 1.0), 0.0)
        return h, dh

    def _filter(self, t):
        """(a, b0, b1): c[k+1] = a·c[k] + b0·u[k] + b1·u[k+1], exact for an input u that
        is linear between the samples (uniform spacing)."""
        dt = float(t[1] - t[0])
        a = math.exp(-dt / self.tau)
        r = self.tau / dt * (1.0 - a)
        return a, r - a, 1.0 - r

    def calcium(self, t, V):
        """c at the samples of V (..., samples) taken at the uniform times t."""
        u, _ = self._steady(np.asarray(V, dtype=float))
        a, b0, b1 = self._filter(t)
        c = np.empty_like(u)
        c[..., 0] = u[..., 0]
        for k in range(u.shape[-1] - 1):
            c[..., k + 1] = a * c[..., k] + b0 * u[..., k] + b1 * u[..., k + 1]
        return c

    def dff(self, t, V):
        """ΔF/F at the samples of V."""
        h, _ = self._hill(self.calcium(t, V))
        return self.dff_max * (h - h[..., :1])

    def dff_tangent(self, t, V, S):
        """ΔF/F at the samples of V (samples,) and its derivative (samples, m) with respect
        to the parameters whose sensitivities of V are S (samples, m)."""
        u, du = self._steady(np.asarray(V, dtype=float))
        a, b0, b1 = self._filter(t)
        c = self.calcium(t, V)
        dU = S * du[:, None]
        dC = np.empty_like(dU)
        dC[0] = dU[0]
        for k in range(u.size - 1):
            dC[k + 1] = a * dC[k] + b0 * dU[k] + b1 * dU[k + 1]
        h, dh = self._hill(c)
        dY = self.dff_max * (dh[:, None] * dC - dh[0] * dC[0][None, :])
        return self.dff_max * (h - h[0]), dY

    def dff_adjoint(self, t, V, y_bar):
        """dL/dV (..., samples) from dL/d(ΔF/F) at the samples (..., samples)."""
        u, du = self._steady(np.asarray(V, dtype=float))
        a, b0, b1 = self._filter(t)
        h, dh = self._hill(self.calcium(t, V))
        c_bar = self.dff_max * dh * y_bar
        c_bar[..., 0] -= self.dff_max * dh[..., 0] * y_bar.sum(axis=-1)
        G = np.empty_like(c_bar)          # total dL/dc[k], through every later sample
        G[..., -1] = c_bar[..., -1]
        for k in range(u.shape[-1] - 2, -1, -1):
            G[..., k] = c_bar[..., k] + a * G[..., k + 1]
        u_bar = np.zeros_like(u)
        u_bar[..., :-1] += b0 * G[..., 1:]
        u_bar[..., 1:] += b1 * G[..., 1:]
        u_bar[..., 0] += G[..., 0]        # c[0] = u[0]
        return u_bar * du


@dataclass(frozen=True)
class ImagingTarget:
    """Calcium imaging of one neuron: ΔF/F samples with Gaussian noise σ, read from the
    model through an :class:`Indicator`.  Loss ½ Σ ((ΔF/F_model(t_k) − y_k)/σ_k)²."""

    protocol: str
    neuron: str
    times: tuple[float, ...]
    values: tuple[float, ...]
    sigma: float | tuple[float, ...] = 0.05
    indicator: Indicator = Indicator()

    measure = "imaging"

    def __post_init__(self):
        shape = TraceTarget(self.protocol, self.neuron, self.times, self.values, self.sigma)
        for name in ("times", "values", "sigma"):
            object.__setattr__(self, name, getattr(shape, name))
        if not isinstance(self.indicator, Indicator):
            raise CircuitError(f"expected an Indicator, got {type(self.indicator).__name__}",
                               path="indicator")

    def _as_trace(self) -> TraceTarget:
        return TraceTarget(self.protocol, self.neuron, self.times, self.values, self.sigma)

    def loss_and_grad(self, t, V):
        """Loss of the potentials V (..., samples) at the uniform times t, and dL/dV."""
        dff = self.indicator.dff(t, V)
        loss, y_bar = self._as_trace().loss_and_grad(t, dff)
        return loss, self.indicator.dff_adjoint(t, V, y_bar)

    def information(self, t, V, S):
        """Fisher information (m, m): Jᵀ Σ⁻¹ J with J the sensitivity of the predicted
        ΔF/F at the imaging times."""
        _, dY = self.indicator.dff_tangent(t, V, S)
        return self._as_trace().information(t, None, dY)


TRACE_COLUMNS = ("protocol", "neuron", "time", "value", "sigma")


def load_traces(path, sigma: float | None = None) -> list[TraceTarget]:
    """Trace data: a CSV (columns protocol, neuron, time, value and optionally sigma, one
    sample per row) or a neurosim result file (every recorded neuron at every sample of
    its protocol; ``sigma`` then gives the noise, in mV).  ``sigma`` also fills a CSV's
    missing or empty sigma column.  Errors name the file, line and column."""
    path = Path(path)
    if path.suffix.lower() in (".h5", ".hdf5"):
        return _traces_from_result(path, sigma)
    return [TraceTarget(protocol, neuron, *columns)
            for (protocol, neuron), columns in _sampled_series(path, "value", sigma)]


IMAGING_COLUMNS = ("protocol", "neuron", "time", "dff", "sigma")


def load_imaging(path, indicator: Indicator | None = None,
                 sigma: float | None = None) -> list[ImagingTarget]:
    """Calcium imaging data: a CSV with columns protocol, neuron, time (ms), dff (ΔF/F)
    and optionally sigma (the noise of ΔF/F), read through ``indicator``."""
    indicator = Indicator() if indicator is None else indicator
    return [ImagingTarget(protocol, neuron, *columns, indicator)
            for (protocol, neuron), columns in _sampled_series(Path(path), "dff", sigma)]


def _sampled_series(path: Path, value: str, sigma):
    """[((protocol, neuron), (times, values, sigma))] of a CSV of samples, one per row."""
    columns = ("protocol", "neuron", "time", value, "sigma")
    header_line, header, rows = _csv_rows(path, f"{value} data")
    missing = [c for c in columns[:4] if c not in header]
    unknown = [h for h in header if h not in columns]
    if missing or unknown:
        what = f"unknown column(s) {unknown}" if unknown else f"missing column(s) {missing}"
        raise CircuitError(f"{what}; columns: {', '.join(columns)} (sigma optional)",
                           file=str(path), line=header_line)
    if not rows:
        raise _no_rows(path, header_line, "samples")
    series: dict = {}
    for line, fields in rows:
        numbers = {}
        for key in ("time", value, "sigma"):
            text = fields.get(key, "")
            if key == "sigma" and not text:
                if sigma is None:
                    raise CircuitError("no sigma for this sample: fill the column or give "
                                       "--sigma", path="sigma", file=str(path), line=line)
                numbers[key] = float(sigma)
                continue
            try:
                numbers[key] = float(text)
            except ValueError:
                raise CircuitError(f"not a number: {text!r}", path=key, file=str(path),
                                   line=line) from None
            if not math.isfinite(numbers[key]) or (key == "sigma" and not numbers[key] > 0):
                raise CircuitError(f"must be a finite number{' > 0' if key == 'sigma' else ''}, "
                                   f"got {text!r}", path=key, file=str(path), line=line)
        key = (fields["protocol"], fields["neuron"])
        earlier = [s[3] for s in series.get(key, []) if s[0] == numbers["time"]]
        if earlier:
            raise CircuitError(f"a second sample of {key[1]!r} under {key[0]!r} at "
                               f"{numbers['time']:g} ms (the first is on line {earlier[0]})",
                               path="time", file=str(path), line=line)
        series.setdefault(key, []).append((numbers["time"], numbers[value], numbers["sigma"],
                                           line))
    out = []
    for (protocol, neuron), samples in series.items():
        samples.sort()
        times, values, sigmas = zip(*[s[:3] for s in samples])
        one = sigmas[0] if len(set(sigmas)) == 1 else sigmas  # one σ where all are equal
        try:
            TraceTarget(protocol, neuron, times, values, one)  # checks the numbers
        except CircuitError as err:
            raise CircuitError(f"samples of {neuron!r} under {protocol!r}: {err.message}",
                               file=str(path), line=samples[0][3]) from None
        out.append(((protocol, neuron), (times, values, one)))
    return out


def _traces_from_result(path: Path, sigma: float | None) -> list[TraceTarget]:
    from neurosim.io.hdf5 import load_result
    if sigma is None:
        raise CircuitError("a result file as trace data needs the noise of its samples: give "
                           "--sigma (mV)", file=str(path))
    result = load_result(path)
    protocol = result.metadata.get("protocol", "")
    return [TraceTarget(protocol, name, tuple(result.t), tuple(result.v(name)), float(sigma))
            for name in result.neuron_names]


def _csv_rows(path: Path, what: str):
    """(header line, header, [(line, {column: text})]) of a CSV with '#' comment lines."""
    try:
        text = path.read_text(encoding="utf-8-sig")   # a byte-order mark is not a column name
    except (OSError, UnicodeDecodeError) as exc:
        raise CircuitError(f"cannot read {what}: {exc}", file=str(path)) from None
    rows = [(k + 1, r) for k, r in enumerate(csv.reader(text.splitlines()))
            if r and not r[0].lstrip().startswith("#")]
    if not rows:
        raise CircuitError("no header and no rows", file=str(path), line=1)
    header_line, header = rows[0]
    header = [h.strip() for h in header]
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise CircuitError(f"column(s) {twice} appear twice", file=str(path), line=header_line)
    out = []
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise CircuitError(f"expected {len(header)} fields, found {len(row)}",
                               file=str(path), line=line)
        out.append((line, dict(zip(header, (c.strip() for c in row)))))
    return header_line, header, out


def _no_rows(path: Path, line: int, what: str):
    return CircuitError(f"the file has a header but no {what}", file=str(path), line=line)


def data_kind(path) -> str:
    """``traces`` (a result file, or a CSV with a value column), ``imaging`` (a CSV with a
    dff column) or ``behaviour``."""
    path = Path(path)
    if path.suffix.lower() in (".h5", ".hdf5"):
        return "traces"
    try:
        _, header, _ = _csv_rows(path, "data")
    except CircuitError:
        return "behaviour"   # load_behaviour reports what is wrong with the file
    return "imaging" if "dff" in header else "traces" if "neuron" in header else "behaviour"


def load_behaviour(path) -> list[BehaviourTarget]:
    """Read a behavioural data CSV; errors name the file, line and column."""
    path = Path(path)
    header_line, header, rows = _csv_rows(path, "behavioural data")
    unknown = [h for h in header if h not in COLUMNS]
    missing = [c for c in ("protocol", "measure", "observed") if c not in header]
    if unknown or missing:
        what = f"unknown column(s) {unknown}" if unknown else f"missing column(s) {missing}"
        raise CircuitError(f"{what}; columns: {', '.join(COLUMNS)}", file=str(path), line=header_line)
    if not rows:
        raise _no_rows(path, header_line, "experiments")
    targets = []
    for line, fields in rows:
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
    return targets


def load_data(paths, circuit, indicator: Indicator | None = None,
              sigma: float | None = None) -> list:
    """The targets of every data file in ``paths``, by kind (:func:`data_kind`): their
    likelihoods add up.  Sampled data must name the circuit's protocols and neurons, and
    no sample may appear twice (it would count twice); errors name the file."""
    targets, samples = [], {}
    for path in paths:
        kind = data_kind(path)
        if kind == "behaviour":
            targets += load_behaviour(path)
            continue
        sampled = (load_traces(path, sigma) if kind == "traces"
                   else load_imaging(path, indicator, sigma))
        for target in sampled:
            try:
                circuit.protocol(target.protocol)
                circuit.neuron(target.neuron)
            except CircuitError as err:
                raise CircuitError(f"{kind} of {target.neuron!r} under {target.protocol!r}: "
                                   f"{err.message}", file=str(path)) from None
            for time in target.times:
                key = (target.measure, target.protocol, target.neuron, time)
                if key in samples:
                    raise CircuitError(f"{target.measure} of {target.neuron!r} under "
                                       f"{target.protocol!r} at {time:g} ms is given twice (in "
                                       f"{samples[key]} and {path})")
                samples[key] = path
        targets += sampled
    return targets
