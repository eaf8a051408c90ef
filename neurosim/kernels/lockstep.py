"""Dormand–Prince runs in lockstep: L runs of one protocol share every stage evaluation.

A batch of small circuits spends its time in the right-hand side, and one run's RHS is a
chain of short loops over 11 neurons.  Here the state of L runs sits in (n, L) arrays
with the runs innermost, so each loop over neurons does L runs' work in SIMD registers,
sigmoids included (:func:`lane_sigmoid`).  Each run (a *lane*)
keeps its own t, step size, error control, breakpoints and dense output: every lane
takes a step at once, then accepts or rejects it on its own, and a lane whose run ends
takes the next run of its group.  Lanes compute in the precision of the output array:
float64, or float32 for twice the runs per register (``simulate_batch(...,
precision="float32")``).

Per lane the arithmetic is the single-run kernel's, operation for operation (the lane
loops are the scalar loops with a lane index, dense output included; step control,
checks and first steps call the scalar functions on the lane's column), so a float64
lane's result equals :func:`neurosim.kernels.adaptive.run_adaptive` bit for bit,
including its statistics: a single run's kernel carries its last step and f over from
one call to the next, so however a run is cut into calls it takes the lanes' steps
(test_batch_equals_one_by_one_bit_for_bit).  The output array is allocated without a
fill: each lane writes every row of its run once, NaN past a failure or its end.
"""

import math

import numpy as np
from numba import types
from numba.extending import overload

from neurosim.kernels.adaptive import (accepted_step_size, after_rejection,
                                       count_accepted_step, dense_horner, dense_polynomial,
                                       initial_step, lands_on_breakpoint, scaled_error_square,
                                       step_target)
from neurosim.kernels.constants import (N_SOLVER_STATE, PULSE, REPEAT_ROW, S_REJECTED,
                                        S_RHS, S_STEPS, SPLIT_ROWS, STEP, STEP_UNDERFLOW,
                                        TOO_MANY_STEPS, WORK_ROWS, X_FAIL_T)
from neurosim.kernels.batch import protocol_drive
from neurosim.kernels.fixed import impose_clamps
from neurosim.kernels.jit import borrowing_njit, kernel_njit
from neurosim.kernels.network import apply_drive, count_up_to, rhs, sigmoid, sigmoid32, waveform
from neurosim.kernels.tableaux import DP_A, DP_C, DP_E, DP_END_STAGE, DP_ERROR_ORDER, DP_STAGES

# Numba's default error model tests every division for zero, which stops vectorisation;
# divisors here are capacitances and error scales, validated > 0 before any run.
lane_njit = borrowing_njit(error_model="numpy")



def lane_sigmoid(z):
    """σ(z) in the precision of z: :func:`~neurosim.kernels.network.sigmoid32` for
    float32 lanes, :func:`~neurosim.kernels.network.sigmoid` otherwise."""
    raise NotImplementedError("compiled only")  # pragma: no cover


@overload(lane_sigmoid)
def _lane_sigmoid(z):
    if z == types.float32:
        return lambda z: sigmoid32(z)
    return lambda z: sigmoid(z)


@lane_njit
def apply_drive_lanes(t, left, V, drive, V_in, I):
    """:func:`~neurosim.kernels.network.apply_drive` for every lane: t, left of shape (L,),
    V, V_in, I of shape (n, L)."""
    kind, target, is_voltage, par, tab_ptr, tab_t, tab_v, clamped, hold = drive
    n, lanes = V.shape
    for i in range(n):
        for lane in range(lanes):
            V_in[i, lane] = hold[i] if clamped[i] else V[i, lane]
            I[i, lane] = 0.0
    for r in range(kind.shape[0]):
        row = V_in[target[r]] if is_voltage[r] else I[target[r]]
        source = r  # a repeated row is computed again from its stimulus's first row
        while kind[source] == REPEAT_ROW:
            source -= 1
        # the common kinds passed as constants: inlined, the shape's branches on ``kind``
        # fold away and the loop over lanes vectorises
        if kind[source] == PULSE:
            add_waveform(PULSE, par, source, t, left, tab_t, tab_v, tab_ptr, row)
        elif kind[source] == STEP:
            add_waveform(STEP, par, source, t, left, tab_t, tab_v, tab_ptr, row)
        else:
            add_waveform(kind[source], par, source, t, left, tab_t, tab_v, tab_ptr, row)


