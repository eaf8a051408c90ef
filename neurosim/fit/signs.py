"""Enumerate synaptic signs, as Wicks, Roehrig & Rankin (1996) did for the TW circuit.

Each presynaptic class gets one sign for all its outgoing synapses (Dale's principle):
excitatory (E = 0 mV) or inhibitory (E = −90 mV).  Every one of the 2^k patterns is
fitted, and the patterns are ranked by their best loss.  The loss is a negative
log-likelihood (up to a constant), so the difference between two patterns' losses is
their log-likelihood ratio: patterns within ``threshold`` (default 2) of the best are
**ties** that the data cannot tell apart, and a class's sign is **supported** only when
every tied pattern gives it the same sign; otherwise it is undetermined.

References
----------
Wicks SR, Roehrig CJ, Rankin CH (1996). A dynamic network simulation of the nematode tap
withdrawal circuit: predictions concerning synaptic function using behavioral criteria.
J Neurosci 16:4017–4031.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurosim.distributed import Executor
from neurosim.errors import CircuitError
from neurosim.fit.objective import Objective
from neurosim.fit.optimize import fit_gradient
from neurosim.fit.parameters import Parameterization
from neurosim.io.yaml import dump_circuit, loads_circuit, write_text_atomically
from neurosim.model import SYNAPSE_TYPES, Circuit


@dataclass(frozen=True)
class SignPattern:
    """One sign assignment and how well the circuit fits with it."""

    signs: dict            # class -> "+" or "-"
    loss: float
    x: np.ndarray
    converged: bool = True  # False: the fit stopped at maxiter; loss is an upper bound


def with_signs(circuit: Circuit, signs: dict) -> Circuit:
    """The circuit with every synapse from each class given that class's sign."""
    synapses = []
    for syn in circuit.synapses:
        if syn.pre in signs:
            kind = "excitatory" if signs[syn.pre] == "+" else "inhibitory"
            syn = syn.__class__(syn.pre, syn.post, syn.w, SYNAPSE_TYPES[kind], syn.mu, syn.nu,
                                syn.kappa)
        synapses.append(syn)
    return circuit.replace(synapses=tuple(synapses))


#: log-likelihood difference within which sign patterns are ties (a likelihood ratio of
#: e² ≈ 7.4, the usual threshold of "substantial" support)
TIE_THRESHOLD = 2.0


@dataclass(frozen=True)
class _SignJob:
    """What a process needs to fit sign patterns: the circuit as YAML text and plain data."""

    circuit_yaml: str
    targets: tuple
    classes: tuple
    free: tuple
    maxiter: int
    objective_options: dict


@functools.lru_cache(maxsize=4)
def _circuit(text: str) -> Circuit:
    return loads_circuit(text, "<sign enumeration>")


def _fit_pattern(job: _SignJob, key: str | None):
    """Pattern ``key`` ("+-+..." over the classes) fitted; None only compiles (one
    gradient at the start), to warm a worker."""
    signs = dict(zip(job.classes, key or "+" * len(job.classes)))
    par = Parameterization(with_signs(_circuit(job.circuit_yaml), signs), job.free)
    objective = Objective(par, job.targets, **job.objective_options)
    if key is None:
        objective.value_and_grad(par.x0)
        return None
    fitted = fit_gradient(objective, maxiter=job.maxiter)
    return SignPattern(signs, fitted.loss, fitted.x, bool(fitted.converged))


