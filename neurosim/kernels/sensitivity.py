"""Forward sensitivities: the tangent-linear model of each integrator's discrete step.

A run with sensitivities carries S = ∂V/∂θ_free (n, m) for m chosen parameters as extra
state: the time loops of :mod:`~neurosim.kernels.adaptive` and
:mod:`~neurosim.kernels.fixed` advance the extended state X = (V, S flattened row by row)
with the same stage arithmetic, step control and dense output as V alone, and only the
derivative differs (:func:`evaluate`; the ltc step too, whose update is not a stage
combination).  Each loop is compiled once without a tangent (``tangent`` None: V alone,
none of this code) and once with one.  The tangent differentiates exactly the arithmetic
of the step (discretise-then-differentiate): the gradient is that of the numbers the
simulator returns, so it matches finite differences of the same run to rounding
(tests/test_gradients.py).  Adaptive steps are taken as given (their sizes come from V's
error alone, so they do not depend on θ), as in diffrax's and Jaxley's forward mode.

Free parameters are described by (kind, index) pairs; kinds follow the θ layout.
"""

import numpy as np
from numba import types
from numba.extending import overload

from neurosim.kernels.jit import borrowing_njit, kernel_njit
from neurosim.kernels.network import apply_drive, rhs, sigmoid, unpack_theta

# kinds of free parameters (index into the θ layout's blocks)
P_C, P_GL, P_EL, P_V0, P_W, P_E, P_MU, P_NU, P_KAPPA, P_GAP = range(10)


@borrowing_njit
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
def rhs_tangent(t, left, X, theta, net, tangent, drive, work, dwork, F):
    """F = dX/dt of the extended state X = (V, S flattened row by row): f = dV/dt, then
    ∂f/∂V·S + ∂f/∂θ_free (flattened alike).  ``dwork``: (3, n, m) scratch.

    S is addressed by index (X[n + i·m + c]), not as a reshaped view: Numba's reshape
    compiles its error message's string formatting, seconds of a cold start."""
    V_in, I, G, N = work[0], work[1], work[2], work[3]
    S_in, dG, dN = dwork[0], dwork[1], dwork[2]
    clamped = drive[7]
    n = clamped.shape[0]
    m = tangent[0].shape[0]
    apply_drive(t, left, X[:n], drive, V_in, I)
    for i in range(n):
        for c in range(m):
            S_in[i, c] = 0.0 if clamped[i] else X[n + i * m + c]
    split_tangent(V_in, S_in, I, theta, net, tangent, clamped, G, N, dG, dN)
    C = theta[0:n]
    free_kind, free_index = tangent[0], tangent[1]
    for i in range(n):
        if clamped[i]:
            F[i] = 0.0
            for c in range(m):
                F[n + i * m + c] = 0.0
            continue
        F[i] = (N[i] - G[i] * V_in[i]) / C[i]
        for c in range(m):
            F[n + i * m + c] = (dN[i, c] - dG[i, c] * V_in[i] - G[i] * S_in[i, c]) / C[i]
    for c in range(m):
        if free_kind[c] == P_C:
            i = free_index[c]
            if not clamped[i]:
                F[n + i * m + c] -= F[i] / C[i]


@borrowing_njit
def ltc_tangent_step(t, h, X, theta, net, tangent, drive, work, dwork):
    """The LTC step V' = (a V + N) / (a + G), a = C/h, of the extended state X (V, then S
    flattened row by row)."""
    clamped = drive[7]
    n = clamped.shape[0]
    m = tangent[0].shape[0]
    C = theta[0:n]
    free_kind, free_index = tangent[0], tangent[1]
    V_in, I, G, N = work[0], work[1], work[2], work[3]
    S_in, dG, dN = dwork[0], dwork[1], dwork[2]
    apply_drive(t, False, X[:n], drive, V_in, I)
    for i in range(n):
        for c in range(m):
            S_in[i, c] = 0.0 if clamped[i] else X[n + i * m + c]
    split_tangent(V_in, S_in, I, theta, net, tangent, clamped, G, N, dG, dN)
    for i in range(n):
        if clamped[i]:
            continue
        a = C[i] / h
        new = (a * X[i] + N[i]) / (a + G[i])
        for c in range(m):
            da = 1.0 / h if (free_kind[c] == P_C and free_index[c] == i) else 0.0
            j = n + i * m + c
            X[j] = (a * X[j] + da * X[i] + dN[i, c] - new * (da + dG[i, c])) / (a + G[i])
        X[i] = new


@kernel_njit
def extended_state(V, S):
    """X = (V, S flattened row by row), a new array."""
    n, m = S.shape
    X = np.empty(n * (1 + m))
    for i in range(n):
        X[i] = V[i]
        for c in range(m):
            X[n + i * m + c] = S[i, c]
    return X


@borrowing_njit
def split_extended_state(X, V, S):
    """V, S = the parts of the extended state X."""
    n, m = S.shape
    for i in range(n):
        V[i] = X[i]
        for c in range(m):
            S[i, c] = X[n + i * m + c]


def evaluate(t, left, X, theta, net, tangent, drive, work, dwork, F):
    """F = dX/dt for the extended state X: f(t, V), and ∂f/∂V·S + ∂f/∂θ_free if
    ``tangent`` is not None.  ``tangent`` must be None or a tangent tuple at compile time:
    a run without sensitivities compiles the plain right-hand side only."""
    raise NotImplementedError("compiled only")  # pragma: no cover


# a call (which LLVM inlines), not inlined by Numba: Numba inlining into a kernel that
# counts references would count them for every array passed on, about 0.25 µs a call
@overload(evaluate, jit_options={"_nrt": False})
def _evaluate(t, left, X, theta, net, tangent, drive, work, dwork, F):
    if isinstance(tangent, types.NoneType):
        def plain(t, left, X, theta, net, tangent, drive, work, dwork, F):
            rhs(t, left, X, theta, net, drive, work, F)
        return plain

    def with_tangent(t, left, X, theta, net, tangent, drive, work, dwork, F):
        rhs_tangent(t, left, X, theta, net, tangent, drive, work, dwork, F)
    return with_tangent


def zero_clamped_tangent(X, tangent, clamped):
    """Zero S's rows of clamped neurons (their V is imposed, so it depends on nothing)."""
    raise NotImplementedError("compiled only")  # pragma: no cover


@overload(zero_clamped_tangent, jit_options={"_nrt": False})
def _zero_clamped_tangent(X, tangent, clamped):
    if isinstance(tangent, types.NoneType):
        def plain(X, tangent, clamped):
            pass
        return plain

    def with_tangent(X, tangent, clamped):
        n = clamped.shape[0]
        m = tangent[0].shape[0]
        for i in range(n):
            if clamped[i]:
                for c in range(m):
                    X[n + i * m + c] = 0.0
    return with_tangent
