"""Adaptive time loop: Dormand–Prince 5(4) and the stiff Rosenbrock 2(3) of Shampine.

Both methods share one loop that owns step acceptance, step-size control, landing on
stimulus breakpoints and dense output onto the requested output grid.  The methods only
propose a step and its error vector (:func:`take_step`).  The loop is compiled once per
method, from its entry point :func:`run_dopri5` or :func:`run_rosenbrock23`, with only
that method's step in it, and once more for dopri5 carrying sensitivities
(:func:`run_dopri5_tangent`): the loop advances an extended state X, V alone or V with
S = ∂V/∂θ_free (:mod:`neurosim.kernels.sensitivity`), whose steps are chosen from V's
error alone.  The steps' coefficients are those of :mod:`neurosim.kernels.tableaux`.
"""

import math

import numpy as np
from numba import types
from numba.extending import overload

from numba.core.errors import TypingError

from neurosim.kernels.constants import (CARRY_ROWS, DOPRI5, MAX_FACTOR, MIN_FACTOR, OK,
                                        PI_BETA, ROSENBROCK23, S_JACOBIANS, S_REJECTED, S_RHS,
                                        S_STEPS, SAFETY, STEP_UNDERFLOW, TOO_MANY_STEPS,
                                        WORK_ROWS, X_ERR_OLD, X_F_CARRIED, X_FAIL_T, X_H,
                                        X_STEP_H, X_STEP_T, X_T)
from neurosim.kernels.fixed import check_state
from neurosim.kernels.jit import borrowing_njit, kernel_njit
from neurosim.kernels.network import apply_drive, copy_into, count_up_to, jacobian, rhs
from neurosim.kernels.sensitivity import evaluate, extended_state, split_extended_state
from neurosim.kernels.tableaux import (DP_A, DP_C, DP_E, DP_END_STAGE, DP_ERROR_ORDER, DP_P,
                                       DP_STAGES, ROS_A21, ROS_C2, ROS_E31, ROS_E32,
                                       ROS_ERROR_ORDER, ROS_ERROR_SCALE, ROS_ERROR_SCALED,
                                       ROS_GAMMA)


@borrowing_njit
def lu_factor(A, piv):
    """In-place LU with partial pivoting; returns False if A is singular."""
    n = A.shape[0]
    for c in range(n):
        p = c
        big = abs(A[c, c])
        for r in range(c + 1, n):
            if abs(A[r, c]) > big:
                big = abs(A[r, c])
                p = r
        piv[c] = p
        if big == 0.0:
            return False
        if p != c:
            for q in range(n):
                A[c, q], A[p, q] = A[p, q], A[c, q]
        inv = 1.0 / A[c, c]
        for r in range(c + 1, n):
            A[r, c] *= inv
            f = A[r, c]
            if f != 0.0:
                for q in range(c + 1, n):
                    A[r, q] -= f * A[c, q]
    return True


@borrowing_njit
def lu_solve(LU, piv, b):
    """Solve LU x = b in place of b."""
    n = LU.shape[0]
    for c in range(n):
        p = piv[c]
        if p != c:
            b[c], b[p] = b[p], b[c]
    for r in range(n):
        acc = b[r]
        for q in range(r):
            acc -= LU[r, q] * b[q]
        b[r] = acc
    for r in range(n - 1, -1, -1):
        acc = b[r]
        for q in range(r + 1, n):
            acc -= LU[r, q] * b[q]
        b[r] = acc / LU[r, r]


@borrowing_njit
def scaled_error_square(err, V, V_new, rtol, atol):
    """(err / (atol + rtol·max(|V|, |V_new|)))², one neuron's term of :func:`error_norm`."""
    return (err / (atol + rtol * max(abs(V), abs(V_new)))) ** 2


@borrowing_njit
def error_norm(err, V, V_new, clamped, rtol, atol):
    """RMS of err / (atol + rtol·max(|V|, |V_new|)) over the free neurons."""
    total = 0.0
    count = 0
    for i in range(V.shape[0]):
        if clamped[i]:
            continue
        total += scaled_error_square(err[i], V[i], V_new[i], rtol, atol)
        count += 1
    return 0.0 if count == 0 else math.sqrt(total / count)


