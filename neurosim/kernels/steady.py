"""Resting states: the stimulus-free steady state dV/dt = 0 of the free neurons.

Newton's method on the analytic Jacobian finds a zero of the right-hand side from the
given start; its eigenvalues say whether that zero is stable.  Where Newton fails or
lands on an unstable zero, a pre-run with the fused semi-implicit step (stable at any
step, and with exactly the ODE's fixed points) follows the circuit from the start until
it settles, and Newton polishes where it ends.  A circuit that never settles there
(an oscillation, a slow drift) has no stable rest reachable from the start; Newton from a
few other starts (probes) then looks for one elsewhere, and, for single runs, for other
stable rests of a circuit that has one (multistability).  Stability is decided by a
Gershgorin bound where it suffices and by the eigenvalues otherwise, so every run of a
batch chooses the state a single run chooses.
"""

import math

import numpy as np
from neurosim.kernels.constants import LTC, WORK_ROWS
from neurosim.kernels.fixed import impose_clamps, linear_step
from neurosim.kernels.jit import kernel_njit
from neurosim.kernels.network import copy_into, jacobian, rhs
from neurosim.kernels.sensitivity import extended_state, rhs_tangent

# how a rest was found (index into neurosim.simulate.REST_METHODS)
REST_NEWTON = 0        # Newton from the start converged to a stable rest
REST_PRERUN = 1        # Newton failed or found an unstable rest; the pre-run settled
REST_UNSTABLE = 2      # the pre-run settled where Newton finds only an unstable zero
REST_UNSETTLED = 3     # the pre-run never settled (oscillation, drift); its end state is used
REST_MARGINAL = 4      # a steady state with a zero eigenvalue (e.g. a neuron without leak):
                       # not unique, so the one found from the start is used
REST_PROBED = 5        # the start reaches no stable rest, but Newton from another start
                       # finds one: the one nearest the start is used

# the methods that end at a stable rest
STABLE_RESTS = (REST_NEWTON, REST_PRERUN, REST_PROBED)

# entries of the per-run report
R_METHOD, R_ITERATIONS, R_RESIDUAL, R_MAX_REAL_EIG, R_PRERUN_MS, R_OTHER_RESTS = range(6)
N_REPORT = 6

# Newton is also started from this many other points spread over the circuit's range of
# potentials, to find other stable rests (multistability) or, where the start reaches
# none, a stable rest elsewhere; two rests differ when a potential differs by more than
# DISTINCT_REST (mV)
N_PROBES = 4
DISTINCT_REST = 1e-6
# Newton iterations a probe gets, and the largest circuit (free neurons) in which single
# runs look for other stable rests at all: each probe costs an O(n³) solve per iteration
# and an eigenvalue check, 0.3 s at 300 neurons
PROBE_NEWTON = 20
MAX_PROBED_NEURONS = 100
# above this many free neurons Newton's dense solves and the eigenvalues (O(n³): 50 s at
# 2,000 neurons, and n² memory) give way to the pre-run alone, which costs O(synapses)
# per step; its settling is then the only evidence of stability
MAX_DENSE_NEURONS = 1000

# Newton: iteration limit, halvings of a step that does not reduce the residual, and
# the largest change of any potential in one step (mV), which keeps a step from
# jumping across the sigmoids' range into another basin
MAX_NEWTON = 40
MAX_HALVINGS = 12
MAX_NEWTON_STEP = 20.0
# eigenvalues with real parts within this of 0 (1/ms) are zero: a marginal steady state
ZERO_EIGENVALUE = 1e-12
# the pre-run has settled when no free potential changes faster than this (mV/ms);
# Newton then polishes to the caller's tolerance.  Its step, as a fraction of the fastest
# time constant, and its length in steps (5·10⁴ RHS evaluations: 0.5 s at 300 neurons)
PRERUN_TOL = 1e-6
PRERUN_STEP = 0.5
MAX_PRERUN_STEPS = 50000


