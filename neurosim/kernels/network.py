"""Right-hand side, Jacobian and the conductance split of the circuit equation.

    C_i dV_i/dt = g_L,i (E_L,i − V_i) + Σ_k w_k σ(ν_k (V_j − μ_k)) (E_k − κ_k V_i)
                + Σ_gap ĝ (V_nbr − V_i) + I_i(t)

Given the sigmoids, the equation is linear in V_i:  C_i dV_i/dt = N_i − G_i V_i with
total conductance G_i = g_L + Σ w σ κ + Σ ĝ and drive N_i = g_L E_L + Σ w σ E + Σ ĝ V_nbr + I.
Every method is written in terms of (G, N), so the equation lives in one loop:
:func:`conductance_split`.
"""

import math

import numpy as np
from numpy import uint64

from neurosim.kernels.constants import (P_AMPLITUDE, P_COUNT, P_DURATION, P_END, P_OFFSET,
                                        P_OMEGA, P_PERIOD, P_PHASE, P_START, PULSE, RAMP,
                                        REPEAT_ROW, SINE, STEP, STEPS, TABLE)
from neurosim.kernels.jit import (bits_float, bits_float32, borrowing_njit, float32_bits,
                                  float_bits, kernel_njit)


@kernel_njit(inline="always")
def unpack_theta(theta, n_neurons, n_synapses):
    """Views of the parameter vector: C, g_L, E_L, V0, w, E, mu, nu, kappa, g_gap.

    Inlined, so that borrowing kernels (:func:`~neurosim.kernels.jit.borrowing_njit`) may
    call it: the views then live in the caller, which counts no references."""
    n, s = n_neurons, n_synapses
    C = theta[0:n]
    g_L = theta[n:2 * n]
    E_L = theta[2 * n:3 * n]
    V0 = theta[3 * n:4 * n]
    b = 4 * n
    w = theta[b:b + s]
    E = theta[b + s:b + 2 * s]
    mu = theta[b + 2 * s:b + 3 * s]
    nu = theta[b + 3 * s:b + 4 * s]
    kappa = theta[b + 4 * s:b + 5 * s]
    g_gap = theta[b + 5 * s:]
    return C, g_L, E_L, V0, w, E, mu, nu, kappa, g_gap


# σ(z) = 1/(1 + e^x), x = −z, by range reduction x = k·ln2 + r, |r| ≤ ln2/2, and the
# [6/6] Padé approximant e^r ≈ P(r)/P(−r) (error < 1e−18 there): σ = Q / (Q + 2^k·P).
LOG2E = 1.4426950408889634
LN2_HI = 0.6931471803691238  # ln 2 split so that k·LN2_HI is exact for |k| < 2^20
LN2_LO = 1.9082149292705877e-10
ROUNDING_SHIFT = 6755399441055744.0  # 1.5·2^52: adding it rounds to an integer in the low bits


@borrowing_njit(error_model="numpy", called_from_python=True)
def sigmoid(z):
    """1 / (1 + e^−z) within 3 ulp, without a library call, so that loops over neurons
    or runs vectorise (Numba here has no vector math library; ``math.exp`` cost 9 of a
    sigmoid's 10 ns).  ``error_model="numpy"`` drops Python's zero-division test, which
    would also stop vectorisation (the divisor is ≥ Q > 0).  −z is clamped to
    [−708, 709], where 2^k stays a normal float; below z ≈ −695 the result is 0 (not
    e^z < 1e−302), above z = 37 it is 1, as in double precision.  NaN stays NaN."""
    x = -z
    x = -708.0 if x < -708.0 else x
    x = 709.0 if x > 709.0 else x
    shifted = x * LOG2E + ROUNDING_SHIFT
    k = shifted - ROUNDING_SHIFT
    r = (x - k * LN2_HI) - k * LN2_LO
    r2 = r * r
    # P(r) = 665280 + 332640 r + 75600 r² + 10080 r³ + 840 r⁴ + 42 r⁵ + r⁶, split even/odd
    even = ((r2 + 840.0) * r2 + 75600.0) * r2 + 665280.0
    odd = ((42.0 * r2 + 10080.0) * r2 + 332640.0) * r
    two_k = bits_float((float_bits(shifted) - float_bits(ROUNDING_SHIFT) + 1023) << 52)
    q = even - odd
    return q / (q + two_k * (even + odd))