@borrowing_njit(error_model="numpy", per_constant=True)
def add_waveform(kind, par, r, t, left, tab_t, tab_v, tab_ptr, row):
    for lane in range(row.shape[0]):
        row[lane] += waveform(kind, par, r, t[lane], left[lane], tab_t, tab_v, tab_ptr[r],
                              tab_ptr[r + 1])


@lane_njit
def conductance_split_lanes(V_in, I, thetas, net, clamped, G, N, sig):
    """:func:`~neurosim.kernels.network.conductance_split` for every lane; ``thetas`` is
    (n_params, L), one parameter vector per column."""
    syn_ptr, syn_pre, gap_ptr, gap_nbr, gap_idx, pre_rep, own_sigmoid, _, unit_kappa = net
    n, lanes = V_in.shape
    s = syn_pre.shape[0]
    o_gl, o_el, o_w = n, 2 * n, 4 * n
    o_e, o_mu, o_nu, o_k, o_g = o_w + s, o_w + 2 * s, o_w + 3 * s, o_w + 4 * s, o_w + 5 * s
    for j in range(n):
        r = pre_rep[j]
        if r >= 0:
            for lane in range(lanes):
                sig[j, lane] = lane_sigmoid(thetas[o_nu + r, lane]
                                       * (V_in[j, lane] - thetas[o_mu + r, lane]))
    for i in range(n):
        if clamped[i]:
            G[i, :] = 0.0
            N[i, :] = 0.0
            continue
        for lane in range(lanes):
            G[i, lane] = thetas[o_gl + i, lane]
            N[i, lane] = thetas[o_gl + i, lane] * thetas[o_el + i, lane] + I[i, lane]
        kappa_is_one = unit_kappa[i]
        for k in range(syn_ptr[i], syn_ptr[i + 1]):
            j = syn_pre[k]
            if own_sigmoid[k]:
                for lane in range(lanes):
                    ws = thetas[o_w + k, lane] * lane_sigmoid(
                        thetas[o_nu + k, lane] * (V_in[j, lane] - thetas[o_mu + k, lane]))
                    G[i, lane] += ws * thetas[o_k + k, lane]
                    N[i, lane] += ws * thetas[o_e + k, lane]
            elif kappa_is_one:  # exact: ws·1 = ws
                for lane in range(lanes):
                    ws = thetas[o_w + k, lane] * sig[j, lane]
                    G[i, lane] += ws
                    N[i, lane] += ws * thetas[o_e + k, lane]
            else:
                for lane in range(lanes):
                    ws = thetas[o_w + k, lane] * sig[j, lane]
                    G[i, lane] += ws * thetas[o_k + k, lane]
                    N[i, lane] += ws * thetas[o_e + k, lane]
        for q in range(gap_ptr[i], gap_ptr[i + 1]):
            c = o_g + gap_idx[q]
            nbr = gap_nbr[q]
            for lane in range(lanes):
                g = thetas[c, lane]
                G[i, lane] += g
                N[i, lane] += g * V_in[nbr, lane]


@lane_njit
def rhs_lanes(t, left, V, thetas, net, drive, work, dV):
    """:func:`~neurosim.kernels.network.rhs` for every lane; ``work`` is (SPLIT_ROWS, n, L).
    Rows 0…n−1 of ``thetas`` hold 1/C, not C (see run_group)."""
    apply_drive_lanes(t, left, V, drive, work[0], work[1])
    conductance_split_lanes(work[0], work[1], thetas, net, drive[7], work[2], work[3], work[4])
    V_in, G, N, clamped = work[0], work[2], work[3], drive[7]
    n, lanes = V.shape
    for i in range(n):
        if clamped[i]:
            dV[i, :] = 0.0
            continue
        for lane in range(lanes):
            dV[i, lane] = (N[i, lane] - G[i, lane] * V_in[i, lane]) * thetas[i, lane]