@kernel_njit
def initial_step(t, V, f0, error_order, rtol, atol, theta, net, drive, work, clamped, tmp, f1):
    """Hairer, Nørsett & Wanner I, II.4: a first step from the scale of y, f and f'."""
    zero = np.zeros_like(V)
    d0 = error_norm(V, zero, V, clamped, rtol, atol)
    d1 = error_norm(f0, zero, V, clamped, rtol, atol)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    # |f| so large that its norm overflows (C near 1e-200): the step at the float
    # resolution of t, which step control rejects into a step-size underflow
    floor = 16.0 * np.finfo(np.float64).eps * max(1.0, abs(t))
    if not h0 > 0.0:
        h0 = floor
    for i in range(V.shape[0]):
        tmp[i] = V[i] + h0 * f0[i]
    rhs(t + h0, False, tmp, theta, net, drive, work, f1)
    for i in range(V.shape[0]):
        f1[i] -= f0[i]
    d2 = error_norm(f1, zero, V, clamped, rtol, atol) / h0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (error_order + 1))
    h = min(100.0 * h0, h1)
    return h if h > 0.0 else floor


@borrowing_njit
def accepted_step_size(err_now, err_old, h, h_try, landing, error_order):
    """(next h, error memory) after an accepted step: PI control (Hairer I, II.4)."""
    factor = SAFETY * max(err_now, 1e-10) ** (-1.0 / (error_order + 1))
    factor *= err_old ** PI_BETA
    # a landing step shortened below h says nothing about h itself: keep h
    if not (landing and h_try < h):
        h = h_try * min(MAX_FACTOR, max(MIN_FACTOR, factor))
    return h, max(err_now, 1e-4)


@borrowing_njit
def rejected_step_size(err_now, h_try, error_order):
    """The retry's h after a rejected step (shrink at most 5x)."""
    factor = SAFETY * err_now ** (-1.0 / (error_order + 1)) if math.isfinite(err_now) \
        else MIN_FACTOR
    return h_try * max(MIN_FACTOR, min(1.0, factor))


@borrowing_njit
def step_underflows(h, t):
    return h < 16.0 * np.finfo(np.float64).eps * max(1.0, abs(t))


@borrowing_njit
def mark_failure(state, t):
    state[X_T] = t
    state[X_FAIL_T] = t


@borrowing_njit
def after_rejection(err_now, h_try, error_order, t, stats, state):
    """Count a rejected step and return the size to try next, or 0.0 if that size
    underflows (the failure time is then in ``state``)."""
    stats[S_REJECTED] += 1
    h = rejected_step_size(err_now, h_try, error_order)
    if step_underflows(h, t):
        mark_failure(state, t)
        return 0.0
    return h


@borrowing_njit
def count_accepted_step(V, v_bound, stats, state, t):
    """Count an accepted step ending at t with state V and check V; on failure the time
    goes into ``state``.  Returns the status."""
    stats[S_STEPS] += 1
    status = check_state(V, v_bound, stats, stats[S_STEPS])
    if status != OK:
        state[X_FAIL_T] = t
    return status


@borrowing_njit
def lands_on_breakpoint(landing, t, t_target, tstops, stop):
    """Whether the step just taken ended on breakpoint ``stop`` (where the input jumps)."""
    return landing and t == t_target and stop < tstops.shape[0] and t_target == tstops[stop]


@borrowing_njit
def save_solver_state(state, t, h, err_old):
    state[X_T] = t
    state[X_H] = h
    state[X_ERR_OLD] = err_old


@borrowing_njit
def step_target(t, t_end, h, max_step, tstops, stop):
    """(t_target, h_try, landing): the next step never crosses a breakpoint or t_end, and a
    step that would end within 5 % of one lands on it exactly."""
    t_target = t_end
    if stop < tstops.shape[0] and tstops[stop] < t_end:
        t_target = tstops[stop]
    h_try = min(h, max_step)
    landing = t + 1.05 * h_try >= t_target
    if landing:
        h_try = t_target - t
    return t_target, h_try, landing


@borrowing_njit
def stage_point(X, K, s, h, out):
    """out = X + h·Σ_{q<s} A[s, q]·K[q] (flat arrays: states, or flattened sensitivities)."""
    for i in range(X.shape[0]):
        acc = 0.0
        for q in range(s):
            acc += DP_A[s, q] * K[q, i]
        out[i] = X[i] + h * acc