# The same in single precision, for the float32 lanes: |r| ≤ ln2/2 needs only the
# [3/3] Padé approximant P(r) = 120 + 60 r + 12 r² + r³ (error < 1e−8); the ln 2 split
# makes k·LN2_HI_32 exact for |k| < 2^9, and −z is clamped to [−87, 88] (2^k normal).
LOG2E_32 = np.float32(LOG2E)
LN2_HI_32 = np.float32(0.693359375)
LN2_LO_32 = np.float32(-2.12194440e-4)
ROUNDING_SHIFT_32 = np.float32(12582912.0)  # 1.5·2^23
LOWEST_32, HIGHEST_32 = np.float32(-87.0), np.float32(88.0)
P3_0, P3_1, P3_2 = np.float32(120.0), np.float32(60.0), np.float32(12.0)


@borrowing_njit(error_model="numpy", called_from_python=True)
def sigmoid32(z):
    """:func:`sigmoid` of a float32 in float32 arithmetic, within 3 ulp; below z ≈ −83
    the result is 0 (not e^z < 1e−36).  NaN stays NaN."""
    x = -z
    x = LOWEST_32 if x < LOWEST_32 else x
    x = HIGHEST_32 if x > HIGHEST_32 else x
    shifted = x * LOG2E_32 + ROUNDING_SHIFT_32
    k = shifted - ROUNDING_SHIFT_32
    r = (x - k * LN2_HI_32) - k * LN2_LO_32
    r2 = r * r
    even = P3_2 * r2 + P3_0
    odd = (r2 + P3_1) * r
    two_k = bits_float32((float32_bits(shifted) - float32_bits(ROUNDING_SHIFT_32) + np.int32(127))
                         << np.int32(23))
    q = even - odd
    return q / (q + two_k * (even + odd))


@borrowing_njit
def copy_into(target, source):
    """target[:] = source for 1-D arrays.  A loop, not slice assignment: Numba compiles
    the broadcasting checks of an array-to-array slice assignment, error messages and all,
    for about 2 s of every cold start."""
    for i in range(source.shape[0]):
        target[i] = source[i]


@borrowing_njit
def count_up_to(sorted_times, t):
    """How many of ``sorted_times`` are <= t: np.searchsorted(sorted_times, t, "right"),
    whose NumPy implementation (with its NaN ordering) compiled for a second."""
    lo, hi = 0, sorted_times.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if sorted_times[mid] <= t:
            lo = mid + 1
        else:
            hi = mid
    return lo


@borrowing_njit
def table_interval(tab_t, lo, hi, t, closed):
    """a with tab_t[a] <= t < tab_t[a+1] if ``closed``, else tab_t[a] < t <= tab_t[a+1]."""
    a, b = lo, hi
    while b - a > 1:
        mid = (a + b) // 2
        if tab_t[mid] < t or (closed and tab_t[mid] == t):
            a = mid
        else:
            b = mid
    return a


@borrowing_njit
def tabulated_shape(kind, t, left, tab_t, tab_v, lo, hi):
    """``steps`` (piecewise constant; the limit from below takes the previous value) or
    ``table`` (linear interpolation, held beyond the ends) at time t."""
    if kind == STEPS:
        if t < tab_t[lo] or (left and t == tab_t[lo]):
            return 0.0
        return tab_v[table_interval(tab_t, lo, hi, t, not left)]
    if t <= tab_t[lo]:
        return tab_v[lo]
    if t >= tab_t[hi - 1]:
        return tab_v[hi - 1]
    a = table_interval(tab_t, lo, hi - 1, t, False)
    frac = (t - tab_t[a]) / (tab_t[a + 1] - tab_t[a])
    return tab_v[a] + frac * (tab_v[a + 1] - tab_v[a])


@borrowing_njit
def is_on(t, left, start, end):
    """Whether t lies in [start, end), or in (start, end] for the limit from below."""
    if left:
        return start < t and t <= end
    return start <= t and t < end


@borrowing_njit(per_constant=True)
def analytic_shape(kind, t, left, start, end, duration, period, count, omega, phase0):
    """step, pulse, pulse_train, ramp or sine at time t, before offset and amplitude.

    t is compared with the edges themselves, never t − start with the duration: the
    edges are the breakpoints where steps land, and only the comparison of the same
    rounded numbers decides on which side of one a step's end lies.  Kept apart from the
    tables' bisection loop, which would stop LLVM inlining it into the per-row stimulus
    loop."""
    if kind == STEP:
        return 1.0 if is_on(t, left, start, math.inf) else 0.0
    if kind == PULSE:
        return 1.0 if is_on(t, left, start, end) else 0.0
    if kind == RAMP:
        return (t - start) / duration if is_on(t, left, start, end) else 0.0
    if kind == SINE:
        return math.sin(omega * (t - start) + phase0) if is_on(t, left, start, end) else 0.0
    # PULSE_TRAIN: pulse k spans [onset, onset + duration) with onset = start + k·period,
    # rounded as Stimulus.breakpoints rounds it; the quotient may round across an onset,
    # so k moves to the last onset at or before t (strictly before, from below)
    if not is_on(t, left, start, math.inf):
        return 0.0
    k = np.floor((t - start) / period)
    while k > 0.0 and not is_on(t, left, start + k * period, math.inf):
        k -= 1.0
    while is_on(t, left, start + (k + 1.0) * period, math.inf):
        k += 1.0
    onset = start + k * period
    return 1.0 if k < count and is_on(t, left, onset, onset + duration) else 0.0


