"""The fit objective: one definition, evaluated three ways.

``objective(x)`` runs the protocols once; ``objective.value_and_grad(x)`` adds forward
sensitivities for the gradient; ``objective.batch(X)`` evaluates a whole population in
one parallel call of the batch kernel.  All three read the same targets.
"""

from __future__ import annotations

import math

import numpy as np

from neurosim.errors import CircuitError
from neurosim.fit.parameters import Parameterization
from neurosim.fit.targets import BehaviourTarget
from neurosim.simulate import BatchPlan, running_clock

#: loss of a run that failed numerically (finite, so optimisers can move away from it)
FAILED_LOSS = 1e6


class Objective:
    """Loss of a parameter vector ``x`` of a :class:`Parameterization` against targets.

    Parameters
    ----------
    parameterization : Parameterization
    targets : sequence of BehaviourTarget or TraceTarget
    readout : str
        The circuit's read-out used by behavioural targets.
    integrator, dt, rtol, atol : as for :func:`neurosim.simulate`
        Gradients need euler, rk4, ltc or dopri5.
    dt_out : float, ms
        Sampling of the traces the targets read.
    prior : float
        Weight λ of the L2 prior ½λ‖x − x0‖².
    precision : {"float64", "float32"}
        Precision of the batched evaluations (:meth:`batch`, CMA-ES's populations);
        see :func:`neurosim.simulate_batch`.  Single evaluations and gradients are float64.
    """

    def __init__(self, parameterization: Parameterization, targets, *, readout: str = "behaviour",
                 integrator="dopri5", dt=None, rtol=None, atol=None, dt_out: float = 5.0,
                 prior: float = 0.0, precision: str = "float64"):
        self.par = parameterization
        circuit = parameterization.circuit
        # what rebuilds this objective elsewhere (a worker process): with par and targets
        self.options = dict(readout=readout, integrator=integrator, dt=dt, rtol=rtol, atol=atol,
                            dt_out=dt_out, prior=prior, precision=precision)
        self.targets = list(targets)
        if not self.targets:
            raise CircuitError("a fit needs at least one target (experiment or trace)")
        self.readout = circuit.readout(readout) if any(
            isinstance(t, BehaviourTarget) for t in self.targets) else None
        self.protocols = list(dict.fromkeys(t.protocol for t in self.targets))
        for name in self.protocols:
            circuit.protocol(name)
        names = []
        for target in self.targets:
            names += list(self.readout.neurons) if isinstance(target, BehaviourTarget) else [target.neuron]
        self.record_names = list(dict.fromkeys(names))
        # runs start where circuit.initial_state says: the rest of each parameter set
        # (its gradient by the implicit function theorem), or V0 as given
        self.plan = BatchPlan(circuit, self.protocols, integrator=integrator, dt=dt, rtol=rtol,
                              atol=atol, dt_out=dt_out, record=self.record_names,
                              precision=precision)
        compiled = self.plan.compiled
        for target in self.targets:  # an ablated neuron has no potential to compare with data
            if not isinstance(target, BehaviourTarget):
                p = self.protocols.index(target.protocol)
                if self.plan.ablated[p, compiled.index(target.neuron)]:
                    raise CircuitError(f"{target.neuron!r} is ablated in protocol "
                                       f"{target.protocol!r}: it has no {target.measure} to fit")
        self.prior = float(prior)
        self.evaluations = 0
        self.simulations = 0
        self.sim_seconds = 0.0
        # called (once) before the first gradient: waits for its kernels where another
        # process compiles them (neurosim.warmup.compile_ahead)
        self.before_gradients = None

    @property
    def method(self):
        """The integrator of every evaluation (the plan's)."""
        return self.plan.method

    # --- losses from traces ----------------------------------------------------------
    def _traces(self, p: int, V: np.ndarray) -> dict:
        """name -> traces (..., samples) of protocol p; ablated neurons read as resting."""
        out = {}
        for c, name in enumerate(self.record_names):
            trace = V[..., c]
            if self.plan.ablated[p, self.plan.record[c]]:
                rest = self.readout.rest if self.readout is not None else 0.0
                trace = np.full_like(trace, rest)
            out[name] = trace
        return out

    def _loss_and_dV(self, p: int, V: np.ndarray, want_grad: bool):
        """Loss of protocol p's targets for traces V (..., samples, recorded) and dL/dV."""
        t = np.arange(V.shape[-2]) * self.plan.dt_out
        traces = self._traces(p, V)
        loss = np.zeros(V.shape[:-2])
        dV = np.zeros_like(V) if want_grad else None
        for target in self.targets:
            if target.protocol != self.protocols[p]:
                continue
            if isinstance(target, BehaviourTarget):
                r = self.readout
                score, d_rev, d_fwd = target.score_and_grad(r, t, traces[r.reverse], traces[r.forward])
                value, d_score = target.loss_from_score(r, score)
                loss = loss + value
                if want_grad:
                    for name, d in ((r.reverse, d_rev), (r.forward, d_fwd)):
                        c = self.record_names.index(name)
                        if not self.plan.ablated[p, self.plan.record[c]]:
                            dV[..., c] += d_score[..., None] * d
            else:
                value, d = target.loss_and_grad(t, traces[target.neuron])
                loss = loss + value
                if want_grad:
                    dV[..., self.record_names.index(target.neuron)] += d
        return loss, dV

    def _prior(self, x):
        diff = np.asarray(x) - self.par.x0
        return 0.5 * self.prior * np.sum(diff ** 2, axis=-1), self.prior * diff

    def _run(self, X, precision="float64"):
        """(status (protocols, sets), traces (protocols, sets, samples, recorded)) of X."""
        # a population may leave the parameters' ranges: its loss judges it
        status, out_V = self.plan.traces(self.par.theta(X), precision, check=False)
        return status, out_V.astype(np.float64, copy=False)

    def _add_time(self, started: float) -> None:
        """Add the seconds since ``started`` (a running_clock()) to sim_seconds: those
        spent compiling kernels (a first call's) are not simulation time."""
        self.sim_seconds += running_clock() - started

    # --- the three evaluations -------------------------------------------------------
    def batch(self, X) -> np.ndarray:
        """Losses of a population X (n_sets, n_free) from one parallel simulation call."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        n_sets, n_p = X.shape[0], len(self.protocols)
        clock = running_clock()
        status, out_V = self._run(X, self.plan.precision)
        self._add_time(clock)
        self.simulations += n_sets * n_p
        self.evaluations += n_sets
        total = self._prior(X)[0]
        for p in range(n_p):
            V = out_V[p, :, :self.plan.rows[p] + 1]
            loss, _ = self._loss_and_dV(p, np.nan_to_num(V, nan=0.0), want_grad=False)
            total = total + np.where(status[p] == 0, loss, FAILED_LOSS)
        return np.where(np.isfinite(total), total, FAILED_LOSS)

    def __call__(self, x) -> float:
        return float(self.batch(np.asarray(x)[None, :])[0])

    def value_and_grad(self, x) -> tuple[float, np.ndarray]:
        """Loss and its gradient from forward sensitivities (one run per protocol)."""
        if self.before_gradients is not None:
            self.before_gradients()
            self.before_gradients = None
        x = np.asarray(x, dtype=np.float64)
        theta = self.par.theta(x)
        free = self.par.indices
        total, grad_prior = self._prior(x)
        grad_theta = np.zeros(free.size)
        clock = running_clock()
        for p in range(len(self.protocols)):
            status, V, S = self.plan.sensitivities(theta, free, p)
            if status != 0:
                self._add_time(clock)
                return FAILED_LOSS, np.zeros(self.par.n_free)
            loss, dV = self._loss_and_dV(p, V, want_grad=True)
            total += float(loss)
            grad_theta += np.einsum("rc,rcm->m", dV, S)
        self._add_time(clock)
        self.simulations += len(self.protocols)
        self.evaluations += 1
        return float(total), self.par.chain(x, grad_theta) + grad_prior

    def fisher(self, x) -> np.ndarray:
        """Fisher information of the targets about ``x`` (n_free, n_free), from the
        forward sensitivities: the expected curvature of the negative log-likelihood
        (binomial counts, Gaussian scores and traces).  At a fit that matches its data
        exactly it equals the Hessian of the loss; the prior is not included."""
        x = np.asarray(x, dtype=np.float64)
        theta = self.par.theta(x)
        free = self.par.indices
        F = np.zeros((free.size, free.size))
        for p in range(len(self.protocols)):
            status, V, S = self.plan.sensitivities(theta, free, p)
            if status != 0:
                raise CircuitError(f"the run of protocol {self.protocols[p]!r} failed at these "
                                   "parameters: no Fisher information")
            t = np.arange(V.shape[0]) * self.plan.dt_out
            traces = self._traces(p, V)
            for target in self.targets:
                if target.protocol != self.protocols[p]:
                    continue
                if isinstance(target, BehaviourTarget):
                    r = self.readout
                    score, d_rev, d_fwd = target.score_and_grad(r, t, traces[r.reverse],
                                                                traces[r.forward])
                    d_score = np.zeros(free.size)
                    for name, d in ((r.reverse, d_rev), (r.forward, d_fwd)):
                        c = self.record_names.index(name)
                        if not self.plan.ablated[p, self.plan.record[c]]:
                            d_score += d @ S[:, c, :]
                    F += target.information(r, float(score), d_score)
                else:
                    c = self.record_names.index(target.neuron)
                    F += target.information(t, V[:, c], S[:, c, :])
        # θ[free] → x: ties sum, log transforms scale (the chain rule of value_and_grad)
        Jt = np.stack([self.par.chain(x, e) for e in np.eye(free.size)], axis=1)
        return Jt @ F @ Jt.T

    def predictions(self, x) -> list[dict]:
        """Per target: protocol, measure, observed, predicted (and the score)."""
        _, out_V = self._run(np.asarray(x, dtype=np.float64)[None, :])
        rows = []
        for target in self.targets:
            p = self.protocols.index(target.protocol)
            V = out_V[p, 0, :self.plan.rows[p] + 1]
            t = np.arange(V.shape[0]) * self.plan.dt_out
            traces = self._traces(p, V)
            if isinstance(target, BehaviourTarget):
                r = self.readout
                score = float(target.score_and_grad(r, t, traces[r.reverse], traces[r.forward])[0])
                rows.append({"protocol": target.protocol, "measure": target.measure,
                             "observed": target.observed,
                             "predicted": target.predicted(r, score), "score": score})
            else:
                loss, _ = target.loss_and_grad(t, traces[target.neuron])
                rows.append({"protocol": target.protocol,
                             "measure": f"{target.measure} {target.neuron}",
                             "observed": math.nan, "predicted": math.nan,
                             "score": float(loss)})
        return rows