@borrowing_njit
def dopri5_error(K, h, err):
    """The embedded 4th-order error estimate h·Σ E_s·K_s."""
    for i in range(err.shape[0]):
        acc = 0.0
        for s in range(DP_STAGES):
            acc += DP_E[s] * K[s, i]
        err[i] = h * acc


@borrowing_njit(inline="always")
def dopri5_step(t, h, X, K, left, theta, net, tangent, drive, work, dwork, X_new, err):
    """One Dormand–Prince step from (t, X) with K[0] = f(t, X); fills K[1:], X_new and
    V's error ``err``.  Each stage's point is built in X_new: the last one is the step's
    5th-order result (first same as last)."""
    for s in range(1, DP_STAGES):
        stage_point(X, K, s, h, X_new)
        # the last two stages sit at t + h: take the input's limit from below on landing
        evaluate(t + DP_C[s] * h, left and s >= DP_END_STAGE, X_new, theta, net, tangent, drive,
                 work, dwork, K[s])
    dopri5_error(K, h, err)


@borrowing_njit
def rosenbrock_step(t, h, V, K, left, J, W, piv, has_inputs, theta, net, drive, work,
                    V_new, err):
    """One ode23s step; K[0] = f(t, V) on entry, J the Jacobian at (t, V).

    K[1], K[2] hold the stages k1, k2 (for dense output), K[3] = f(t + h, V_new).
    Returns False if I − h·d·J is singular.
    """
    n = V.shape[0]
    F0, k1, k2, F2 = K[0], K[1], K[2], K[3]
    F1, T, tmp = K[4], K[5], work[WORK_ROWS]
    hd = h * ROS_GAMMA
    for r in range(n):
        for c in range(n):
            W[r, c] = -hd * J[r, c]
        W[r, r] += 1.0
    if not lu_factor(W, piv):
        return False
    # ∂f/∂t by a forward difference (of at most half the step: a difference step, not a
    # coefficient); the segment holds no input jump (breakpoints are landed on)
    if has_inputs:
        delta = min(0.5 * h, 1.5e-8 * (1.0 + abs(t)))
        rhs(t + delta, False, V, theta, net, drive, work, T)
        for i in range(n):
            T[i] = (T[i] - F0[i]) / delta
    else:
        T[:] = 0.0
    for i in range(n):
        k1[i] = F0[i] + hd * T[i]
    lu_solve(W, piv, k1)
    for i in range(n):
        tmp[i] = V[i] + ROS_A21 * h * k1[i]
    rhs(t + ROS_C2 * h, False, tmp, theta, net, drive, work, F1)
    for i in range(n):
        k2[i] = F1[i] - k1[i]
    lu_solve(W, piv, k2)
    for i in range(n):
        k2[i] += k1[i]
        V_new[i] = V[i] + h * k2[i]
    rhs(t + h, left, V_new, theta, net, drive, work, F2)
    for i in range(n):
        err[i] = F2[i] - ROS_E32 * (k2[i] - F1[i]) - ROS_E31 * (k1[i] - F0[i]) + hd * T[i]
    lu_solve(W, piv, err)
    for i in range(n):
        err[i] = h / ROS_ERROR_SCALE * (ROS_ERROR_SCALED[0] * k1[i] + ROS_ERROR_SCALED[1] * k2[i]
                                        + ROS_ERROR_SCALED[2] * err[i])
    return True


@borrowing_njit(inline="always")
def dense_polynomial(h, k0, k2, k3, k4, k5, k6):
    """dopri5's dense output of one entry as a polynomial in the fraction θ of the step:
    y(t + θh) = y + θ(c₀ + θ(c₁ + θ(c₂ + θc₃))), c_q = h·Σ_s P[s, q]·K_s, from its stages
    K_s = k_s (stage 2 has no weight, and only stage 1 one in θ, P = 1).  Computed once
    per step and evaluated at every row the step fills (a row cost 28 products of stage
    weights before: tens of rows a step at a fine dt_out).  One expression for single
    runs and lanes (:mod:`~neurosim.kernels.lockstep`), so a batch equals single runs bit
    for bit."""
    c1 = h * (DP_P[0, 1] * k0 + DP_P[2, 1] * k2 + DP_P[3, 1] * k3 + DP_P[4, 1] * k4
              + DP_P[5, 1] * k5 + DP_P[6, 1] * k6)
    c2 = h * (DP_P[0, 2] * k0 + DP_P[2, 2] * k2 + DP_P[3, 2] * k3 + DP_P[4, 2] * k4
              + DP_P[5, 2] * k5 + DP_P[6, 2] * k6)
    c3 = h * (DP_P[0, 3] * k0 + DP_P[2, 3] * k2 + DP_P[3, 3] * k3 + DP_P[4, 3] * k4
              + DP_P[5, 3] * k5 + DP_P[6, 3] * k6)
    return h * k0, c1, c2, c3


