"""Optimisers over an :class:`~neurosim.fit.Objective`: L-BFGS-B on the engine's
gradients, and CMA-ES evaluating each population in one batched call."""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from neurosim.errors import CircuitError
from neurosim.fit.objective import Objective
from neurosim.simulate import running_clock

METHODS = ("gradient", "cmaes")


@dataclass
class FitResult:
    """The best point a fit found and how it got there.

    Attributes
    ----------
    x : ndarray
        Best free-parameter vector (transformed space).
    loss : float
    history : list of (evaluations, best loss so far)
    evaluations, simulations : int
        Objective evaluations and single simulations run.
    wall_s, simulation_s : float
        Wall time of the fit and the part spent simulating (compiling kernels excluded).
    method : str
    message : str
    converged : bool or None
        Whether L-BFGS-B met its convergence test (False: it stopped at ``maxiter``, and
        the loss is only an upper bound on the minimum it was heading for).
    """

    x: np.ndarray
    loss: float
    history: list = field(default_factory=list)
    evaluations: int = 0
    simulations: int = 0
    wall_s: float = 0.0
    simulation_s: float = 0.0
    method: str = ""
    message: str = ""
    converged: bool | None = None

    @property
    def simulations_per_s(self) -> float:
        return self.simulations / self.simulation_s if self.simulation_s else math.nan


def _counts(objective: Objective) -> tuple:
    return (running_clock(), objective.evaluations,
            objective.simulations, objective.sim_seconds)


def _account(best: FitResult, history, objective: Objective, start_counts) -> FitResult:
    """Fill in what the fit cost, counted from ``start_counts`` (see _counts); the wall
    time leaves out compiling kernels (a first use), as the simulation time does."""
    started, ev0, sim0, s0 = start_counts
    best.history = history
    best.evaluations = objective.evaluations - ev0
    best.simulations = objective.simulations - sim0
    best.simulation_s = objective.sim_seconds - s0
    best.wall_s = running_clock() - started
    return best


def progress_display(progress, total, desc):
    """A progress display with ``update(k)``, ``set_postfix(**values)`` and ``close()``:
    tqdm's bar if ``progress`` is True, what ``progress(total, desc)`` makes if it is a
    callable (the command line's lines where no terminal shows a bar), else None."""
    if not progress:
        return None
    if callable(progress):
        return progress(total, desc)
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, leave=False)


def _finite_bounds(objective: Objective):
    lo, hi = objective.par.lower, objective.par.upper
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        bad = [n for n, a, b in zip(objective.par.names, lo, hi) if not (np.isfinite(a) and np.isfinite(b))]
        raise CircuitError(f"random restarts and CMA-ES need finite bounds; give bounds for "
                           f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")
    return lo, hi


def fit_gradient(objective: Objective, x0=None, *, restarts: int = 0, seed: int = 0,
                 maxiter: int = 200, progress: bool = False, checkpoint=None) -> FitResult:
    """L-BFGS-B with bounds on the forward-sensitivity gradient; restarts from random points.

    ``checkpoint(x, loss, evaluations)`` is called whenever the best point improves.
    """
    par = objective.par
    rng = np.random.default_rng(seed)
    starts = [par.x0 if x0 is None else np.asarray(x0, dtype=float)]
    if restarts:
        lo, hi = _finite_bounds(objective)
        starts += [rng.uniform(lo, hi) for _ in range(restarts)]
    # Optimise z = (x − low)/(high − low) where both bounds are finite: parameters in mV,
    # nS and 1/mV then share one scale, and L-BFGS-B's tolerances mean the same for all.
    finite = np.isfinite(par.lower) & np.isfinite(par.upper)
    offset = np.where(finite, par.lower, 0.0)
    span = np.where(finite, par.upper - par.lower, 1.0)
    bounds = [(0.0, 1.0) if f else (a if np.isfinite(a) else None, b if np.isfinite(b) else None)
              for f, a, b in zip(finite, par.lower, par.upper)]
    start_counts = _counts(objective)
    ev0 = objective.evaluations
    best = FitResult(starts[0], math.inf, method="gradient")
    history = []
    bar = progress_display(progress, len(starts) * maxiter, "fit (L-BFGS-B)")

    def value_and_grad(z):
        x = offset + span * z
        loss, grad = objective.value_and_grad(x)
        previous = history[-1][1] if history else math.inf
        history.append((objective.evaluations - ev0, min(loss, previous)))
        if checkpoint is not None and loss < previous:
            checkpoint(x, loss, objective.evaluations - ev0)
        return loss, grad * span

    def tick(_):
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1][1]:.4g}")

    for start in starts:
        z0 = (np.clip(start, par.lower, par.upper) - offset) / span
        res = minimize(value_and_grad, z0, jac=True, method="L-BFGS-B", bounds=bounds,
                       callback=tick, options={"maxiter": maxiter})
        if res.fun < best.loss:
            best = FitResult(offset + span * res.x, float(res.fun), method="gradient",
                             message=str(res.message), converged=bool(res.success))
    if bar:
        bar.close()
    return _account(best, history, objective, start_counts)


