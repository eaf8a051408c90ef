"""A run in progress: its kernel loaded, its state carried from one kernel call to the next.

:meth:`Integrator.start <neurosim.integrators.methods.Integrator.start>` returns one of
these; :meth:`advance` fills the next rows of the output grid, and after a failure
:meth:`failure_time`, :meth:`last_good_time` and :meth:`rows_filled` say where it failed.
"""

from __future__ import annotations

import math

import numpy as np

from neurosim.errors import CircuitError
from neurosim.integrators.loading import load_kernels
from neurosim.kernels import constants as kc
from neurosim.kernels.fixed import impose_clamps, run_fixed

#: the most output rows (or steps per row) a run can count exactly in float64 time
MAX_COUNT = 2 ** 53


def count(what: str, ratio: float, remedy: str) -> float:
    """``ratio`` if a run can count that many ``what``; else a one-line CircuitError."""
    if not ratio < MAX_COUNT:
        raise CircuitError(f"{what}: {ratio:.3g}, more than the 2^53 a run can count; {remedy}")
    return ratio


def output_rows(duration: float, dt_out: float) -> int:
    """The rows t = dt_out·k, k = 1..n_rows, of a run of ``duration`` ms."""
    ratio = count(f"dt_out = {dt_out:g} ms over {duration:g} ms makes too many samples",
                  duration / dt_out, "choose a larger dt_out")
    n_rows = int(math.floor(ratio + 1e-9))
    if n_rows < 1:
        raise CircuitError(f"dt_out = {dt_out} ms is longer than the run ({duration} ms)")
    return n_rows


class Stepper:
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


class FixedStepper(Stepper):
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


class AdaptiveStepper(Stepper):
    def prepare(self):
        self.kernel = self.method.kernel
        self.state = np.zeros(kc.N_SOLVER_STATE)
        self.state[kc.X_H] = self.method.dt if self.method.dt is not None else 0.0
        self.state[kc.X_ERR_OLD] = 1e-4
        self.carry = np.empty((kc.CARRY_ROWS, self.V.shape[0]))
        self.t_final = output_rows(self.drive.duration, self.dt_out) * self.dt_out
        self.rows_done = 0

    def kernel_args(self, out_V):
        rows = np.arange(self.rows_done + 1, self.rows_done + 1 + out_V.shape[0])
        return (self.V, rows * self.dt_out, self.t_final, self.drive.breakpoints,
                self.compiled.theta, self.compiled.net, self.drive.arrays,
                *self.method.controller.kernel_args(), self.record, self.v_bound, self.state,
                self.carry, self.stats, out_V)

    def advance(self, out_V):
        if not self.method.controller.adaptive:
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
