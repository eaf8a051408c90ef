"""Integrators: small objects that hold a method's options and drive its kernel.

The contract every integrator keeps (compare scipy's ``OdeSolver``):

1. ``name``, ``order`` and ``adaptive`` describe the method; options are given on
   construction and validated there.
2. :meth:`Integrator.plan` checks the options against a run (duration, output step)
   and returns how many output rows the run has.
3. :meth:`Integrator.start` returns a :class:`Stepper` positioned at t = 0.
4. :meth:`Stepper.advance` fills the next rows of the output grid and returns a kernel
   status; it never allocates per step and never calls back into Python.
5. Clamped neurons follow their command exactly, whatever the method.

``METHODS`` maps names to classes; ``simulate(integrator=...)`` takes a name or an instance.

Kernels are loaded from Numba's disk cache, or compiled there on a cache miss (the first
use after installing or changing neurosim), before the work they do starts
(:func:`load_kernels`): a timer started afterwards measures running only, and a
compilation is announced on the ``neurosim`` logger.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numba
import numpy as np
from numba.core import event
from numba.core.registry import CPUDispatcher

from neurosim.compile.layout import BLOCKS
from neurosim.errors import CircuitError
from neurosim.resources import require_memory
from neurosim.kernels import constants as kc
from neurosim.kernels.adaptive import run_dopri5, run_rosenbrock23
from neurosim.kernels.batch import run_batch
from neurosim.kernels.fixed import impose_clamps, run_fixed
from neurosim.kernels.lockstep import run_lockstep
from neurosim.kernels.sensitivity import run_dopri5_tangent, run_fixed_tangent
from neurosim.kernels.steady import (N_REPORT, R_ITERATIONS, R_MAX_REAL_EIG, R_METHOD,
                                     R_OTHER_RESTS, R_PRERUN_MS, R_RESIDUAL, STABLE_RESTS,
                                     find_rests, rest_sensitivity)

OK = kc.OK

logger = logging.getLogger("neurosim")


class _CompilationNotice(event.Listener):
    """Counts the seconds Numba spends compiling (it reports compilations, not loads from
    its cache) and logs one line when the first compilation starts."""

    def __init__(self):
        self.depth, self.seconds, self.started = 0, 0.0, None

    def on_start(self, event):
        if self.started is None:
            logger.info("compiling simulation kernels (first use only) …")
        if self.depth == 0:  # a kernel's callees compile inside it
            self.started = time.perf_counter()
        self.depth += 1

    def on_end(self, event):
        self.depth -= 1
        if self.depth == 0:
            self.seconds += time.perf_counter() - self.started


_compile_seconds = 0.0
_notice = None


def compile_seconds() -> float:
    """Seconds this process has spent compiling kernels so far: timers that may include a
    first call subtract the difference."""
    return _compile_seconds


@contextmanager
def one_compile_notice():
    """Announce the compilations of every :func:`load_kernels` call inside as one, "… compiled
    in N s" at the end (a run that compiles its rest kernel, rests, then compiles its time
    loop is one wait for its user, not two)."""
    global _notice, _compile_seconds
    if _notice is not None:
        yield
        return
    _notice = _CompilationNotice()
    try:
        with event.install_listener("numba:compile", _notice):
            yield
    finally:
        seconds, compiled, _notice = _notice.seconds, _notice.started is not None, None
        if compiled:
            _compile_seconds += seconds
            logger.info("… compiled in %.1f s", seconds)


def load_kernels(*calls) -> None:
    """Load every kernel of ``calls``, (kernel, args) pairs, for the types of its
    arguments, from memory or Numba's disk cache, or compile it (a cache miss).

    A compilation is announced on the ``neurosim`` logger at INFO, one line before it
    ("compiling simulation kernels (first use only) …") and its duration after (once for
    all the calls inside :func:`one_compile_notice`), and counted in
    :func:`compile_seconds`.  A kernel already in memory costs a type lookup per argument.
    """
    pending = []
    for kernel, args in calls:
        if isinstance(kernel, CPUDispatcher):  # not under NUMBA_DISABLE_JIT
            signature = tuple(kernel.typeof_pyval(a) for a in args)
            if signature not in kernel.overloads:
                pending.append((kernel, signature))
    if pending:
        with one_compile_notice():
            for kernel, signature in pending:
                kernel.compile(signature)


def call_kernel(kernel, *args):
    """``kernel(*args)``, loaded or compiled first by :func:`load_kernels`."""
    load_kernels((kernel, args))
    return kernel(*args)


def run_in_threads(kernel, n: int, args: tuple) -> None:
    """``kernel(first, last, *args)`` over items 0..n-1, cut into ranges (about four per
    thread, so that a thread finishing early takes another) on ``numba.get_num_threads()``
    threads; the kernels release the GIL and write disjoint rows of their outputs."""
    load_kernels((kernel, (0, n) + args))
    threads = min(numba.get_num_threads(), n)
    if threads <= 1:
        kernel(0, n, *args)
        return
    size = math.ceil(n / (4 * threads))
    with ThreadPoolExecutor(threads) as pool:
        ranges = [pool.submit(kernel, first, min(first + size, n), *args)
                  for first in range(0, n, size)]
        for done in ranges:
            done.result()

STATUS_MESSAGES = {
    kc.OK: "completed",
    kc.NON_FINITE: "non-finite V",
    kc.OUT_OF_BOUNDS: "|V| beyond the bound of {v_bound:g} mV",
    kc.STEP_UNDERFLOW: "step size underflow",
    kc.TOO_MANY_STEPS: "more than max_steps = {max_steps} steps",
}

#: the most neurons rosenbrock23 takes: its dense LU costs n³/3 operations a step
#: (2·10¹⁰ at 4,000 neurons, seconds per step)
MAX_DENSE_JACOBIAN = 4000

#: explicit methods diverge on a leak with time constant τ once dt exceeds this × τ
STABILITY_LIMIT = {"euler": 2.0, "rk4": 2.785}


def fastest_time_constant(compiled) -> tuple[float, str | None]:
    """(τ, neuron) of the smallest C / (g_L + Σ w·κ + Σ ĝ) over free neurons (ms).

    With every synapse fully open this bounds the stiffest decay the circuit can reach.
    A neuron with no conductance (g_L = 0 and no κ > 0 synapse or gap junction in, a
    Neural ODE unit) does not decay: τ = ∞, never chosen; (∞, None) if no neuron decays.
    """
    n, theta, block = compiled.n_neurons, compiled.theta, compiled.layout.block
    C, g_L = theta[block("neurons.C")], theta[block("neurons.g_L")]
    w, kappa = theta[block("synapses.w")], theta[block("synapses.kappa")]
    total = g_L + np.bincount(np.repeat(np.arange(n), np.diff(compiled.syn_ptr)), w * kappa,
                              minlength=n)
    gap = theta[block("gap_junctions.g")]
    total += np.bincount(np.repeat(np.arange(n), np.diff(compiled.gap_ptr)), gap[compiled.gap_idx],
                         minlength=n) if gap.size else 0.0
    tau = np.where(total > 0, C / np.where(total > 0, total, 1.0), np.inf)
    tau[~np.isnan(compiled.hold)] = np.inf
    i = int(np.argmin(tau))
    if not np.isfinite(tau[i]):
        return math.inf, None
    return float(tau[i]), compiled.neuron_names[i]

STATS_NAMES = ("steps", "rejected", "rhs_evaluations", "jacobians")


def failure_message(status: int, method, neuron_names, stats, t_fail: float,
                    v_bound: float, t_good: float | None = None) -> str:
    """The sentence for a failed kernel status: what, which neuron, when (in the step
    from ``t_good``, the last state that passed the checks, where known), what to try."""
    what = STATUS_MESSAGES[status].format(v_bound=v_bound,
                                          max_steps=getattr(method, "max_steps", 0))
    where = ""
    if status in (kc.NON_FINITE, kc.OUT_OF_BOUNDS):
        where = f" in neuron '{neuron_names[stats[kc.S_FAIL_NEURON]]}'"
    when = (f"in the step from t = {t_good:.6g} to {t_fail:.6g} ms"
            if t_good is not None and t_good < t_fail else f"at t = {t_fail:.6g} ms")
    return (f"{what}{where} {when} (step {int(stats[kc.S_STEPS])}) "
            f"with integrator '{method.name}'; {method.hint()}")


def describe_failure(status: int, stepper) -> str:
    """:func:`failure_message` for a single run, with the circuit's fastest time constant."""
    message = failure_message(status, stepper.method, stepper.compiled.neuron_names,
                              stepper.stats, stepper.failure_time(), stepper.v_bound,
                              stepper.last_good_time())
    tau, neuron = fastest_time_constant(stepper.compiled)
    if np.isfinite(tau):
        message += (f" (the fastest time constant is {tau:.3g} ms, neuron '{neuron}'"
                    f"{': stiff' if tau < 1e-2 else ''})")
    return message


