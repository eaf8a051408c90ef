"""Sentences for numbers: a failed kernel status as what, where, when and what to try; the
warning for a fixed step above a method's stability limit.

Kernels report failure as numbers (:mod:`neurosim.kernels.constants`); the sentences are
written here, from ``STATUS_MESSAGES`` (scipy's ``MESSAGES``, diffrax's ``RESULTS``).
"""

from __future__ import annotations

import math

import numpy as np

from neurosim.kernels import constants as kc

STATUS_MESSAGES = {
    kc.OK: "completed",
    kc.NON_FINITE: "non-finite V",
    kc.OUT_OF_BOUNDS: "|V| beyond the bound of {v_bound:g} mV",
    kc.STEP_UNDERFLOW: "step size underflow",
    kc.TOO_MANY_STEPS: "more than max_steps = {max_steps} steps",
}

STATS_NAMES = ("steps", "rejected", "rhs_evaluations", "jacobians")


def fastest_time_constant(compiled) -> tuple[float, str | None]:
    """(τ, neuron) of the smallest C / (g_L + Σ w·κ + Σ ĝ) over free neurons (ms).

    With every synapse fully open this bounds the stiffest decay the circuit can reach.
    A neuron with no conductance (g_L = 0 and no κ > 0 synapse or gap junction in, a
    Neural ODE unit) does not decay: τ = ∞, never chosen; (∞, None) if no neuron decays.
    """
    n, theta, block = compiled.n_neurons, compiled.theta, compiled.layout.block
    C, g_L = theta[block("neurons.C")], theta[block("neurons.g_L")]
    w, kappa = theta[block("synapses.w")], theta[block("synapses.kappa")]
    total = g_L + np.bincount(np.repeat(np.arange(n), np.diff(compiled.syn_ptr)), w * kappa,
                              minlength=n)
    gap = theta[block("gap_junctions.g")]
    total += np.bincount(np.repeat(np.arange(n), np.diff(compiled.gap_ptr)), gap[compiled.gap_idx],
                         minlength=n) if gap.size else 0.0
    tau = np.where(total > 0, C / np.where(total > 0, total, 1.0), np.inf)
    tau[~np.isnan(compiled.hold)] = np.inf
    i = int(np.argmin(tau))
    if not np.isfinite(tau[i]):
        return math.inf, None
    return float(tau[i]), compiled.neuron_names[i]


def status_sentence(status: int, method, v_bound: float) -> str:
    """What a failed kernel status means, with the run's bound and step limit."""
    max_steps = method.controller.max_steps if method.controller is not None else 0
    return STATUS_MESSAGES[status].format(v_bound=v_bound, max_steps=max_steps)


def failure_message(status: int, method, neuron_names, stats, t_fail: float,
                    v_bound: float, t_good: float | None = None) -> str:
    """The sentence for a failed kernel status: what, which neuron, when (in the step
    from ``t_good``, the last state that passed the checks, where known), what to try."""
    what = status_sentence(status, method, v_bound)
    where = ""
    if status in (kc.NON_FINITE, kc.OUT_OF_BOUNDS):
        where = f" in neuron '{neuron_names[stats[kc.S_FAIL_NEURON]]}'"
    when = (f"in the step from t = {t_good:.6g} to {t_fail:.6g} ms"
            if t_good is not None and t_good < t_fail else f"at t = {t_fail:.6g} ms")
    return (f"{what}{where} {when} (step {int(stats[kc.S_STEPS])}) "
            f"with integrator '{method.name}'; {method.hint()}")


def run_failure_message(status: int, method, compiled, stats, t_fail: float, t_good: float,
                        v_bound: float) -> str:
    """:func:`failure_message` for a run of ``compiled`` (with the parameters it ran),
    with the circuit's fastest time constant: one sentence for a single run and for a
    batch's run alike."""
    message = failure_message(status, method, compiled.neuron_names, stats, t_fail, v_bound,
                              t_good)
    tau, neuron = fastest_time_constant(compiled)
    if np.isfinite(tau):
        message += (f" (the fastest time constant is {tau:.3g} ms, neuron '{neuron}'"
                    f"{': stiff' if tau < 1e-2 else ''})")
    return message


def describe_failure(status: int, stepper) -> str:
    """:func:`run_failure_message` for a single run."""
    return run_failure_message(status, stepper.method, stepper.compiled, stepper.stats,
                               stepper.failure_time(), stepper.last_good_time(), stepper.v_bound)


def check_step_stability(method, compiled) -> str | None:
    """A warning sentence if a fixed explicit step exceeds the method's stability limit
    (its ``stability_limit`` × the circuit's fastest time constant)."""
    limit = method.stability_limit
    if limit is None:
        return None
    tau, neuron = fastest_time_constant(compiled)
    if method.dt <= limit * tau:
        return None
    return (f"dt = {method.dt:g} ms is above the stability limit of '{method.name}' "
            f"({limit:g} x tau = {limit * tau:.3g} ms for neuron '{neuron}', tau >= {tau:.3g} ms "
            "with every synapse open); the run may diverge: use a smaller dt, "
            "integrator='exp_euler' or integrator='rosenbrock23'")
