"""Fixed-step time loop: explicit Euler, classic RK4, exponential Euler, fused LTC step.

One loop (:func:`fixed_loop`) serves runs with and without sensitivities: it advances
an extended state X, V alone or V with S = ∂V/∂θ_free (see
:mod:`neurosim.kernels.sensitivity`), compiled once for each.  RK4's coefficients are
those of :mod:`neurosim.kernels.tableaux`."""

import math

import numpy as np
from numba import types
from numba.extending import overload

from neurosim.kernels.constants import (EULER, EXP_EULER, NON_FINITE, OK, OUT_OF_BOUNDS, RK4,
                                        S_FAIL_NEURON, S_FAIL_STEP, S_RHS, S_STEPS, WORK_ROWS)
from neurosim.kernels.jit import borrowing_njit, kernel_njit
from neurosim.kernels.network import apply_drive, count_up_to, split_at
from neurosim.kernels.sensitivity import (evaluate, extended_state, ltc_tangent_step,
                                          split_extended_state, zero_clamped_tangent)
from neurosim.kernels.tableaux import RK4_A, RK4_B_SCALE, RK4_B_SCALED, RK4_C, RK4_STAGES


@borrowing_njit
def check_state(V, v_bound, stats, step):
    """OK, or the failure code with the first offending neuron written into ``stats``."""
    for i in range(V.shape[0]):
        if not math.isfinite(V[i]):
            stats[S_FAIL_NEURON] = i
            stats[S_FAIL_STEP] = step
            return NON_FINITE
        if abs(V[i]) > v_bound:
            stats[S_FAIL_NEURON] = i
            stats[S_FAIL_STEP] = step
            return OUT_OF_BOUNDS
    return OK


@borrowing_njit(called_from_python=True)
def impose_clamps(t, V, drive, work):
    """Write the clamp command at t into the clamped entries of V."""
    clamped = drive[7]
    if not clamped.any():  # spares evaluating every stimulus after each fixed step
        return
    V_in, I = work[0], work[1]
    apply_drive(t, False, V, drive, V_in, I)
    for i in range(V.shape[0]):
        if clamped[i]:
            V[i] = V_in[i]


@borrowing_njit
def linear_step(method, t, h, V, theta, net, drive, work):
    """One exp_euler or ltc step of size h, both built on C dV/dt = N − G V with σ frozen
    at t (and the input's value from t on)."""
    split_at(t, False, V, theta, net, drive, work)
    G, N, clamped = work[2], work[3], drive[7]
    C = theta[0:V.shape[0]]
    for i in range(V.shape[0]):
        if clamped[i]:
            continue
        if method == EXP_EULER:
            # Exact for frozen G, N (test_exp_euler_exact_on_passive); -expm1(-x)/x → 1 as
            # x → 0 keeps g_L = 0 (Neural ODE) units exact Euler steps without 0/0.
            x = G[i] * h / C[i]
            phi = 1.0 if x < 1e-12 else -math.expm1(-x) / x
            V[i] += h * (N[i] - G[i] * V[i]) / C[i] * phi
        else:
            V[i] = (C[i] / h * V[i] + N[i]) / (C[i] / h + G[i])


def advance_linear(method, t, h, X, theta, net, tangent, drive, work, dwork):
    """:func:`linear_step` on V, or the ltc step carrying S (only ltc declares tangents)."""
    raise NotImplementedError("compiled only")  # pragma: no cover


# a call, as sensitivity.evaluate is (see there why not inlined)
@overload(advance_linear, jit_options={"_nrt": False})
def _advance_linear(method, t, h, X, theta, net, tangent, drive, work, dwork):
    if isinstance(tangent, types.NoneType):
        def plain(method, t, h, X, theta, net, tangent, drive, work, dwork):
            linear_step(method, t, h, X, theta, net, drive, work)
        return plain

    def with_tangent(method, t, h, X, theta, net, tangent, drive, work, dwork):
        ltc_tangent_step(t, h, X, theta, net, tangent, drive, work, dwork)
    return with_tangent


@borrowing_njit
def rk4_step(t, t_end, h, X, theta, net, tangent, drive, work, dwork, k, tmp):
    """One classic RK4 step of the extended state X from t to t_end = t + h: the last
    stage takes the input's limit from below at t_end, where a breakpoint may lie."""
    size = X.shape[0]
    evaluate(t, False, X, theta, net, tangent, drive, work, dwork, k[0])
    t_mid = t + RK4_C[1] * h  # stages 1 and 2 (c = 1/2); stage 3 at t_end (c = 1)
    # a sub-step of an ulp or two may round its midpoint onto its end
    mid_left = t_mid == t_end
    for i in range(size):
        tmp[i] = X[i] + RK4_A[1, 0] * h * k[0, i]
    evaluate(t_mid, mid_left, tmp, theta, net, tangent, drive, work, dwork, k[1])
    for i in range(size):
        tmp[i] = X[i] + RK4_A[2, 1] * h * k[1, i]
    evaluate(t_mid, mid_left, tmp, theta, net, tangent, drive, work, dwork, k[2])
    for i in range(size):
        tmp[i] = X[i] + RK4_A[3, 2] * h * k[2, i]
    evaluate(t_end, True, tmp, theta, net, tangent, drive, work, dwork, k[3])
    for i in range(size):
        X[i] += h / RK4_B_SCALE * (RK4_B_SCALED[0] * k[0, i] + RK4_B_SCALED[1] * k[1, i]
                                   + RK4_B_SCALED[2] * k[2, i] + RK4_B_SCALED[3] * k[3, i])


