"""Integrators: small objects that declare a method, hold its options and drive its kernel.

The contract every integrator keeps (compare scipy's ``OdeSolver``):

1. The class declares what the method is: ``name``, ``order``, ``error_order`` (None for a
   fixed step), ``tableau`` (its coefficients, :mod:`neurosim.kernels.tableaux`),
   ``has_tangents`` (forward sensitivities) and ``float32_lanes`` (batches in lockstep
   lanes, float32 on request).  Lists of methods by capability (``SENSITIVITY_METHODS``,
   ``FLOAT32_METHODS``, ``STABILITY_LIMIT``) are derived from these declarations, once.
2. Options are given on construction and validated there; an adaptive method keeps its
   error control in a :class:`StepController` (rtol, atol, max_step, max_steps), apart
   from the method, which only proposes steps.
3. :meth:`Integrator.plan` checks the options against a run (duration, output step)
   and returns how many output rows the run has.
4. :meth:`Integrator.start` returns a stepper positioned at t = 0, its kernel loaded.
5. ``advance(out_V)`` fills the next rows of the output grid and returns a kernel
   status; it never allocates per step and never calls back into Python.
6. Clamped neurons follow their command exactly, whatever the method.

``METHODS`` maps names to classes; ``simulate(integrator=...)`` takes a name or an instance
(:func:`make_integrator`).

The modules, by responsibility (this package re-exports their public names):

========================  ==============================================================
``methods``               the classes, ``METHODS``, ``make_integrator``, lists by capability
``controller``            :class:`StepController`: error control of adaptive methods
``steppers``              a run in progress across kernel calls; the output grid's rows
``loading``               kernels loaded or compiled before the work, compile notices,
                          item ranges on threads
``runs``                  batches (item by item, or lockstep lanes), chunk size, precision
``diagnostics``           sentences for failed statuses, the stability warning
``sensitivity``           forward sensitivities ∂V/∂θ along a run
``rest``                  stimulus-free rest states and their derivative
========================  ==============================================================

Kernels are loaded from Numba's disk cache, or compiled there on a cache miss (the first
use after installing or changing neurosim), before the work they do starts
(:func:`load_kernels`): a timer started afterwards measures running only, and a
compilation is announced on the ``neurosim`` logger.
"""

from neurosim.integrators.controller import NO_STEP_CONTROL, StepController
from neurosim.integrators.diagnostics import (STATS_NAMES, STATUS_MESSAGES, check_step_stability,
                                              describe_failure, failure_message,
                                              fastest_time_constant, run_failure_message,
                                              status_sentence)
from neurosim.integrators.loading import (call_kernel, compile_seconds, count_compile_wait,
                                          running_clock,
                                          load_kernels, logger,
                                          one_compile_notice, run_in_threads)
from neurosim.integrators.methods import (FLOAT32_METHODS, MAX_DENSE_JACOBIAN, METHODS, RK4,
                                          SENSITIVITY_METHODS, STABILITY_LIMIT,
                                          AdaptiveIntegrator, Dopri5, Euler, ExponentialEuler,
                                          FixedStepIntegrator, Integrator, LTC, Rosenbrock23,
                                          make_integrator)
from neurosim.integrators.rest import (REST_TOL, find_rest_state, find_rest_states,
                                       rest_start, rest_tangent, stimulus_free)
from neurosim.integrators.runs import (FLOAT32_MIN_RTOL, LANE_STATE_BYTES, MAX_LANES,
                                       PRECISIONS, check_precision, chunk_rows, lockstep_plan,
                                       lockstep_unit, run_items)
from neurosim.integrators.sensitivity import free_parameter_codes, integrate_with_sensitivity
from neurosim.integrators.steppers import MAX_COUNT
from neurosim.kernels.constants import OK
from neurosim.kernels.steady import (N_REPORT, R_ITERATIONS, R_MAX_REAL_EIG, R_METHOD,
                                     R_OTHER_RESTS, R_PRERUN_MS, R_RESIDUAL, STABLE_RESTS)

__all__ = [
    # methods
    "Integrator", "FixedStepIntegrator", "AdaptiveIntegrator", "Euler", "RK4",
    "ExponentialEuler", "LTC", "Dopri5", "Rosenbrock23", "METHODS", "make_integrator",
    "SENSITIVITY_METHODS", "FLOAT32_METHODS", "STABILITY_LIMIT", "MAX_DENSE_JACOBIAN",
    "StepController", "NO_STEP_CONTROL", "MAX_COUNT",
    # kernels in memory, threads
    "load_kernels", "call_kernel", "run_in_threads", "one_compile_notice", "compile_seconds", "count_compile_wait", "running_clock",
    "logger",
    # batches
    "run_items", "lockstep_plan", "lockstep_unit", "chunk_rows", "check_precision", "PRECISIONS",
    "FLOAT32_MIN_RTOL", "MAX_LANES", "LANE_STATE_BYTES",
    # failures and warnings
    "OK", "STATUS_MESSAGES", "STATS_NAMES", "failure_message", "run_failure_message", "describe_failure",
    "status_sentence",
    "check_step_stability", "fastest_time_constant",
    # sensitivities and rests
    "free_parameter_codes", "integrate_with_sensitivity", "REST_TOL", "stimulus_free",
    "find_rest_states", "find_rest_state", "rest_start", "rest_tangent", "N_REPORT", "R_ITERATIONS",
    "R_MAX_REAL_EIG", "R_METHOD", "R_OTHER_RESTS", "R_PRERUN_MS", "R_RESIDUAL",
    "STABLE_RESTS",
]