@borrowing_njit(inline="always")
def dense_horner(y, frac, c0, c1, c2, c3):
    """y(t + θh) from dopri5's :func:`dense_polynomial`, θ = frac."""
    return y + frac * (c0 + frac * (c1 + frac * (c2 + frac * c3)))


@borrowing_njit
def fill_polynomial(h, K, j, poly, col):
    """poly[:, col] = :func:`dense_polynomial` of entry j of the stages K."""
    poly[0, col], poly[1, col], poly[2, col], poly[3, col] = dense_polynomial(
        h, K[0, j], K[2, j], K[3, j], K[4, j], K[5, j], K[6, j])


@borrowing_njit
def dense_value(method, X0, K, h, frac, poly, col, j):
    """Entry j of the step's dense output at y(t + frac·h), from its start X0: dopri5 by
    its polynomial poly[:, col] (:func:`fill_polynomial`), rosenbrock23 by its two
    weights on the stages K."""
    if method == DOPRI5:
        return dense_horner(X0[j], frac, poly[0, col], poly[1, col], poly[2, col], poly[3, col])
    scale = 1.0 / (1.0 - 2.0 * ROS_GAMMA)
    return X0[j] + h * (frac * (1.0 - frac) * scale * K[1, j]
                        + frac * (frac - 2.0 * ROS_GAMMA) * scale * K[2, j])


@borrowing_njit
def write_outputs(method, X0, K, t0, h, t1, out_times, next_out, drive, any_clamped, work,
                  poly, record, out_V, out_S):
    """Fill out_V (and out_S: S's m = out_S.shape[2] columns of the extended state) from
    row next_out on for every out_time <= t1 by the dense output of the step of size h
    from (t0, X0) with stages K, for the recorded neurons only; returns the next row.
    ``poly``: scratch of (4, len(record)·(1 + m)) for dopri5's polynomials."""
    clamped = drive[7]
    n = clamped.shape[0]
    n_rec = record.shape[0]
    m = out_S.shape[2]
    if next_out >= out_times.shape[0] or out_times[next_out] > t1:
        return next_out
    if method == DOPRI5:
        for c in range(n_rec):
            i = record[c]
            fill_polynomial(h, K, i, poly, c)
            for q in range(m):
                fill_polynomial(h, K, n + i * m + q, poly, n_rec + c * m + q)
    while next_out < out_times.shape[0] and out_times[next_out] <= t1:
        frac = (out_times[next_out] - t0) / h
        if any_clamped:  # a clamped neuron records its command, not the interpolant
            apply_drive(out_times[next_out], False, X0[:n], drive, work[0], work[1])
        for c in range(n_rec):
            i = record[c]
            if clamped[i]:
                out_V[next_out, c] = work[0, i]
                for q in range(m):
                    out_S[next_out, c, q] = 0.0
                continue
            out_V[next_out, c] = dense_value(method, X0, K, h, frac, poly, c, i)
            for q in range(m):
                out_S[next_out, c, q] = dense_value(method, X0, K, h, frac, poly,
                                                    n_rec + c * m + q, n + i * m + q)
        next_out += 1
    return next_out


def take_step(method, t, h, X, K, landing, J, W, piv, jacobian_fresh, has_inputs, theta, net,
              tangent, drive, work, dwork, X_new, err, stats):
    """One step of ``method`` from (t, X) with K[0] = f(t, X): fills X_new and V's error
    ``err``, counts its evaluations and returns (ok, jacobian_fresh).  ``method`` must be
    a constant: each method compiles only its own step (a dopri5 run no LU
    factorisation); only dopri5 carries a tangent."""
    raise NotImplementedError("compiled only")  # pragma: no cover