@lane_njit
def dopri5_step_lanes(t, h, V, K, landing, thetas, net, drive, work, t_stage, left, V_new, err,
                      typed):
    """:func:`~neurosim.kernels.adaptive.dopri5_step` for every lane (h, landing per lane).

    ``typed`` = (A, E, h_typed): the tableau's A and E, and room for h, in the precision of
    the lanes, so that float32 lanes combine stages in float32 (times stay float64).  The
    stage sums accumulate in ``err``, one coefficient at a time over all (i, lane), in the
    order of :func:`~neurosim.kernels.adaptive.stage_point`: loops that vectorise
    (summing over the stages innermost cost float32 lanes a third of their step)."""
    A, E, h_typed = typed
    n, lanes = V.shape
    for lane in range(lanes):
        h_typed[lane] = h[lane]
    zero = A[0, 0]  # the first stage has no coefficients: a zero in the lanes' precision
    for s in range(1, DP_STAGES):
        err[:, :] = zero
        for q in range(s):
            a = A[s, q]
            for i in range(n):
                for lane in range(lanes):
                    err[i, lane] += a * K[q, i, lane]
        for i in range(n):
            for lane in range(lanes):
                V_new[i, lane] = V[i, lane] + h_typed[lane] * err[i, lane]
        for lane in range(lanes):
            t_stage[lane] = t[lane] + DP_C[s] * h[lane]
            left[lane] = landing[lane] and s >= DP_END_STAGE
        rhs_lanes(t_stage, left, V_new, thetas, net, drive, work, K[s])
    err[:, :] = zero
    for s in range(DP_STAGES):
        e = E[s]
        for i in range(n):
            for lane in range(lanes):
                err[i, lane] += e * K[s, i, lane]
    for i in range(n):
        for lane in range(lanes):
            err[i, lane] *= h_typed[lane]


@lane_njit
def error_norms(err, V, V_new, clamped, rtol, atol, out):
    """:func:`~neurosim.kernels.adaptive.error_norm` of every lane into ``out``."""
    n, lanes = V.shape
    out[:] = 0.0
    count = 0
    for i in range(n):
        if clamped[i]:
            continue
        for lane in range(lanes):
            out[lane] += scaled_error_square(err[i, lane], V[i, lane], V_new[i, lane], rtol, atol)
        count += 1
    for lane in range(lanes):
        out[lane] = 0.0 if count == 0 else math.sqrt(out[lane] / count)


@lane_njit
def within_bounds(V, v_bound, out):
    """Whether every potential of a lane is finite and within ±v_bound (check_state's test)."""
    out[:] = True
    for i in range(V.shape[0]):
        for lane in range(V.shape[1]):
            x = V[i, lane]
            out[lane] &= math.isfinite(x) & (abs(x) <= v_bound)


#: rows of one lane evaluated together by dense_output_lanes
STAGED_ROWS = 64


