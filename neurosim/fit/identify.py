"""What the data determine: the Fisher information of a fit, read in parameter terms.

The loss is a negative log-likelihood, so near its minimum the data constrain the free
parameters x as a Gaussian with precision F, the Fisher information
(:meth:`Objective.fisher`, from the forward sensitivities).  Its eigen-directions say
which combinations the data pin down (large eigenvalue, small standard error 1/√λ) and
which they leave free (small eigenvalue); the marginal standard error of one parameter,
√(F⁻¹)ⱼⱼ, accounts for its correlations with all the others.

Local: these are statements about the neighbourhood of the fitted point.  Far-apart
minima, bounds that the fit sits on, and non-Gaussian likelihoods need profiles and
multi-start ensembles as well.
"""

from __future__ import annotations

import contextlib
import csv
import threading
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from neurosim.errors import CircuitError
from neurosim.fit.objective import Objective
from neurosim.fit.parameters import Parameterization
from neurosim.io.yaml import dump_circuit, loads_circuit
from neurosim.model import unknown_name_message

#: a direction whose eigenvalue is below this fraction of the largest is numerically
#: zero: nothing in the data moves along it
RELATIVE_ZERO = 1e-12


@dataclass(frozen=True)
class Identifiability:
    """The Fisher information at a fitted point and what it says.

    Attributes
    ----------
    names : list of str
        The free parameters (x, the optimiser's coordinates: log of the value where the
        specification says ``transform: log``).
    x : ndarray
    fisher : ndarray, shape (n, n)
    eigenvalues : ndarray, shape (n,)
        Ascending.
    directions : ndarray, shape (n, n)
        Unit eigenvectors, as columns, in the order of ``eigenvalues``.
    standard_errors : ndarray, shape (n,)
        Marginal standard error of each parameter (inf where a direction it loads on is
        not constrained at all).
    tolerance : float
        A parameter or direction counts as determined when its standard error is at most
        this (in x units).
    """

    names: list
    x: np.ndarray
    fisher: np.ndarray
    eigenvalues: np.ndarray
    directions: np.ndarray
    standard_errors: np.ndarray
    tolerance: float

    @property
    def direction_errors(self) -> np.ndarray:
        """Standard error along each eigen-direction, 1/√λ (inf for λ ≈ 0)."""
        floor = RELATIVE_ZERO * max(float(self.eigenvalues.max(initial=0.0)), 0.0)
        with np.errstate(divide="ignore"):
            return np.where(self.eigenvalues > floor, 1.0 / np.sqrt(np.abs(self.eigenvalues)),
                            np.inf)

    @property
    def determined(self) -> np.ndarray:
        """Per parameter: is its marginal standard error within the tolerance?"""
        return self.standard_errors <= self.tolerance

    def combination(self, k: int, terms: int = 3) -> str:
        """Eigen-direction k as a combination of its largest loadings, e.g.
        ``0.71·w(A->B) − 0.71·w(C->B)``."""
        v = self.directions[:, k]
        v = v * np.sign(v[np.argmax(np.abs(v))])
        order = np.argsort(-np.abs(v))[:terms]
        parts = [f"{'−' if v[j] < 0 else '+'} {abs(v[j]):.2f}·{_short(self.names[j])}"
                 for j in order if abs(v[j]) >= 0.05]
        text = " ".join(parts)
        return text[2:] if text.startswith("+ ") else text

    def summary(self, show: int = 4) -> list[str]:
        """Lines a fit report prints: what is determined, what is not, and the best- and
        worst-determined combinations."""
        n = len(self.names)
        ok = self.determined
        lines = [f"the data determine {int(ok.sum())} of {n} free parameters to within "
                 f"±{self.tolerance:.3g} (marginal standard errors from the Fisher "
                 "information at the fit)"]
        for label, pick in (("determined", ok), ("not determined", ~ok)):
            chosen = [f"{_short(self.names[j])} ±{_error(self.standard_errors[j])}"
                      for j in np.flatnonzero(pick)]
            if chosen:
                more = f", ... ({len(chosen) - 12} more)" if len(chosen) > 12 else ""
                lines.append(f"  {label}: " + ", ".join(chosen[:12]) + more)
        errors = self.direction_errors
        loose = [k for k in np.argsort(-errors) if errors[k] > self.tolerance][:show]
        if loose:
            lines.append("  directions the data leave free (standard error):")
            lines += [f"    {self.combination(k)}  (±{_error(errors[k])})" for k in loose]
        tight = [k for k in np.argsort(errors) if errors[k] <= self.tolerance][:show]
        if tight:
            lines.append("  best-determined combinations:")
            lines += [f"    {self.combination(k)}  (±{_error(errors[k])})" for k in tight]
        return lines


