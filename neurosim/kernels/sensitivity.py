"""Forward sensitivities: the tangent-linear model of each integrator's discrete step.

Alongside V (n,) every loop carries S = ∂V/∂θ_free (n, m) for m chosen parameters and
differentiates exactly the arithmetic of the step (discretise-then-differentiate): the
gradient is that of the numbers the simulator returns, so it matches finite differences
of the same run to rounding (tests/test_gradients.py).  Adaptive steps are taken as
given (their sizes do not depend on θ), as in diffrax's and Jaxley's forward mode.

Free parameters are described by (kind, index) pairs; kinds follow the θ layout.
"""

import math

import numpy as np
from neurosim.kernels.adaptive import (accepted_step_size, after_rejection, count_accepted_step,
                                       dense_weights, dopri5_error, error_norm, initial_step,
                                       lands_on_breakpoint, mark_failure, save_solver_state,
                                       stage_point, step_target)
from neurosim.kernels.constants import (EULER, OK, RK4, S_REJECTED, S_RHS, S_STEPS,
                                        STEP_UNDERFLOW, TOO_MANY_STEPS, WORK_ROWS, X_ERR_OLD,
                                        X_H, X_T)
from neurosim.kernels.fixed import check_state, impose_clamps, substep_end
from neurosim.kernels.jit import borrowing_njit, kernel_njit
from neurosim.kernels.network import (apply_drive, copy_into, count_up_to, sigmoid,
                                      unpack_theta)
from neurosim.kernels.tableaux import (DP_C, DP_END_STAGE, DP_ERROR_ORDER, DP_STAGES, RK4_A,
                                       RK4_B_SCALE, RK4_B_SCALED, RK4_C, RK4_STAGES)

# kinds of free parameters (index into the θ layout's blocks)
P_C, P_GL, P_EL, P_V0, P_W, P_E, P_MU, P_NU, P_KAPPA, P_GAP = range(10)


@kernel_njit
def split_tangent(V_in, S_in, I, theta, net, tangent, clamped, G, N, dG, dN):
    """G, N of conductance_split and their derivatives along S_in and the free parameters.

    ``tangent`` = (free_kind, free_index, syn_post, gap_a, gap_b).
    """
    syn_ptr, syn_pre, gap_ptr, gap_nbr, gap_idx, _, _, _, _ = net
    free_kind, free_index, syn_post, gap_a, gap_b = tangent
    n = V_in.shape[0]
    m = S_in.shape[1]
    C, g_L, E_L, V0, w, E, mu, nu, kappa, g_gap = unpack_theta(theta, n, syn_pre.shape[0])
    for i in range(n):
        for c in range(m):
            dG[i, c] = 0.0
            dN[i, c] = 0.0
        if clamped[i]:
            G[i] = 0.0
            N[i] = 0.0
            continue
        g_tot = g_L[i]
        drive = g_L[i] * E_L[i] + I[i]
        for k in range(syn_ptr[i], syn_ptr[i + 1]):
            j = syn_pre[k]
            s = sigmoid(nu[k] * (V_in[j] - mu[k]))
            ws = w[k] * s
            g_tot += ws * kappa[k]
            drive += ws * E[k]
            slope = w[k] * s * (1.0 - s) * nu[k]
            if slope != 0.0 and not clamped[j]:
                for c in range(m):
                    dG[i, c] += slope * kappa[k] * S_in[j, c]
                    dN[i, c] += slope * E[k] * S_in[j, c]
        for q in range(gap_ptr[i], gap_ptr[i + 1]):
            g = g_gap[gap_idx[q]]
            g_tot += g
            drive += g * V_in[gap_nbr[q]]
            if not clamped[gap_nbr[q]]:
                for c in range(m):
                    dN[i, c] += g * S_in[gap_nbr[q], c]
        G[i] = g_tot
        N[i] = drive
    for c in range(m):
        kind = free_kind[c]
        x = free_index[c]
        if kind == P_GL:
            if not clamped[x]:
                dG[x, c] += 1.0
                dN[x, c] += E_L[x]
        elif kind == P_EL:
            if not clamped[x]:
                dN[x, c] += g_L[x]
        elif kind >= P_W and kind <= P_KAPPA:
            i = syn_post[x]
            if clamped[i]:
                continue
            j = syn_pre[x]
            z = V_in[j] - mu[x]
            s = sigmoid(nu[x] * z)
            if kind == P_W:
                dG[i, c] += s * kappa[x]
                dN[i, c] += s * E[x]
            elif kind == P_E:
                dN[i, c] += w[x] * s
            elif kind == P_KAPPA:
                dG[i, c] += w[x] * s
            else:
                ds = s * (1.0 - s) * (z if kind == P_NU else -nu[x])
                dG[i, c] += w[x] * ds * kappa[x]
                dN[i, c] += w[x] * ds * E[x]
        elif kind == P_GAP:
            a = gap_a[x]
            b = gap_b[x]
            if not clamped[a]:
                dG[a, c] += 1.0
                dN[a, c] += V_in[b]
            if not clamped[b]:
                dG[b, c] += 1.0
                dN[b, c] += V_in[a]