@lane_njit
def dense_output_lanes(item, t, h, V, K, out_times, dense_next, dense_end, record, clamped,
                       any_clamped, commands, poly, fracs, stage, out_V):
    """Dense output of every lane's accepted step onto its due rows.

    Lane ``lane`` writes its rows dense_next[lane]…dense_end[lane]−1 (of the output grid
    ``out_times``) into out_V[item[lane], 1 + row] by the step of size h[lane] from
    (t[lane], V[:, lane]) with stages K[:, :, lane].  Per lane the arithmetic is
    :func:`~neurosim.kernels.adaptive.write_outputs`' (the polynomial of
    :func:`~neurosim.kernels.adaptive.dense_polynomial`, in float64 whatever the lanes'
    precision), so batches still equal single runs bit for bit.  The polynomials of all
    lanes are computed at once (over lanes, which vectorises) into ``poly`` (4, rec, L);
    a lane's rows are then evaluated recorded neuron by neuron over up to STAGED_ROWS
    rows at a time (``fracs``, ``stage`` (rec, STAGED_ROWS): a loop over rows
    vectorises, one over 11 neurons hardly) and copied to their rows of the output.  A
    clamped neuron records its command, the same for every lane at a row: ``commands``
    (rows, rec), computed once per group."""
    lanes = V.shape[1]
    n_rec = record.shape[0]
    for c in range(n_rec):
        i = record[c]
        for lane in range(lanes):
            poly[0, c, lane], poly[1, c, lane], poly[2, c, lane], poly[3, c, lane] = \
                dense_polynomial(h[lane], K[0, i, lane], K[2, i, lane], K[3, i, lane],
                                 K[4, i, lane], K[5, i, lane], K[6, i, lane])
    for lane in range(lanes):
        first, end = dense_next[lane], dense_end[lane]
        if first >= end:
            continue
        b = item[lane]
        t0, h0 = t[lane], h[lane]
        while first < end:
            r = min(end - first, fracs.shape[0])
            for k in range(r):
                fracs[k] = (out_times[first + k] - t0) / h0
            for c in range(n_rec):
                y0 = V[record[c], lane]
                c0, c1, c2, c3 = poly[0, c, lane], poly[1, c, lane], poly[2, c, lane], \
                    poly[3, c, lane]
                for k in range(r):
                    stage[c, k] = dense_horner(y0, fracs[k], c0, c1, c2, c3)
            for k in range(r):
                out = out_V[b, 1 + first + k]
                for c in range(n_rec):
                    out[c] = stage[c, k]
                if any_clamped:  # a clamped neuron records its command, not the interpolant
                    for c in range(n_rec):
                        if clamped[record[c]]:
                            out[c] = commands[first + k, c]
            first += r
        dense_next[lane] = end


@lane_njit
def pad_rows(out_V, b, first):
    """Rows first… of run b hold no sample (past a failure or its protocol's end): NaN.
    out_V is allocated without a fill, so each of its rows is written once."""
    for r in range(first, out_V.shape[1]):
        for c in range(out_V.shape[2]):
            out_V[b, r, c] = np.nan