@kernel_njit
def lu_solve(A, B):
    """X with A X = B by Gaussian elimination with partial pivoting (A and B are
    overwritten; X is B); returns (X, ok): ok is False for a singular or non-finite A."""
    m = A.shape[0]
    for c in range(m):
        p = c
        for r in range(c + 1, m):
            if abs(A[r, c]) > abs(A[p, c]):
                p = r
        if not abs(A[p, c]) > 0.0 or not math.isfinite(A[p, c]):
            return B, False
        if p != c:
            for k in range(m):
                A[c, k], A[p, k] = A[p, k], A[c, k]
            for k in range(B.shape[1]):
                B[c, k], B[p, k] = B[p, k], B[c, k]
        for r in range(c + 1, m):
            f = A[r, c] / A[c, c]
            if f != 0.0:
                for k in range(c, m):
                    A[r, k] -= f * A[c, k]
                for k in range(B.shape[1]):
                    B[r, k] -= f * B[c, k]
    for c in range(m - 1, -1, -1):
        for k in range(B.shape[1]):
            s = B[c, k]
            for j in range(c + 1, m):
                s -= A[c, j] * B[j, k]
            B[c, k] = s / A[c, c]
    return B, True


# NumPy's array expressions (np.max(np.abs(a - b)), ~mask) compile a loop of their own
# each, with their checks: about two seconds of a cold start; these loops compute the same.
@kernel_njit
def largest_magnitude(A):
    """max |A| over a 2-D array: inf if an entry is infinite, NaN if one is NaN."""
    size = 0.0
    for a in range(A.shape[0]):
        for c in range(A.shape[1]):
            x = abs(A[a, c])
            if not x <= size:  # NaN wins: nothing is larger than it
                size = x
                if math.isnan(x):
                    return x
    return size


@kernel_njit
def max_abs_difference(x, y):
    """max |x − y| over 1-D arrays (NaN if a difference is NaN)."""
    largest = 0.0
    for i in range(x.shape[0]):
        d = abs(x[i] - y[i])
        if not d <= largest:
            largest = d
            if math.isnan(d):
                return d
    return largest


@kernel_njit
def squared_distance(x, y):
    """Σ (x − y)², summed in order."""
    total = 0.0
    for i in range(x.shape[0]):
        d = x[i] - y[i]
        total += d * d
    return total


@kernel_njit
def free_neurons(clamped):
    """Indices of the neurons not clamped."""
    m = 0
    for i in range(clamped.shape[0]):
        m += 0 if clamped[i] else 1
    free = np.empty(m, dtype=np.int64)
    a = 0
    for i in range(clamped.shape[0]):
        if not clamped[i]:
            free[a] = i
            a += 1
    return free


@kernel_njit
def free_block(J, free):
    """The rows and columns of the free neurons of J, as a new matrix."""
    m = free.shape[0]
    A = np.empty((m, m))
    for a in range(m):
        for c in range(m):
            A[a, c] = J[free[a], free[c]]
    return A


@kernel_njit
def residual(V, theta, net, drive, free, work, dV):
    """max |dV/dt| over the free neurons (mV/ms); dV receives dV/dt."""
    rhs(0.0, False, V, theta, net, drive, work, dV)
    worst = 0.0
    for i in free:
        if not abs(dV[i]) <= worst:  # NaN counts as the worst
            worst = abs(dV[i]) if math.isfinite(dV[i]) else math.inf
    return worst


@kernel_njit
def newton(V, theta, net, drive, free, tol, work, J, max_iterations):
    """Damped Newton on the free neurons' dV/dt = 0 from V (overwritten), at most
    ``max_iterations`` steps.

    Returns (converged, iterations, residual).  Converged means max |dV/dt| ≤ tol
    (mV/ms), or a full step that changes no potential by more than rounding.
    """
    n = V.shape[0]
    m = free.shape[0]
    dV = np.empty(n)
    trial = np.empty(n)
    res = residual(V, theta, net, drive, free, work, dV)
    for it in range(max_iterations):
        if res <= tol:
            return True, it, res
        if not math.isfinite(res):
            return False, it, res
        jacobian(0.0, V, theta, net, drive, work, J)
        delta = np.empty((m, 1))
        for a in range(m):
            delta[a, 0] = -dV[free[a]]
        delta, ok = lu_solve(free_block(J, free), delta)
        if not ok:
            return False, it, res
        biggest = 0.0
        for a in range(m):
            biggest = max(biggest, abs(delta[a, 0]))
        scale = 1.0 if biggest <= MAX_NEWTON_STEP else MAX_NEWTON_STEP / biggest
        size = 0.0
        for a in range(m):
            size = max(size, abs(V[free[a]]))
        if scale == 1.0 and biggest <= 4e-16 * max(1.0, size):
            return True, it + 1, res  # the step is below rounding: nothing left to gain
        step = scale
        for _ in range(MAX_HALVINGS):
            copy_into(trial, V)
            for a in range(m):
                trial[free[a]] += step * delta[a, 0]
            new_res = residual(trial, theta, net, drive, free, work, dV)
            if new_res < (1.0 - 0.25 * step) * res:
                break
            step *= 0.5
        copy_into(V, trial)
        res = residual(V, theta, net, drive, free, work, dV)
    return res <= tol, max_iterations, res