def _short(name: str) -> str:
    """'synapses[ALM->PVC].w' → 'w(ALM->PVC)'; other names unchanged."""
    if name.endswith("]") or "[" not in name or "*" in name or "=" in name:
        return name
    head, field = name.rsplit(".", 1)
    return f"{field}({head.split('[', 1)[1].rstrip(']')})"


def _error(value: float) -> str:
    return "inf" if not np.isfinite(value) else f"{value:.2g}"


def default_tolerance(objective: Objective) -> float:
    """5 % of the median width of the free parameters' finite bounds (in x units), or
    0.05 where no bound is finite."""
    widths = objective.par.upper - objective.par.lower
    finite = widths[np.isfinite(widths)]
    return 0.05 * float(np.median(finite)) if finite.size else 0.05


def identifiability(objective: Objective, x, tolerance: float | None = None) -> Identifiability:
    """The Fisher information of ``objective`` at ``x`` and what it determines."""
    x = np.asarray(x, dtype=np.float64)
    F = objective.fisher(x)
    F = 0.5 * (F + F.T)
    eigenvalues, directions = np.linalg.eigh(F)
    floor = RELATIVE_ZERO * max(float(eigenvalues.max(initial=0.0)), 0.0)
    inverse = np.where(eigenvalues > floor, 1.0 / np.where(eigenvalues > floor, eigenvalues, 1.0),
                       np.inf)
    # marginal variance Σ_k v_jk² / λ_k: infinite if j loads on an unconstrained direction
    loads = directions ** 2
    with np.errstate(invalid="ignore"):
        variance = np.where(loads > 1e-20, loads * inverse[None, :], 0.0).sum(axis=1)
    tolerance = default_tolerance(objective) if tolerance is None else float(tolerance)
    return Identifiability(list(objective.par.names), x, F, eigenvalues, directions,
                           np.sqrt(variance), tolerance)


# --- profiles ------------------------------------------------------------------------------

#: half the 95 % quantile of χ²₁: a profile's 95 % interval is where it rises less than this
PROFILE_LEVEL = 0.5 * 3.841458820694124


@dataclass(frozen=True)
class Profile:
    """The profile likelihood of one free parameter: at each value, the best loss with
    every other free parameter refitted.

    Attributes
    ----------
    name : str
    values : ndarray
        The parameter's values (its own units) where the profile was computed.
    losses : ndarray
    fitted : float
        The value at the fit the profile was started from.
    """

    name: str
    values: np.ndarray
    losses: np.ndarray
    fitted: float

    @property
    def delta(self) -> np.ndarray:
        """Loss above the profile's minimum (a log-likelihood ratio)."""
        return self.losses - self.losses.min()

    def interval(self, level: float = PROFILE_LEVEL) -> tuple[float, float]:
        """Where the profile stays within ``level`` of its minimum (default: a 95 %
        interval), by linear interpolation; ±inf where it never rises that far within
        the values computed."""
        d, v = self.delta, self.values
        best = int(np.argmin(d))
        edges = []
        for step, unbounded in ((-1, -np.inf), (1, np.inf)):
            edge, a = unbounded, best
            while 0 <= a + step < d.size:
                b = a + step
                if d[b] >= level:
                    edge = v[a] + (level - d[a]) * (v[b] - v[a]) / (d[b] - d[a])
                    break
                a = b
            edges.append(float(edge))
        return edges[0], edges[1]


