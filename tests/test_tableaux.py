"""neurosim.kernels.tableaux against the published tableaux and their order conditions.

The reference coefficients below are typed from the papers (Dormand & Prince 1980; Hairer,
Nørsett & Wanner I, II.5-6 and the DOPRI5 code's dense output; Shampine & Reichelt 1997,
"The MATLAB ODE suite", section 3), not from the module under test.  The order conditions
are checked exactly, in rational arithmetic, over every rooted tree of the order.
"""

import ast
import math
from fractions import Fraction as F
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from neurosim.kernels import tableaux as tb

# --- the published tableaux, as fractions ----------------------------------------------

DP_C = [F(0), F(1, 5), F(3, 10), F(4, 5), F(8, 9), F(1), F(1)]
DP_A = [
    [],
    [F(1, 5)],
    [F(3, 40), F(9, 40)],
    [F(44, 45), F(-56, 15), F(32, 9)],
    [F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)],
    [F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)],
    [F(35, 384), F(0), F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84)],
]
DP_B = [F(35, 384), F(0), F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), F(0)]
DP_B_HAT = [F(5179, 57600), F(0), F(7571, 16695), F(393, 640), F(-92097, 339200),
            F(187, 2100), F(1, 40)]
# the DOPRI5 code's dense output: u(θ) = y0 + θ(Δ + (1−θ)(r3 + θ(r4 + (1−θ) r5))) with
# Δ = y1 − y0, r3 = h k1 − Δ, r4 = Δ − h k7 − r3, r5 = h Σ d_s k_s
DP_D = [F(-12715105075, 11282082432), F(0), F(87487479700, 32700410799),
        F(-10690763975, 1880347072), F(701980252875, 199316789632),
        F(-1453857185, 822651844), F(69997945, 29380423)]

RK4_C = [F(0), F(1, 2), F(1, 2), F(1)]
RK4_A = [[], [F(1, 2)], [F(0), F(1, 2)], [F(0), F(0), F(1)]]
RK4_B = [F(1, 6), F(1, 3), F(1, 3), F(1, 6)]


def dense_matrix():
    """DOPRI5's dense output as coefficients of θ, θ², θ³, θ⁴ per stage (exact)."""
    def add(p, q):
        return [(p[i] if i < len(p) else 0) + (q[i] if i < len(q) else 0)
                for i in range(max(len(p), len(q)))]

    def mul(p, q):
        out = [F(0)] * (len(p) + len(q) - 1)
        for i, x in enumerate(p):
            for j, y in enumerate(q):
                out[i + j] += x * y
        return out
    theta, one_minus = [F(0), F(1)], [F(1), F(-1)]
    rows = []
    for s in range(7):
        first, last = int(s == 0), int(s == 6)
        r2, r3 = [DP_B[s]], [first - DP_B[s]]
        r4, r5 = [2 * DP_B[s] - first - last], [DP_D[s]]
        poly = mul(theta, add(r2, mul(one_minus, add(r3, mul(theta, add(r4, mul(one_minus,
                                                                                  r5)))))))
        poly += [F(0)] * (5 - len(poly))
        assert poly[0] == 0
        rows.append(poly[1:5])
    return rows


# --- rooted trees and their elementary weights -----------------------------------------

def _grow(tree):
    """Every tree with one node more than ``tree`` (a tree: the sorted tuple of its subtrees)."""
    yield tuple(sorted(tree + ((),)))
    for i, child in enumerate(tree):
        for bigger in _grow(child):
            yield tuple(sorted(tree[:i] + (bigger,) + tree[i + 1:]))


def trees(order):
    level = {()}
    for _ in range(order - 1):
        level = {bigger for tree in level for bigger in _grow(tree)}
    return sorted(level)


def size(tree):
    return 1 + sum(size(child) for child in tree)


def density(tree):
    """γ(t): |t| times the densities of its subtrees."""
    return size(tree) * math.prod(density(child) for child in tree)


def weights(tree, A):
    """Φ_i(t) for every stage i: the product over subtrees u of Σ_j a_ij Φ_j(u)."""
    stages = len(A)
    out = []
    for i in range(stages):
        value = F(1)
        for child in tree:
            inner = weights(child, A)
            value *= sum((A[i][j] * inner[j] for j in range(len(A[i]))), F(0))
        out.append(value)
    return out