@kernel_njit(inline="always")
def run_group(first, last, V0, thetas, rows, chunk_rows, dt, dt_out, net, drive, tstops, rtol,
              atol, max_step, adaptive, max_steps, record, v_bound, lanes, status, stats, fail_t,
              out_V):
    """Items first..last-1 (one protocol, ``rows`` output rows each) on ``lanes`` lanes.
    (``chunk_rows`` is unused: how a single run is cut into calls changes nothing.)"""
    n, n_par = V0.shape[1], thetas.shape[1]
    clamped = drive[7]
    any_clamped = clamped.any()
    t_final = rows * dt_out
    out_times = np.arange(1, rows + 1) * dt_out
    # lane state, in the precision of out_V; an idle lane (item −1) computes on stale
    # numbers nobody reads
    real = out_V.dtype
    V = np.zeros((n, lanes), real)
    V_new = np.zeros((n, lanes), real)
    err = np.zeros((n, lanes), real)
    K = np.zeros((DP_STAGES, n, lanes), real)
    work = np.zeros((SPLIT_ROWS, n, lanes), real)
    lane_theta = np.ones((n_par, lanes), real)
    typed = (DP_A.astype(real), DP_E.astype(real), np.zeros(lanes, real))
    item = np.full(lanes, -1)
    t = np.zeros(lanes)
    h = np.zeros(lanes)
    h_try = np.zeros(lanes)
    t_target = np.zeros(lanes)
    landing = np.zeros(lanes, dtype=np.bool_)
    err_old = np.zeros(lanes)
    norms = np.zeros(lanes)
    in_bounds = np.zeros(lanes, dtype=np.bool_)
    moves = np.zeros(lanes, dtype=np.bool_)
    takes_last_stage = np.zeros(lanes, dtype=np.bool_)
    t_stage = np.zeros(lanes)
    left = np.zeros(lanes, dtype=np.bool_)
    next_out = np.zeros(lanes, dtype=np.int64)
    stop = np.zeros(lanes, dtype=np.int64)
    state = np.zeros((lanes, N_SOLVER_STATE))
    # the dense output of all lanes (dense_output_lanes): rows due, in float64
    dense_end = np.zeros(lanes, dtype=np.int64)
    step_first = np.zeros(lanes, dtype=np.int64)  # the first row of each lane's step
    poly = np.zeros((4, record.shape[0], lanes))
    fracs = np.zeros(STAGED_ROWS)
    stage = np.zeros((record.shape[0], STAGED_ROWS))
    # one lane's column, for the scalar functions
    col = np.empty(n)
    col_new = np.empty(n)
    col_K = np.empty((DP_STAGES, n))
    scratch = np.empty((WORK_ROWS + 1, n))
    # what clamped neurons record at each row: write_outputs' apply_drive, once per group
    commands = np.zeros((rows if any_clamped else 0, record.shape[0]))
    for row in range(commands.shape[0]):
        apply_drive(out_times[row], False, col, drive, scratch[0], scratch[1])
        for c in range(record.shape[0]):
            commands[row, c] = scratch[0, record[c]]
    pending = first
    while True:
        for lane in range(lanes):
            while item[lane] < 0 and pending < last:
                b = pending
                pending += 1
                # what run_batch and run_adaptive do before the first step
                for i in range(n):
                    col[i] = V0[b, i]
                impose_clamps(0.0, col, drive, scratch)
                for c in range(record.shape[0]):
                    out_V[b, 0, c] = col[record[c]]
                if rows == 0:
                    pad_rows(out_V, b, 1)
                    continue
                theta = thetas[b]
                rhs(0.0, False, col, theta, net, drive, scratch, col_K[0])
                stats[b, S_RHS] += 1
                h0 = dt
                if h0 <= 0.0:
                    h0 = initial_step(0.0, col, col_K[0], DP_ERROR_ORDER, rtol, atol, theta, net, drive,
                                      scratch, clamped, scratch[WORK_ROWS], col_new)
                    stats[b, S_RHS] += 1
                for i in range(n):
                    V[i, lane] = col[i]
                    K[0, i, lane] = col_K[0, i]
                for i in range(n):  # C's only use in the lanes: dV = (N − G·V)·(1/C)
                    lane_theta[i, lane] = 1.0 / theta[i]
                for q in range(n, n_par):
                    lane_theta[q, lane] = theta[q]
                item[lane] = b
                t[lane] = 0.0
                h[lane] = h0
                err_old[lane] = 1e-4
                next_out[lane] = 0
                stop[lane] = count_up_to(tstops, 0.0)
                state[lane, :] = 0.0
        busy = 0
        for lane in range(lanes):
            b = item[lane]
            h_try[lane] = 0.0
            landing[lane] = False
            if b < 0:
                continue
            if stats[b, S_STEPS] + stats[b, S_REJECTED] >= max_steps:
                status[b] = TOO_MANY_STEPS
                fail_t[b, 0] = t[lane]
                fail_t[b, 1] = t[lane]
                pad_rows(out_V, b, 1 + next_out[lane])
                item[lane] = -1
                continue
            t_target[lane], h_try[lane], landing[lane] = step_target(t[lane], t_final, h[lane],
                                                                     max_step, tstops, stop[lane])
            busy += 1
        if busy == 0:
            if pending < last:
                continue
            return
        dopri5_step_lanes(t, h_try, V, K, landing, lane_theta, net, drive, work, t_stage, left,
                          V_new, err, typed)
        error_norms(err, V, V_new, clamped, rtol, atol, norms)
        # count_accepted_step's check for all lanes at once: a lane's column is strided,
        # so the scalar check runs only on the lanes that fail it (for its report)
        within_bounds(V_new, v_bound, in_bounds)
        # which steps are accepted, and the rows their dense output fills: every output
        # time up to the step's end (a single run's kernel interpolates a step that
        # crosses the end of its call in the next call: the same rows, the same numbers)
        rows_due = 0
        for lane in range(lanes):
            moves[lane] = False
            takes_last_stage[lane] = False
            dense_end[lane] = next_out[lane]
            step_first[lane] = next_out[lane]
            b = item[lane]
            if b < 0:
                continue
            stats[b, S_RHS] += DP_STAGES - 1  # first same as last
            err_now = norms[lane]
            if math.isnan(err_now):
                err_now = math.inf
            if not (err_now <= 1.0 or not adaptive):
                h[lane] = after_rejection(err_now, h_try[lane], DP_ERROR_ORDER, t[lane], stats[b], state[lane])
                if h[lane] == 0.0:
                    status[b] = STEP_UNDERFLOW
                    fail_t[b, 0] = state[lane, X_FAIL_T]
                    fail_t[b, 1] = t[lane]
                    pad_rows(out_V, b, 1 + next_out[lane])
                    item[lane] = -1
                continue
            norms[lane] = err_now
            moves[lane] = True
            t_new = t_target[lane] if landing[lane] else t[lane] + h_try[lane]
            t_stage[lane] = t_new
            end = next_out[lane]
            while end < rows and out_times[end] <= t_new:
                end += 1
            dense_end[lane] = end
            rows_due += end - next_out[lane]
        # written before the state is checked, as run_adaptive does
        if rows_due > 0:
            dense_output_lanes(item, t, h_try, V, K, out_times, next_out, dense_end, record,
                               clamped, any_clamped, commands, poly, fracs, stage, out_V)
        for lane in range(lanes):
            if not moves[lane]:
                continue
            b = item[lane]
            t_new = t_stage[lane]
            err_now = norms[lane]
            if in_bounds[lane]:
                stats[b, S_STEPS] += 1  # what count_accepted_step does for a valid state
            else:
                for i in range(n):
                    col_new[i] = V_new[i, lane]
                status[b] = count_accepted_step(col_new, v_bound, stats[b], state[lane], t_new)
                fail_t[b, 0] = state[lane, X_FAIL_T]
                fail_t[b, 1] = t[lane]
                # a single run keeps the rows up to the step's start, its last good state,
                # not those the failed step's interpolant wrote
                pad_rows(out_V, b, 1 + step_first[lane])
                item[lane] = -1
                moves[lane] = False
                continue
            t[lane] = t_new
            if lands_on_breakpoint(landing[lane], t_new, t_target[lane], tstops, stop[lane]):
                stop[lane] += 1
                for i in range(n):
                    col_new[i] = V_new[i, lane]
                rhs(t_new, False, col_new, thetas[b], net, drive, scratch, col_K[0])
                stats[b, S_RHS] += 1
                for i in range(n):
                    K[0, i, lane] = col_K[0, i]
            else:
                takes_last_stage[lane] = True
            if adaptive:
                h[lane], err_old[lane] = accepted_step_size(err_now, err_old[lane], h[lane],
                                                            h_try[lane], landing[lane],
                                                            DP_ERROR_ORDER)
            if next_out[lane] == rows:
                pad_rows(out_V, b, 1 + rows)  # a shorter protocol than the batch's longest
                item[lane] = -1
        # the accepted states, and f at them (first same as last), for all lanes at once
        for i in range(n):
            for lane in range(lanes):
                if moves[lane]:
                    V[i, lane] = V_new[i, lane]
                if takes_last_stage[lane]:
                    K[0, i, lane] = K[DP_STAGES - 1, i, lane]


