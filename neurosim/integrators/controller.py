"""How big a step: the error control of the adaptive methods, apart from the methods.

A method proposes a step and its error (its tableau's business); the controller decides
whether to accept it and how large the next step is (diffrax's step-size controllers,
scipy's ``rtol``/``atol``/``max_step``).  The kernels carry out the decision
(:func:`neurosim.kernels.adaptive.accepted_step_size`); this object holds and validates
its settings once, at construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from neurosim.errors import CircuitError


def positive_option(value, name: str) -> float:
    """``value`` as a float, or a one-line CircuitError unless it is finite and > 0."""
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise CircuitError(f"`{name}` must be a positive number, got {value!r}")
    return number


@dataclass(frozen=True)
class StepController:
    """PI step-size control on a scaled RMS error (Hairer, Nørsett & Wanner I, II.4).

    A step is accepted when the RMS over free neurons of
    err / (atol + rtol·max(|V|, |V_new|)) is at most 1; the next step grows or shrinks
    with that error (at most 10x, at least 1/5), never beyond ``max_step``.

    Parameters
    ----------
    rtol, atol : float
        Relative and absolute (mV) tolerance of the local error.
    max_step : float, ms
        Upper bound on the step (default: unbounded).
    max_steps : int
        The most steps, accepted and rejected, a run may take before it fails.
    adaptive : bool
        False: accept every step whatever its error, each of the integrator's ``dt``
        (except those landing on an input's breakpoint or the run's end), for
        convergence studies.
    """

    rtol: float = 1e-6
    atol: float = 1e-6
    max_step: float = math.inf
    max_steps: int = 10_000_000
    adaptive: bool = True

    def __post_init__(self):
        rtol = positive_option(self.rtol, "rtol")
        atol = positive_option(self.atol, "atol")
        max_step = float(self.max_step)
        if not max_step > 0:
            raise CircuitError(f"`max_step` must be > 0, got {self.max_step!r}")
        if int(self.max_steps) != self.max_steps or self.max_steps < 1:
            raise CircuitError(f"`max_steps` must be a whole number >= 1, got {self.max_steps!r}")
        for name, value in (("rtol", rtol), ("atol", atol), ("max_step", max_step),
                            ("max_steps", int(self.max_steps)),
                            ("adaptive", bool(self.adaptive))):
            object.__setattr__(self, name, value)

    def kernel_args(self) -> tuple:
        """(rtol, atol, max_step, adaptive, max_steps), in the order the kernels take them."""
        return self.rtol, self.atol, self.max_step, self.adaptive, self.max_steps


#: what a batch kernel that serves both families is given for a fixed-step method, in
#: place of :meth:`StepController.kernel_args` (it reads none of them)
NO_STEP_CONTROL = (1.0, 1.0, math.inf, False, 1)