@kernel_njit
def gershgorin_bound(A):
    """An upper bound on the real parts of A's eigenvalues: the rightmost edge of its
    Gershgorin discs, by rows or by columns, whichever is smaller."""
    m = A.shape[0]
    by_rows, by_columns = -math.inf, -math.inf
    for a in range(m):
        row, column = 0.0, 0.0
        for c in range(m):
            if c != a:
                row += abs(A[a, c])
                column += abs(A[c, a])
        by_rows = max(by_rows, A[a, a] + row)
        by_columns = max(by_columns, A[a, a] + column)
    return min(by_rows, by_columns)


@kernel_njit
def max_real_eigenvalue(V, theta, net, drive, free, work, J, exact):
    """Largest real part of the free neurons' Jacobian eigenvalues at V (1/ms).

    Unless ``exact``, a Gershgorin bound that already proves stability is returned in its
    place: the decisions taken on the sign are the same, for a tenth of the time of the
    eigenvalue routine (35 µs for 9 neurons).
    """
    m = free.shape[0]
    if m == 0:
        return -math.inf
    jacobian(0.0, V, theta, net, drive, work, J)
    A = free_block(J, free)
    size = largest_magnitude(A)
    if not math.isfinite(size):
        return math.inf
    if not exact:
        bound = gershgorin_bound(A)
        if bound < -ZERO_EIGENVALUE:
            return bound
    # scaled to unit size first: LAPACK's balancing under- or overflows at extreme ones
    if size == 0.0:
        return 0.0
    eig = np.linalg.eigvals((A / size).astype(np.complex128))
    worst = -math.inf
    for e in eig:
        worst = max(worst, e.real * size)
    return worst


@kernel_njit
def prerun(V, theta, net, drive, free, tol, work, dV):
    """Fused semi-implicit steps from V until max |dV/dt| ≤ tol; returns (settled, ms).

    The step is half the fastest free neuron's shortest time constant (C over its largest
    total conductance); the run lasts at most 200 of the slowest time constants (C/g_L,
    or C over the total conductance where g_L = 0), within MAX_PRERUN_STEPS steps.  The
    fused step is stable at any step, and its fixed points are exactly the circuit's.
    """
    n = V.shape[0]
    C = theta[0:n]
    g_L = theta[n:2 * n]
    fastest, slowest = math.inf, 0.0
    syn_ptr, syn_pre, gap_ptr, gap_idx = net[0], net[1], net[2], net[4]
    s = syn_pre.shape[0]
    for i in free:
        total = g_L[i]
        for k in range(syn_ptr[i], syn_ptr[i + 1]):
            total += theta[4 * n + k] * theta[4 * n + 4 * s + k]
        for q in range(gap_ptr[i], gap_ptr[i + 1]):
            total += theta[4 * n + 5 * s + gap_idx[q]]
        if total > 0.0:
            fastest = min(fastest, C[i] / total)
        slow = C[i] / g_L[i] if g_L[i] > 0.0 else (C[i] / total if total > 0.0 else math.inf)
        slowest = max(slowest, slow)
    dt = PRERUN_STEP * fastest
    if not (dt > 0.0 and math.isfinite(dt) and math.isfinite(slowest)):
        return False, 0.0  # a neuron with no conductance at all: nothing to settle against
    wanted = 200.0 * slowest / dt
    steps = MAX_PRERUN_STEPS if not wanted < MAX_PRERUN_STEPS else int(math.ceil(wanted))
    check_every = 50
    for k in range(0, steps, check_every):
        for _ in range(check_every):
            linear_step(LTC, 0.0, dt, V, theta, net, drive, work)
        if residual(V, theta, net, drive, free, work, dV) <= tol:
            return True, (k + check_every) * dt
    return False, steps * dt