def check_step_stability(method, compiled) -> str | None:
    """A warning sentence if a fixed explicit step exceeds the circuit's stability limit."""
    limit = STABILITY_LIMIT.get(method.name)
    if limit is None:
        return None
    tau, neuron = fastest_time_constant(compiled)
    if method.dt <= limit * tau:
        return None
    return (f"dt = {method.dt:g} ms is above the stability limit of '{method.name}' "
            f"({limit:g} x tau = {limit * tau:.3g} ms for neuron '{neuron}', tau >= {tau:.3g} ms "
            "with every synapse open); the run may diverge: use a smaller dt, "
            "integrator='exp_euler' or integrator='rosenbrock23'")


def chunk_rows(n_rows: int, n_record: int, max_values: int = 1 << 20) -> int:
    """Output rows per kernel call: about 1 % of a long run (for progress and streaming),
    at least 4096 (a call costs ~30 µs of dispatch), at most ``max_values`` values in
    flight.  Adaptive steps carry over between calls, so the cut changes no result.
    """
    return max(1, min(n_rows, max(4096, math.ceil(n_rows / 100)), max_values // max(1, n_record)))


PRECISIONS = ("float64", "float32")
# float32 resolves a potential of ~60 mV to 8e−6 mV; rtol 1e−5 leaves ~80 ulp of room
FLOAT32_MIN_RTOL = 1e-5


def check_precision(precision, method) -> None:
    """A clear error unless ``precision`` names a precision that ``method`` runs in."""
    if precision not in PRECISIONS:
        raise CircuitError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float64":
        return
    if not (isinstance(method, AdaptiveIntegrator) and method.code == kc.DOPRI5):
        raise CircuitError(f"precision='float32' is available for integrator='dopri5' batches, "
                           f"not '{method.name}'; use precision='float64'")
    if method.rtol < FLOAT32_MIN_RTOL:
        raise CircuitError(f"precision='float32' resolves potentials to about 1e-5 mV, too coarse "
                           f"for rtol={method.rtol:g}; use rtol >= {FLOAT32_MIN_RTOL:g} or "
                           "precision='float64'")


def run_items(method, compiled, batch, V, thetas, item_protocol, item_rows, dt_out, record,
              v_bound, precision="float64"):
    """Run every item of a batch in parallel; returns (status, stats, fail_t, out_V).

    ``out_V`` has shape (n_items, max(item_rows) + 1, len(record)) and the dtype named by
    ``precision``, which the caller has checked (:func:`check_precision`); rows after a
    failure or past an item's duration are NaN.
    """
    if compiled.schedule is not None:
        raise CircuitError("batched runs of a circuit with a parameter schedule are not available")
    n_items = V.shape[0]
    method.check_size(compiled.n_neurons, min(n_items, numba.get_num_threads()))
    out_V = np.full((n_items, int(item_rows.max()) + 1, record.shape[0]), np.nan, dtype=precision)
    status = np.zeros(n_items, dtype=np.int64)
    stats = np.zeros((n_items, kc.N_STATS), dtype=np.int64)
    fail_t = np.zeros(n_items)
    adaptive_family = isinstance(method, AdaptiveIntegrator)
    dt = (method.dt or 0.0) if adaptive_family else method.dt
    rows_per_call = chunk_rows(int(item_rows.max()), record.shape[0])
    net = compiled.net_for(thetas)
    tolerances = (getattr(method, "rtol", 1.0), getattr(method, "atol", 1.0),
                  getattr(method, "max_step", math.inf), getattr(method, "adaptive", False),
                  getattr(method, "max_steps", 1))
    if adaptive_family and method.code == kc.DOPRI5:
        groups, lanes = lockstep_plan(item_protocol, item_rows, compiled.n_neurons, out_V.itemsize)
        run_in_threads(run_lockstep, groups.size - 1,
                       (V, thetas, item_protocol, item_rows, groups, lanes, rows_per_call, dt,
                        dt_out, net, *batch.arrays, batch.breakpoints, batch.bp_ptr, *tolerances,
                        record, v_bound, status, stats, fail_t, out_V))
    else:
        run_in_threads(run_batch, n_items,
                       (adaptive_family, method.code, V, thetas, item_protocol, item_rows,
                        rows_per_call, dt, dt_out, net, *batch.arrays, batch.breakpoints,
                        batch.bp_ptr, *tolerances, record, v_bound, status, stats, fail_t, out_V))
    return status, stats, fail_t, out_V


# Lanes (runs in lockstep) per group: enough that each loop over lanes fills several
# SIMD registers (tap-withdrawal batch, one thread: 8 lanes 7,000–12,000 runs/s,
# 32 lanes 22,000–25,000, 64 lanes 25,000–27,000 at rtol 1e-6), while the lane state,
# about 16·n·L numbers, stays within half a MiB of cache.  Per 8 bytes of precision:
# float32 lanes take twice as many (128 lanes +7–10 % over 64; float64 at 128: −20 %).
MAX_LANES = 64
LANE_STATE_BYTES = 1 << 19


def lockstep_plan(item_protocol: np.ndarray, item_rows: np.ndarray, n_neurons: int,
                  itemsize: int = 8) -> tuple[np.ndarray, int]:
    """(group boundaries, lanes) for :func:`~neurosim.kernels.lockstep.run_lockstep`.

    Groups are runs of one protocol and length, about four per thread so that a thread
    finishing early takes another; lanes are as many as fit (see MAX_LANES) but no more
    than a group's items, which would only compute idle lanes.
    """
    threads = numba.get_num_threads()
    size = math.ceil(item_protocol.size / (4 * threads))
    cuts = [0]
    change = np.flatnonzero((np.diff(item_protocol) != 0) | (np.diff(item_rows) != 0)) + 1
    for start, end in zip([0, *change], [*change, item_protocol.size]):
        cuts.extend(range(start + size, end, size))
        cuts.append(end)
    groups = np.array(cuts, dtype=np.int64)
    per_register = 8 // itemsize
    fit = max(8, LANE_STATE_BYTES // (16 * itemsize * n_neurons) // 8 * 8)
    return groups, int(min(MAX_LANES * per_register, fit, np.diff(groups).max()))


class _Stepper:
    """Shared state of a run in progress, with its kernel loaded (or compiled) for the
    run's argument types; clamps are imposed on V at t = 0.

    Subclasses set up their own state in :meth:`prepare` and name their time loop
    ``kernel``, called with :meth:`kernel_args`."""

    kernel = None

    def __init__(self, method, compiled, drive, V0, record, v_bound, dt_out):
        self.method, self.compiled, self.drive = method, compiled, drive
        self.V, self.record, self.v_bound, self.dt_out = V0, record, v_bound, dt_out
        self.stats = np.zeros(kc.N_STATS, dtype=np.int64)
        self.prepare()
        work = np.empty((kc.WORK_ROWS, V0.shape[0]))
        no_rows = np.empty((0, record.shape[0]))
        load_kernels((impose_clamps, (0.0, self.V, drive.arrays, work)),
                     (self.kernel, self.kernel_args(no_rows)))
        impose_clamps(0.0, self.V, drive.arrays, work)

    def prepare(self) -> None:
        """Set up the method's own state (before the kernel is loaded)."""

    def kernel_args(self, out_V) -> tuple:
        """The arguments of the kernel call that fills ``out_V``."""
        raise NotImplementedError


def _positive_option(value, name: str) -> float:
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise CircuitError(f"`{name}` must be a positive number, got {value!r}")
    return number


class Integrator:
    """Base class; see the module docstring for the contract."""

    name = ""
    order = 0
    adaptive = False

    def options(self) -> dict:
        """Settings that reproduce this integrator (stored with every result)."""
        raise NotImplementedError

    def plan(self, duration: float, dt_out: float | None) -> tuple[float, int]:
        """(dt_out, n_rows) of the output grid t = dt_out·k, k = 1..n_rows."""
        raise NotImplementedError

    def start(self, compiled, drive, V0, record, v_bound, dt_out):
        """A stepper at t = 0 that writes ``V[record]`` every ``dt_out`` ms."""
        raise NotImplementedError

    def check_size(self, n_neurons: int, runs_at_once: int = 1) -> None:
        """ResourceError or CircuitError if the method cannot run a circuit this large
        (``runs_at_once`` runs in parallel); most methods need O(neurons) memory."""

    def hint(self) -> str:
        return "try integrator='rosenbrock23' (stiff) or smaller tolerances"

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


#: the most output rows (or steps per row) a run can count exactly in float64 time
MAX_COUNT = 2 ** 53


def _count(what: str, ratio: float, remedy: str) -> float:
    """``ratio`` if a run can count that many ``what``; else a one-line CircuitError."""
    if not ratio < MAX_COUNT:
        raise CircuitError(f"{what}: {ratio:.3g}, more than the 2^53 a run can count; {remedy}")
    return ratio


def _rows(duration: float, dt_out: float) -> int:
    ratio = _count(f"dt_out = {dt_out:g} ms over {duration:g} ms makes too many samples",
                   duration / dt_out, "choose a larger dt_out")
    n_rows = int(math.floor(ratio + 1e-9))
    if n_rows < 1:
        raise CircuitError(f"dt_out = {dt_out} ms is longer than the run ({duration} ms)")
    return n_rows


class FixedStepIntegrator(Integrator):
    """A method with a constant step ``dt`` (ms); output every ``dt_out / dt`` steps."""

    code = -1

    def __init__(self, dt: float = 0.05):
        self.dt = _positive_option(dt, "dt")

    def options(self) -> dict:
        return {"dt": self.dt}

    def hint(self) -> str:
        return f"try a smaller dt than {self.dt:g} ms or integrator='rosenbrock23'"

    def plan(self, duration, dt_out):
        dt_out = self.dt if dt_out is None else _positive_option(dt_out, "dt_out")
        stride = round(_count(f"dt = {self.dt:g} ms makes too many steps per output row",
                              dt_out / self.dt, "choose a larger dt"))
        if stride < 1 or abs(stride * self.dt - dt_out) > 1e-9 * dt_out:
            raise CircuitError(
                f"dt_out = {dt_out} ms must be a whole multiple of dt = {self.dt} ms "
                f"for the fixed-step integrator '{self.name}'")
        return dt_out, _rows(duration, dt_out)

    def start(self, compiled, drive, V0, record, v_bound, dt_out):
        return _FixedStepper(self, compiled, drive, V0, record, v_bound, dt_out)


class _FixedStepper(_Stepper):
    kernel = staticmethod(run_fixed)

    def prepare(self):
        self.stride = round(self.dt_out / self.method.dt)
        self.row = 0
        schedule = self.compiled.schedule
        if schedule is None:
            self.thetas, self.steps_per_theta = self.compiled.theta[None, :], 1
            self.net = self.compiled.net
        else:
            self.thetas = schedule.thetas
            self.net = self.compiled.net_for(schedule.thetas)
            self.steps_per_theta = round(schedule.interval / self.method.dt)
            if abs(self.steps_per_theta * self.method.dt - schedule.interval) > 1e-9 * schedule.interval:
                raise CircuitError(f"the schedule interval ({schedule.interval} ms) must be a whole "
                                   f"multiple of dt = {self.method.dt} ms")

    def kernel_args(self, out_V):
        m = self.method
        return (m.code, self.V, 0.0, self.row * self.stride, m.dt, out_V.shape[0], self.stride,
                self.thetas, self.steps_per_theta, self.net, self.drive.arrays,
                self.drive.breakpoints, self.record, self.v_bound, self.stats, out_V)

    def advance(self, out_V):
        status = self.kernel(*self.kernel_args(out_V))
        self.row += out_V.shape[0]
        return status

    def failure_time(self) -> float:
        return self.stats[kc.S_FAIL_STEP] * self.method.dt

    def last_good_time(self) -> float:
        """After a failure: the start of the grid step that failed."""
        return (self.stats[kc.S_FAIL_STEP] - 1) * self.method.dt

    def rows_filled(self, status: int, row: int, m: int) -> int:
        """Rows of the failed call from output row ``row`` (of ``m``) that hold states
        computed before the failure: those completed before the failing step."""
        failed_step = int(self.stats[kc.S_FAIL_STEP]) - 1  # 0-based index of the bad step
        return min(m, max(0, (failed_step - row * self.stride) // self.stride))


class Euler(FixedStepIntegrator):
    """Explicit (forward) Euler, order 1."""

    name, order, code = "euler", 1, kc.EULER


class RK4(FixedStepIntegrator):
    """The classic four-stage Runge–Kutta method, order 4."""

    name, order, code = "rk4", 4, kc.RK4


class ExponentialEuler(FixedStepIntegrator):
    """Exponential Euler on each neuron's linearisation, order 1.

    With the sigmoids frozen over the step, C dV/dt = N − G·V is solved exactly, so a
    passive neuron is integrated without error at any dt and stiff leaks stay stable.
    """

    name, order, code = "exp_euler", 1, kc.EXP_EULER


class LTC(FixedStepIntegrator):
    """The fused semi-implicit step of the LTC/NCP papers, order 1.

    V ← (C/Δt·V + g_L E_L + Σ wσE + Σ ĝ V_j + I) / (C/Δt + g_L + Σ wσκ + Σ ĝ).
    """

    name, order, code = "ltc", 1, kc.LTC


class AdaptiveIntegrator(Integrator):
    """An embedded pair with error control, PI step-size control and dense output.

    Parameters
    ----------
    rtol, atol : float
        Relative and absolute (mV) tolerance of the local error.
    dt : float, ms, optional
        First step; chosen automatically when omitted.  With ``adaptive=False`` the
        method takes steps of exactly ``dt`` (for convergence studies).
    max_step : float, ms
        Upper bound on the step (default: unbounded).
    """

    adaptive = True
    code = -1

    def __init__(self, rtol: float = 1e-6, atol: float = 1e-6, dt: float | None = None,
                 max_step: float = math.inf, adaptive: bool = True, max_steps: int = 10_000_000):
        self.rtol = _positive_option(rtol, "rtol")
        self.atol = _positive_option(atol, "atol")
        self.dt = None if dt is None else _positive_option(dt, "dt")
        self.max_step = float(max_step)
        if not self.max_step > 0:
            raise CircuitError(f"`max_step` must be > 0, got {max_step!r}")
        self.adaptive = bool(adaptive)
        if int(max_steps) != max_steps or max_steps < 1:
            raise CircuitError(f"`max_steps` must be a whole number >= 1, got {max_steps!r}")
        self.max_steps = int(max_steps)
        if not self.adaptive and self.dt is None:
            raise CircuitError(f"'{self.name}' with adaptive=False needs a step dt")

    def options(self) -> dict:
        return {"rtol": self.rtol, "atol": self.atol, "dt": self.dt, "max_step": self.max_step,
                "adaptive": self.adaptive, "max_steps": self.max_steps}

    def plan(self, duration, dt_out):
        dt_out = 0.1 if dt_out is None else _positive_option(dt_out, "dt_out")
        return dt_out, _rows(duration, dt_out)

    def start(self, compiled, drive, V0, record, v_bound, dt_out):
        if compiled.schedule is not None:
            raise CircuitError(f"a parameter schedule needs a fixed-step integrator "
                               f"(euler, rk4, exp_euler, ltc), not '{self.name}'")
        self.check_size(compiled.n_neurons)
        return _AdaptiveStepper(self, compiled, drive, V0, record, v_bound, dt_out)


class _AdaptiveStepper(_Stepper):
    def prepare(self):
        self.kernel = self.method.kernel
        self.state = np.zeros(kc.N_SOLVER_STATE)
        self.state[kc.X_H] = self.method.dt if self.method.dt is not None else 0.0
        self.state[kc.X_ERR_OLD] = 1e-4
        self.carry = np.empty((kc.CARRY_ROWS, self.V.shape[0]))
        self.t_final = _rows(self.drive.duration, self.dt_out) * self.dt_out
        self.rows_done = 0

    def kernel_args(self, out_V):
        m = self.method
        rows = np.arange(self.rows_done + 1, self.rows_done + 1 + out_V.shape[0])
        return (self.V, rows * self.dt_out, self.t_final, self.drive.breakpoints,
                self.compiled.theta, self.compiled.net, self.drive.arrays, m.rtol, m.atol,
                m.max_step, m.adaptive, m.max_steps, self.record, self.v_bound, self.state,
                self.carry, self.stats, out_V)

    def advance(self, out_V):
        if not self.method.adaptive:
            self.state[kc.X_H] = self.method.dt
        status = self.kernel(*self.kernel_args(out_V))
        self.rows_done += out_V.shape[0]
        return status

    def failure_time(self) -> float:
        return float(self.state[kc.X_FAIL_T])

    def rows_filled(self, status: int, row: int, m: int) -> int:
        """Rows of the failed call from output row ``row`` (of ``m``) up to the last
        accepted state that passed the checks (the same rows however the run is cut into
        calls: none from the interpolant of the step that failed)."""
        out_times = np.arange(row + 1, row + m + 1) * self.dt_out
        return int(np.searchsorted(out_times, self.last_good_time(), side="right"))

    def last_good_time(self) -> float:
        """After a failure: the last time whose state passed the checks."""
        return float(self.state[kc.X_T])


class Dopri5(AdaptiveIntegrator):
    """Dormand–Prince 5(4) with a 4th-order continuous extension (Hairer's DOPRI5)."""

    name, order, code = "dopri5", 5, kc.DOPRI5
    kernel = staticmethod(run_dopri5)


class Rosenbrock23(AdaptiveIntegrator):
    """The L-stable Rosenbrock 2(3) of Shampine & Reichelt (MATLAB's ode23s).

    Uses the analytic Jacobian; one LU factorisation per step.  For stiff circuits
    (tiny C, large conductances) where explicit methods need absurdly small steps.
    """

    name, order, code = "rosenbrock23", 2, kc.ROSENBROCK23
    kernel = staticmethod(run_rosenbrock23)

    def check_size(self, n_neurons, runs_at_once=1):
        if n_neurons > MAX_DENSE_JACOBIAN:
            raise CircuitError(
                f"'rosenbrock23' factors a dense {n_neurons:,} x {n_neurons:,} Jacobian every "
                f"step (about {n_neurons ** 3 / 3:.1e} operations); above "
                f"{MAX_DENSE_JACOBIAN:,} neurons use 'exp_euler' (stable on stiff circuits, "
                "no Jacobian) or 'dopri5'")
        require_memory(2 * 8 * n_neurons ** 2 * runs_at_once,
                       f"'rosenbrock23''s Jacobian and its factors ({n_neurons:,} neurons, "
                       f"{runs_at_once} runs at once)",
                       "use 'exp_euler' or 'dopri5', which need no Jacobian")

    def hint(self) -> str:
        # L-stable: stiffness does not make it fail, so a divergence is most likely the
        # model's own (a runaway of positive feedback), or a tolerance too loose to follow it
        return ("an L-stable method fails mostly where the model itself runs away: check "
                "for positive feedback or inputs (weights, reversal potentials, currents) "
                "driving V past the bound, or try smaller rtol/atol")


METHODS: dict[str, type[Integrator]] = {
    cls.name: cls for cls in (Euler, RK4, ExponentialEuler, LTC, Dopri5, Rosenbrock23)}


def make_integrator(integrator, *, dt=None, rtol=None, atol=None) -> Integrator:
    """An Integrator from a name (with options) or an instance (taken as is)."""
    if isinstance(integrator, Integrator):
        if dt is not None or rtol is not None or atol is not None:
            raise CircuitError("give dt/rtol/atol to the Integrator instance, not to simulate()")
        return integrator
    if integrator not in METHODS:
        raise CircuitError(f"unknown integrator {integrator!r}; allowed: {', '.join(METHODS)}")
    cls = METHODS[integrator]
    if issubclass(cls, FixedStepIntegrator):
        if rtol is not None or atol is not None:
            raise CircuitError(f"'{integrator}' is a fixed-step method: it takes dt, not rtol/atol")
        return cls() if dt is None else cls(dt=dt)
    options = {k: v for k, v in (("dt", dt), ("rtol", rtol), ("atol", atol)) if v is not None}
    return cls(**options)


#: integrators with forward sensitivities (the tangent of their discrete step)
SENSITIVITY_METHODS = ("euler", "rk4", "ltc", "dopri5")


def free_parameter_codes(compiled, indices) -> tuple:
    """(kind, index) of each θ position, and the edge tables the tangent kernels need."""
    n = compiled.n_neurons
    kinds, where = [], []
    for p in indices:
        block, position = compiled.layout.field_of(int(p))
        kinds.append(BLOCKS.index(block))
        where.append(position)
    syn_post = np.repeat(np.arange(n), np.diff(compiled.syn_ptr)).astype(np.int64)
    gaps = compiled.circuit.gap_junctions
    gap_a = np.array([compiled.index(g.a) for g in gaps], dtype=np.int64)
    gap_b = np.array([compiled.index(g.b) for g in gaps], dtype=np.int64)
    return (np.array(kinds, dtype=np.int64), np.array(where, dtype=np.int64), syn_post,
            gap_a, gap_b)


def integrate_with_sensitivity(method, compiled, drive, free, record, dt_out, n_rows,
                               v_bound, start=None):
    """(status, V_out, S_out, stats) of one run with ∂V/∂θ[free] at every output row.

    V_out has shape (n_rows + 1, len(record)); S_out (n_rows + 1, len(record), len(free)).
    ``start`` is (V, S), the initial state and its derivative (default: θ's V0, whose
    derivative is 1 for free V0 entries).  The run takes exactly the steps
    :func:`neurosim.simulate` takes.
    """
    if compiled.schedule is not None:
        raise CircuitError("gradients through a parameter schedule are not available; "
                           "fit such circuits with CMA-ES")
    if method.name not in SENSITIVITY_METHODS:
        raise CircuitError(f"gradients are available for {', '.join(SENSITIVITY_METHODS)}; "
                           f"got integrator '{method.name}'")
    free = np.asarray(free, dtype=np.int64)
    tangent = free_parameter_codes(compiled, free)
    n, m = compiled.n_neurons, free.shape[0]
    if start is not None:
        V, S = (np.array(a, dtype=np.float64, order="C", copy=True) for a in start)
    else:
        V = compiled.theta[compiled.layout.block("neurons.V0")].copy()
        S = np.zeros((n, m))
        for c, (kind, i) in enumerate(zip(tangent[0], tangent[1])):
            if BLOCKS[kind] == "neurons.V0":
                S[i, c] = 1.0
    clamped = drive.clamped
    call_kernel(impose_clamps, 0.0, V, drive.arrays, np.empty((kc.WORK_ROWS, n)))
    S[clamped] = 0.0
    out_V = np.full((n_rows + 1, record.shape[0]), np.nan)
    out_S = np.full((n_rows + 1, record.shape[0], m), np.nan)
    out_V[0] = V[record]
    out_S[0] = S[record]
    stats = np.zeros(kc.N_STATS, dtype=np.int64)
    if isinstance(method, FixedStepIntegrator):
        stride = round(dt_out / method.dt)
        status = call_kernel(run_fixed_tangent, method.code, V, S, 0.0, 0, method.dt, n_rows,
                             stride, compiled.theta, compiled.net, tangent, drive.arrays,
                             drive.breakpoints, record, v_bound, stats, out_V[1:], out_S[1:])
    else:
        state = np.zeros(kc.N_SOLVER_STATE)
        state[kc.X_H] = method.dt or 0.0
        state[kc.X_ERR_OLD] = 1e-4
        out_times = np.arange(1, n_rows + 1) * dt_out
        status = call_kernel(run_dopri5_tangent, V, S, out_times, drive.breakpoints,
                             compiled.theta, compiled.net, tangent, drive.arrays, method.rtol,
                             method.atol, method.max_step, method.adaptive, method.max_steps,
                             record, v_bound, state, stats, out_V[1:], out_S[1:])
    return status, out_V, out_S, stats


#: Newton stops when no free potential changes faster than this (mV/ms); with τ = 50 ms
#: that leaves the rest within ~5e-9 mV of the exact zero
REST_TOL = 1e-10


def stimulus_free(drive) -> tuple:
    """A drive's clamps (mask and holding potentials) without its stimulus rows."""
    return _no_stimuli() + (drive[7], drive[8])


def _no_stimuli() -> tuple:
    """The stimulus entries of a drive tuple with no stimulus rows."""
    return (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.bool_),
            np.empty((0, kc.N_STIM_PARAMS)), np.zeros(1, dtype=np.int64), np.empty(0),
            np.empty(0))


def find_rest_states(compiled, thetas, V_start, item_protocol, clamped, hold, tol=REST_TOL,
                     probe_all=False):
    """Stimulus-free steady states of many runs in one parallel call.

    Run b starts Newton (then, if needed, a pre-run) from ``V_start[b]`` with parameters
    ``thetas[b]`` and the clamps of protocol ``item_protocol[b]`` (rows of ``clamped``
    and ``hold``).  Returns (V, reports): the states used, and per run the method code,
    Newton iterations, final max |dV/dt| (mV/ms), the largest real part of the
    Jacobian's eigenvalues (1/ms), the pre-run's length (ms) and, with ``probe_all``, how
    many other stable rests Newton found from other starts (−1 without); see
    :mod:`neurosim.kernels.steady`.  The states do not depend on ``probe_all``.
    """
    thetas = np.ascontiguousarray(thetas, dtype=np.float64)
    V = np.array(V_start, dtype=np.float64, order="C", copy=True)
    reports = np.zeros((V.shape[0], N_REPORT))
    run_in_threads(find_rests, V.shape[0],
                   (V, thetas, np.ascontiguousarray(item_protocol, dtype=np.int64),
                    compiled.net_for(thetas), _no_stimuli(),
                    np.ascontiguousarray(clamped, dtype=np.bool_),
                    np.ascontiguousarray(hold, dtype=np.float64), float(tol), bool(probe_all),
                    reports))
    return V, reports


def find_rest_state(compiled, drive, tol=REST_TOL, probe_all=False):
    """:func:`find_rest_states` of one run: ``compiled``'s parameters under the clamps of
    ``drive`` (a CompiledDrive), from θ's V0.  Returns (V, report)."""
    V0 = compiled.layout.block("neurons.V0")
    V, reports = find_rest_states(compiled, compiled.theta[None, :],
                                  compiled.theta[None, V0], np.zeros(1, dtype=np.int64),
                                  drive.clamped[None, :], drive.arrays[8][None, :], tol,
                                  probe_all)
    return V[0], reports[0]


def rest_tangent(compiled, drive, V, free) -> np.ndarray:
    """∂V*/∂θ[free] (n, len(free)) at the stable rest V of ``compiled`` under the clamps
    of ``drive``; zero where the Jacobian is singular."""
    S = np.zeros((compiled.n_neurons, len(free)))
    if not call_kernel(rest_sensitivity, np.ascontiguousarray(V, dtype=np.float64),
                       compiled.theta, compiled.net, free_parameter_codes(compiled, free),
                       stimulus_free(drive), S):
        S[:] = 0.0
    return S