@borrowing_njit(per_constant=True, called_from_python=True)
def waveform(kind, par, r, t, left, tab_t, tab_v, lo, hi):
    """Stimulus row r at time t; ``left`` takes the limit from below at a jump.

    Rows and table ranges are indexed, not sliced: a view costs reference counting,
    which made array slicing half the cost of a tap-withdrawal RHS (scripts/bench.py).
    """
    if kind >= TABLE:
        shape = tabulated_shape(kind, t, left, tab_t, tab_v, lo, hi)
    else:
        shape = analytic_shape(kind, t, left, par[r, P_START], par[r, P_END], par[r, P_DURATION],
                               par[r, P_PERIOD], par[r, P_COUNT], par[r, P_OMEGA], par[r, P_PHASE])
    return par[r, P_OFFSET] + par[r, P_AMPLITUDE] * shape


@borrowing_njit
def apply_drive(t, left, V, drive, V_in, I):
    """Effective potentials (clamps substituted) and injected currents at time t."""
    kind, target, is_voltage, par, tab_ptr, tab_t, tab_v, clamped, hold = drive
    n = V.shape[0]
    for i in range(n):
        V_in[i] = hold[i] if clamped[i] else V[i]
        I[i] = 0.0
    value = 0.0
    for r in range(kind.shape[0]):
        if kind[r] != REPEAT_ROW:
            value = waveform(kind[r], par, r, t, left, tab_t, tab_v, tab_ptr[r], tab_ptr[r + 1])
        if is_voltage[r]:
            V_in[target[r]] += value
        else:
            I[target[r]] += value


@borrowing_njit
def conductance_split(V_in, I, theta, net, clamped, G, N, sig, block):
    """Total conductance G (nS) and drive N (pA) of every neuron: C dV/dt = N − G V.

    ``sig`` is scratch for one sigmoid per presynaptic neuron, shared by its synapses
    unless ``own_sigmoid`` flags them (see ``CompiledCircuit.net_for``): the same
    arithmetic, so results are unchanged, and two thirds fewer exponentials in the
    tap-withdrawal circuit.

    Indices read from the CSR arrays are cast to unsigned before use: Numba then skips
    its negative-index wraparound, four integer operations per access that doubled the
    time of the synapse loop (16 → 7 µs for 4,000 synapses, scripts/bench.py's circuit).

    A neuron with synapses of their own sigmoid (fitted or random (μ, ν)) takes its row
    in blocks of up to n synapses through ``block`` (scratch of n): the presynaptic
    potentials gathered, then w·σ(ν (V_j − μ)) of the whole block in one loop that
    vectorises (σ has no library call), then the sums in synapse order, as before, so
    the numbers are the same (a sigmoid per synapse cost 9 ns scalar, ~1 ns so).
    """
    (syn_ptr, syn_pre, gap_ptr, gap_nbr, gap_idx, pre_rep, own_sigmoid, own_in_row,
     unit_kappa) = net
    n = V_in.shape[0]
    s = uint64(syn_pre.shape[0])
    # offsets into θ (see unpack_theta); indexing θ directly avoids ten views per call.
    # Those added to unsigned indices are sums of unsigned numbers only: with a signed
    # term Numba's sum is signed, and the wraparound is back.
    o_gl, o_el, o_w = n, 2 * n, uint64(4 * n)
    o_e = o_w + s
    o_mu = o_e + s
    o_nu = o_mu + s
    o_k = o_nu + s
    o_g = o_k + s
    if s > 0:
        # gathered first into G and N (filled below), so that the sigmoids run over
        # contiguous rows and vectorise; a neuron with no synapse out (pre_rep −1) gets a
        # sigmoid nobody reads
        for j in range(n):
            r = uint64(max(pre_rep[j], 0))
            G[j] = theta[o_nu + r]
            N[j] = theta[o_mu + r]
        for j in range(n):
            sig[j] = sigmoid(G[j] * (V_in[j] - N[j]))
    for i in range(n):
        if clamped[i]:
            G[i] = 0.0
            N[i] = 0.0
            continue
        g_tot = theta[o_gl + i]
        drive = theta[o_gl + i] * theta[o_el + i] + I[i]
        # loop-invariant flags: the compiler makes a loop for each case (18 % faster
        # without the multiplications by κ = 1, which change no bits)
        kappa_is_one = unit_kappa[i]
        if own_in_row[i]:
            start, end = uint64(syn_ptr[i]), uint64(syn_ptr[i + 1])
            while start < end:
                m = min(uint64(n), end - start)
                for q in range(m):
                    block[q] = V_in[uint64(syn_pre[start + q])]
                for q in range(m):  # every synapse of the block: branch-free, vectorises
                    k = start + q
                    block[q] = theta[o_w + k] * sigmoid(theta[o_nu + k] * (block[q] - theta[o_mu + k]))
                for q in range(m):
                    k = start + q
                    ws = block[q] if own_sigmoid[k] else theta[o_w + k] * sig[uint64(syn_pre[k])]
                    g_tot += ws if kappa_is_one else ws * theta[o_k + k]
                    drive += ws * theta[o_e + k]
                start += m
        else:
            for k in range(uint64(syn_ptr[i]), uint64(syn_ptr[i + 1])):
                ws = theta[o_w + k] * sig[uint64(syn_pre[k])]
                g_tot += ws if kappa_is_one else ws * theta[o_k + k]
                drive += ws * theta[o_e + k]
        for q in range(uint64(gap_ptr[i]), uint64(gap_ptr[i + 1])):
            g = theta[o_g + uint64(gap_idx[q])]
            g_tot += g
            drive += g * V_in[uint64(gap_nbr[q])]
        G[i] = g_tot
        N[i] = drive