@borrowing_njit
def substep_end(t_sub, t_grid, t_next, dt, breakpoints, stop):
    """(end, h, stop) of the (sub)step from t_sub in the grid step [t_grid, t_next].

    It ends on the first breakpoint strictly inside (an input jump: a step across one
    would drop to first order), else on t_next; ``stop`` indexes the first breakpoint
    after t_sub and comes back past the one landed on.  An undivided step has h = dt
    exactly, a piece the difference of its ends."""
    while stop < breakpoints.shape[0] and breakpoints[stop] <= t_sub:
        stop += 1
    end = t_next
    if stop < breakpoints.shape[0] and breakpoints[stop] < t_next:
        end = breakpoints[stop]
        stop += 1
    h = dt if (t_sub == t_grid and end == t_next) else end - t_sub
    return end, h, stop


@borrowing_njit
def record_row(X, n, record, r, out_V, out_S):
    """out_V[r] = V[record] and out_S[r] = S[record] (S: the m = out_S.shape[2] columns
    of X past V; none in a run without sensitivities)."""
    m = out_S.shape[2]
    for c in range(record.shape[0]):
        i = record[c]
        out_V[r, c] = X[i]
        for q in range(m):
            out_S[r, c, q] = X[n + i * m + q]


@kernel_njit(inline="always")
def fixed_loop(method, X, t0, step0, dt, n_rows, stride, thetas, steps_per_theta, net, tangent,
               drive, breakpoints, record, v_bound, stats, out_V, out_S):
    """Advance the extended state X (V, then S if ``tangent`` is not None) by
    ``n_rows * stride`` grid steps of size dt, keeping every ``stride``-th state.

    Grid time is ``t0 + (step0 + s)·dt`` (never accumulated, so long runs do not drift).
    A grid step with input ``breakpoints`` (sorted) strictly inside is taken as sub-steps
    that end on each of them, so piecewise-smooth inputs keep the method's order; every
    (sub)step reads the input from its start on (the limit from above) and rk4's last
    stage the limit from below at its end, so an edge on a grid point is right too.
    Clamps are imposed at the end of each (sub)step.  Grid step s uses parameters
    ``thetas[min(s // steps_per_theta, last)]``: one row for a constant circuit, one row
    per interval for a parameter schedule (ResNet weights).  Writes
    ``out_V[r] = V[record]`` (and ``out_S[r] = S[record]``) after each ``stride`` grid
    steps; returns a status code.

    ``stats[S_STEPS]`` counts (sub)steps taken, ``stats[S_RHS]`` their evaluations;
    on failure ``stats[S_FAIL_STEP]`` is the 1-based index of the grid step in which V
    went bad (sub-steps included in their grid step).
    """
    last = thetas.shape[0] - 1
    clamped = drive[7]
    n = clamped.shape[0]
    size = X.shape[0]
    V = X[:n]
    work = np.empty((WORK_ROWS, n))
    dwork = np.empty((3, n, out_S.shape[2]))
    k = np.empty((RK4_STAGES, size))
    tmp = np.empty(size)
    rhs_per_step = RK4_STAGES if method == RK4 else 1
    stop = count_up_to(breakpoints, t0 + step0 * dt)
    for r in range(n_rows):
        for s in range(stride):
            step = step0 + r * stride + s
            t_grid = t0 + step * dt
            t_next = t0 + (step + 1) * dt
            theta = thetas[min(step // steps_per_theta, last)]
            t = t_grid
            more = True
            while more:
                end, h, stop = substep_end(t, t_grid, t_next, dt, breakpoints, stop)
                if method == EULER:
                    evaluate(t, False, X, theta, net, tangent, drive, work, dwork, k[0])
                    for i in range(size):
                        X[i] += h * k[0, i]
                elif method == RK4:
                    rk4_step(t, end, h, X, theta, net, tangent, drive, work, dwork, k, tmp)
                else:
                    advance_linear(method, t, h, X, theta, net, tangent, drive, work, dwork)
                impose_clamps(end, V, drive, work)
                zero_clamped_tangent(X, tangent, clamped)
                stats[S_STEPS] += 1
                stats[S_RHS] += rhs_per_step
                status = check_state(V, v_bound, stats, step + 1)
                if status != OK:
                    return status
                more = end != t_next
                t = end
        record_row(X, n, record, r, out_V, out_S)
    return OK


@kernel_njit(nogil=True)  # releases the GIL: a recorder thread writes meanwhile
def run_fixed(method, V, t0, step0, dt, n_rows, stride, thetas, steps_per_theta, net, drive,
              breakpoints, record, v_bound, stats, out_V):
    """:func:`fixed_loop` for V alone."""
    return fixed_loop(method, V, t0, step0, dt, n_rows, stride, thetas, steps_per_theta, net,
                      None, drive, breakpoints, record, v_bound, stats, out_V,
                      np.empty((0, 0, 0)))


@kernel_njit
def run_fixed_tangent(method, V, S, t0, step0, dt, n_rows, stride, theta, net, tangent, drive,
                      breakpoints, record, v_bound, stats, out_V, out_S):
    """:func:`fixed_loop` for euler, rk4 and ltc carrying S = ∂V/∂θ_free (V and S are left
    at the final state); writes out_S[r] = S[record] beside out_V[r].  The steps, stage
    times and one-sided limits are those of :func:`run_fixed`."""
    X = extended_state(V, S)
    thetas = np.empty((1, theta.shape[0]))
    thetas[0] = theta
    status = fixed_loop(method, X, t0, step0, dt, n_rows, stride, thetas, 1 << 62, net, tangent,
                        drive, breakpoints, record, v_bound, stats, out_V, out_S)
    split_extended_state(X, V, S)
    return status
