"""The integrators: one small class per method, declaring what it is; ``METHODS``.

Each class declares, as class data (compare scipy's ``RungeKutta`` subclasses):

``name``, ``code``
    Its key in :data:`METHODS` and the method code its kernel takes.
``order``, ``error_order``
    The order of the step, and of its error estimate (None: a fixed-step method).
``tableau``
    Its coefficients (a :mod:`neurosim.kernels.tableaux` object, which the kernels read
    as constants), or None for the methods that are not Runge–Kutta schemes
    (exponential Euler, the LTC step).
``has_tangents``
    Whether the tangent of its discrete step is implemented (forward sensitivities,
    gradients): :data:`SENSITIVITY_METHODS`.
``float32_lanes``
    Whether its batches run in lockstep lanes (:mod:`neurosim.kernels.lockstep`), which
    also compute in float32 on request: :data:`FLOAT32_METHODS`.
``stability_limit``
    For explicit fixed-step methods: a run diverges on a leak of time constant τ once
    dt exceeds this × τ (:data:`STABILITY_LIMIT`).

Fixed-step methods hold ``dt``; adaptive ones a first step ``dt`` and a
:class:`~neurosim.integrators.controller.StepController` (``controller``), whose settings
they show as ``rtol``, ``atol``, ``max_step``, ``max_steps`` and ``adaptive``.
"""

from __future__ import annotations

import math

from neurosim.errors import CircuitError
from neurosim.integrators.controller import StepController, positive_option
from neurosim.integrators.steppers import AdaptiveStepper, FixedStepper, count, output_rows
from neurosim.kernels import constants as kc
from neurosim.kernels import tableaux
from neurosim.kernels.adaptive import run_dopri5, run_rosenbrock23
from neurosim.resources import require_memory

#: the most neurons rosenbrock23 takes: its dense LU costs n³/3 operations a step
#: (2·10¹⁰ at 4,000 neurons, seconds per step)
MAX_DENSE_JACOBIAN = 4000


class Integrator:
    """Base class; see the package docstring for the contract and this module's for the
    class data every method declares."""

    name = ""
    code = -1
    order = 0
    error_order: int | None = None
    tableau = None
    has_tangents = False
    float32_lanes = False
    stability_limit: float | None = None
    adaptive = False
    #: the step controller of an adaptive method; None for a fixed-step one
    controller: StepController | None = None

    def options(self) -> dict:
        """Settings that reproduce this integrator (stored with every result)."""
        raise NotImplementedError

    def plan(self, duration: float, dt_out: float | None) -> tuple[float, int]:
        """(dt_out, n_rows) of the output grid t = dt_out·k, k = 1..n_rows."""
        raise NotImplementedError

    def start(self, compiled, drive, V0, record, v_bound, dt_out):
        """A stepper at t = 0 that writes ``V[record]`` every ``dt_out`` ms."""
        raise NotImplementedError

    def check_size(self, n_neurons: int, runs_at_once: int = 1) -> None:
        """ResourceError or CircuitError if the method cannot run a circuit this large
        (``runs_at_once`` runs in parallel); most methods need O(neurons) memory."""

    def hint(self) -> str:
        return "try integrator='rosenbrock23' (stiff) or smaller tolerances"

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


class FixedStepIntegrator(Integrator):
    """A method with a constant step ``dt`` (ms); output every ``dt_out / dt`` steps."""

    def __init__(self, dt: float = 0.05):
        self.dt = positive_option(dt, "dt")

    def options(self) -> dict:
        return {"dt": self.dt}

    def hint(self) -> str:
        return f"try a smaller dt than {self.dt:g} ms or integrator='rosenbrock23'"

    def plan(self, duration, dt_out):
        dt_out = self.dt if dt_out is None else positive_option(dt_out, "dt_out")
        stride = round(count(f"dt = {self.dt:g} ms makes too many steps per output row",
                             dt_out / self.dt, "choose a larger dt"))
        if stride < 1 or abs(stride * self.dt - dt_out) > 1e-9 * dt_out:
            raise CircuitError(
                f"dt_out = {dt_out} ms must be a whole multiple of dt = {self.dt} ms "
                f"for the fixed-step integrator '{self.name}'")
        return dt_out, output_rows(duration, dt_out)

    def start(self, compiled, drive, V0, record, v_bound, dt_out):
        return FixedStepper(self, compiled, drive, V0, record, v_bound, dt_out)