@kernel_njit
def probe_start(k, V, free, theta, drive, out):
    """Start number k of the probes: each free potential at a different point of the
    range spanned by the circuit's leak, synaptic and holding potentials, by the golden
    ratio sequence (deterministic, and asymmetric between neurons, so that a symmetric
    circuit's probes leave its symmetric saddle)."""
    n = V.shape[0]
    s = (theta.shape[0] - 4 * n) // 5 if n > 0 else 0
    lo, hi = math.inf, -math.inf
    for i in range(n):
        lo, hi = min(lo, theta[2 * n + i]), max(hi, theta[2 * n + i])
        if drive[7][i]:
            lo, hi = min(lo, drive[8][i]), max(hi, drive[8][i])
    for k2 in range(s):
        lo, hi = min(lo, theta[4 * n + s + k2]), max(hi, theta[4 * n + s + k2])
    copy_into(out, V)
    for a in range(free.shape[0]):
        u = ((k + 1) * 0.6180339887498949 + (a + 1) * 0.7548776662466927) % 1.0
        out[free[a]] = lo + (hi - lo) * u


@kernel_njit(inline="always")
def other_rests(V, theta, net, drive, free, tol, work, J, start, probe_all, report):
    """Newton from N_PROBES other starts.  Counts the stable rests unlike V in
    report[R_OTHER_RESTS] (when ``probe_all``) and returns the one nearest ``start`` (or
    an empty array if none was found)."""
    n = V.shape[0]
    trial = np.empty(n)
    best = np.empty(0)
    best_distance = math.inf
    found = np.empty((N_PROBES, n))
    count = 0
    for k in range(N_PROBES):
        probe_start(k, V, free, theta, drive, trial)
        converged, _, _ = newton(trial, theta, net, drive, free, tol, work, J, PROBE_NEWTON)
        if not converged or max_real_eigenvalue(trial, theta, net, drive, free, work, J,
                                                False) >= -ZERO_EIGENVALUE:
            continue
        new = max_abs_difference(trial, V) > DISTINCT_REST or not probe_all
        for c in range(count):
            new = new and max_abs_difference(trial, found[c]) > DISTINCT_REST
        if not new:
            continue
        copy_into(found[count], trial)
        count += 1
        distance = squared_distance(trial, start)
        if distance < best_distance:
            best_distance = distance
            best = trial.copy()
    if probe_all:
        report[R_OTHER_RESTS] = count
    return best