@overload(take_step, prefer_literal=True, inline="always", jit_options={"_nrt": False})
def _take_step(method, t, h, X, K, landing, J, W, piv, jacobian_fresh, has_inputs, theta, net,
               tangent, drive, work, dwork, X_new, err, stats):
    if not isinstance(method, types.IntegerLiteral):
        return None
    if method.literal_value == DOPRI5:
        def dopri5(method, t, h, X, K, landing, J, W, piv, jacobian_fresh, has_inputs, theta,
                   net, tangent, drive, work, dwork, X_new, err, stats):
            dopri5_step(t, h, X, K, landing, theta, net, tangent, drive, work, dwork, X_new, err)
            stats[S_RHS] += DP_STAGES - 1  # first same as last
            return True, jacobian_fresh
        return dopri5
    if not isinstance(tangent, types.NoneType):
        raise TypingError("rosenbrock23 carries no sensitivities")

    def rosenbrock23(method, t, h, X, K, landing, J, W, piv, jacobian_fresh, has_inputs, theta,
                     net, tangent, drive, work, dwork, X_new, err, stats):
        if not jacobian_fresh:
            jacobian(t, X, theta, net, drive, work, J)
            stats[S_JACOBIANS] += 1
        ok = rosenbrock_step(t, h, X, K, landing, J, W, piv, has_inputs, theta, net, drive, work,
                             X_new, err)
        stats[S_RHS] += 3 if has_inputs else 2
        return ok, True
    return rosenbrock23


@kernel_njit(inline="always")
def run_adaptive(method, X, out_times, t_final, tstops, theta, net, tangent, drive, rtol, atol,
                 max_step, adaptive, max_steps, record, v_bound, state, carry, stats, out_V,
                 out_S):
    """Integrate the extended state X (V, then S if ``tangent`` is not None) from
    state[X_T] until every out_time is passed, writing V[record] (and S[record]) there.

    Steps never cross a breakpoint in ``tstops`` or ``t_final`` (the run's end), but do
    cross the last out_time: the step that does is kept in ``carry`` (its stages, then its
    start X; state[X_STEP_T], state[X_STEP_H]) and the next call interpolates it first;
    f at the state a call ends in is carried too (carry[-1], state[X_F_CARRIED]).  So
    neither the steps nor the counts depend on how a run is cut into calls.  ``state`` also carries
    (t, h, err_old, fail_t); h ≤ 0 asks for an automatic first step.  With ``adaptive``
    False every step has size h except those landing on breakpoints or t_final.
    Returns a status code; after a failure state[X_T] is the last time whose state passed
    the checks and state[X_FAIL_T] the time where the failure was found.
    """
    clamped = drive[7]
    n = clamped.shape[0]
    size = X.shape[0]
    V = X[:n]
    has_inputs = drive[0].shape[0] > 0
    work = np.empty((WORK_ROWS + 1, n))  # the extra row: a trial state
    dwork = np.empty((3, n, out_S.shape[2]))
    K = np.empty((DP_STAGES, size))  # rosenbrock23 uses six of the rows
    X_new = np.empty(size)
    err = np.empty(n)
    poly = np.empty((4, record.shape[0] * (1 + out_S.shape[2])))
    any_clamped = clamped.any()
    J = np.empty((n, n)) if method != DOPRI5 else np.empty((1, 1))
    W = np.empty_like(J)
    piv = np.empty(J.shape[0], dtype=np.int64)
    error_order = DP_ERROR_ORDER if method == DOPRI5 else ROS_ERROR_ORDER
    t = state[X_T]
    h = state[X_H]
    err_old = state[X_ERR_OLD]
    n_out = out_times.shape[0]
    next_out = 0
    if state[X_STEP_H] > 0.0:
        next_out = write_outputs(method, carry[DP_STAGES], carry[:DP_STAGES], state[X_STEP_T],
                                 state[X_STEP_H], t, out_times, 0, drive, any_clamped, work,
                                 poly, record, out_V, out_S)
        if next_out == n_out:
            return OK
    state[X_STEP_H] = 0.0
    if state[X_F_CARRIED] > 0.0:
        copy_into(K[0], carry[CARRY_ROWS - 1])
    else:
        evaluate(t, False, X, theta, net, tangent, drive, work, dwork, K[0])
        stats[S_RHS] += 1
    if h <= 0.0:
        h = initial_step(t, V, K[0][:n], error_order, rtol, atol, theta, net, drive, work,
                         clamped, work[WORK_ROWS], X_new[:n])
        stats[S_RHS] += 1
    stop = count_up_to(tstops, t)
    jacobian_fresh = False
    while next_out < n_out:
        if stats[S_STEPS] + stats[S_REJECTED] >= max_steps:
            mark_failure(state, t)
            return TOO_MANY_STEPS
        t_target, h_try, landing = step_target(t, t_final, h, max_step, tstops, stop)
        ok, jacobian_fresh = take_step(method, t, h_try, X, K, landing, J, W, piv, jacobian_fresh,
                                       has_inputs, theta, net, tangent, drive, work, dwork,
                                       X_new, err, stats)
        err_now = error_norm(err, V, X_new[:n], clamped, rtol, atol) if ok else math.inf
        if math.isnan(err_now):
            err_now = math.inf
        if err_now <= 1.0 or not adaptive:
            t_new = t_target if landing else t + h_try
            next_out = write_outputs(method, X, K, t, h_try, t_new, out_times, next_out, drive,
                                     any_clamped, work, poly, record, out_V, out_S)
            if next_out == n_out and t_new > out_times[n_out - 1]:
                for s in range(DP_STAGES):
                    copy_into(carry[s], K[s])
                copy_into(carry[DP_STAGES], X)
                state[X_STEP_T] = t
                state[X_STEP_H] = h_try
            status = count_accepted_step(X_new[:n], v_bound, stats, state, t_new)
            if status != OK:
                state[X_T] = t  # the last time with a good state: rows up to it are kept
                copy_into(X, X_new)
                return status
            t = t_new
            copy_into(X, X_new)
            if lands_on_breakpoint(landing, t, t_target, tstops, stop):
                stop += 1
                # input jumped: new f
                evaluate(t, False, X, theta, net, tangent, drive, work, dwork, K[0])
                stats[S_RHS] += 1
            elif method == DOPRI5:
                copy_into(K[0], K[DP_STAGES - 1])
            else:
                copy_into(K[0], K[3])
            jacobian_fresh = False
            if adaptive:
                h, err_old = accepted_step_size(err_now, err_old, h, h_try, landing, error_order)
        else:
            h = after_rejection(err_now, h_try, error_order, t, stats, state)
            if h == 0.0:
                return STEP_UNDERFLOW
    save_solver_state(state, t, h, err_old)
    copy_into(carry[CARRY_ROWS - 1], K[0])
    state[X_F_CARRIED] = 1.0
    return OK