def fit_cmaes(objective: Objective, x0=None, *, sigma0: float = 0.25, popsize: int | None = None,
              generations: int = 60, restarts: int = 0, seed: int = 0,
              progress: bool = False, checkpoint=None, state=None, save_state=None) -> FitResult:
    """CMA-ES (the ``cma`` package); every population is one batched simulation call.

    ``sigma0`` is the initial step as a fraction of each parameter's bound range.
    Restarts double the population (IPOP), as Auger & Hansen 2005 recommend.
    ``save_state(state)`` receives the optimiser's whole state after every generation
    (the distribution, its random generator, the restart, the best point, the history
    and the cost so far); passing such a ``state`` back continues exactly where it was
    taken, so an interrupted fit resumed ends where the uninterrupted one does.
    """
    try:
        import cma
    except ImportError:
        raise CircuitError("CMA-ES needs the cma package: pip install -e '.[fit]'") from None
    par = objective.par
    lo, hi = _finite_bounds(objective)
    start = par.x0 if x0 is None else np.asarray(x0, dtype=float)
    start_counts = _counts(objective)
    ev0 = objective.evaluations
    best = FitResult(start, math.inf, method="cmaes")
    history = []
    size = popsize or 4 + int(3 * math.log(par.n_free))
    bar = progress_display(progress, generations * (restarts + 1), "fit (CMA-ES)")
    first, es, before = 0, None, (0, 0, 0.0, 0.0)
    if state is not None:
        first, es = state["run"], pickle.loads(state["es"])
        np.random.set_state(state["numpy_random"])
        best = FitResult(np.array(state["best_x"]), state["best_loss"], method="cmaes")
        history = [tuple(h) for h in state["history"]]
        before = state["cost"]
        ev0 -= before[0]
    for run in range(first, restarts + 1):
        if es is None:
            options = {"bounds": [list(lo), list(hi)], "popsize": size * 2 ** run,
                       "seed": seed + run + 1, "verbose": -9, "CMA_stds": list(hi - lo),
                       "maxiter": generations, "tolfun": 1e-9}
            es = cma.CMAEvolutionStrategy(np.clip(start, lo, hi), sigma0, options)
        while not es.stop():
            X = np.array(es.ask())
            losses = objective.batch(X)
            es.tell(list(X), list(losses))
            k = int(np.argmin(losses))
            if losses[k] < best.loss:
                best = FitResult(X[k].copy(), float(losses[k]), method="cmaes")
                if checkpoint is not None:
                    checkpoint(best.x, best.loss, objective.evaluations - ev0)
            history.append((objective.evaluations - ev0, best.loss))
            if save_state is not None:
                cost = _counts(objective)
                save_state({"run": run, "es": pickle.dumps(es), "numpy_random": np.random.get_state(),
                            "best_x": best.x.tolist(), "best_loss": best.loss, "history": history,
                            "cost": (objective.evaluations - ev0,
                                     before[1] + cost[2] - start_counts[2],
                                     before[2] + cost[3] - start_counts[3],
                                     before[3] + cost[0] - start_counts[0])})
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{best.loss:.4g}")
        best.message = f"restart {run}: {', '.join(es.stop())}"
        es = None
    if bar:
        bar.close()
    result = _account(best, history, objective, start_counts)
    result.evaluations = objective.evaluations - ev0
    result.simulations += before[1]
    result.simulation_s += before[2]
    result.wall_s += before[3]
    return result


def fit(objective: Objective, method: str = "cmaes", **options) -> FitResult:
    """Run ``method`` (``gradient`` or ``cmaes``); ``cmaes`` is polished by ``gradient``
    when the integrator has gradients, unless ``polish=False``."""
    polish = options.pop("polish", True)
    if method == "gradient":
        return fit_gradient(objective, **options)
    if method != "cmaes":
        raise CircuitError(f"unknown fit method {method!r}; allowed: {', '.join(METHODS)}")
    result = fit_cmaes(objective, **options)
    if polish and objective.method.has_tangents:
        # the polish starts from CMA-ES's result, which a resumed fit reproduces exactly
        keep = {k: v for k, v in options.items() if k in ("seed", "progress", "checkpoint")}
        polished = fit_gradient(objective, result.x, maxiter=100, **keep)
        if polished.loss < result.loss:
            polished.history = result.history + [(result.evaluations + e, loss)
                                                  for e, loss in polished.history]
            polished.evaluations += result.evaluations
            polished.simulations += result.simulations
            polished.simulation_s += result.simulation_s
            polished.wall_s += result.wall_s
            polished.method = "cmaes+gradient"
            return polished
    return result