def profile(objective: Objective, x, name: str, values=None, *, points: int = 17,
            maxiter: int = 100) -> Profile:
    """Profile of free parameter ``name`` around the fit ``x``.

    ``values`` (the parameter's own units) default to ``points`` values within four
    marginal standard errors (from the Fisher information) of the fit, where that error
    is finite and inside the bounds, else across the bounds; the fitted value is always
    among them.  Each value is fitted with L-BFGS-B on the other parameters, starting
    from the neighbouring value's solution, walking outward from the fit so that the
    profile follows one valley.
    """
    par = objective.par
    if name not in par.names:
        raise CircuitError(unknown_name_message("free parameter", name, list(par.names)))
    k = par.names.index(name)
    x = np.asarray(x, dtype=np.float64)
    to_x = (lambda v: np.log(v)) if par.log[k] else (lambda v: np.asarray(v, dtype=float))
    if values is None:
        se = identifiability(objective, x).standard_errors[k]
        if np.isfinite(se) and se > 0:
            grid = np.clip(x[k] + se * np.linspace(-4, 4, points), par.lower[k], par.upper[k])
        elif np.isfinite(par.lower[k]) and np.isfinite(par.upper[k]):
            grid = np.linspace(par.lower[k], par.upper[k], points)
        else:
            raise CircuitError(f"give the values to profile {name!r} at: the data do not "
                               "confine it and its bounds are not finite")
    else:
        given = np.asarray(values, dtype=float)
        low, high = par.values(par.lower)[k], par.values(par.upper)[k]
        if given.size == 0 or not np.all((given >= low) & (given <= high)):
            raise CircuitError(f"profile values for {name!r} are outside the bounds "
                               f"[{low:g}, {high:g}]" if given.size
                               else f"no values to profile {name!r} at")
        grid = to_x(given)
    grid = np.unique(np.concatenate([grid, [x[k]]]))
    others = np.array([j for j in range(par.n_free) if j != k])
    lo, hi = par.lower[others], par.upper[others]
    bounds = [(a if np.isfinite(a) else None, b if np.isfinite(b) else None) for a, b in zip(lo, hi)]
    losses = np.empty(grid.size)
    centre = int(np.flatnonzero(grid == x[k])[0])

    def solve(value, start):
        def f(y):
            full = x.copy()
            full[k], full[others] = value, y
            loss, grad = objective.value_and_grad(full)
            return loss, grad[others]
        if others.size == 0:
            return f(np.empty(0))[0], start
        res = minimize(f, start, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": maxiter})
        return float(res.fun), res.x

    losses[centre], at_fit = solve(grid[centre], x[others])
    for direction in (range(centre + 1, grid.size), range(centre - 1, -1, -1)):
        start = at_fit
        for j in direction:
            losses[j], start = solve(grid[j], start)
    own = np.exp(grid) if par.log[k] else grid
    return Profile(name, own, losses, float(np.exp(x[k]) if par.log[k] else x[k]))


# --- multi-start ensembles -----------------------------------------------------------------

@dataclass(frozen=True)
class Ensemble:
    """Fits from many starting points: how far apart equally good fits lie.

    Attributes
    ----------
    names : list of str
    x : ndarray, shape (starts, n)
        The fitted points (x coordinates), best first.
    losses : ndarray, shape (starts,)
    """

    names: list
    x: np.ndarray
    losses: np.ndarray
    values: np.ndarray

    def members(self, threshold: float = 2.0) -> np.ndarray:
        """Indices of the fits within ``threshold`` of the best loss (ties)."""
        return np.flatnonzero(self.losses - self.losses[0] < threshold)

    def spread(self, threshold: float = 2.0) -> np.ndarray:
        """(n, 2): the smallest and largest value (own units) of every parameter among
        the fits within ``threshold`` of the best."""
        tied = self.values[self.members(threshold)]
        return np.stack([tied.min(axis=0), tied.max(axis=0)], axis=1)

    def write(self, path) -> None:
        """The fits as CSV: rank, loss and every parameter's value (own units)."""
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["rank", "loss", *self.names])
            for k, (loss, values) in enumerate(zip(self.losses, self.values), 1):
                writer.writerow([k, f"{loss:.6g}", *(f"{v:.6g}" for v in values)])

    def summary(self, threshold: float = 2.0) -> list[str]:
        tied = self.members(threshold)
        lines = [f"{len(self.losses)} starts: best loss {self.losses[0]:.4g}, {tied.size} within "
                 f"{threshold:g} of it; the range of each parameter among those:"]
        for name, (a, b) in zip(self.names, self.spread(threshold)):
            lines.append(f"  {_short(name):<28} {a:10.4g} .. {b:<10.4g}")
        return lines