@borrowing_njit
def rhs_tangent(t, left, V, S, theta, net, tangent, drive, work, dwork, f, df):
    """f = dV/dt and df = ∂f/∂V·S + ∂f/∂θ_free.  ``dwork``: (3, n, m) scratch."""
    V_in, I, G, N = work[0], work[1], work[2], work[3]
    S_in, dG, dN = dwork[0], dwork[1], dwork[2]
    apply_drive(t, left, V, drive, V_in, I)
    clamped = drive[7]
    n = V.shape[0]
    m = S.shape[1]
    for i in range(n):
        for c in range(m):
            S_in[i, c] = 0.0 if clamped[i] else S[i, c]
    split_tangent(V_in, S_in, I, theta, net, tangent, clamped, G, N, dG, dN)
    C = theta[0:n]
    free_kind, free_index = tangent[0], tangent[1]
    for i in range(n):
        if clamped[i]:
            f[i] = 0.0
            for c in range(m):
                df[i, c] = 0.0
            continue
        f[i] = (N[i] - G[i] * V_in[i]) / C[i]
        for c in range(m):
            df[i, c] = (dN[i, c] - dG[i, c] * V_in[i] - G[i] * S_in[i, c]) / C[i]
    for c in range(m):
        if free_kind[c] == P_C:
            i = free_index[c]
            if not clamped[i]:
                df[i, c] -= f[i] / C[i]


@borrowing_njit
def zero_clamped_rows(S, clamped):
    for i in range(S.shape[0]):
        if clamped[i]:
            for c in range(S.shape[1]):
                S[i, c] = 0.0


@kernel_njit
def run_fixed_tangent(method, V, S, t0, step0, dt, n_rows, stride, theta, net, tangent, drive,
                      breakpoints, record, v_bound, stats, out_V, out_S):
    """run_fixed for euler, rk4 and ltc, carrying S = ∂V/∂θ_free; writes out_S[r] = S[record].

    Takes run_fixed's (sub)steps, ending on the same breakpoints, with the same stage
    times and one-sided limits (see :func:`~neurosim.kernels.fixed.run_fixed`)."""
    n = V.shape[0]
    m = S.shape[1]
    work = np.empty((WORK_ROWS, n))
    dwork = np.empty((3, n, m))
    k = np.empty((RK4_STAGES, n))
    dk = np.empty((RK4_STAGES, n, m))
    tmp = np.empty(n)
    dtmp = np.empty((n, m))
    clamped = drive[7]
    C = theta[0:n]
    free_kind, free_index = tangent[0], tangent[1]
    stop = count_up_to(breakpoints, t0 + step0 * dt)
    for r in range(n_rows):
        for sub in range(stride):
            step = step0 + r * stride + sub
            t_grid = t0 + step * dt
            t_next = t0 + (step + 1) * dt
            t = t_grid
            more = True
            while more:
                end, h, stop = substep_end(t, t_grid, t_next, dt, breakpoints, stop)
                if method == EULER:
                    rhs_tangent(t, False, V, S, theta, net, tangent, drive, work, dwork, k[0],
                                dk[0])
                    for i in range(n):
                        V[i] += h * k[0, i]
                        for c in range(m):
                            S[i, c] += h * dk[0, i, c]
                elif method == RK4:
                    rk4_tangent_step(t, end, h, V, S, theta, net, tangent, drive, work, dwork, k,
                                     dk, tmp, dtmp)
                else:
                    ltc_tangent_step(t, h, V, S, theta, net, tangent, drive, work, dwork, C,
                                     clamped, free_kind, free_index)
                impose_clamps(end, V, drive, work)
                zero_clamped_rows(S, clamped)
                stats[S_STEPS] += 1
                stats[S_RHS] += RK4_STAGES if method == RK4 else 1
                status = check_state(V, v_bound, stats, step + 1)
                if status != OK:
                    return status
                more = end != t_next
                t = end
        for cc in range(record.shape[0]):
            out_V[r, cc] = V[record[cc]]
            for c in range(m):
                out_S[r, cc, c] = S[record[cc], c]
    return OK


