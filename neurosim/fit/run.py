"""A whole fit from a circuit, targets and a specification: what `neurosim fit` runs."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from neurosim._version import __version__
from neurosim.fit.objective import Objective
from neurosim.fit.optimize import FitResult, fit
from neurosim.fit.parameters import Parameterization
from neurosim.fit.signs import SignPattern, enumerate_signs
from neurosim.fit.spec import FitSpec
from neurosim.io.yaml import dump_circuit
from neurosim.model import Circuit


@dataclass
class FitReport:
    """Everything a fit produced."""

    result: FitResult
    parameterization: Parameterization
    objective: Objective
    circuit: Circuit
    predictions: list
    signs: list[SignPattern] | None = None

    def provenance(self, data_source: str = "") -> str:
        """YAML comment lines recording how the fitted circuit was made."""
        r = self.result
        lines = [f"fitted by neurosim {__version__} on "
                 f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
                 f"data: {data_source or '(in memory)'}; method: {r.method}; loss {r.loss:.6g} "
                 f"after {r.evaluations} evaluations ({r.simulations} simulations, {r.wall_s:.1f} s)",
                 f"free parameters ({self.parameterization.n_free}):"]
        for name, start, end in self.parameterization.table(r.x):
            lines.append(f"  {name}: {start:.6g} -> {end:.6g}")
        for p in self.predictions:
            lines.append(f"  {p['protocol']} {p['measure']}: observed {p['observed']:.3g}, "
                         f"fitted {p['predicted']:.3g}")
        return "".join(f"# {line}\n" for line in lines)

    def fitted_yaml(self, data_source: str = "") -> str:
        return self.provenance(data_source) + dump_circuit(self.circuit)


def run_fit(circuit: Circuit, targets, spec: FitSpec, *, progress: bool = False) -> FitReport:
    """Parameterise, build the objective, optimise, and (if asked) enumerate signs."""
    sim = spec.simulation
    objective_options = dict(readout=spec.loss.readout, integrator=sim.integrator, dt=sim.dt,
                             rtol=sim.rtol, atol=sim.atol, dt_out=sim.dt_out,
                             prior=spec.loss.prior)
    par = Parameterization(circuit, spec.free)
    objective = Objective(par, targets, **objective_options)
    opt = spec.optimizer
    if opt.method == "gradient":
        result = fit(objective, "gradient", restarts=opt.restarts, seed=opt.seed,
                     maxiter=opt.maxiter, progress=progress)
    else:
        result = fit(objective, "cmaes", sigma0=opt.sigma0, popsize=opt.popsize,
                     generations=opt.generations, restarts=opt.restarts, seed=opt.seed,
                     polish=opt.polish, progress=progress)
    signs = None
    if spec.signs is not None:
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=2 ** len(spec.signs.classes), desc="sign patterns", leave=False)
        signs = enumerate_signs(circuit, targets, spec.signs.classes, spec.free,
                                maxiter=spec.signs.maxiter, objective_options=objective_options,
                                progress=bar.update if bar else None)
        if bar:
            bar.close()
    return FitReport(result, par, objective, par.apply(result.x), objective.predictions(result.x),
                     signs)