@dataclass(frozen=True)
class _StartsJob:
    """What a process needs to fit from given starts: the circuit as YAML and plain data."""

    circuit_yaml: str
    free: tuple
    targets: tuple
    options: dict
    points: tuple
    maxiter: int


#: the objective of the job a worker thread last fitted starts of (.job, .objective): a
#: worker gets one job object for all its starts, so it parses and compiles the circuit
#: once; per thread, since an Objective is not shared (a threaded worker once could read
#: another thread's between its check and its use)
_last_objective = threading.local()


def _objective(job: _StartsJob) -> Objective:
    if getattr(_last_objective, "job", None) is not job:
        circuit = loads_circuit(job.circuit_yaml, "<ensemble>")
        _last_objective.objective = Objective(Parameterization(circuit, job.free),
                                              job.targets, **job.options)
        _last_objective.job = job
    return _last_objective.objective


def _fit_start(job: _StartsJob, k: int | None):
    """The fit from start ``k``; None only compiles (one gradient), to warm a worker."""
    from neurosim.fit.optimize import fit_gradient
    objective = _objective(job)
    if k is None:
        objective.value_and_grad(objective.par.x0)
        return None
    return fit_gradient(objective, job.points[k], maxiter=job.maxiter)


def ensemble(objective: Objective, starts: int, *, seed: int = 0, maxiter: int = 200,
             progress=None, executor=None) -> Ensemble:
    """Fit from ``starts`` points drawn uniformly within the bounds (the first is the
    circuit's own values), each with L-BFGS-B on the engine's gradients; with an
    ``executor`` (:class:`neurosim.distributed.Executor`, entered) on its cluster."""
    from neurosim.distributed import Executor
    from neurosim.fit.optimize import _finite_bounds
    if starts < 1:
        raise CircuitError(f"starts must be >= 1, got {starts}")
    lo, hi = _finite_bounds(objective)
    rng = np.random.default_rng(seed)
    points = [objective.par.x0] + [rng.uniform(lo, hi) for _ in range(starts - 1)]
    job = _StartsJob(dump_circuit(objective.par.circuit), tuple(objective.par.entries),
                     tuple(objective.targets), dict(objective.options), tuple(points), maxiter)
    fits = [None] * starts
    with contextlib.nullcontext(executor) if executor else Executor() as running:
        running.warm(_fit_start, job, None)
        for k, fitted in running.map(_fit_start, job, range(starts)):
            fits[k] = fitted
            if progress:
                progress(1)
    order = np.argsort([f.loss for f in fits], kind="stable")
    x = np.array([fits[k].x for k in order])
    return Ensemble(list(objective.par.names), x, np.array([fits[k].loss for k in order]),
                    np.array([objective.par.values(row) for row in x]))
