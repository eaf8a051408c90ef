"""Fixed-step time loop: explicit Euler, classic RK4, exponential Euler, fused LTC step."""

import math

import numpy as np
from numba import njit

from neurosim.kernels.constants import (EULER, EXP_EULER, NON_FINITE, OK, OUT_OF_BOUNDS, RK4,
                                        S_FAIL_NEURON, S_FAIL_STEP, S_RHS, S_STEPS, WORK_ROWS)
from neurosim.kernels.jit import borrowing_njit
from neurosim.kernels.network import apply_drive, rhs, split_at


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


@borrowing_njit
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
def linear_step(method, t, dt, V, theta, net, drive, work):
    """One exp_euler or ltc step, both built on C dV/dt = N − G V with σ frozen at t."""
    split_at(t, False, V, theta, net, drive, work)
    G, N, clamped = work[2], work[3], drive[7]
    C = theta[0:V.shape[0]]
    for i in range(V.shape[0]):
        if clamped[i]:
            continue
        if method == EXP_EULER:
            # Exact for frozen G, N (test_exp_euler_exact_on_passive); -expm1(-x)/x → 1 as
            # x → 0 keeps g_L = 0 (Neural ODE) units exact Euler steps without 0/0.
            x = G[i] * dt / C[i]
            phi = 1.0 if x < 1e-12 else -math.expm1(-x) / x
            V[i] += dt * (N[i] - G[i] * V[i]) / C[i] * phi
        else:
            V[i] = (C[i] / dt * V[i] + N[i]) / (C[i] / dt + G[i])


@borrowing_njit
def rk4_step(t, dt, V, theta, net, drive, work, k, tmp):
    n = V.shape[0]
    rhs(t, False, V, theta, net, drive, work, k[0])
    for i in range(n):
        tmp[i] = V[i] + 0.5 * dt * k[0, i]
    rhs(t + 0.5 * dt, False, tmp, theta, net, drive, work, k[1])
    for i in range(n):
        tmp[i] = V[i] + 0.5 * dt * k[1, i]
    rhs(t + 0.5 * dt, False, tmp, theta, net, drive, work, k[2])
    for i in range(n):
        tmp[i] = V[i] + dt * k[2, i]
    rhs(t + dt, False, tmp, theta, net, drive, work, k[3])
    for i in range(n):
        V[i] += dt / 6.0 * (k[0, i] + 2.0 * k[1, i] + 2.0 * k[2, i] + k[3, i])


@njit(cache=True, nogil=True)  # releases the GIL: a recorder thread writes meanwhile
def run_fixed(method, V, t0, step0, dt, n_rows, stride, thetas, steps_per_theta, net, drive,
              record, v_bound, stats, out_V):
    """Advance V by ``n_rows * stride`` steps of size dt, keeping every ``stride``-th state.

    Time is ``t0 + (step0 + s)·dt`` (never accumulated, so long runs do not drift).
    Step s uses parameters ``thetas[min(s // steps_per_theta, last)]``: one row for a
    constant circuit, one row per interval for a parameter schedule (ResNet weights).
    Writes ``out_V[r] = V[record]`` after each ``stride`` steps; returns a status code.
    """
    last = thetas.shape[0] - 1
    n = V.shape[0]
    work = np.empty((WORK_ROWS, n))
    k = np.empty((4, n))
    tmp = np.empty(n)
    rhs_per_step = 4 if method == RK4 else 1
    for r in range(n_rows):
        for s in range(stride):
            step = step0 + r * stride + s
            t = t0 + step * dt
            theta = thetas[min(step // steps_per_theta, last)]
            if method == EULER:
                rhs(t, False, V, theta, net, drive, work, k[0])
                for i in range(n):
                    V[i] += dt * k[0, i]
            elif method == RK4:
                rk4_step(t, dt, V, theta, net, drive, work, k, tmp)
            else:
                linear_step(method, t, dt, V, theta, net, drive, work)
            impose_clamps(t0 + (step + 1) * dt, V, drive, work)
            stats[S_STEPS] += 1
            stats[S_RHS] += rhs_per_step
            status = check_state(V, v_bound, stats, step + 1)
            if status != OK:
                return status
        for c in range(record.shape[0]):
            out_V[r, c] = V[record[c]]
    return OK
