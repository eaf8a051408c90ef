"""The public run API: compile, pick the integrator, run in chunks, feed a recorder.

* :func:`simulate` — one run of a protocol (or an ad-hoc duration), into a recorder
  (memory or HDF5), with progress and a one-line failure sentence.
* :func:`sensitivities` — one run with ∂V/∂θ of named parameters, through its rest.
* :class:`BatchPlan` — many runs set up once (compiled circuit and protocols, integrator,
  one output plan); :func:`simulate_batch` is one :meth:`BatchPlan.run`.  Fits, sweeps
  and the CLI reach the integrators only through this module (tests/test_layering.py).

A given parameter vector θ is laid out as ``compile_circuit(circuit).layout`` says (for a
run with ablated neurons, the layout of the circuit without them) and is taken before a
protocol's lesions (``scale``), which multiply it as they multiply the circuit's own.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace

import numpy as np

from neurosim._version import __version__
from neurosim.compile import (check_theta, compile_batch, compile_cached, compile_circuit,
                              compile_drive, connection_factors, resolve_protocol,
                              surviving_stimuli)
from neurosim.errors import CircuitError, RestWarning, SimulationError, StorageError
# the integrators' names the run API hands on to the layers above (fits, sweeps, the CLI):
# METHODS, SENSITIVITY_METHODS, make_integrator, compile_seconds, running_clock
from neurosim.integrators import (METHODS, N_REPORT, OK, R_ITERATIONS, R_MAX_REAL_EIG,
                                  R_METHOD, R_OTHER_RESTS, R_PRERUN_MS, R_RESIDUAL,
                                  SENSITIVITY_METHODS, STABLE_RESTS, STATS_NAMES,
                                  check_precision, check_step_stability, chunk_rows,
                                  compile_seconds, describe_failure,
                                  find_rest_state, find_rest_states, integrate_with_sensitivity,
                                  lockstep_unit, make_integrator, one_compile_notice, rest_start,
                                  run_failure_message, run_items, running_clock,
                                  status_sentence)
from neurosim.io.batch_file import HDF5BatchRecorder, batch_identity, load_batch_V
from neurosim.model import INITIAL_STATES, Circuit, Protocol
from neurosim.record import BatchHeader, MemoryRecorder, Recorder, Result, RunHeader
from neurosim.resources import require_memory
from neurosim.signals import HeldSignals

#: default bound on |V| (mV); beyond it a run is declared diverged
DEFAULT_V_BOUND = 1e4


def _compiled_for(circuit: Circuit, gone: tuple, scale: dict, theta):
    """The compiled circuit of a run without the neurons ``gone`` and with the lesions
    ``scale``.  ``theta``, if given, is its parameter vector before the lesions, laid out
    as ``compile_circuit(circuit, ablate=gone).layout`` says: a lesion scales it as it
    scales the circuit's own (and as a batch's ``factors`` do)."""
    compiled = compile_cached(circuit, ablate=gone, scale=scale)
    if theta is None:
        return compiled
    try:
        theta = np.asarray(theta, dtype=np.float64)
    except (TypeError, ValueError):
        raise CircuitError("theta must be an array of numbers") from None
    if theta.shape != compiled.theta.shape:
        layout = (f"compile_circuit(circuit, ablate={list(gone)!r}).layout: the circuit "
                  "without its ablated neurons" if gone else "compile_circuit(circuit).layout")
        raise CircuitError(f"theta must have shape {compiled.theta.shape} ({layout}), "
                           f"got {theta.shape}")
    compiled = compiled.with_theta(theta)
    if scale:
        compiled = compiled.with_theta(compiled.theta * connection_factors(compiled, scale))
    return compiled


def _record_indices(compiled, record, ablated=()) -> np.ndarray:
    if record is None:
        return np.arange(compiled.n_neurons, dtype=np.int64)
    names = [record] if isinstance(record, str) else list(record)
    gone = [name for name in names if name in ablated]
    if gone:
        raise CircuitError(f"record= names {', '.join(map(repr, gone))}, ablated in this run; "
                           "an ablated neuron has no trace")
    if not names:
        raise CircuitError("record= is empty: nothing would be recorded")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise CircuitError(f"record= names {', '.join(map(repr, twice))} more than once; "
                           "each neuron is one column")
    return np.array([compiled.index(name) for name in names], dtype=np.int64)


#: how a rest was found, by the kernels' method code (neurosim.kernels.steady)
REST_METHODS = ("newton", "pre-run", "unstable", "unsettled", "marginal", "probed")


@dataclass(frozen=True)
class RestState:
    """Where a run starts, and how that state was found.

    Attributes
    ----------
    V : dict of str to float, mV
        Every neuron's initial potential (clamped ones at their holding potential).
    initial : {"rest", "as_given"}
    method : str
        ``newton`` (Newton from V0 found a stable rest), ``pre-run`` (Newton from where a
        stimulus-free pre-run settled), ``probed`` (V0 reaches no stable rest, but Newton
        from another start found one: the one nearest V0 is used), ``unstable`` or
        ``unsettled`` (no stable rest found: the pre-run's end state is used),
        ``marginal`` (a steady state with a zero eigenvalue, e.g. a neuron without leak:
        not unique; the one Newton found from V0 is used), or ``as_given``.
    stable : bool
        Whether V is a stable rest (every Jacobian eigenvalue with negative real part).
    residual : float, mV/ms
        max |dV/dt| at V without stimuli.
    max_real_eigenvalue : float, 1/ms
    iterations : int
        Newton iterations.
    prerun_ms : float
        Model time of the pre-run (0 without one).
    other_rests : int
        Stable rests other than V that Newton found from other starts (the circuit is
        multistable when > 0); −1 where not looked for (batch runs, circuits of more than
        100 free neurons).
    """

    V: dict
    initial: str
    method: str
    stable: bool
    residual: float = float("nan")
    max_real_eigenvalue: float = float("nan")
    iterations: int = 0
    prerun_ms: float = 0.0
    other_rests: int = -1

    @classmethod
    def from_report(cls, names, V, report) -> "RestState":
        code = int(report[R_METHOD])
        return cls(dict(zip(names, map(float, V))), "rest", REST_METHODS[code],
                   code in STABLE_RESTS, float(report[R_RESIDUAL]),
                   float(report[R_MAX_REAL_EIG]), int(report[R_ITERATIONS]),
                   float(report[R_PRERUN_MS]), int(report[R_OTHER_RESTS]))

    @property
    def warning(self) -> bool:
        """Whether a user should hear about this start: no stable rest, or several."""
        return self.initial == "rest" and (not self.stable or self.other_rests > 0)

    @property
    def message(self) -> str:
        """One line: what the run starts from."""
        if self.initial == "as_given":
            return "initial state: as given (V0, else E_L)"
        if self.stable:
            which = {"newton": "the one Newton reaches from V0",
                     "pre-run": f"the one a {self.prerun_ms:g} ms stimulus-free pre-run from V0 "
                                "settles in",
                     "probed": "the one nearest V0 (from V0 itself neither Newton nor a "
                               "pre-run reaches a stable rest)"}[self.method]
            numbers = (f"{self.iterations} Newton iterations, max |dV/dt| "
                       f"{self.residual:.1e} mV/ms")
            if np.isnan(self.max_real_eigenvalue):
                numbers += ("; too many neurons for Newton and the eigenvalue check: the "
                            "pre-run's settling is the evidence of stability")
            if self.other_rests > 0:
                return (f"multistable circuit: {self.other_rests} other stable rest"
                        f"{'s' if self.other_rests > 1 else ''} found from other starts; "
                        f"starting from {which}; {numbers}")
            return f"initial state: stimulus-free rest, {which}; {numbers}"
        if self.method == "marginal":
            return ("no stable rest: the steady state found from V0 is only marginally stable "
                    "(a Jacobian eigenvalue of 0, e.g. a neuron without leak); starting from it")
        if self.method == "unstable":
            why = "the only steady state found is unstable"
        elif self.prerun_ms == 0:
            why = ("Newton finds no steady state, and no pre-run is possible (a free neuron "
                   "has no conductance to settle against: no leak, no conductance-based "
                   "synapse, no gap junction)")
        else:
            why = (f"without stimuli the circuit does not settle within {self.prerun_ms:g} ms "
                   "(it oscillates or drifts")
            why += ("; its steady state is unstable)" if np.isfinite(self.max_real_eigenvalue)
                    else ")")
        start = ("the neurons' V0" if self.prerun_ms == 0
                 else "the state a stimulus-free pre-run ends in")
        return (f"no stable rest: {why}; starting from {start} "
                f"(max |dV/dt| {self.residual:.3g} mV/ms)")

    def to_dict(self) -> dict:
        out = dict(vars(self), message=self.message)
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in out.items()}


def resolve_initial(circuit: Circuit, proto: Protocol, initial, v0) -> str:
    """'rest' or 'as_given' for a run: the argument, else the protocol's and circuit's
    choice; potentials given as ``v0`` mean as given."""
    if initial is not None and initial not in INITIAL_STATES:
        raise CircuitError(f"initial must be one of {', '.join(INITIAL_STATES)}, got {initial!r}")
    if v0 is not None:
        if initial == "rest":
            raise CircuitError("give v0= (start as given) or initial='rest', not both")
        return "as_given"
    return initial or circuit.initial_state(proto)


def _rest_of(compiled, drive) -> RestState:
    """The stimulus-free rest of one compiled circuit under the clamps of ``drive``."""
    return RestState.from_report(compiled.neuron_names,
                                 *find_rest_state(compiled, drive, probe_all=True))


def rest_state(circuit: Circuit, protocol=None, *, ablate=(), theta=None) -> RestState:
    """The stimulus-free steady state of a protocol's circuit (its ablations, scalings and
    clamps; its stimuli off), as runs with ``initial: rest`` start from it.

    Newton on the analytic Jacobian from the neurons' V0 (E_L where not given); where that
    fails or finds an unstable state, a stimulus-free pre-run until |dV/dt| < 1e-6 mV/ms,
    then Newton again.  A neuron that one of the protocol's voltage stimuli drives is held
    at its holding potential (its clamp, else its V0), as it is before the stimulus.  ``stable`` is False when no stable rest was found (``message``
    says why and what is used instead).

    Examples
    --------
    >>> from neurosim.model import Circuit, Neuron, Synapse
    >>> c = Circuit("pair", (Neuron("A", clamp=-30.0), Neuron("B", g_L=1.0, E_L=-70.0)),
    ...             (Synapse("A", "B", w=1.0, E=0.0, mu=-30.0),))
    >>> round(rest_state(c, Protocol(1.0)).V["B"], 6)   # g_L·(E_L − V) + w·σ(0)·(0 − V) = 0
    -46.666667
    """
    _, proto = resolve_protocol(circuit, protocol if protocol is not None else Protocol(1.0))
    gone = tuple(proto.ablate) + tuple(ablate)
    compiled = _compiled_for(circuit, gone, proto.scale, theta)
    drive = compile_drive(compiled, surviving_stimuli(circuit, proto, gone), proto.duration)
    return _rest_of(compiled, drive)


def _initial_state(compiled, v0) -> np.ndarray:
    V = compiled.theta[3 * compiled.n_neurons:4 * compiled.n_neurons].copy()
    if v0 is None:
        return V
    if isinstance(v0, dict):
        for name, value in v0.items():
            V[compiled.index(name)] = float(value)
    else:
        given = np.asarray(v0, dtype=np.float64)
        if given.shape != V.shape:
            raise CircuitError(f"v0 must have shape {V.shape} (one value per neuron), got {given.shape}")
        V = given.copy()
    if not np.all(np.isfinite(V)):
        raise CircuitError("v0 must hold finite potentials (mV)")
    return V


def _progress_bar(progress, total: float):
    if progress is True:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, unit="ms", desc="simulating", leave=False,
                   bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} ms [{elapsed}<{remaining}]")
        return bar.update, bar.close
    if callable(progress):
        return progress, lambda: None
    return None, lambda: None


def simulate(circuit: Circuit, protocol=None, *, duration: float | None = None, stimuli=(),
             ablate=(), integrator="dopri5", dt=None, rtol=None, atol=None, dt_out=None,
             record=None, v0=None, initial=None, theta=None,
             recorder: Recorder | None = None, progress=None, v_bound: float = DEFAULT_V_BOUND,
             raise_on_failure: bool = True) -> Result:
    """Simulate ``circuit`` under a protocol and return the recorded traces.

    Parameters
    ----------
    circuit : Circuit
    protocol : str or Protocol, optional
        A protocol of the circuit by name, or a Protocol object.  Omit it and give
        ``duration`` (with optional ``stimuli``) for an ad-hoc run.
    duration : float, ms, optional
    stimuli : sequence of Stimulus or str
        Stimuli of an ad-hoc run (objects, or names of the circuit's stimuli).
    ablate : sequence of str
        Neurons removed (with all their connections) in addition to the protocol's.
    integrator : str or Integrator
        One of ``euler, rk4, exp_euler, ltc, dopri5, rosenbrock23``, or an instance.
    dt : float, ms
        Fixed step (fixed-step methods) or first step (adaptive ones).
    rtol, atol : float
        Tolerances of the adaptive methods (defaults 1e-6, 1e-6 mV).
    dt_out : float, ms
        Output grid spacing; default dt for fixed-step, 0.1 ms for adaptive methods.
    record : sequence of str, optional
        Neurons to record (default: all neurons after ablation).
    v0 : dict or ndarray, optional
        Initial potentials overriding the circuit's V0 (mV); the run starts as given.
    initial : {"rest", "as_given"}, optional
        Start from the stimulus-free rest of the run's circuit (see :func:`rest_state`)
        or from V0 as given.  Default: the protocol's, else the circuit's ``initial``,
        else ``as_given`` if a neuron gives V0 and ``rest`` otherwise.  Where no stable
        rest exists a :class:`~neurosim.errors.RestWarning` says so.  The result's
        ``metadata["initial"]`` records the state and how it was found.
    theta : ndarray, optional
        A parameter vector replacing the circuit's, laid out as
        ``compile_circuit(circuit, ablate=...).layout`` says for the run's ablated neurons,
        and taken before the protocol's lesions (``scale``), which scale it as they scale
        the circuit's own (as in :func:`simulate_batch`).
    recorder : Recorder, optional
        Where samples go (default: memory).  Pass an HDF5 recorder to stream to disk.
    progress : bool or callable, optional
        True shows a progress bar; a callable receives the model time advanced (ms).
    v_bound : float, mV
        |V| beyond this stops the run as diverged.
    raise_on_failure : bool
        Raise SimulationError (holding the partial result as ``.result``) on numerical
        failure; if False, return the partial result with ``status == "failed"``.

    Returns
    -------
    Result

    Examples
    --------
    >>> from neurosim.model import Circuit, Neuron
    >>> c = Circuit("one", (Neuron("A", C=10.0, g_L=1.0, E_L=-70.0, V0=-50.0),))
    >>> r = simulate(c, duration=10.0, integrator="exp_euler", dt=0.1)   # V0 given: as given
    >>> round(float(r.v("A")[-1]), 4)  # -70 + 20·exp(-10/10)
    -62.6424
    """
    if duration is not None:
        if protocol is not None:
            raise CircuitError("give either protocol= or duration=, not both")
        protocol_name, proto = "(inline)", Protocol(duration, stimuli=tuple(stimuli))
    else:
        if stimuli:
            raise CircuitError("stimuli= goes with duration=; a protocol brings its own stimuli")
        protocol_name, proto = resolve_protocol(circuit, protocol)
    gone = tuple(proto.ablate) + tuple(ablate)
    compiled = _compiled_for(circuit, gone, proto.scale, theta)
    resolved = surviving_stimuli(circuit, proto, gone)
    method = make_integrator(integrator, dt=dt, rtol=rtol, atol=atol)
    dt_out, n_rows = method.plan(proto.duration, dt_out)
    unstable = check_step_stability(method, compiled)
    if unstable:
        warnings.warn(unstable, RuntimeWarning, stacklevel=2)
    drive = compile_drive(compiled, resolved, proto.duration)
    record_idx = _record_indices(compiled, record, gone)
    v_bound = float(v_bound)
    if not v_bound > 0:
        raise CircuitError(f"v_bound must be > 0 mV, got {v_bound!r}")
    # one announced wait where the rest's kernel and the time loop both compile
    with one_compile_notice():
        if resolve_initial(circuit, proto, initial, v0) == "rest":
            start = _rest_of(compiled, drive)
            V = np.array([start.V[name] for name in compiled.neuron_names])
            if start.warning:
                where = "" if protocol_name == "(inline)" else f"protocol '{protocol_name}': "
                warnings.warn(where + start.message, RestWarning, stacklevel=2)
        else:
            V = _initial_state(compiled, v0)
            start = RestState(dict(zip(compiled.neuron_names, map(float, V))), "as_given",
                              "as_given", False)
        # the stepper loads (or compiles) the kernels before any file is opened
        stepper = method.start(compiled, drive, V, record_idx, v_bound, dt_out)

    names = tuple(compiled.neuron_names[i] for i in record_idx)
    metadata = {
        "circuit": circuit.name, "protocol": protocol_name, "duration_ms": proto.duration,
        "ablated": list(gone), "scaled": dict(proto.scale), "stimuli": [s if isinstance(s, str) else s.kind for s in proto.stimuli],
        "integrator": method.name, "integrator_options": method.options(), "dt_out_ms": dt_out,
        "record": list(names), "v_bound_mV": v_bound, "initial": start.to_dict(),
        "neurosim_version": __version__}
    recorder = MemoryRecorder() if recorder is None else recorder
    calls = _CallSizes(n_rows, len(names), recorder.chunk_values)
    advance_progress, close_progress = _progress_bar(progress, proto.duration)
    started = time.perf_counter()
    status, row, opened = OK, 0, False

    def stats():
        out = {k: int(v) for k, v in zip(STATS_NAMES, stepper.stats)}
        out["wall_time_s"] = time.perf_counter() - started
        return out

    # the recorder opens with Ctrl-C held, and everything after runs inside the try: an
    # interrupt must close (and so rename and mark) the recorder's file.  Opening takes
    # the file's lock and starts its writer thread; Ctrl-C there once left an empty,
    # unnamed partial that every later run refused.
    try:
        with HeldSignals() as held:
            recorder.open(RunHeader(names, n_rows + 1, dt_out, metadata, circuit))
            opened = True
            recorder.append(np.zeros(1), stepper.V[record_idx][None, :])
            while row < n_rows and status == OK and not held.signum:
                m = calls.next(row)
                out_V = np.empty((m, len(names)))
                call_started = time.perf_counter()
                status = stepper.advance(out_V)
                # a failed call keeps the rows it filled before the failure
                filled = m if status == OK else stepper.rows_filled(status, row, m)
                calls.took(m, time.perf_counter() - call_started)
                if filled:
                    recorder.append(np.arange(row + 1, row + filled + 1) * dt_out, out_V[:filled])
                    row += filled
                    if advance_progress:
                        advance_progress(filled * dt_out)
            close_progress()
            if status == OK and row < n_rows:  # stopped by a held signal
                result = recorder.close("interrupted", f"interrupted at t = {row * dt_out:g} ms "
                                                       f"({held.name})", stats())
            elif status == OK:
                result = recorder.close("complete", "completed", stats())
            else:
                message = describe_failure(status, stepper)
                result = recorder.close("failed", message, stats())
            held.deliver()  # a signal held during the last call goes on, the run closed
    except StorageError:
        close_progress()
        if opened:  # raises the StorageError, saying what was kept
            recorder.close("failed", "", stats())
        raise
    except BaseException as exc:
        close_progress()
        if opened:
            recorder.close("interrupted", f"interrupted at t = {row * dt_out:g} ms "
                                          f"({type(exc).__name__})", stats())
        raise
    if status != OK and raise_on_failure:
        error = SimulationError(result.message)
        error.result = result
        raise error
    return result


#: seconds of work per kernel call: an interrupt waits about this long and a failure
#: loses nothing, while the ~30 µs a call costs stays below 0.1 % of the run
CALL_SECONDS = 0.2


class _CallSizes:
    """Output rows per kernel call, sized by the wall time the calls take.

    The first call computes one row; later ones aim at CALL_SECONDS (growing at most 8-fold per
    call), never above :func:`~neurosim.integrators.chunk_rows` (values in flight), and
    once they reach a recorder chunk they end on its boundaries, so a streamed run writes
    whole chunks without copying them."""

    def __init__(self, n_rows: int, n_record: int, chunk_values: int):
        self.n_rows = n_rows
        self.most = chunk_rows(n_rows, n_record, chunk_values)
        self.recorder_rows = max(1, chunk_values // max(1, n_record))
        self.size = 1

    def next(self, row: int) -> int:
        size = self.size
        if size >= self.recorder_rows:  # end on a chunk boundary (row 0 is appended first)
            appended = row + 1
            size = (appended + size) // self.recorder_rows * self.recorder_rows - appended
        return max(1, min(size, self.n_rows - row))

    def took(self, rows: int, seconds: float) -> None:
        per_row = max(seconds, 1e-6) / max(rows, 1)
        wanted = int(CALL_SECONDS / per_row)
        self.size = max(1, min(self.most, 8 * rows, wanted))


@dataclass(frozen=True)
class Sensitivities:
    """A run and the derivatives of its recorded potentials (:func:`sensitivities`).

    Attributes
    ----------
    t : ndarray, shape (n_samples,), ms
    V : ndarray, shape (n_samples, n_recorded), mV
    S : ndarray, shape (n_samples, n_recorded, n_parameters)
        ∂V/∂θ for each named parameter, in mV per the parameter's unit.
    neuron_names, parameters : tuple of str
    initial : str
        "rest" (S includes how the rest moves with θ) or "as_given".
    """

    t: np.ndarray
    V: np.ndarray
    S: np.ndarray
    neuron_names: tuple
    parameters: tuple
    initial: str

    def dv(self, neuron: str, parameter: str) -> np.ndarray:
        """∂V(neuron)/∂(parameter) at every sample."""
        return self.S[:, self.neuron_names.index(neuron), self.parameters.index(parameter)]


def sensitivities(circuit: Circuit, protocol=None, parameters=(), *, integrator="dopri5",
                  dt=None, rtol=None, atol=None, dt_out=None, record=None,
                  initial=None, theta=None) -> Sensitivities:
    """A run of ``protocol`` with the forward sensitivities ∂V/∂θ of its recorded neurons
    to ``parameters`` (names of the parameter layout of the circuit after the protocol's
    ablations, e.g. ``"synapses[AVD->AVA].w"``; see ``compile_circuit(c).layout``).

    The derivatives are those of the integrator's own discrete steps (the tangent of each
    step, on the steps the run takes; gradients of a loss built from them are exact for
    the computed trajectory), for dopri5 and the fixed-step methods; a run that starts at
    rest includes ∂V*/∂θ of its rest (zero where no stable rest exists).  Derivatives are
    with respect to the parameters as written: through a protocol's lesion (``scale``),
    a weight's includes its factor, as :meth:`BatchPlan.sensitivities` does.  The same numbers
    drive the fits' gradients.  ``theta`` replaces the parameter vector, as in
    :func:`simulate` (the layout after the protocol's ablations): many parameter vectors
    of one circuit compile nothing again.
    """
    protocol_name, proto = resolve_protocol(circuit, protocol)
    gone = tuple(proto.ablate)
    compiled = _compiled_for(circuit, gone, proto.scale, theta)
    names = [parameters] if isinstance(parameters, str) else list(parameters)
    if not names:
        raise CircuitError("parameters= names no parameter; give names such as "
                           "'synapses[AVD->AVA].w' (compile_circuit(circuit).layout.names)")
    whole = compile_cached(circuit).layout
    for name in names:
        if name not in compiled.layout.names and name in whole.names:
            raise CircuitError(f"parameter {name!r} belongs to a neuron that protocol "
                               f"{protocol_name!r} ablates ({', '.join(gone)}): the run has "
                               "no such parameter (its derivative is 0)")
    free = np.array([compiled.layout.index(name) for name in names], dtype=np.int64)
    method = make_integrator(integrator, dt=dt, rtol=rtol, atol=atol)
    dt_out, n_rows = method.plan(proto.duration, dt_out)
    drive = compile_drive(compiled, surviving_stimuli(circuit, proto, gone), proto.duration)
    record_idx = _record_indices(compiled, record, gone)
    how = resolve_initial(circuit, proto, initial, None)
    with one_compile_notice():
        start = rest_start(compiled, drive, free) if how == "rest" else None
        status, out_V, out_S, stats = integrate_with_sensitivity(
            method, compiled, drive, free, record_idx, dt_out, n_rows, DEFAULT_V_BOUND, start)
    if status != OK:
        what = status_sentence(status, method, DEFAULT_V_BOUND)
        raise SimulationError(f"protocol {protocol_name!r}: the run with sensitivities "
                              f"failed: {what}")
    # with respect to the parameters as written, before the protocol's lesions scale them
    out_S *= connection_factors(compiled, proto.scale)[free]
    return Sensitivities(np.arange(n_rows + 1) * dt_out, out_V, out_S,
                         tuple(compiled.neuron_names[i] for i in record_idx), tuple(names), how)


class BatchResult:
    """Traces of a batch: every parameter set under every protocol.

    Attributes
    ----------
    t : ndarray, shape (n_samples,), ms
        The common output grid (the longest protocol's; shorter ones are NaN-padded).
    V : ndarray, shape (n_protocols, n_sets, n_samples, n_recorded), mV
        NaN where a neuron is ablated by the protocol, after a failure, or past the end.
    protocols : tuple of str
    neuron_names : tuple of str
    status : ndarray of str, shape (n_protocols, n_sets)
        ``"complete"`` or ``"failed"``; ``messages`` holds the failures' sentences.
    stats : ndarray, shape (n_protocols, n_sets, 4)
        steps, rejected, rhs_evaluations, jacobians per run.
    layout : ParameterLayout
        The columns of the parameter matrix, by name (``layout.names``).
    initial_V : ndarray, shape (n_protocols, n_sets, n_neurons), mV
        Every neuron's initial potential (all neurons, in circuit order).
    rest_reports : ndarray, shape (n_protocols, n_sets, 6)
        How each rest was found (NaN rows for runs that start as given); :meth:`start`
        turns a row into a :class:`RestState`.
    """

    def __init__(self, t, V, protocols, neuron_names, status, messages, stats, layout,
                 metadata, initial_V=None, rest_reports=None, circuit_names=()):
        # V may be a function returning it (or one run's, given (protocol, set)): a batch
        # streamed to disk reads it when used
        self.t, self._V, self.protocols, self.neuron_names = t, V, protocols, neuron_names
        self.status, self.messages, self.stats = status, messages, stats
        self.layout, self.metadata = layout, metadata
        self.initial_V, self.rest_reports, self._circuit_names = initial_V, rest_reports, circuit_names

    @property
    def V(self) -> np.ndarray:
        if callable(self._V):
            self._V = self._V()
        return self._V

    def start(self, protocol, index: int = 0) -> RestState:
        """How run ``index`` of ``protocol`` started."""
        p = self.protocols.index(protocol) if isinstance(protocol, str) else int(protocol)
        V, report = self.initial_V[p, index], self.rest_reports[p, index]
        if np.isnan(report[R_METHOD]):
            return RestState(dict(zip(self._circuit_names, map(float, V))), "as_given",
                             "as_given", False)
        return RestState.from_report(self._circuit_names, V, report)

    @property
    def failed(self) -> np.ndarray:
        return self.status != "complete"

    def v(self, name: str) -> np.ndarray:
        """Traces of ``name``, shape (n_protocols, n_sets, n_samples)."""
        if name not in self.neuron_names:
            raise CircuitError(f"neuron {name!r} was not recorded; recorded: "
                               f"{', '.join(self.neuron_names)}")
        return self.V[..., self.neuron_names.index(name)]

    def result(self, protocol, index: int = 0) -> Result:
        """One run as a :class:`Result` (ablated neurons left out, NaN padding cut)."""
        p = self.protocols.index(protocol) if isinstance(protocol, str) else int(protocol)
        # one run of a batch on disk is read alone, not the whole file (positions as NumPy
        # takes them, negative ones included)
        p, index = range(len(self.protocols))[p], range(self.status.shape[1])[index]
        V = self._V((p, index)) if callable(self._V) else self._V[p, index]
        rows = np.isfinite(self.t) & ~np.all(np.isnan(V), axis=1)
        keep = [c for c in range(V.shape[1]) if not np.all(np.isnan(V[:, c]))]
        stats = dict(zip(STATS_NAMES, map(int, self.stats[p, index])))
        meta = dict(self.metadata, protocol=self.protocols[p],
                    ablated=list(self.metadata["ablated"][p]))
        if self.initial_V is not None:
            meta["initial"] = self.start(p, index).to_dict()
        return Result(self.t[rows], V[rows][:, keep], tuple(self.neuron_names[c] for c in keep),
                      str(self.status[p, index]), self.messages.get((p, index), "completed"),
                      stats, meta)

    def __repr__(self):
        return (f"BatchResult({len(self.protocols)} protocols x {self.V.shape[1]} parameter sets, "
                f"{len(self.neuron_names)} neurons, {self.t.size} samples, "
                f"{int(self.failed.sum())} failed)")


class BatchPlan:
    """Many runs set up once: a circuit under several protocols, integrated alike.

    Built once, a plan runs any number of parameter matrices without compiling or
    validating anything again: it owns the compiled circuit and protocols, the
    integrator, and the one output plan of every run (``dt_out``, the samples of each
    protocol, the recorded neurons, the precision).  :func:`simulate_batch` is one
    :meth:`run` of a plan; fits run theirs for every population and gradient.

    Parameters are those of :func:`simulate_batch`.

    Attributes
    ----------
    protocols : tuple of str
    layout : ParameterLayout
        The columns of a parameter matrix (``layout.names``).
    factors : ndarray, shape (n_protocols, n_params)
        What each protocol multiplies θ by: 0 for the weights its ablations remove, its
        lesions' ``scale`` for theirs, 1 elsewhere.
    ablated : ndarray of bool, shape (n_protocols, n_neurons)
    dt_out : float, ms
    rows : ndarray of int, shape (n_protocols,)
        Samples of each protocol after the initial one.
    record : ndarray of int
        Circuit indices of the recorded neurons (``neuron_names`` names them).
    method : Integrator
    """

    def __init__(self, circuit: Circuit, protocols=None, *, integrator="dopri5", dt=None,
                 rtol=None, atol=None, dt_out=None, record=None, initial=None,
                 v_bound: float = DEFAULT_V_BOUND, precision: str = "float64"):
        compiled = compile_cached(circuit)
        if protocols is None:
            names = list(circuit.protocols)
            if not names:
                raise CircuitError("the circuit defines no protocols; pass protocols=")
        else:
            names = [protocols] if isinstance(protocols, (str, Protocol)) else list(protocols)
            if not names:
                raise CircuitError("protocols= is empty: name at least one protocol")
        twice = sorted({p for p in names if isinstance(p, str) and names.count(p) > 1})
        if twice:
            raise CircuitError(f"protocols= names {', '.join(map(repr, twice))} more than once; "
                               "a batch runs each protocol once (its results are found by name)")
        resolved = [resolve_protocol(circuit, p) for p in names]
        inline = [k for k, (name, _) in enumerate(resolved) if name == "(inline)"]
        if len(inline) > 1:  # each its own name: "(inline 1)", "(inline 2)", ...
            for number, k in enumerate(inline, start=1):
                resolved[k] = (f"(inline {number})", resolved[k][1])
        self.circuit, self.compiled = circuit, compiled
        self.protocols = tuple(name for name, _ in resolved)
        self._batch = compile_batch(compiled, [p for _, p in resolved])
        self.method = make_integrator(integrator, dt=dt, rtol=rtol, atol=atol)
        check_precision(precision, self.method)
        self.precision = precision
        plans = [self.method.plan(p.duration, dt_out) for _, p in resolved]
        self.dt_out = plans[0][0]
        self.rows = np.array([n for _, n in plans], dtype=np.int64)
        self.record = _record_indices(compiled, record)
        self.neuron_names = tuple(compiled.neuron_names[i] for i in self.record)
        self.v_bound = float(v_bound)
        if not self.v_bound > 0:
            raise CircuitError(f"v_bound must be > 0 mV, got {v_bound!r}")
        self.at_rest = np.array([resolve_initial(circuit, p, initial, None) == "rest"
                                 for _, p in resolved])
        self._ablations = [list(p.ablate) for _, p in resolved]

    @property
    def layout(self):
        return self.compiled.layout

    @property
    def factors(self) -> np.ndarray:
        return self._batch.factors

    @property
    def ablated(self) -> np.ndarray:
        return self._batch.ablated

    def parameter_sets(self, theta, check: bool = True) -> np.ndarray:
        """``theta`` (one vector or a matrix of them; None: the circuit's own) as a
        C-contiguous (n_sets, n_params) matrix, its values checked unless ``check`` is
        False."""
        compiled = self.compiled
        if theta is None:
            return compiled.theta[None, :]
        try:
            thetas = np.ascontiguousarray(theta, dtype=np.float64)
        except (TypeError, ValueError):
            raise CircuitError("theta must be an array of numbers") from None
        if thetas.ndim == 1:
            thetas = thetas[None, :]
        if thetas.ndim != 2 or thetas.shape[1] != compiled.theta.shape[0]:
            raise CircuitError(f"theta must have shape (n_sets, {compiled.theta.shape[0]}) "
                               f"(see compile_circuit(circuit).layout), got {thetas.shape}")
        if thetas.shape[0] == 0:
            raise CircuitError("theta has no rows: pass at least one parameter set")
        if check:
            check_theta(thetas, compiled)
        return thetas

    def _grid(self, thetas, precision, out_V=None, on_done=None):
        """Every parameter set (rows of ``thetas``) under every protocol, in one call.

        Returns (status, stats, fail_t, out_V, (V0, rests)): the first three flat over
        items p·n_sets + k, out_V of shape (n_protocols, n_sets, samples, recorded), the
        initial states (n_protocols, n_sets, n_neurons) and the rest reports
        (n_protocols, n_sets, N_REPORT) of the runs that start at rest (NaN rows for the
        others).  Ablations and lesions act through :attr:`factors`.  ``out_V``, if
        given, is filled in place (flat: (items, samples, recorded)); ``on_done(first,
        last, status, stats, fail_t, out_V, V0, rests)`` is called as items first..last-1
        finish, with the flat arrays (see :func:`~neurosim.integrators.runs.run_items`).
        """
        compiled, batch = self.compiled, self._batch
        n_p, n_sets = batch.factors.shape[0], thetas.shape[0]
        effective = (batch.factors[:, None, :] * thetas[None, :, :]).reshape(n_p * n_sets, -1)
        n = compiled.n_neurons
        V0 = np.ascontiguousarray(effective[:, compiled.layout.block("neurons.V0")])
        item_protocol = np.repeat(np.arange(n_p, dtype=np.int64), n_sets)
        rests = np.full((n_p * n_sets, N_REPORT), np.nan)
        with one_compile_notice():
            if np.any(self.at_rest):
                items = np.flatnonzero(self.at_rest[item_protocol])
                V0[items], rests[items] = find_rest_states(
                    compiled, effective[items], V0[items], item_protocol[items],
                    batch.arrays[8], batch.arrays[9])
            initial = V0.copy()  # the kernels advance V0 in place

            def finished(first, last, status, stats, fail_t, out_V):
                on_done(first, last, status, stats, fail_t, out_V, initial, rests)
            status, stats, fail_t, out_V = run_items(
                self.method, compiled, batch, V0, effective, item_protocol,
                self.rows[item_protocol], self.dt_out, self.record, self.v_bound, precision,
                out_V, finished if on_done is not None else None)
        return (status, stats, fail_t, out_V.reshape(n_p, n_sets, out_V.shape[1], -1),
                (initial.reshape(n_p, n_sets, n), rests.reshape(n_p, n_sets, -1)))

    def traces(self, theta, precision: str | None = None, check: bool = True,
               out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(status, V) of every parameter set under every protocol, without a
        :class:`BatchResult` around them: ``status`` (n_protocols, n_sets) is 0 for a
        complete run; V (n_protocols, n_sets, samples, recorded) as :meth:`run` gives it,
        except that ablated neurons' columns are not blanked.  ``precision`` overrides
        the plan's (float32 needs an integrator and rtol that run in it).  With ``check``
        False, θ outside the parameters' ranges (a negative weight) runs as it is: an
        optimiser's population may leave them, and its loss judges them.  With ``out``
        (see :meth:`run`) the traces are written there and V is ``out``."""
        if precision is not None and precision != self.precision:
            check_precision(precision, self.method)
        thetas = self.parameter_sets(theta, check)
        precision = precision or self.precision
        status, _, _, out_V, _ = self._grid(thetas, precision,
                                            self._output_array(out, thetas.shape[0], precision))
        return status.reshape(out_V.shape[:2]), out_V if out is None else out

    def sensitivities(self, theta, free, protocol):
        """(status, V, S) of one run of the parameter vector ``theta`` under ``protocol``
        (its name, or its number in :attr:`protocols`), with S = ∂V/∂θ[free] (samples,
        recorded, len(free)) for ``free`` (layout names or θ positions), taken with
        respect to θ before the protocol's :attr:`factors` (a lesioned weight's
        derivative includes its scale; an ablated one's is 0).  A run that starts at rest
        includes ∂V*/∂θ of its rest."""
        if isinstance(protocol, str) and protocol in self.protocols:
            protocol = self.protocols.index(protocol)
        if not (isinstance(protocol, (int, np.integer)) and 0 <= protocol < len(self.protocols)):
            raise CircuitError(f"protocol must be one of {', '.join(self.protocols)} or its "
                               f"number 0..{len(self.protocols) - 1}, got {protocol!r}")
        thetas = self.parameter_sets(theta)
        if thetas.shape[0] != 1:
            raise CircuitError(f"sensitivities run one parameter vector; theta has "
                               f"{thetas.shape[0]} rows")
        free = self._positions(free)
        factor = self.factors[protocol]
        theta = thetas[0]
        run = self.compiled.with_theta(theta * factor if np.any(factor != 1) else theta)
        drive = self._batch.drive(protocol)
        with one_compile_notice():  # the rest's kernels and the tangent loop's
            start = rest_start(run, drive, free) if self.at_rest[protocol] else None
            status, V, S, _ = integrate_with_sensitivity(
                self.method, run, drive, free, self.record, self.dt_out,
                int(self.rows[protocol]), self.v_bound, start)
        return status, V, S * factor[free]

    def _positions(self, free) -> np.ndarray:
        """θ positions of ``free``: layout names or positions, checked."""
        items = [free] if isinstance(free, (str, int, np.integer)) else list(free)
        size = self.compiled.theta.shape[0]
        positions = []
        for item in items:
            if isinstance(item, str):
                positions.append(self.layout.index(item))
            elif isinstance(item, (int, np.integer)) and 0 <= item < size:
                positions.append(int(item))
            else:
                raise CircuitError(f"free must hold layout names or θ positions 0..{size - 1}, "
                                   f"got {item!r}")
        if not positions:
            raise CircuitError("free is empty: name at least one parameter")
        return np.array(positions, dtype=np.int64)

    def output_bytes(self, n_sets: int) -> int:
        """Bytes of the traces of ``n_sets`` parameter sets under every protocol."""
        return (len(self.protocols) * n_sets * (int(self.rows.max()) + 1) * len(self.record)
                * np.dtype(self.precision).itemsize)

    def run(self, theta=None, *, check_memory: bool = True, recorder=None, out=None,
            _stacklevel: int = 2) -> BatchResult:
        """Every parameter set of ``theta`` (see :func:`simulate_batch`) under every
        protocol of the plan, as a :class:`BatchResult`; with a ``recorder``
        (:class:`~neurosim.io.batch_file.HDF5BatchRecorder`) streamed to its file, with
        ``out`` written into that array (see :func:`simulate_batch`)."""
        thetas = self.parameter_sets(theta)
        if recorder is not None and out is not None:
            raise CircuitError("out= and recorder= do not go together: a recorder writes the "
                               "traces to its file")
        if recorder is not None:
            if not isinstance(recorder, HDF5BatchRecorder):
                raise CircuitError(f"recorder= takes an HDF5BatchRecorder (a batch's file), got "
                                   f"{type(recorder).__name__}")
            return self._stream(thetas, recorder, _stacklevel + 1)
        compiled = self.compiled
        n_p, n_sets = len(self.protocols), thetas.shape[0]
        out_V = self._output_array(out, n_sets, self.precision)
        require_memory(self.output_bytes(n_sets),
                       f"the batch's output ({n_p * n_sets:,} runs x "
                       f"{int(self.rows.max()) + 1:,} samples x {len(self.record):,} neurons)",
                       "run fewer parameter sets per call, record fewer neurons (record=), "
                       "sample less often (dt_out=), or pass check_memory=False",
                       check=check_memory and out is None)
        # a first call compiles its kernels (announced): the batch's time is that of running
        started = running_clock()
        status, stats, fail_t, out_V, rests = self._grid(thetas, self.precision, out_V)
        out_V = out_V if out is None else out
        wall = running_clock() - started
        initial_V, rest_reports = rests
        unstable = self._unstable(rest_reports)
        if unstable:
            warnings.warn(f"{unstable} of {n_p * n_sets} runs found no stable rest "
                          "(BatchResult.start(protocol, index) says what each starts from)",
                          RestWarning, stacklevel=_stacklevel)
        for p in range(n_p):
            self._blank_ablated(out_V[p], p)
        messages = self._failures(status, stats, fail_t, thetas)
        labels = np.where(status.reshape(n_p, n_sets) == OK, "complete", "failed")
        metadata = {**self._metadata(), "wall_time_s": wall}
        t = np.arange(out_V.shape[2]) * self.dt_out
        return BatchResult(t, out_V, self.protocols, self.neuron_names, labels, messages,
                           stats.reshape(n_p, n_sets, -1)[..., :len(STATS_NAMES)],
                           compiled.layout, metadata, initial_V, rest_reports,
                           compiled.neuron_names)

    def _output_array(self, out, n_sets: int, precision: str) -> np.ndarray | None:
        """``out`` as the kernels fill it, (items, samples, recorded), after checking that
        it is an array the batch's traces fit (one line saying what it must be)."""
        if out is None:
            return None
        shape = (len(self.protocols), n_sets, int(self.rows.max()) + 1, len(self.record))
        if (not isinstance(out, np.ndarray) or out.shape != shape
                or out.dtype != np.dtype(precision) or not out.flags.c_contiguous
                or not out.flags.writeable):
            got = (f"a {'read-only ' if not out.flags.writeable else ''}"
                   f"{'' if out.flags.c_contiguous else 'non-contiguous '}{out.dtype} array "
                   f"of shape {out.shape}" if isinstance(out, np.ndarray)
                   else type(out).__name__)
            raise CircuitError(f"out must be a writeable C-contiguous {precision} array of "
                               f"shape {shape} (protocols, sets, samples, recorded neurons), "
                               f"got {got}")
        return out.reshape(shape[0] * n_sets, shape[2], shape[3])

    def _metadata(self) -> dict:
        return {"circuit": self.circuit.name, "integrator": self.method.name,
                "integrator_options": self.method.options(), "dt_out_ms": self.dt_out,
                "ablated": self._ablations, "neurosim_version": __version__}

    def _unstable(self, rest_reports) -> int:
        """How many of the runs that start at rest found no stable one."""
        return int(np.sum(~np.isin(rest_reports[..., R_METHOD], STABLE_RESTS)
                          & self.at_rest[:, None]))

    def _blank_ablated(self, V, protocol: int) -> None:
        """NaN in the columns of neurons ``protocol`` ablates (they have no potential), in
        traces V (..., samples, recorded) of its runs."""
        columns = np.flatnonzero(self.ablated[protocol, self.record])
        if columns.size:
            V[..., columns] = np.nan

    def _failures(self, status, stats, fail_t, thetas, first: int = 0) -> dict:
        """(protocol, set) -> the sentence of each failed run of a grid of the parameter
        sets ``thetas``, the items of ``status`` being first, first + 1, …: the sentence a
        single run of that set and protocol gives (its fastest time constant included)."""
        messages = {}
        for item in np.flatnonzero(status):
            p, k = divmod(first + int(item), thetas.shape[0])
            ran = replace(self.compiled, theta=self.factors[p] * thetas[k])
            messages[p, k] = run_failure_message(int(status[item]), self.method, ran,
                                                 stats[item], float(fail_t[item, 0]),
                                                 float(fail_t[item, 1]), self.v_bound)
        return messages

    def _stream(self, thetas, recorder, stacklevel: int) -> BatchResult:
        """:meth:`run` into ``recorder``, the parameter sets cut into the kernel calls it
        asks for, each call's output in a buffer of the recorder's: the runs go to the
        recorder as the kernels finish them (a lockstep group at a time, written on its
        thread while the rest computes), so that little is left to write when the last
        call ends.  Each run is computed as in memory (the same kernels, run by run), so
        the file holds the same numbers."""
        compiled, method = self.compiled, self.method
        n_p, n_sets = len(self.protocols), thetas.shape[0]
        t = np.arange(int(self.rows.max()) + 1) * self.dt_out
        itemsize = np.dtype(self.precision).itemsize
        unit = lockstep_unit(compiled.n_neurons, itemsize) if method.float32_lanes else 1
        per_call = recorder.sets_per_call(n_p, t.size, len(self.neuron_names), unit, itemsize)
        metadata = {**self._metadata(), "precision": self.precision}
        started, unstable = running_clock(), 0
        # opened with Ctrl-C held (it takes the file's lock and starts the writer thread: an
        # interrupt there once left an empty, unnamed partial), and nothing between open
        # and the try, where a held interrupt goes on: the file is then closed, and so
        # finished and unlocked
        with HeldSignals() as opening:
            recorder.open(BatchHeader(self.protocols, n_sets, self.neuron_names, t,
                                      compiled.n_neurons, N_REPORT, metadata, self.circuit,
                                      thetas, tuple(self.layout.names)))
        try:
            opening.deliver()
            for first in range(0, n_sets, per_call):
                m = min(per_call, n_sets - first)

                def finished(a, b, status, stats, fail_t, out_V, initial_V, reports,
                             first=first, m=m):
                    while a < b:  # the runs of each protocol among items a..b-1
                        p = a // m
                        end = min(b, (p + 1) * m)
                        self._blank_ablated(out_V[a:end], p)
                        messages = self._failures(status[a:end], stats[a:end], fail_t[a:end],
                                                  thetas[first:first + m], a)
                        recorder.append(p, first + a - p * m, out_V[a:end], status[a:end],
                                        stats[a:end, :len(STATS_NAMES)], initial_V[a:end],
                                        reports[a:end], {(q, first + k): text for (q, k), text
                                                         in messages.items()})
                        a = end

                out_V = recorder.buffer((n_p * m, t.size, len(self.record)), self.precision)
                *_, (_, reports) = self._grid(thetas[first:first + m], self.precision, out_V,
                                              finished)
                recorder.release(out_V)
                unstable += self._unstable(reports)
        except BaseException as exc:
            kept = recorder.close("interrupted", f"interrupted ({type(exc).__name__})")
            if kept is not None and kept != recorder.target:
                warnings.warn(f"the interrupted batch is in {kept}; {recorder.path} is left as "
                              "it was (a complete batch only replaces a file)", stacklevel=stacklevel)
            raise
        path = recorder.close("complete", "completed")
        if unstable:
            warnings.warn(f"{unstable} of {n_p * n_sets} runs found no stable rest",
                          RestWarning, stacklevel=stacklevel)
        metadata["wall_time_s"] = running_clock() - started
        metadata["path"] = str(path)
        parts = recorder.parts()
        identity = batch_identity(path)
        labels = np.select([parts["status"] == 0, parts["status"] == 1],
                           ["complete", "failed"], "not run")
        return BatchResult(t, lambda run=None: load_batch_V(path, identity, run), self.protocols,
                           self.neuron_names,
                           labels, parts["messages"], parts["stats"], compiled.layout, metadata,
                           parts["initial_V"], parts["rest_reports"], compiled.neuron_names)


def simulate_batch(circuit: Circuit, theta=None, protocols=None, *, integrator="dopri5",
                   dt=None, rtol=None, atol=None, dt_out=None, record=None, initial=None,
                   v_bound: float = DEFAULT_V_BOUND, precision: str = "float64",
                   check_memory: bool = True, recorder=None, out=None) -> BatchResult:
    """Simulate many parameter sets under many protocols in one parallel call.

    Every (protocol, parameter set) pair is an independent run with its own adaptive
    step; nothing is recompiled when parameters or protocols change, and each run equals
    the corresponding :func:`simulate` call bit for bit.

    Parameters
    ----------
    circuit : Circuit
    theta : ndarray, shape (n_sets, n_params) or (n_params,), optional
        Parameter vectors laid out as ``compile_circuit(circuit).layout`` says (the circuit
        without ablation; ``layout.block("synapses.w")`` are the weights, ``layout.index(
        "neurons[AVA].g_L")`` one leak); default: the circuit's own parameters.
    protocols : str, Protocol or sequence of them, optional
        Default: every protocol of the circuit.  Ablations and lesions act by zeroing or
        scaling the affected weights in each run.
    integrator, dt, rtol, atol, dt_out, record, initial, v_bound
        As for :func:`simulate`; at rest, each run starts from the rest of its own
        parameters under its protocol's ablations, lesions and clamps.
    precision : {"float64", "float32"}
        ``"float32"`` computes and returns the runs in single precision: for dopri5 at
        rtol ≥ 1e-5, up to twice as many runs per second (twice the runs per SIMD
        register); results then differ from float64 runs by about the tolerance.
    check_memory : bool
        Refuse, before any work, a batch whose output would not fit in the memory
        available (:class:`~neurosim.errors.ResourceError`).
    recorder : HDF5BatchRecorder, optional
        Stream the traces to a file as the batch runs, a few thousand runs per kernel
        call (:mod:`neurosim.io.batch_file`), so that a batch larger than memory runs;
        the result's ``V`` is then read from the file when first used.
    out : ndarray, optional
        An array of shape (n_protocols, n_sets, samples, recorded neurons) and the
        batch's precision, C-contiguous, to write the traces into; the result's ``V`` is
        ``out``.  A loop of batches that reuses one array saves new memory's cost each
        call: the system zeroes fresh pages as they are first written, which can cost as
        much as the arithmetic of a fast batch (docs/performance.md).  Not with
        ``recorder``.

    Returns
    -------
    BatchResult

    Examples
    --------
    >>> import numpy as np
    >>> from neurosim.model import Circuit, Neuron, Protocol
    >>> c = Circuit("one", (Neuron("A", V0=-50.0),), protocols={"p": Protocol(10.0)})
    >>> theta = np.tile(compile_circuit(c).theta, (3, 1))
    >>> theta[:, 0] = [5.0, 10.0, 20.0]           # three capacitances (pF)
    >>> simulate_batch(c, theta).V.shape          # protocols, sets, samples, neurons
    (1, 3, 101, 1)
    """
    plan = BatchPlan(circuit, protocols, integrator=integrator, dt=dt, rtol=rtol, atol=atol,
                     dt_out=dt_out, record=record, initial=initial, v_bound=v_bound,
                     precision=precision)
    return plan.run(theta, check_memory=check_memory, recorder=recorder, out=out,
                    _stacklevel=3)
