"""Many runs at once: a batch's items on threads, dopri5's in lockstep lanes; how long a
kernel call is; which precisions a batch can run in.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from neurosim.errors import CircuitError
from neurosim.integrators.controller import NO_STEP_CONTROL
from neurosim.integrators.loading import run_in_threads
from neurosim.integrators.methods import FLOAT32_METHODS
from neurosim.kernels import constants as kc
from neurosim.kernels.batch import run_batch
from neurosim.kernels.lockstep import run_lockstep


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
    if not method.float32_lanes:
        allowed = " or ".join(f"integrator='{name}'" for name in FLOAT32_METHODS)
        raise CircuitError(f"precision='float32' is available for {allowed} batches, "
                           f"not '{method.name}'; use precision='float64'")
    if method.controller.rtol < FLOAT32_MIN_RTOL:
        raise CircuitError(f"precision='float32' resolves potentials to about 1e-5 mV, too coarse "
                           f"for rtol={method.controller.rtol:g}; use rtol >= "
                           f"{FLOAT32_MIN_RTOL:g} or precision='float64'")


def run_items(method, compiled, batch, V, thetas, item_protocol, item_rows, dt_out, record,
              v_bound, precision="float64", out_V=None, on_done=None):
    """Run every item of a batch in parallel; returns (status, stats, fail_t, out_V), with
    fail_t (items, 2) the time a failed item's failure was found and its last good time.

    ``out_V`` has shape (n_items, max(item_rows) + 1, len(record)) and the dtype named by
    ``precision``, which the caller has checked (:func:`check_precision`); rows after a
    failure or past an item's duration are NaN.  Given, it is filled in place (a buffer
    reused from call to call: new memory costs its page faults each time).  A method with
    ``float32_lanes`` runs in lockstep lanes (:mod:`neurosim.kernels.lockstep`), the
    others item by item.

    ``on_done(first, last, status, stats, fail_t, out_V)``, if given, is called on this
    thread as items first..last-1 finish (their rows of the four arrays are then final),
    in the order they finish.
    """
    if compiled.schedule is not None:
        raise CircuitError("batched runs of a circuit with a parameter schedule are not available")
    n_items = V.shape[0]
    method.check_size(compiled.n_neurons, min(n_items, numba.get_num_threads()))
    shape = (n_items, int(item_rows.max()) + 1, record.shape[0])
    if out_V is None:
        # the lanes write every row of their runs (NaN where there is no sample), so their
        # output is not filled first: a pass over it, single-threaded, and its page faults
        out_V = (np.empty(shape, dtype=precision) if method.float32_lanes
                 else np.full(shape, np.nan, dtype=precision))
    else:
        if (out_V.shape != shape or out_V.dtype != np.dtype(precision)
                or not out_V.flags.c_contiguous or not out_V.flags.writeable):
            raise ValueError(f"out_V must be a writeable C-contiguous {precision} array of "
                             f"shape {shape}, got {out_V.dtype} {out_V.shape}")
        if not method.float32_lanes:
            out_V.fill(np.nan)
    status = np.zeros(n_items, dtype=np.int64)
    stats = np.zeros((n_items, kc.N_STATS), dtype=np.int64)
    fail_t = np.zeros((n_items, 2))  # a failure's time, and the last good time before it
    adaptive_family = method.controller is not None
    dt = (method.dt or 0.0) if adaptive_family else method.dt
    rows_per_call = chunk_rows(int(item_rows.max()), record.shape[0])
    net = compiled.net_for(thetas)
    control = method.controller.kernel_args() if adaptive_family else NO_STEP_CONTROL
    if method.float32_lanes:
        groups, lanes = lockstep_plan(item_protocol, item_rows, compiled.n_neurons, out_V.itemsize)
        kernel, ranges_of, args = run_lockstep, groups, (
            V, thetas, item_protocol, item_rows, groups, lanes, rows_per_call, dt, dt_out, net,
            *batch.arrays, batch.breakpoints, batch.bp_ptr, *control, record, v_bound, status,
            stats, fail_t, out_V)
    else:
        kernel, ranges_of, args = run_batch, np.arange(n_items + 1), (
            adaptive_family, method.code, V, thetas, item_protocol, item_rows, rows_per_call, dt,
            dt_out, net, *batch.arrays, batch.breakpoints, batch.bp_ptr, *control, record,
            v_bound, status, stats, fail_t, out_V)

    def finished(first, last):  # a range of the kernel's units (lockstep groups or items)
        on_done(int(ranges_of[first]), int(ranges_of[last]), status, stats, fail_t, out_V)
    run_in_threads(kernel, ranges_of.size - 1, args, finished if on_done is not None else None)
    return status, stats, fail_t, out_V


# Lanes (runs in lockstep) per group: enough that each loop over lanes fills several
# SIMD registers (tap-withdrawal batch, one thread: 8 lanes 7,000–12,000 runs/s,
# 32 lanes 22,000–25,000, 64 lanes 25,000–27,000 at rtol 1e-6), while the lane state,
# about 16·n·L numbers, stays within half a MiB of cache.  Per 8 bytes of precision:
# float32 lanes take twice as many (128 lanes +7–10 % over 64; float64 at 128: −20 %).
MAX_LANES = 64
LANE_STATE_BYTES = 1 << 19


def lockstep_lanes(n_neurons: int, itemsize: int = 8) -> int:
    """Lanes of a lockstep group of a circuit of ``n_neurons`` (see MAX_LANES): as many
    as fill the SIMD registers of ``itemsize``-byte numbers while the lane state fits."""
    per_register = 8 // itemsize
    fit = max(8, LANE_STATE_BYTES // (16 * itemsize * n_neurons) // 8 * 8)
    return min(MAX_LANES * per_register, fit)


def lockstep_unit(n_neurons: int, itemsize: int = 8) -> int:
    """Runs a call of the lockstep kernel takes at full width: a group of
    :func:`lockstep_lanes` runs, four groups per thread (see :func:`lockstep_plan`);
    calls of a multiple of it leave no lanes idle at the end of their groups."""
    return 4 * numba.get_num_threads() * lockstep_lanes(n_neurons, itemsize)


def lockstep_plan(item_protocol: np.ndarray, item_rows: np.ndarray, n_neurons: int,
                  itemsize: int = 8) -> tuple[np.ndarray, int]:
    """(group boundaries, lanes) for :func:`~neurosim.kernels.lockstep.run_lockstep`.

    Groups are runs of one protocol and length, about four per thread so that a thread
    finishing early takes another; lanes are as many as fit (:func:`lockstep_lanes`) but
    no more than a group's items, which would only compute idle lanes.
    """
    threads = numba.get_num_threads()
    size = math.ceil(item_protocol.size / (4 * threads))
    cuts = [0]
    change = np.flatnonzero((np.diff(item_protocol) != 0) | (np.diff(item_rows) != 0)) + 1
    for start, end in zip([0, *change], [*change, item_protocol.size]):
        cuts.extend(range(start + size, end, size))
        cuts.append(end)
    groups = np.array(cuts, dtype=np.int64)
    return groups, int(min(lockstep_lanes(n_neurons, itemsize), np.diff(groups).max()))