def order_conditions_hold(A, b, order):
    """[(tree, Σ b_i Φ_i(t), 1/γ(t))] of the trees up to ``order`` that fail."""
    failed = []
    for k in range(1, order + 1):
        for tree in trees(k):
            lhs = sum(bi * phi for bi, phi in zip(b, weights(tree, A)))
            if lhs != F(1, density(tree)):
                failed.append((tree, lhs, F(1, density(tree))))
    return failed


def test_the_rooted_trees_are_butchers():
    assert [len(trees(k)) for k in range(1, 6)] == [1, 1, 2, 4, 9]
    assert sorted(density(t) for t in trees(4)) == [4, 8, 12, 24]


# --- the module's numbers are the published ones ---------------------------------------

def as_array(rows, width):
    return np.array([[float(x) for x in row] + [0.0] * (width - len(row)) for row in rows])


def test_dormand_prince_is_the_published_tableau():
    # each float the correctly rounded value of its fraction: equal, not close
    np.testing.assert_array_equal(tb.DP_C, [float(x) for x in DP_C])
    np.testing.assert_array_equal(tb.DP_A, as_array(DP_A, 6))
    np.testing.assert_array_equal(tb.DP_B, [float(x) for x in DP_B])
    np.testing.assert_array_equal(tb.DP_B_HAT, [float(x) for x in DP_B_HAT])
    # error weights e = b̂ − b (scipy's sign; the error norm squares it)
    np.testing.assert_array_equal(tb.DP_E, [float(bh - b) for bh, b in zip(DP_B_HAT, DP_B)])
    np.testing.assert_array_equal(tb.DP_P, as_array(dense_matrix(), 4))
    assert tb.DP_STAGES == len(DP_C) == tb.DP_P.shape[0]
    assert all(tb.DP_C[tb.DP_END_STAGE:] == 1.0) and all(tb.DP_C[:tb.DP_END_STAGE] < 1.0)


def test_rk4_is_the_published_tableau():
    np.testing.assert_array_equal(tb.RK4_C, [float(x) for x in RK4_C])
    np.testing.assert_array_equal(tb.RK4_A, as_array(RK4_A, 4))
    np.testing.assert_array_equal(tb.RK4_B, [float(x) for x in RK4_B])
    # the form the kernels apply: h/6 (k1 + 2 k2 + 2 k3 + k4)
    assert [F(x) / F(tb.RK4_B_SCALE) for x in tb.RK4_B_SCALED] == RK4_B
    assert tb.RK4_STAGES == 4