@borrowing_njit
def split_at(t, left, V, theta, net, drive, work):
    """The circuit at (t, V) as C dV/dt = N − G·V_in: fills the rows V_in, I, G, N (and
    the sigmoids; row 5 is the synapse blocks' scratch) of ``work``, a (WORK_ROWS, n)
    scratch array."""
    apply_drive(t, left, V, drive, work[0], work[1])
    conductance_split(work[0], work[1], theta, net, drive[7], work[2], work[3], work[4],
                      work[5])


@borrowing_njit(called_from_python=True)
def rhs(t, left, V, theta, net, drive, work, dV):
    """dV/dt (mV/ms) at (t, V); clamped neurons get 0.  ``work``: (WORK_ROWS, n) scratch."""
    split_at(t, left, V, theta, net, drive, work)
    V_in, G, N, clamped = work[0], work[2], work[3], drive[7]
    for i in range(V.shape[0]):
        # times 1/C rather than divided by C: the lockstep lanes multiply by a 1/C
        # computed once per run (a division per neuron was a sixth of their RHS)
        dV[i] = 0.0 if clamped[i] else (N[i] - G[i] * V_in[i]) * (1.0 / theta[i])


@kernel_njit
def jacobian(t, V, theta, net, drive, work, J):
    """∂(dV/dt)/∂V at (t, V), dense (n, n).  Rows and columns of clamped neurons are 0."""
    syn_ptr, syn_pre, gap_ptr, gap_nbr, gap_idx, _, _, _, _ = net
    V_in, I = work[0], work[1]
    apply_drive(t, False, V, drive, V_in, I)
    clamped = drive[7]
    n = V.shape[0]
    C, g_L, E_L, V0, w, E, mu, nu, kappa, g_gap = unpack_theta(theta, n, syn_pre.shape[0])
    J[:, :] = 0.0
    for i in range(n):
        if clamped[i]:
            continue
        diag = -g_L[i]
        for k in range(syn_ptr[i], syn_ptr[i + 1]):
            j = syn_pre[k]
            s = sigmoid(nu[k] * (V_in[j] - mu[k]))
            diag -= w[k] * s * kappa[k]
            if not clamped[j]:
                J[i, j] += w[k] * s * (1.0 - s) * nu[k] * (E[k] - kappa[k] * V_in[i]) / C[i]
        for q in range(gap_ptr[i], gap_ptr[i + 1]):
            g = g_gap[gap_idx[q]]
            diag -= g
            if not clamped[gap_nbr[q]]:
                J[i, gap_nbr[q]] += g / C[i]
        J[i, i] += diag / C[i]
