"""Forward sensitivities: a run with ∂V/∂θ[free] alongside V, for the methods that declare
``has_tangents`` (:data:`~neurosim.integrators.methods.SENSITIVITY_METHODS`)."""

from __future__ import annotations

import numpy as np

from neurosim.compile.layout import BLOCKS
from neurosim.errors import CircuitError
from neurosim.integrators.loading import call_kernel
from neurosim.integrators.methods import SENSITIVITY_METHODS, FixedStepIntegrator
from neurosim.kernels import constants as kc
from neurosim.kernels.adaptive import run_dopri5_tangent
from neurosim.kernels.fixed import impose_clamps, run_fixed_tangent


def free_parameter_codes(compiled, indices) -> tuple:
    """(kind, index) of each θ position, and the edge tables the tangent kernels need."""
    n = compiled.n_neurons
    kinds, where = [], []
    for p in indices:
        block, position = compiled.layout.field_of(int(p))
        kinds.append(BLOCKS.index(block))
        where.append(position)
    syn_post = np.repeat(np.arange(n), np.diff(compiled.syn_ptr)).astype(np.int64)
    gaps = compiled.circuit.gap_junctions
    gap_a = np.array([compiled.index(g.a) for g in gaps], dtype=np.int64)
    gap_b = np.array([compiled.index(g.b) for g in gaps], dtype=np.int64)
    return (np.array(kinds, dtype=np.int64), np.array(where, dtype=np.int64), syn_post,
            gap_a, gap_b)


def integrate_with_sensitivity(method, compiled, drive, free, record, dt_out, n_rows,
                               v_bound, start=None):
    """(status, V_out, S_out, stats) of one run with ∂V/∂θ[free] at every output row.

    V_out has shape (n_rows + 1, len(record)); S_out (n_rows + 1, len(record), len(free)).
    ``start`` is (V, S), the initial state and its derivative (default: θ's V0, whose
    derivative is 1 for free V0 entries).  The run takes exactly the steps
    :func:`neurosim.simulate` takes.
    """
    if compiled.schedule is not None:
        raise CircuitError("gradients through a parameter schedule are not available; "
                           "fit such circuits with CMA-ES")
    if not method.has_tangents:
        raise CircuitError(f"gradients are available for {', '.join(SENSITIVITY_METHODS)}; "
                           f"got integrator '{method.name}'")
    free = np.asarray(free, dtype=np.int64)
    tangent = free_parameter_codes(compiled, free)
    n, m = compiled.n_neurons, free.shape[0]
    if start is not None:
        V, S = (np.array(a, dtype=np.float64, order="C", copy=True) for a in start)
    else:
        V = compiled.theta[compiled.layout.block("neurons.V0")].copy()
        S = np.zeros((n, m))
        for c, (kind, i) in enumerate(zip(tangent[0], tangent[1])):
            if BLOCKS[kind] == "neurons.V0":
                S[i, c] = 1.0
    clamped = drive.clamped
    call_kernel(impose_clamps, 0.0, V, drive.arrays, np.empty((kc.WORK_ROWS, n)))
    S[clamped] = 0.0
    out_V = np.full((n_rows + 1, record.shape[0]), np.nan)
    out_S = np.full((n_rows + 1, record.shape[0], m), np.nan)
    out_V[0] = V[record]
    out_S[0] = S[record]
    stats = np.zeros(kc.N_STATS, dtype=np.int64)
    if isinstance(method, FixedStepIntegrator):
        stride = round(dt_out / method.dt)
        status = call_kernel(run_fixed_tangent, method.code, V, S, 0.0, 0, method.dt, n_rows,
                             stride, compiled.theta, compiled.net, tangent, drive.arrays,
                             drive.breakpoints, record, v_bound, stats, out_V[1:], out_S[1:])
    else:
        state = np.zeros(kc.N_SOLVER_STATE)
        state[kc.X_H] = method.dt or 0.0
        state[kc.X_ERR_OLD] = 1e-4
        out_times = np.arange(1, n_rows + 1) * dt_out
        status = call_kernel(run_dopri5_tangent, V, S, out_times, drive.breakpoints,
                             compiled.theta, compiled.net, tangent, drive.arrays,
                             *method.controller.kernel_args(), record, v_bound, state, stats,
                             out_V[1:], out_S[1:])
    return status, out_V, out_S, stats