@borrowing_njit
def rk4_tangent_step(t, t_end, h, V, S, theta, net, tangent, drive, work, dwork, k, dk, tmp,
                     dtmp):
    """:func:`~neurosim.kernels.fixed.rk4_step` carrying S, at the same stage times."""
    n = V.shape[0]
    m = S.shape[1]
    t_mid = t + RK4_C[1] * h
    mid_left = t_mid == t_end
    rhs_tangent(t, False, V, S, theta, net, tangent, drive, work, dwork, k[0], dk[0])
    for stage, a in ((1, RK4_A[1, 0]), (2, RK4_A[2, 1]), (3, RK4_A[3, 2])):
        for i in range(n):
            tmp[i] = V[i] + a * h * k[stage - 1, i]
            for c in range(m):
                dtmp[i, c] = S[i, c] + a * h * dk[stage - 1, i, c]
        if stage == 3:  # at t_end (c = 1)
            rhs_tangent(t_end, True, tmp, dtmp, theta, net, tangent, drive, work, dwork,
                        k[stage], dk[stage])
        else:
            rhs_tangent(t_mid, mid_left, tmp, dtmp, theta, net, tangent, drive, work, dwork,
                        k[stage], dk[stage])
    b0, b1, b2, b3 = RK4_B_SCALED[0], RK4_B_SCALED[1], RK4_B_SCALED[2], RK4_B_SCALED[3]
    for i in range(n):
        V[i] += h / RK4_B_SCALE * (b0 * k[0, i] + b1 * k[1, i] + b2 * k[2, i] + b3 * k[3, i])
        for c in range(m):
            S[i, c] += h / RK4_B_SCALE * (b0 * dk[0, i, c] + b1 * dk[1, i, c]
                                          + b2 * dk[2, i, c] + b3 * dk[3, i, c])


@borrowing_njit
def ltc_tangent_step(t, h, V, S, theta, net, tangent, drive, work, dwork, C, clamped, free_kind,
                     free_index):
    """The LTC step V' = (a V + N) / (a + G), a = C/h, carrying S."""
    n = V.shape[0]
    m = S.shape[1]
    V_in, I, G, N = work[0], work[1], work[2], work[3]
    S_in, dG, dN = dwork[0], dwork[1], dwork[2]
    apply_drive(t, False, V, drive, V_in, I)
    for i in range(n):
        for c in range(m):
            S_in[i, c] = 0.0 if clamped[i] else S[i, c]
    split_tangent(V_in, S_in, I, theta, net, tangent, clamped, G, N, dG, dN)
    for i in range(n):
        if clamped[i]:
            continue
        a = C[i] / h
        new = (a * V[i] + N[i]) / (a + G[i])
        for c in range(m):
            da = 1.0 / h if (free_kind[c] == P_C and free_index[c] == i) else 0.0
            S[i, c] = (a * S[i, c] + da * V[i] + dN[i, c] - new * (da + dG[i, c])) / (a + G[i])
        V[i] = new


