"""The methods' coefficients: every number a kernel's step is made of, and nothing else.

Module-level NumPy arrays and floats, which Numba freezes into the compiled kernels as
constants (reading ``RK4_C[1]`` compiles to the same code as writing ``0.5``).  Each
number is written here once, as its published fraction, in the form the kernels apply
it: changing that form (``h / 6`` into ``h * (1/6)``, say) would change results in the
last bit, and batches are held equal to single runs bit for bit.

The small :class:`Tableau` objects group each method's arrays with its order for
Python (the integrator classes hold them); kernels read the arrays.  tests/test_tableaux.py
checks the arrays against the published tableaux and their order conditions.
"""

import math
from dataclasses import dataclass

import numpy as np

# --- Dormand & Prince (1980) 5(4), as in Hairer's DOPRI5 and scipy's RK45 -------------
#
# Seven stages, first same as last: the last row of A is b, so f at the accepted state
# is the next step's first stage.

DP_C = np.array([0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0])
DP_A = np.array([
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [1 / 5, 0.0, 0.0, 0.0, 0.0, 0.0],
    [3 / 40, 9 / 40, 0.0, 0.0, 0.0, 0.0],
    [44 / 45, -56 / 15, 32 / 9, 0.0, 0.0, 0.0],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0.0, 0.0],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656, 0.0],
    [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
])
#: the 5th-order weights, which advance the solution (local extrapolation)
DP_B = np.array([35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0])
#: the embedded 4th-order weights b̂
DP_B_HAT = np.array([5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200,
                     187 / 2100, 1 / 40])
#: error weights e = b̂ − b, each reduced to one fraction (scipy's ``E``; the sign does not
#: matter to the error norm): the local error estimate is h·Σ e_s·K_s
DP_E = np.array([-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40])
#: Fourth-order continuous extension (Hairer's DOPRI5 dense output, in scipy's RK45 form):
#: y(t + θh) = y + h·Σ_s K_s·(P_s · [θ, θ², θ³, θ⁴]).
DP_P = np.array([
    [1.0, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432],
    [0.0, 0.0, 0.0, 0.0],
    [0.0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799],
    [0.0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072],
    [0.0, 127303824393 / 49829197408, -318862633887 / 49829197408, 701980252875 / 199316789632],
    [0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844],
    [0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423],
])
DP_STAGES = 7
#: the first stage at c = 1 (the step's end, where an input's limit from below is taken)
DP_END_STAGE = 5
DP_ORDER = 5
#: the order of the error estimate (the embedded pair's lower order): step control scales h
#: by err^(−1/(DP_ERROR_ORDER + 1))
DP_ERROR_ORDER = 4

# --- the classic Runge–Kutta method of order 4 -----------------------------------------

RK4_C = np.array([0.0, 1 / 2, 1 / 2, 1.0])
RK4_A = np.array([
    [0.0, 0.0, 0.0, 0.0],
    [1 / 2, 0.0, 0.0, 0.0],
    [0.0, 1 / 2, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
])
RK4_B = np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6])
#: b as the kernels apply it, h / RK4_B_SCALE · Σ RK4_B_SCALED[s]·k_s (whole numbers, so
#: the weights round nowhere); RK4_B = RK4_B_SCALED / RK4_B_SCALE
RK4_B_SCALED = np.array([1.0, 2.0, 2.0, 1.0])
RK4_B_SCALE = 6.0
RK4_STAGES = 4
RK4_ORDER = 4

# --- explicit Euler (for completeness: its kernel step is V + h·f, no coefficient) ------

EULER_C = np.array([0.0])
EULER_A = np.array([[0.0]])
EULER_B = np.array([1.0])

# --- Shampine & Reichelt (1997), "The MATLAB ODE suite": the Rosenbrock 2(3) of ode23s --
#
#   W = I − h·d·J,  T ≈ ∂f/∂t
#   k1 = W⁻¹ (F0 + h·d·T),                   F0 = f(t, y)
#   k2 = W⁻¹ (F1 − k1) + k1,                 F1 = f(t + c2·h, y + a21·h·k1)
#   y_new = y + h·k2,                        F2 = f(t + h, y_new)
#   k3 = W⁻¹ (F2 − e32 (k2 − F1) − e31 (k1 − F0) + h·d·T)
#   error ≈ h/6 (k1 − 2 k2 + k3)
#   y(t + θh) ≈ y + h (θ(1 − θ) k1 + θ(θ − 2d) k2) / (1 − 2d)
#
# d = γ = 1/(2 + √2) makes the method L-stable.

ROS_GAMMA = 1.0 / (2.0 + math.sqrt(2.0))
ROS_C2 = 1 / 2
ROS_A21 = 1 / 2
ROS_E32 = 6.0 + math.sqrt(2.0)
ROS_E31 = 2.0
#: error weights on (k1, k2, k3) as the kernel applies them: h / ROS_ERROR_SCALE · Σ w_s k_s
ROS_ERROR_SCALED = np.array([1.0, -2.0, 1.0])
ROS_ERROR_SCALE = 6.0
ROS_ORDER = 2
ROS_ERROR_ORDER = 2


@dataclass(frozen=True, eq=False)
class Tableau:
    """A method's coefficients and orders, for Python (kernels read the arrays above).

    ``c``, ``A``, ``b`` are the Butcher tableau; ``e`` the error weights (local error
    h·Σ e_s k_s) and ``dense`` the continuous extension, where the method has them.
    ``error_order`` is the order of the error estimate, None for a method without one.
    """

    name: str
    order: int
    error_order: int | None
    c: np.ndarray
    A: np.ndarray
    b: np.ndarray
    e: np.ndarray | None = None
    dense: np.ndarray | None = None

    @property
    def stages(self) -> int:
        return self.c.shape[0]

    def __repr__(self):
        return f"Tableau({self.name!r}, order={self.order}, stages={self.stages})"


@dataclass(frozen=True, eq=False)
class RosenbrockTableau:
    """The coefficients of the two-stage Rosenbrock 2(3) (see the block comment above)."""

    name: str
    order: int
    error_order: int
    gamma: float
    c2: float
    a21: float
    e32: float
    e31: float
    error_weights: np.ndarray

    def __repr__(self):
        return f"RosenbrockTableau({self.name!r}, order={self.order}, gamma={self.gamma!r})"


EULER = Tableau("euler", 1, None, EULER_C, EULER_A, EULER_B)
CLASSIC_RK4 = Tableau("rk4", RK4_ORDER, None, RK4_C, RK4_A, RK4_B)
DORMAND_PRINCE = Tableau("dormand_prince_5_4", DP_ORDER, DP_ERROR_ORDER, DP_C, DP_A, DP_B,
                         DP_E, DP_P)
SHAMPINE_REICHELT = RosenbrockTableau("rosenbrock_2_3", ROS_ORDER, ROS_ERROR_ORDER, ROS_GAMMA,
                                      ROS_C2, ROS_A21, ROS_E32, ROS_E31,
                                      ROS_ERROR_SCALED / ROS_ERROR_SCALE)
