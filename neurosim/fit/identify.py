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

from dataclasses import dataclass

import numpy as np

from neurosim.fit.objective import Objective

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