def test_row_sums_of_A_are_c():
    for A, c in ((DP_A, DP_C), (RK4_A, RK4_C)):
        assert [sum(row, F(0)) for row in A] == c
    np.testing.assert_allclose(tb.DP_A.sum(axis=1), tb.DP_C, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(tb.RK4_A.sum(axis=1), tb.RK4_C)


def test_weights_sum_to_one():
    assert sum(DP_B) == 1 and sum(DP_B_HAT) == 1 and sum(RK4_B) == 1
    assert tb.DP_B.sum() == pytest.approx(1.0, abs=1e-15)
    assert tb.DP_B_HAT.sum() == pytest.approx(1.0, abs=1e-15)
    assert tb.DP_E.sum() == pytest.approx(0.0, abs=1e-16)


def test_named_order_conditions_of_dormand_prince():
    """The low-order conditions by name, before the general check over all trees."""
    c, A, b = DP_C, DP_A, DP_B
    for k in range(1, 6):  # the bushy trees: Σ b_i c_i^{k−1} = 1/k
        assert sum(bi * ci ** (k - 1) for bi, ci in zip(b, c)) == F(1, k)
    ac = [sum((a * c[j] for j, a in enumerate(row)), F(0)) for row in A]
    assert sum(bi * x for bi, x in zip(b, ac)) == F(1, 6)           # Σ b_i a_ij c_j = 1/6
    assert sum(bi * ci * x for bi, ci, x in zip(b, c, ac)) == F(1, 8)  # Σ b_i c_i a_ij c_j
    ac2 = [sum((a * c[j] ** 2 for j, a in enumerate(row)), F(0)) for row in A]
    assert sum(bi * x for bi, x in zip(b, ac2)) == F(1, 12)          # Σ b_i a_ij c_j²
    aac = [sum((a * ac[j] for j, a in enumerate(row)), F(0)) for row in A]
    assert sum(bi * x for bi, x in zip(b, aac)) == F(1, 24)          # Σ b_i a_ij a_jk c_k


def test_dormand_prince_has_order_5_and_its_embedded_pair_order_4():
    assert order_conditions_hold(DP_A, DP_B, 5) == []
    assert order_conditions_hold(DP_A, DP_B_HAT, 4) == []
    # ... and not one order more: the pair's orders are what the error estimate assumes
    assert order_conditions_hold(DP_A, DP_B_HAT, 5) != []
    assert tb.DORMAND_PRINCE.order == 5 and tb.DORMAND_PRINCE.error_order == 4
    assert tb.DP_ORDER == 5 and tb.DP_ERROR_ORDER == 4


def test_rk4_has_order_4():
    assert order_conditions_hold(RK4_A, RK4_B, 4) == []
    assert order_conditions_hold(RK4_A, RK4_B, 5) != []
    assert tb.CLASSIC_RK4.order == 4 and tb.CLASSIC_RK4.error_order is None


def test_dormand_prince_is_first_same_as_last():
    """The last stage is evaluated at the accepted solution: f there is the next K[0]."""
    assert DP_A[6] == DP_B[:6] and DP_B[6] == 0 and DP_C[6] == 1
    np.testing.assert_array_equal(tb.DP_A[6], tb.DP_B[:6])
    assert tb.DP_B[6] == 0.0


def test_dense_output_is_a_4th_order_continuous_extension():
    """b_s(θ) = Σ_k P[s, k] θ^(k+1): b(1) = b, and Σ b_s(θ) Φ_s(t) = θ^|t| / γ(t) for every
    tree up to order 4 (the conditions of order 4 at every θ)."""
    P = dense_matrix()
    assert [sum(row) for row in P] == DP_B
    for k in range(1, 5):
        for tree in trees(k):
            phi = weights(tree, DP_A)
            for power in range(4):  # the coefficient of θ^(power+1) on both sides
                lhs = sum(P[s][power] * phi[s] for s in range(7))
                assert lhs == (F(1, density(tree)) if power + 1 == k else 0), (tree, power)


def dopri5_step(f, t, y, h):
    """One step of the module's Dormand–Prince: (y_new, stages K)."""
    K = np.zeros((tb.DP_STAGES,) + np.shape(y))
    K[0] = f(t, y)
    for s in range(1, tb.DP_STAGES):
        K[s] = f(t + tb.DP_C[s] * h, y + h * (tb.DP_A[s, :s] @ K[:s]))
    return y + h * (tb.DP_B @ K), K


def dense(y, K, h, theta):
    return y + h * (tb.DP_P @ [theta, theta ** 2, theta ** 3, theta ** 4]) @ K


def test_dense_output_meets_the_step_and_is_4th_order_on_exponential_growth():
    grow = lambda t, y: y  # noqa: E731
    errors = []
    for h in (0.1, 0.05, 0.025, 0.0125):
        y_new, K = dopri5_step(grow, 0.0, 1.0, h)
        assert dense(1.0, K, h, 0.0) == 1.0
        assert dense(1.0, K, h, 1.0) == pytest.approx(y_new, rel=4e-16)
        errors.append(abs(dense(1.0, K, h, 0.5) - math.exp(0.5 * h)))
    # a local error O(h^5) shrinks 32-fold as h halves (at these h: 29.6, 30.8, 31.4)
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders > 4.8) & (orders < 5.2)), (errors, orders)


def dopri5_code_dense(y0, K, h, theta):
    """The DOPRI5 code's dense output (Hairer's CONTD5), from the fractions above: a form
    independent of the kernels' polynomial in θ."""
    y1 = y0 + h * sum(float(DP_B[s]) * K[s] for s in range(7))
    delta = y1 - y0
    r3 = h * K[0] - delta
    r4 = delta - h * K[6] - r3
    r5 = h * sum(float(DP_D[s]) * K[s] for s in range(7))
    return y0 + theta * (delta + (1 - theta) * (r3 + theta * (r4 + (1 - theta) * r5)))