def enumerate_signs(circuit: Circuit, targets, classes, free, *, maxiter: int = 40,
                    objective_options=None, progress=None, checkpoint=None,
                    executor: Executor | None = None) -> list[SignPattern]:
    """Fit every sign pattern of ``classes``; patterns sorted by loss (best first).

    With ``checkpoint`` (a JSON path) every finished pattern is saved there as it is
    fitted, and patterns already in the file are not fitted again, so an interrupted
    enumeration resumes where it stopped.  With an ``executor``
    (:class:`neurosim.distributed.Executor`, entered) the patterns are fitted on its
    cluster; each pattern's fit is the same as in this process.
    """
    classes = list(dict.fromkeys(classes))
    for name in classes:
        circuit.neuron(name)
        if not any(s.pre == name for s in circuit.synapses):
            raise CircuitError(f"{name!r} has no outgoing chemical synapse: its sign is undefined")
    setup = hashlib.sha256(repr((classes, list(targets), list(free), maxiter,
                                 sorted((objective_options or {}).items()),
                                 dump_circuit(circuit))).encode()).hexdigest()
    done = _load_patterns(checkpoint, classes, setup) if checkpoint else {}
    keys = ["".join(pattern) for pattern in itertools.product("+-", repeat=len(classes))]
    if progress:
        for _ in range(sum(key in done for key in keys)):
            progress(1)
    job = _SignJob(dump_circuit(circuit), tuple(targets), tuple(classes), tuple(free), maxiter,
                   dict(objective_options or {}))
    todo = [key for key in keys if key not in done]
    with contextlib.nullcontext(executor) if executor else Executor() as running:
        if todo:
            running.warm(_fit_pattern, job, None)
        for key, pattern in running.map(_fit_pattern, job, todo):
            done[key] = pattern
            if checkpoint:
                _save_patterns(checkpoint, classes, setup, done)
            if progress:
                progress(1)
    results = [done[key] for key in keys]
    return sorted(results, key=lambda r: r.loss)


def _save_patterns(path, classes, setup: str, done: dict) -> None:
    data = {"classes": classes, "setup": setup,
            "patterns": {k: {"loss": p.loss, "x": [float(v) for v in p.x],
                             "converged": p.converged} for k, p in done.items()}}
    write_text_atomically(path, json.dumps(data))


def _load_patterns(path, classes, setup: str) -> dict:
    """Patterns saved by an earlier enumeration of the same setup (circuit, targets, free
    parameters, options); a file of another setup is an error, not silently reused."""
    if not Path(path).exists():
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CircuitError(f"cannot resume the sign enumeration from {path}: {exc}") from None
    if data.get("classes") != classes or data.get("setup") != setup:
        raise CircuitError(f"{path} was written by an enumeration of another circuit, data or "
                           "specification; delete it to start over")
    return {k: SignPattern(dict(zip(classes, k)), float(v["loss"]), np.array(v["x"]),
                           bool(v.get("converged", True)))
            for k, v in data["patterns"].items()}


def ties(results: list[SignPattern], threshold: float = TIE_THRESHOLD) -> list[SignPattern]:
    """The patterns whose loss is within ``threshold`` of the best (the best included)."""
    best = results[0].loss
    return [r for r in results if r.loss - best < threshold]


def sign_association(results: list[SignPattern], threshold: float = TIE_THRESHOLD) -> dict:
    """Per class: the best loss with each sign, their difference, and the verdict.

    ``predicted`` is ``"+"`` or ``"-"`` when every pattern within ``threshold`` of the
    best gives the class that sign and every pattern with the other sign was fitted to
    convergence (an unconverged loss is only an upper bound: its pattern might tie);
    otherwise ``"undetermined"``.  ``unconverged`` counts the other sign's patterns whose
    fits stopped at their iteration limit.
    """
    tied = ties(results, threshold)
    table = {}
    for name in results[0].signs:
        plus = min(r.loss for r in results if r.signs[name] == "+")
        minus = min(r.loss for r in results if r.signs[name] == "-")
        among = {r.signs[name] for r in tied}
        verdict = among.pop() if len(among) == 1 else "undetermined"
        open_ = sum(not r.converged for r in results
                    if verdict != "undetermined" and r.signs[name] != verdict)
        table[name] = {"best_loss_excitatory": plus, "best_loss_inhibitory": minus,
                       "log_likelihood_ratio": abs(plus - minus),
                       "predicted": "undetermined" if open_ else verdict, "unconverged": open_}
    return table
