"""Many independent runs: one item per (parameter set, protocol).

The kernels here run a range of items and release the GIL, so that
:mod:`neurosim.integrators` runs ranges on as many threads as Numba may use.  Plain
threads rather than ``parallel=True``: a parallel kernel compiled its whole call tree
again for the gufunc (10 s of a cold start for the rests alone), and Numba's cache is
fragile with it.
"""

import numpy as np

from neurosim.kernels.adaptive import run_rosenbrock23
from neurosim.kernels.constants import (CARRY_ROWS, N_SOLVER_STATE, S_FAIL_STEP, WORK_ROWS, X_ERR_OLD,
                                        X_FAIL_T, X_H, X_T)
from neurosim.kernels.fixed import impose_clamps, run_fixed
from neurosim.kernels.jit import kernel_njit


@kernel_njit
def protocol_drive(p, kind, target, is_voltage, par, stim_ptr, tab_ptr, tab_t, tab_v, clamped,
                   hold):
    """The ``drive`` tuple of protocol p, cut from a batch's stacked stimulus arrays."""
    s0 = stim_ptr[p]
    s1 = stim_ptr[p + 1]
    return (kind[s0:s1], target[s0:s1], is_voltage[s0:s1], par[s0:s1], tab_ptr[s0:s1 + 1],
            tab_t, tab_v, clamped[p], hold[p])


@kernel_njit(nogil=True)
def run_batch(first, last, is_adaptive, method, V, thetas, item_protocol, item_rows, chunk_rows,
              dt, dt_out, net, kind, target, is_voltage, par, stim_ptr, tab_ptr, tab_t, tab_v,
              clamped, hold, breakpoints, bp_ptr, rtol, atol, max_step, adaptive, max_steps,
              record, v_bound, status, stats, fail_t, out_V):
    """Run items b = first..last-1, each with parameters thetas[b] under protocol
    item_protocol[b]: with rosenbrock23 if ``is_adaptive`` (dopri5 batches run in
    lockstep, :mod:`~neurosim.kernels.lockstep`), else with the fixed-step ``method``.

    Protocol p owns stimulus rows stim_ptr[p]:stim_ptr[p+1], clamp mask clamped[p],
    holding potentials hold[p] and breakpoints bp_ptr[p]:bp_ptr[p+1].  Row 0 of
    out_V[b] is the initial state; rows 1..item_rows[b] follow every dt_out.  Each item
    runs the kernel a single run executes, so batched and one-by-one results agree bit
    for bit (test_batch_equals_one_by_one).  A failed item's fail_t[b] holds the time
    the failure was found and the last time whose state passed the checks.
    """
    n = V.shape[1]
    for b in range(first, last):
        p = item_protocol[b]
        drive = protocol_drive(p, kind, target, is_voltage, par, stim_ptr, tab_ptr, tab_t, tab_v,
                               clamped, hold)
        Vb = V[b]
        impose_clamps(0.0, Vb, drive, np.empty((WORK_ROWS, n)))
        for c in range(record.shape[0]):
            out_V[b, 0, c] = Vb[record[c]]
        rows = item_rows[b]
        state = np.zeros(N_SOLVER_STATE)
        state[X_H] = dt if is_adaptive else 0.0
        state[X_ERR_OLD] = 1e-4
        carry = np.empty((CARRY_ROWS, n))
        stride = 1 if is_adaptive else int(round(dt_out / dt))
        tstops = breakpoints[bp_ptr[p]:bp_ptr[p + 1]]
        done = 0
        while done < rows and status[b] == 0:
            m = min(chunk_rows, rows - done)
            out = out_V[b, 1 + done:1 + done + m]
            if is_adaptive:
                out_times = np.arange(done + 1, done + m + 1) * dt_out
                status[b] = run_rosenbrock23(Vb, out_times, rows * dt_out, tstops, thetas[b], net,
                                             drive, rtol, atol, max_step, adaptive, max_steps,
                                             record, v_bound, state, carry, stats[b], out)
                fail_t[b, 0] = state[X_FAIL_T]
                fail_t[b, 1] = state[X_T]
                if status[b] != 0:  # as a single run: the rows up to its last good state
                    for r in range(m):
                        if out_times[r] > state[X_T]:
                            for c in range(record.shape[0]):
                                out[r, c] = np.nan
            else:
                status[b] = run_fixed(method, Vb, 0.0, done * stride, dt, m, stride,
                                      thetas[b:b + 1], 1, net, drive, tstops, record, v_bound,
                                      stats[b], out)
                fail_t[b, 0] = stats[b][S_FAIL_STEP] * dt
                fail_t[b, 1] = (stats[b][S_FAIL_STEP] - 1) * dt
            done += m