def test_kernel_dense_polynomial_is_the_dopri5_code_dense_output():
    """The kernels evaluate dopri5's dense output as y + θ(c₀ + θ(c₁ + θ(c₂ + θc₃))) from
    the stages 1, 3–7 only (single runs and lanes share that expression): it must be the
    DOPRI5 code's interpolant to rounding, for stages of any scale and sign."""
    import numba

    from neurosim.kernels.adaptive import dense_horner, dense_polynomial

    @numba.njit
    def kernel_dense(y, K, h, theta):
        c0, c1, c2, c3 = dense_polynomial(h, K[0], K[2], K[3], K[4], K[5], K[6])
        return dense_horner(y, theta, c0, c1, c2, c3)

    # the stages it leaves out have no weight at any θ
    assert np.all(tb.DP_P[1] == 0.0) and np.all(tb.DP_P[1:, 0] == 0.0) and tb.DP_P[0, 0] == 1.0
    rng = np.random.default_rng(7)
    worst = 0.0
    for _ in range(300):
        y0 = rng.uniform(-80, 20)
        K = rng.normal(0.0, 10.0 ** rng.uniform(-3, 2), 7)
        h = 10.0 ** rng.uniform(-3, 1)
        for theta in (0.0, 0.1, 0.37, 0.5, 0.9, 1.0):
            expected = dopri5_code_dense(y0, K, h, theta)
            got = kernel_dense(y0, K, h, theta)
            scale = abs(y0) + h * np.abs(K).sum()
            worst = max(worst, abs(got - expected) / scale)
    assert worst < 1e-14, worst


def test_dopri5_error_estimate_follows_the_embedded_4th_order_solution():
    """h Σ e_s K_s is the difference of the 4th- and 5th-order solutions, O(h^5)."""
    decay = lambda t, y: -y * y + math.sin(3 * t)  # noqa: E731
    estimates = []
    for h in (0.05, 0.025, 0.0125):
        y_new, K = dopri5_step(decay, 0.3, 0.7, h)
        estimate = h * tb.DP_E @ K
        # (the difference of two numbers near 0.7: rounding of ~1e-16 each)
        assert estimate == pytest.approx(0.7 + h * tb.DP_B_HAT @ K - y_new, rel=0, abs=1e-15)
        estimates.append(abs(estimate))
    orders = np.log2(np.array(estimates[:-1]) / np.array(estimates[1:]))
    assert np.all((orders > 4.7) & (orders < 5.3)), (estimates, orders)


# --- Shampine & Reichelt's Rosenbrock 2(3) ---------------------------------------------

def test_rosenbrock_constants_are_shampine_and_reichelts():
    assert tb.ROS_GAMMA == pytest.approx(1 / (2 + math.sqrt(2)), rel=1e-16)
    assert tb.ROS_GAMMA == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-15)
    assert tb.ROS_E32 == pytest.approx(6 + math.sqrt(2), rel=1e-16)
    assert (tb.ROS_C2, tb.ROS_A21, tb.ROS_E31) == (0.5, 0.5, 2.0)
    np.testing.assert_array_equal(tb.ROS_ERROR_SCALED / tb.ROS_ERROR_SCALE,
                                  [1 / 6, -2 / 6, 1 / 6])
    r = tb.SHAMPINE_REICHELT
    assert (r.order, r.error_order, r.gamma, r.e32) == (2, 2, tb.ROS_GAMMA, tb.ROS_E32)


def test_rosenbrock_order_conditions():
    """In Rosenbrock form (Hairer & Wanner IV.7): (I − hγJ) k_i = f(y + h Σ α_ij k_j)
    + hJ Σ γ_ij k_j with α21 = 1/2, γ21 = −γ (ode23s's k2 = W⁻¹(F1 − k1) + k1) and
    b = (0, 1): Σ b = 1, and Σ b_i β_i = 1/2 − γ with β_i = Σ_j (α_ij + γ_ij), which
    holds for any γ: the method has order 2."""
    gamma, alpha21, gamma21 = tb.ROS_GAMMA, tb.ROS_A21, -tb.ROS_GAMMA
    b = (0.0, 1.0)
    assert sum(b) == 1.0
    assert b[1] * (alpha21 + gamma21) == pytest.approx(0.5 - gamma, abs=1e-16)
    # the stage time is α21, and the ∂f/∂t term of k2 vanishes: γ + γ21 = 0
    assert tb.ROS_C2 == alpha21 and gamma + gamma21 == 0.0
    # L-stability: R(∞) = 1 − bᵀB⁻¹1 = 0 with B = [[γ, 0], [α21 + γ21, γ]], which asks
    # for γ² − 2γ + 1/2 = 0; the root below 1/2 is γ = 1/(2 + √2)
    B = np.array([[gamma, 0.0], [alpha21 + gamma21, gamma]])
    assert 1.0 - np.array(b) @ np.linalg.solve(B, np.ones(2)) == pytest.approx(0.0, abs=1e-15)
    assert gamma ** 2 - 2 * gamma + 0.5 == pytest.approx(0.0, abs=1e-16)