@kernel_njit(nogil=True)
def run_lockstep(first, last, V0, thetas, item_protocol, item_rows, group_ptr, lanes, chunk_rows,
                 dt, dt_out, net, kind, target, is_voltage, par, stim_ptr, tab_ptr, tab_t, tab_v,
                 clamped, hold, breakpoints, bp_ptr, rtol, atol, max_step, adaptive, max_steps,
                 record, v_bound, status, stats, fail_t, out_V):
    """:func:`neurosim.kernels.batch.run_batch` for dopri5, items in lockstep.

    Group g holds items group_ptr[g]..group_ptr[g+1]-1, all of one protocol and length;
    groups g = first..last-1 run one after the other, each on ``lanes`` lanes."""
    for g in range(first, last):
        item0 = group_ptr[g]
        p = item_protocol[item0]
        drive = protocol_drive(p, kind, target, is_voltage, par, stim_ptr, tab_ptr, tab_t, tab_v,
                               clamped, hold)
        run_group(item0, group_ptr[g + 1], V0, thetas, item_rows[item0], chunk_rows, dt, dt_out,
                  net, drive, breakpoints[bp_ptr[p]:bp_ptr[p + 1]], rtol, atol, max_step,
                  adaptive, max_steps, record, v_bound, lanes, status, stats, fail_t, out_V)
