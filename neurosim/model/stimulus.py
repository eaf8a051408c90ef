"""Stimuli (injected current or clamp command) and protocols (named experiments)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from neurosim.errors import CircuitError

#: waveform kinds and the fields each one uses besides offset/amplitude/start
STIMULUS_KINDS: dict[str, tuple[str, ...]] = {
    "step": (),
    "pulse": ("duration",),
    "pulse_train": ("duration", "period", "count"),
    "ramp": ("duration",),
    "sine": ("frequency", "phase", "duration"),
    "table": ("times", "values"),
    "steps": ("times", "values"),
}

#: what a stimulus drives: injected current (pA) or the clamp command (mV)
QUANTITIES = ("current", "voltage")


def _fail(message: str, path: str):
    raise CircuitError(message, path=path)


@dataclass(frozen=True)
class Stimulus:
    """A waveform applied to one or more neurons.

    ``value(t) = offset + amplitude · shape(t)`` where ``shape`` is, by ``kind``:

    * ``step``: 0 before ``start``, 1 from then on;
    * ``pulse``: 1 on ``[start, start + duration)``;
    * ``pulse_train``: ``count`` pulses of width ``duration`` every ``period`` from ``start``;
    * ``ramp``: rises linearly from 0 at ``start`` to 1 at ``start + duration``, 0 after;
    * ``sine``: ``sin(2π·frequency·(t − start) + phase)`` on ``[start, start + duration)``;
    * ``table``: linear interpolation of ``values`` at ``times`` (held beyond the ends),
      with ``amplitude`` as a scale (default 1);
    * ``steps``: piecewise constant, ``values[k]`` on ``[times[k], times[k+1])``, 0 before
      the first time and the last value after (sampled inputs, per-step biases).

    With ``quantity="current"`` the value is a current in pA added to the neuron.  With
    ``quantity="voltage"`` the neuron is clamped for the whole protocol to its holding
    potential (its ``clamp``, else its ``V0``) plus the value in mV.

    Parameters
    ----------
    kind : str
        One of :data:`STIMULUS_KINDS`.
    target : str or tuple of str
        Neuron name(s).
    amplitude : float, pA or mV
    start, duration, period : float, ms
    frequency : float, Hz
    phase : float, rad
    count : int
        Number of pulses of a train (None: until the end of the run).
    times, values : tuple of float, ms and pA/mV
        Samples of a ``table`` waveform.
    """

    kind: str
    target: str | tuple[str, ...]
    amplitude: float = 1.0
    quantity: str = "current"
    offset: float = 0.0
    start: float = 0.0
    duration: float = math.inf
    period: float | None = None
    count: int | None = None
    frequency: float | None = None
    phase: float = 0.0
    times: tuple[float, ...] | None = None
    values: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.kind not in STIMULUS_KINDS:
            _fail(f"unknown stimulus kind {self.kind!r}; allowed: {', '.join(STIMULUS_KINDS)}",
                  "kind")
        if self.quantity not in QUANTITIES:
            _fail(f"unknown quantity {self.quantity!r}; allowed: {', '.join(QUANTITIES)}",
                  "quantity")
        targets = (self.target,) if isinstance(self.target, str) else tuple(self.target)
        if not targets or not all(isinstance(t, str) and t for t in targets):
            _fail(f"must name one or more neurons, got {self.target!r}", "target")
        object.__setattr__(self, "target", targets)
        for name in ("amplitude", "offset", "start", "phase"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                _fail(f"must be a finite number, got {getattr(self, name)!r}", name)
            object.__setattr__(self, name, value)
        if self.start < 0:
            _fail(f"must be >= 0 ms, got {self.start}", "start")
        duration = float(self.duration)
        if math.isnan(duration) or duration <= 0:
            _fail(f"must be > 0 ms, got {self.duration!r}", "duration")
        if self.kind in ("pulse", "pulse_train", "ramp") and math.isinf(duration):
            _fail(f"a {self.kind} needs a finite duration (ms)", "duration")
        object.__setattr__(self, "duration", duration)
        if self.kind == "pulse_train":
            if self.period is None or not (float(self.period) > duration):
                _fail(f"a pulse train needs a period (ms) longer than its pulse duration "
                      f"({duration} ms), got {self.period!r}", "period")
            object.__setattr__(self, "period", float(self.period))
            if self.count is not None:
                if int(self.count) != self.count or self.count < 1:
                    _fail(f"must be a whole number >= 1, got {self.count!r}", "count")
                object.__setattr__(self, "count", int(self.count))
        if self.kind == "sine":
            if self.frequency is None or not (math.isfinite(float(self.frequency))
                                              and float(self.frequency) > 0):
                _fail(f"a sine needs a frequency > 0 (Hz), got {self.frequency!r}", "frequency")
            object.__setattr__(self, "frequency", float(self.frequency))
        if self.kind in ("table", "steps"):
            self._check_table()
        else:
            for name in ("times", "values"):
                if getattr(self, name) is not None:
                    _fail(f"only table and steps stimuli take {name}", name)

    def _check_table(self):
        if self.times is None or self.values is None:
            _fail(f"a {self.kind} stimulus needs both times (ms) and values", "times")
        times = tuple(float(t) for t in self.times)
        values = tuple(float(v) for v in self.values)
        if len(times) != len(values) or len(times) < 1:
            _fail(f"times and values must have the same length >= 1, got "
                  f"{len(times)} and {len(values)}", "values")
        if not all(map(math.isfinite, times + values)):
            _fail("times and values must be finite numbers", "values")
        if any(b <= a for a, b in zip(times, times[1:])):
            _fail("times must increase strictly", "times")
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "values", values)

    @property
    def targets(self) -> tuple[str, ...]:
        return self.target

    @property
    def end(self) -> float:
        """``start + duration`` (ms) rounded once, as the compiled row, the breakpoints and
        :meth:`value` all use it, so that the waveform jumps exactly where steps land."""
        return self.start + self.duration

    def pulse_onsets(self, n: int) -> np.ndarray:
        """The first ``n`` onsets of a pulse train, ``start + k·period`` rounded once (the
        kernel's arithmetic, operation for operation)."""
        return self.start + np.arange(n, dtype=np.float64) * self.period

    def value(self, t) -> np.ndarray:
        """The waveform at times ``t`` (ms), in pA or mV.  A NumPy reference of the kernel."""
        t = np.asarray(t, dtype=float)
        rel = t - self.start
        inside = (t >= self.start) & (t < self.end)
        if self.kind == "step":
            shape = (t >= self.start).astype(float)
        elif self.kind == "pulse":
            shape = inside.astype(float)
        elif self.kind == "pulse_train":
            # the pulse k whose onset start + k·period is the last at or before t; the
            # quotient may round across an onset by one
            k = np.floor(np.maximum(rel, 0.0) / self.period)
            k = np.where(self.start + k * self.period > t, k - 1, k)
            k = np.where(self.start + (k + 1) * self.period <= t, k + 1, k)
            onset = self.start + k * self.period
            count = math.inf if self.count is None else self.count
            shape = ((t >= self.start) & (k < count) & (t < onset + self.duration)).astype(float)
        elif self.kind == "ramp":
            shape = np.where(inside, rel / self.duration, 0.0)
        elif self.kind == "sine":
            shape = np.where(inside, np.sin(2 * np.pi * self.frequency * 1e-3 * rel + self.phase),
                             0.0)
        elif self.kind == "steps":
            k = np.searchsorted(self.times, t, side="right") - 1
            shape = np.where(k >= 0, np.asarray(self.values)[np.maximum(k, 0)], 0.0)
        else:
            shape = np.interp(t, self.times, self.values)
        return self.offset + self.amplitude * shape

    def edge_count(self, t_end: float) -> int:
        """The number of :meth:`breakpoints` in ``(0, t_end)``, within two, counted
        without building them: a fast pulse train may have billions."""
        if self.kind in ("table", "steps"):
            return len(self.times)
        if self.kind == "pulse_train":
            return 2 * self._pulses_before(t_end)
        return 1 if self.kind == "step" else 2

    def _pulses_before(self, t_end: float) -> int:
        """How many onsets of a pulse train lie before ``t_end`` (give or take one where
        the quotient rounds), at most ``count``; capped far beyond any run's bound."""
        quotient = min((t_end - self.start) / self.period, 1e18)
        n = max(0, math.ceil(quotient))
        return n if self.count is None else min(self.count, n)

    def breakpoints(self, t_end: float) -> np.ndarray:
        """Times in ``(0, t_end)`` where the waveform or its slope jumps (ms), ascending.

        Call :meth:`edge_count` first where the count may be large: this builds them all.
        """
        if self.kind in ("pulse", "ramp", "sine"):
            points = np.array([self.start, self.end])
        elif self.kind == "pulse_train":
            # one onset more, in case the quotient rounded below one before t_end
            n = self._pulses_before(t_end) + 1
            onsets = self.pulse_onsets(n if self.count is None else min(n, self.count))
            points = np.stack([onsets, onsets + self.duration], axis=1).ravel()
        elif self.kind in ("table", "steps"):
            points = np.array(self.times, dtype=np.float64)
        else:
            points = np.array([self.start])
        return points[(points > 0) & (points < t_end) & np.isfinite(points)]


@dataclass(frozen=True)
class Schedule:
    """Time-varying parameters: piecewise constant over intervals of ``interval`` ms.

    ``values`` maps a parameter name (``"synapses[A->B].w"``, ``"neurons[A].E_L"``, as in
    ``compile_circuit(circuit).layout.names``) to its value in each interval; a series
    shorter than the run keeps its last value.  A ResNet's per-layer weights are a
    schedule with one interval per Euler step.  Needs a fixed-step integrator.
    """

    interval: float
    values: dict

    __hash__ = None

    def __post_init__(self):
        interval = float(self.interval)
        if not (math.isfinite(interval) and interval > 0):
            _fail(f"must be a finite number of ms > 0, got {self.interval!r}", "interval")
        object.__setattr__(self, "interval", interval)
        values = {}
        if not self.values:
            _fail("a schedule needs at least one parameter series", "values")
        for name, series in dict(self.values).items():
            if not isinstance(name, str):
                _fail(f"keys must be parameter names, got {name!r}", "values")
            series = tuple(float(v) for v in series)
            if not series or not all(map(math.isfinite, series)):
                _fail("must be a non-empty list of finite numbers", f"values.{name}")
            values[name] = series
        object.__setattr__(self, "values", values)

    @property
    def n_intervals(self) -> int:
        return max(len(v) for v in self.values.values())


#: how a run's initial state is chosen: the stimulus-free steady state of the run's own
#: circuit, or the potentials as given (V0, else E_L)
INITIAL_STATES = ("rest", "as_given")


def check_initial(value, path: str = "initial"):
    """``value`` if it names an initial state (or is None), else CircuitError."""
    if value is not None and value not in INITIAL_STATES:
        _fail(f"must be one of {', '.join(INITIAL_STATES)}, got {value!r}", path)
    return value


@dataclass(frozen=True)
class Protocol:
    """A named experiment: how long to run, which stimuli, which neurons to ablate.

    Parameters
    ----------
    duration : float, ms
    stimuli : tuple of str or Stimulus
        Stimulus names (looked up in the circuit) or stimulus objects.
    ablate : tuple of str
        Neurons removed with all their synapses and gap junctions.
    description : str
    scale : dict of str to float
        Partial lesions: every synapse weight and gap conductance touching the neuron is
        multiplied by the factor (0.5 for one of a left/right pair of a lumped class).
    initial : {"rest", "as_given"}, optional
        Where the run starts: ``rest``, the stimulus-free steady state of this protocol's
        circuit (its ablations, scalings and clamps); ``as_given``, the neurons' V0 (E_L
        where V0 is not given).  Default: the circuit's ``initial``.
    """

    duration: float
    stimuli: tuple = ()
    ablate: tuple[str, ...] = ()
    description: str = ""
    scale: dict = field(default_factory=dict)
    initial: str | None = None

    __hash__ = None

    def __post_init__(self):
        duration = float(self.duration)
        if not (math.isfinite(duration) and duration > 0):
            _fail(f"must be a finite number of ms > 0, got {self.duration!r}", "duration")
        object.__setattr__(self, "duration", duration)
        stimuli = (self.stimuli,) if isinstance(self.stimuli, (str, Stimulus)) else tuple(self.stimuli)
        for k, stim in enumerate(stimuli):
            if not isinstance(stim, (str, Stimulus)):
                _fail(f"must be a stimulus name or a Stimulus, got {stim!r}", f"stimuli[{k}]")
        object.__setattr__(self, "stimuli", stimuli)
        ablate = (self.ablate,) if isinstance(self.ablate, str) else tuple(self.ablate)
        for k, name in enumerate(ablate):
            if not isinstance(name, str):
                _fail(f"must be a neuron name, got {name!r}", f"ablate[{k}]")
        object.__setattr__(self, "ablate", ablate)
        scale = dict(self.scale)
        for name, factor in scale.items():
            if not isinstance(name, str):
                _fail(f"keys must be neuron names, got {name!r}", "scale")
            if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 0):
                _fail(f"must be a finite factor >= 0, got {factor!r}", f"scale.{name}")
            scale[name] = float(factor)
        object.__setattr__(self, "scale", scale)
        check_initial(self.initial)