class Euler(FixedStepIntegrator):
    """Explicit (forward) Euler, order 1."""

    name, code, tableau = "euler", kc.EULER, tableaux.EULER
    order = tableau.order
    has_tangents = True
    stability_limit = 2.0


class RK4(FixedStepIntegrator):
    """The classic four-stage Runge–Kutta method, order 4."""

    name, code, tableau = "rk4", kc.RK4, tableaux.CLASSIC_RK4
    order = tableau.order
    has_tangents = True
    stability_limit = 2.785


class ExponentialEuler(FixedStepIntegrator):
    """Exponential Euler on each neuron's linearisation, order 1.

    With the sigmoids frozen over the step, C dV/dt = N − G·V is solved exactly, so a
    passive neuron is integrated without error at any dt and stiff leaks stay stable.
    """

    name, code, order = "exp_euler", kc.EXP_EULER, 1


class LTC(FixedStepIntegrator):
    """The fused semi-implicit step of the LTC/NCP papers, order 1.

    V ← (C/Δt·V + g_L E_L + Σ wσE + Σ ĝ V_j + I) / (C/Δt + g_L + Σ wσκ + Σ ĝ).
    """

    name, code, order = "ltc", kc.LTC, 1
    has_tangents = True


class AdaptiveIntegrator(Integrator):
    """An embedded pair with error control, PI step-size control and dense output.

    Parameters
    ----------
    rtol, atol : float
        Relative and absolute (mV) tolerance of the local error.
    dt : float, ms, optional
        First step; chosen automatically when omitted.  With ``adaptive=False`` the
        method takes steps of exactly ``dt`` (for convergence studies).
    max_step : float, ms
        Upper bound on the step (default: unbounded).
    adaptive : bool
        False: accept every step, each of size ``dt``.
    max_steps : int
        The most steps (accepted and rejected) before the run fails.

    The options other than ``dt`` make up its :class:`StepController` (``controller``).
    """

    #: the method's time loop (a kernel of :mod:`neurosim.kernels.adaptive`)
    kernel = None

    def __init__(self, rtol: float = 1e-6, atol: float = 1e-6, dt: float | None = None,
                 max_step: float = math.inf, adaptive: bool = True, max_steps: int = 10_000_000):
        self.controller = StepController(rtol=rtol, atol=atol, max_step=max_step,
                                         max_steps=max_steps, adaptive=adaptive)
        self.dt = None if dt is None else positive_option(dt, "dt")
        if not self.controller.adaptive and self.dt is None:
            raise CircuitError(f"'{self.name}' with adaptive=False needs a step dt")

    # the controller's settings, read where the integrator's were read before it had one
    rtol = property(lambda self: self.controller.rtol)
    atol = property(lambda self: self.controller.atol)
    max_step = property(lambda self: self.controller.max_step)
    max_steps = property(lambda self: self.controller.max_steps)
    adaptive = property(lambda self: self.controller.adaptive)

    def options(self) -> dict:
        c = self.controller
        return {"rtol": c.rtol, "atol": c.atol, "dt": self.dt, "max_step": c.max_step,
                "adaptive": c.adaptive, "max_steps": c.max_steps}

    def plan(self, duration, dt_out):
        dt_out = 0.1 if dt_out is None else positive_option(dt_out, "dt_out")
        return dt_out, output_rows(duration, dt_out)

    def start(self, compiled, drive, V0, record, v_bound, dt_out):
        if compiled.schedule is not None:
            raise CircuitError(f"a parameter schedule needs a fixed-step integrator "
                               f"(euler, rk4, exp_euler, ltc), not '{self.name}'")
        self.check_size(compiled.n_neurons)
        return AdaptiveStepper(self, compiled, drive, V0, record, v_bound, dt_out)


