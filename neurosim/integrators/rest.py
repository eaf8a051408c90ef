"""Rest states: stimulus-free steady states of many runs in one parallel call, and their
derivative with respect to θ (see :mod:`neurosim.kernels.steady`)."""

from __future__ import annotations

import numpy as np

from neurosim.integrators.loading import call_kernel, run_in_threads
from neurosim.integrators.sensitivity import free_parameter_codes
from neurosim.kernels import constants as kc
from neurosim.kernels.steady import (N_REPORT, R_METHOD, STABLE_RESTS, find_rests,
                                     rest_sensitivity)

#: Newton stops when no free potential changes faster than this (mV/ms); with τ = 50 ms
#: that leaves the rest within ~5e-9 mV of the exact zero
REST_TOL = 1e-10


def stimulus_free(drive) -> tuple:
    """A drive's clamps (mask and holding potentials) without its stimulus rows."""
    return _no_stimuli() + (drive[7], drive[8])


def _no_stimuli() -> tuple:
    """The stimulus entries of a drive tuple with no stimulus rows."""
    return (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.bool_),
            np.empty((0, kc.N_STIM_PARAMS)), np.zeros(1, dtype=np.int64), np.empty(0),
            np.empty(0))


def find_rest_states(compiled, thetas, V_start, item_protocol, clamped, hold, tol=REST_TOL,
                     probe_all=False):
    """Stimulus-free steady states of many runs in one parallel call.

    Run b starts Newton (then, if needed, a pre-run) from ``V_start[b]`` with parameters
    ``thetas[b]`` and the clamps of protocol ``item_protocol[b]`` (rows of ``clamped``
    and ``hold``).  Returns (V, reports): the states used, and per run the method code,
    Newton iterations, final max |dV/dt| (mV/ms), the largest real part of the
    Jacobian's eigenvalues (1/ms), the pre-run's length (ms) and, with ``probe_all``, how
    many other stable rests Newton found from other starts (−1 without); see
    :mod:`neurosim.kernels.steady`.  The states do not depend on ``probe_all``.
    """
    thetas = np.ascontiguousarray(thetas, dtype=np.float64)
    V = np.array(V_start, dtype=np.float64, order="C", copy=True)
    reports = np.zeros((V.shape[0], N_REPORT))
    run_in_threads(find_rests, V.shape[0],
                   (V, thetas, np.ascontiguousarray(item_protocol, dtype=np.int64),
                    compiled.net_for(thetas), _no_stimuli(),
                    np.ascontiguousarray(clamped, dtype=np.bool_),
                    np.ascontiguousarray(hold, dtype=np.float64), float(tol), bool(probe_all),
                    reports))
    return V, reports


def find_rest_state(compiled, drive, tol=REST_TOL, probe_all=False):
    """:func:`find_rest_states` of one run: ``compiled``'s parameters under the clamps of
    ``drive`` (a CompiledDrive), from θ's V0.  Returns (V, report)."""
    V0 = compiled.layout.block("neurons.V0")
    V, reports = find_rest_states(compiled, compiled.theta[None, :],
                                  compiled.theta[None, V0], np.zeros(1, dtype=np.int64),
                                  drive.clamped[None, :], drive.arrays[8][None, :], tol,
                                  probe_all)
    return V[0], reports[0]


def rest_tangent(compiled, drive, V, free) -> np.ndarray:
    """∂V*/∂θ[free] (n, len(free)) at the stable rest V of ``compiled`` under the clamps
    of ``drive``; zero where the Jacobian is singular."""
    S = np.zeros((compiled.n_neurons, len(free)))
    if not call_kernel(rest_sensitivity, np.ascontiguousarray(V, dtype=np.float64),
                       compiled.theta, compiled.net, free_parameter_codes(compiled, free),
                       stimulus_free(drive), S):
        S[:] = 0.0
    return S


def rest_start(compiled, drive, free):
    """(V*, ∂V*/∂θ[free]) of the rest a run of ``compiled`` under ``drive`` (a
    CompiledDrive) starts from; the derivative is 0 where no stable rest exists (the start
    then comes from a pre-run)."""
    V, report = find_rest_state(compiled, drive)
    S = (rest_tangent(compiled, drive.arrays, V, free) if report[R_METHOD] in STABLE_RESTS
         else np.zeros((compiled.n_neurons, len(free))))
    return V, S