@kernel_njit(inline="always")
def find_rest(V, theta, net, drive, tol, probe_all, report):
    """The stimulus-free steady state from the start V (overwritten with the state used).

    ``drive`` holds no stimulus rows, only the clamps (mask and holding potentials).
    ``report`` receives (method code, Newton iterations, final max |dV/dt|, largest real
    part of the Jacobian's eigenvalues (exact with ``probe_all``, else possibly a negative
    upper bound), pre-run ms, other stable rests found).  Probes (Newton from other
    starts) run where the start reaches no stable rest, and with ``probe_all`` also after
    it does, only to count other stable rests (−1: not probed).  The state chosen never
    depends on ``probe_all``.
    """
    n = V.shape[0]
    work = np.empty((WORK_ROWS, n))
    dV = np.empty(n)
    exact = probe_all
    impose_clamps(0.0, V, drive, work)
    clamped = drive[7]
    free = free_neurons(clamped)
    start = V.copy()
    report[R_PRERUN_MS] = 0.0
    report[R_OTHER_RESTS] = -1.0
    if free.shape[0] > MAX_DENSE_NEURONS:
        settled, ms = prerun(V, theta, net, drive, free, max(tol, PRERUN_TOL), work, dV)
        report[R_METHOD] = REST_PRERUN if settled else REST_UNSETTLED
        report[R_PRERUN_MS] = ms
        report[R_ITERATIONS] = 0
        report[R_RESIDUAL] = residual(V, theta, net, drive, free, work, dV)
        report[R_MAX_REAL_EIG] = math.nan  # not computed
        return
    J = np.zeros((n, n))
    converged, iterations, res = newton(V, theta, net, drive, free, tol, work, J, MAX_NEWTON)
    eig = (max_real_eigenvalue(V, theta, net, drive, free, work, J, exact) if converged
           else math.inf)
    if converged and eig < -ZERO_EIGENVALUE:
        report[R_METHOD] = REST_NEWTON
    elif converged and eig <= ZERO_EIGENVALUE:
        report[R_METHOD] = REST_MARGINAL
    else:
        copy_into(V, start)
        settled, ms = prerun(V, theta, net, drive, free, max(tol, PRERUN_TOL), work, dV)
        report[R_PRERUN_MS] = ms
        end = V.copy()
        converged, more, res = newton(V, theta, net, drive, free, tol, work, J, MAX_NEWTON)
        iterations += more
        if not converged:
            copy_into(V, end)
        eig = max_real_eigenvalue(V, theta, net, drive, free, work, J, exact)
        # a zero eigenvalue where the pre-run settled: a line of steady states (e.g.
        # gap-coupled neurons without leak), where Newton's Jacobian is singular
        zero = ZERO_EIGENVALUE * max(1.0, largest_magnitude(J))
        if settled and converged and eig < -zero:
            report[R_METHOD] = REST_PRERUN
        elif settled and abs(eig) <= zero:
            report[R_METHOD] = REST_MARGINAL
            res = residual(V, theta, net, drive, free, work, dV)
        else:
            if not converged:
                eig = math.inf  # no steady state found: no eigenvalue to report
            elsewhere = other_rests(end, theta, net, drive, free, tol, work, J, start, False,
                                    report)
            if elsewhere.shape[0] > 0:
                copy_into(V, elsewhere)
                report[R_METHOD] = REST_PROBED
                eig = max_real_eigenvalue(V, theta, net, drive, free, work, J, exact)
            else:
                copy_into(V, end)
                report[R_METHOD] = REST_UNSTABLE if settled else REST_UNSETTLED
            res = residual(V, theta, net, drive, free, work, dV)
    if probe_all and report[R_METHOD] in STABLE_RESTS and free.shape[0] <= MAX_PROBED_NEURONS:
        other_rests(V, theta, net, drive, free, tol, work, J, start, True, report)
    report[R_ITERATIONS] = iterations
    report[R_RESIDUAL] = res
    report[R_MAX_REAL_EIG] = eig


@kernel_njit(nogil=True)  # releases the GIL: threads take other items meanwhile
def find_rests(first, last, V, thetas, item_protocol, net, no_stimuli, clamped, hold, tol,
               probe_all, reports):
    """:func:`find_rest` for items b = first..last-1: start V[b], parameters thetas[b],
    the clamps of protocol item_protocol[b] (rows of ``clamped`` and ``hold``).
    ``no_stimuli`` is the first seven entries of a drive tuple with no stimulus rows."""
    kind, target, is_voltage, par, tab_ptr, tab_t, tab_v = no_stimuli
    for b in range(first, last):
        p = item_protocol[b]
        drive = (kind, target, is_voltage, par, tab_ptr, tab_t, tab_v, clamped[p], hold[p])
        find_rest(V[b], thetas[b], net, drive, tol, probe_all, reports[b])


@kernel_njit
def rest_sensitivity(V, theta, net, tangent, drive, S):
    """S = ∂V*/∂θ_free at a stable rest V*: from f(V*(θ), θ) = 0, J·S = −∂f/∂θ on the
    free neurons (clamped rows stay 0).  Returns False where J is singular."""
    n = V.shape[0]
    m = S.shape[1]
    work = np.empty((WORK_ROWS, n))
    S[:, :] = 0.0
    # ∂f/∂θ_free: the tangent of the extended state (V, S = 0)
    state = extended_state(V, S)
    F = np.empty_like(state)
    rhs_tangent(0.0, False, state, theta, net, tangent, drive, work, np.zeros((3, n, m)), F)
    J = np.zeros((n, n))
    jacobian(0.0, V, theta, net, drive, work, J)
    free = free_neurons(drive[7])
    B = np.empty((free.shape[0], m))
    for a in range(free.shape[0]):
        for c in range(m):
            B[a, c] = -F[n + free[a] * m + c]
    X, ok = lu_solve(free_block(J, free), B)
    if ok:
        for a in range(free.shape[0]):
            for c in range(m):
                S[free[a], c] = X[a, c]
    return ok