@kernel_njit
def run_dopri5_tangent(V, S, out_times, tstops, theta, net, tangent, drive, rtol, atol,
                       max_step, adaptive, max_steps, record, v_bound, state, stats, out_V, out_S):
    """run_adaptive (dopri5 only) carrying S; step sizes are chosen from V's error alone."""
    n = V.shape[0]
    m = S.shape[1]
    clamped = drive[7]
    work = np.empty((WORK_ROWS, n))
    dwork = np.empty((3, n, m))
    K = np.empty((DP_STAGES, n))
    dK = np.empty((DP_STAGES, n, m))
    tmp = np.empty(n)
    dtmp = np.empty((n, m))
    V_new = np.empty(n)
    S_new = np.empty((n, m))
    err = np.empty(n)
    weights = np.empty(DP_STAGES)
    t = state[X_T]
    h = state[X_H]
    err_old = state[X_ERR_OLD]
    t_end = out_times[out_times.shape[0] - 1]
    rhs_tangent(t, False, V, S, theta, net, tangent, drive, work, dwork, K[0], dK[0])
    stats[S_RHS] += 1
    if h <= 0.0:
        h = initial_step(t, V, K[0], DP_ERROR_ORDER, rtol, atol, theta, net, drive, work, clamped,
                         tmp, V_new)
        stats[S_RHS] += 1
    next_out = 0
    stop = count_up_to(tstops, t)
    # flat views of the tangent arrays (the same memory), made once, not in every step
    S_flat, S_new_flat, dtmp_flat = S.reshape(n * m), S_new.reshape(n * m), dtmp.reshape(n * m)
    dK_flat = dK.reshape(DP_STAGES, n * m)
    while t < t_end:
        if stats[S_STEPS] + stats[S_REJECTED] >= max_steps:
            mark_failure(state, t)
            return TOO_MANY_STEPS
        t_target, h_try, landing = step_target(t, t_end, h, max_step, tstops, stop)
        for s in range(1, DP_STAGES):
            stage_point(V, K, s, h_try, tmp)
            stage_point(S_flat, dK_flat, s, h_try, dtmp_flat)
            rhs_tangent(t + DP_C[s] * h_try, landing and s >= DP_END_STAGE, tmp, dtmp, theta, net,
                        tangent, drive, work, dwork, K[s], dK[s])
        copy_into(V_new, tmp)
        copy_into(S_new_flat, dtmp_flat)
        stats[S_RHS] += DP_STAGES - 1  # first same as last
        dopri5_error(K, h_try, err)
        err_now = error_norm(err, V, V_new, clamped, rtol, atol)
        if math.isnan(err_now):
            err_now = math.inf
        if err_now <= 1.0 or not adaptive:
            t_new = t_target if landing else t + h_try
            while next_out < out_times.shape[0] and out_times[next_out] <= t_new:
                dense_weights((out_times[next_out] - t) / h_try, weights)
                apply_drive(out_times[next_out], False, V, drive, work[0], work[1])
                for cc in range(record.shape[0]):
                    i = record[cc]
                    if clamped[i]:
                        out_V[next_out, cc] = work[0, i]
                        for c in range(m):
                            out_S[next_out, cc, c] = 0.0
                        continue
                    acc = 0.0
                    for s in range(DP_STAGES):
                        acc += K[s, i] * weights[s]
                    out_V[next_out, cc] = V[i] + h_try * acc
                    for c in range(m):
                        dacc = 0.0
                        for s in range(DP_STAGES):
                            dacc += dK[s, i, c] * weights[s]
                        out_S[next_out, cc, c] = S[i, c] + h_try * dacc
                next_out += 1
            t = t_new
            copy_into(V, V_new)
            copy_into(S_flat, S_new_flat)
            status = count_accepted_step(V, v_bound, stats, state, t)
            if status != OK:
                return status
            if lands_on_breakpoint(landing, t, t_target, tstops, stop):
                stop += 1
                rhs_tangent(t, False, V, S, theta, net, tangent, drive, work, dwork, K[0], dK[0])
                stats[S_RHS] += 1
            else:
                copy_into(K[0], K[DP_STAGES - 1])
                copy_into(dK_flat[0], dK_flat[DP_STAGES - 1])
            if adaptive:
                h, err_old = accepted_step_size(err_now, err_old, h, h_try, landing,
                                                DP_ERROR_ORDER)
        else:
            h = after_rejection(err_now, h_try, DP_ERROR_ORDER, t, stats, state)
            if h == 0.0:
                return STEP_UNDERFLOW
    save_solver_state(state, t, h, err_old)
    return OK