def rosenbrock_step(f, J, T, t, y, h):
    """One ode23s step as Shampine & Reichelt write it, with the module's constants:
    (y_new, error estimate, k1, k2)."""
    d = tb.ROS_GAMMA
    W = 1.0 - h * d * J(t, y)
    F0 = f(t, y)
    k1 = (F0 + h * d * T(t, y)) / W
    F1 = f(t + tb.ROS_C2 * h, y + tb.ROS_A21 * h * k1)
    k2 = (F1 - k1) / W + k1
    y_new = y + h * k2
    F2 = f(t + h, y_new)
    k3 = (F2 - tb.ROS_E32 * (k2 - F1) - tb.ROS_E31 * (k1 - F0) + h * d * T(t, y)) / W
    error = h / tb.ROS_ERROR_SCALE * (tb.ROS_ERROR_SCALED @ [k1, k2, k3])
    return y_new, error, k1, k2


def rosenbrock_dense(y, k1, k2, h, theta):
    """Shampine & Reichelt's interpolant y + h (θ(1 − θ) k1 + θ(θ − 2d) k2) / (1 − 2d)."""
    d = tb.ROS_GAMMA
    return y + h * (theta * (1 - theta) * k1 + theta * (theta - 2 * d) * k2) / (1 - 2 * d)


def test_rosenbrock_is_2nd_order_with_a_3rd_order_error_estimate():
    """On a nonlinear, time-dependent scalar problem (exact J and ∂f/∂t): the local error
    of y_new is O(h³), and y_new + error, the 3rd-order companion, is O(h⁴); the dense
    output meets both ends of the step."""
    f = lambda t, y: -y * y + math.sin(3 * t)  # noqa: E731
    J = lambda t, y: -2 * y  # noqa: E731
    T = lambda t, y: 3 * math.cos(3 * t)  # noqa: E731
    t0, y0 = 0.3, 0.7
    local, companion = [], []
    for h in (0.08, 0.04, 0.02, 0.01):
        exact = solve_ivp(f, (t0, t0 + h), [y0], method="DOP853", rtol=1e-13,
                          atol=1e-15).y[0, -1]
        y_new, error, k1, k2 = rosenbrock_step(f, J, T, t0, y0, h)
        local.append(abs(y_new - exact))
        companion.append(abs(y_new + error - exact))
        assert rosenbrock_dense(y0, k1, k2, h, 0.0) == y0
        assert rosenbrock_dense(y0, k1, k2, h, 1.0) == pytest.approx(y_new, rel=1e-15)
    local_ratios = np.array(local[:-1]) / np.array(local[1:])
    companion_ratios = np.array(companion[:-1]) / np.array(companion[1:])
    assert np.all((local_ratios > 6.5) & (local_ratios < 9.5)), (local, local_ratios)
    assert np.all((companion_ratios > 13) & (companion_ratios < 19)), (companion,
                                                                      companion_ratios)


def test_rosenbrock_is_l_stable():
    """R(z) = y_new / y on y' = λy, z = hλ: |R| ≤ 1 on the left half-plane, R → 0 as
    z → −∞, and R(z) = e^z + O(z³)."""
    def R(z):
        y_new, _, _, _ = rosenbrock_step(lambda t, y: z * y, lambda t, y: z, lambda t, y: 0.0,
                                         0.0, 1.0 + 0j, 1.0)
        return y_new
    for z in [-1e-3, -0.5, -1, -10, -100, 2j, -1 + 5j, -50 + 50j, 30j]:
        assert abs(R(z)) <= 1.0 + 1e-15, z
    assert abs(R(-1e9)) < 1e-8
    small = [abs(R(z) - np.exp(z)) / abs(z) ** 3 for z in (1e-2, 5e-3, 2.5e-3)]
    assert max(small) / min(small) < 1.1  # the leading error term is z³·constant


# --- the tableaux live in one module ---------------------------------------------------

def test_no_kernel_defines_coefficients_of_its_own():
    """Every coefficient array is defined in neurosim.kernels.tableaux; the kernels import
    them (a second copy could drift from the one these tests check)."""
    folder = Path(tb.__file__).parent
    for path in folder.glob("*.py"):
        if path.name == "tableaux.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name):
                            assert not name.id.startswith(("DP_", "RK4_", "ROS_", "RB_")), \
                                f"{path.name} defines {name.id}"