@kernel_njit(nogil=True)  # releases the GIL: a recorder thread writes meanwhile
def run_dopri5(V, out_times, t_final, tstops, theta, net, drive, rtol, atol, max_step, adaptive,
               max_steps, record, v_bound, state, carry, stats, out_V):
    """:func:`run_adaptive` with Dormand–Prince 5(4)."""
    return run_adaptive(DOPRI5, V, out_times, t_final, tstops, theta, net, None, drive, rtol,
                        atol, max_step, adaptive, max_steps, record, v_bound, state, carry, stats,
                        out_V, np.empty((0, 0, 0)))


@kernel_njit(nogil=True)
def run_rosenbrock23(V, out_times, t_final, tstops, theta, net, drive, rtol, atol, max_step,
                     adaptive, max_steps, record, v_bound, state, carry, stats, out_V):
    """:func:`run_adaptive` with the Rosenbrock 2(3) of ode23s."""
    return run_adaptive(ROSENBROCK23, V, out_times, t_final, tstops, theta, net, None, drive,
                        rtol, atol, max_step, adaptive, max_steps, record, v_bound, state, carry,
                        stats, out_V, np.empty((0, 0, 0)))


@kernel_njit
def run_dopri5_tangent(V, S, out_times, tstops, theta, net, tangent, drive, rtol, atol,
                       max_step, adaptive, max_steps, record, v_bound, state, stats, out_V, out_S):
    """:func:`run_dopri5` carrying S = ∂V/∂θ_free, in one call to the last out_time (V and
    S are left at the final state); writes out_S beside out_V."""
    X = extended_state(V, S)
    t_final = out_times[-1] if out_times.shape[0] > 0 else state[X_T]
    status = run_adaptive(DOPRI5, X, out_times, t_final, tstops, theta, net, tangent, drive,
                          rtol, atol, max_step, adaptive, max_steps, record, v_bound, state,
                          np.empty((CARRY_ROWS, X.shape[0])), stats, out_V, out_S)
    split_extended_state(X, V, S)
    return status