class Dopri5(AdaptiveIntegrator):
    """Dormand–Prince 5(4) with a 4th-order continuous extension (Hairer's DOPRI5)."""

    name, code, tableau = "dopri5", kc.DOPRI5, tableaux.DORMAND_PRINCE
    order, error_order = tableau.order, tableau.error_order
    has_tangents = True
    float32_lanes = True
    kernel = staticmethod(run_dopri5)


class Rosenbrock23(AdaptiveIntegrator):
    """The L-stable Rosenbrock 2(3) of Shampine & Reichelt (MATLAB's ode23s).

    Uses the analytic Jacobian; one LU factorisation per step.  For stiff circuits
    (tiny C, large conductances) where explicit methods need absurdly small steps.
    """

    name, code, tableau = "rosenbrock23", kc.ROSENBROCK23, tableaux.SHAMPINE_REICHELT
    order, error_order = tableau.order, tableau.error_order
    kernel = staticmethod(run_rosenbrock23)

    def check_size(self, n_neurons, runs_at_once=1):
        if n_neurons > MAX_DENSE_JACOBIAN:
            raise CircuitError(
                f"'rosenbrock23' factors a dense {n_neurons:,} x {n_neurons:,} Jacobian every "
                f"step (about {n_neurons ** 3 / 3:.1e} operations); above "
                f"{MAX_DENSE_JACOBIAN:,} neurons use 'exp_euler' (stable on stiff circuits, "
                "no Jacobian) or 'dopri5'")
        require_memory(2 * 8 * n_neurons ** 2 * runs_at_once,
                       f"'rosenbrock23''s Jacobian and its factors ({n_neurons:,} neurons, "
                       f"{runs_at_once} runs at once)",
                       "use 'exp_euler' or 'dopri5', which need no Jacobian")

    def hint(self) -> str:
        # L-stable: stiffness does not make it fail, so a divergence is most likely the
        # model's own (a runaway of positive feedback), or a tolerance too loose to follow it
        return ("an L-stable method fails mostly where the model itself runs away: check "
                "for positive feedback or inputs (weights, reversal potentials, currents) "
                "driving V past the bound, or try smaller rtol/atol")


METHODS: dict[str, type[Integrator]] = {
    cls.name: cls for cls in (Euler, RK4, ExponentialEuler, LTC, Dopri5, Rosenbrock23)}

# what the methods declare, gathered here once for the modules that ask by name

#: integrators with forward sensitivities (the tangent of their discrete step)
SENSITIVITY_METHODS = tuple(name for name, cls in METHODS.items() if cls.has_tangents)
#: integrators whose batches run in lockstep lanes and so in float32 on request
FLOAT32_METHODS = tuple(name for name, cls in METHODS.items() if cls.float32_lanes)
#: explicit methods diverge on a leak with time constant τ once dt exceeds this × τ
STABILITY_LIMIT = {name: cls.stability_limit for name, cls in METHODS.items()
                   if cls.stability_limit is not None}


def make_integrator(integrator, *, dt=None, rtol=None, atol=None) -> Integrator:
    """An Integrator from a name (with options) or an instance (taken as is)."""
    if isinstance(integrator, Integrator):
        if dt is not None or rtol is not None or atol is not None:
            raise CircuitError("give dt/rtol/atol to the Integrator instance, not to simulate()")
        return integrator
    if integrator not in METHODS:
        raise CircuitError(f"unknown integrator {integrator!r}; allowed: {', '.join(METHODS)}")
    cls = METHODS[integrator]
    if issubclass(cls, FixedStepIntegrator):
        if rtol is not None or atol is not None:
            raise CircuitError(f"'{integrator}' is a fixed-step method: it takes dt, not rtol/atol")
        return cls() if dt is None else cls(dt=dt)
    options = {k: v for k, v in (("dt", dt), ("rtol", rtol), ("atol", atol)) if v is not None}
    return cls(**options)
