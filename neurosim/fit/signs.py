"""Enumerate synaptic signs, as Wicks, Roehrig & Rankin (1996) did for the TW circuit.

Each presynaptic class gets one sign for all its outgoing synapses (Dale's principle):
excitatory (E = 0 mV) or inhibitory (E = −90 mV).  Every one of the 2^k patterns is
fitted, and the patterns are ranked by their best loss.

References
----------
Wicks SR, Roehrig CJ, Rankin CH (1996). A dynamic network simulation of the nematode tap
withdrawal circuit: predictions concerning synaptic function using behavioral criteria.
J Neurosci 16:4017–4031.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from neurosim.errors import CircuitError
from neurosim.fit.objective import Objective
from neurosim.fit.optimize import fit_gradient
from neurosim.fit.parameters import Parameterization
from neurosim.model import SYNAPSE_TYPES, Circuit


@dataclass(frozen=True)
class SignPattern:
    """One sign assignment and how well the circuit fits with it."""

    signs: dict            # class -> "+" or "-"
    loss: float
    x: np.ndarray


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


def enumerate_signs(circuit: Circuit, targets, classes, free, *, maxiter: int = 40,
                    objective_options=None, progress=None) -> list[SignPattern]:
    """Fit every sign pattern of ``classes``; patterns sorted by loss (best first)."""
    classes = list(dict.fromkeys(classes))
    for name in classes:
        circuit.neuron(name)
        if not any(s.pre == name for s in circuit.synapses):
            raise CircuitError(f"{name!r} has no outgoing chemical synapse: its sign is undefined")
    results = []
    for pattern in itertools.product("+-", repeat=len(classes)):
        signs = dict(zip(classes, pattern))
        par = Parameterization(with_signs(circuit, signs), free)
        objective = Objective(par, targets, **(objective_options or {}))
        fitted = fit_gradient(objective, maxiter=maxiter)
        results.append(SignPattern(signs, fitted.loss, fitted.x))
        if progress:
            progress(1)
    return sorted(results, key=lambda r: r.loss)


def sign_association(results: list[SignPattern], top: int | None = None) -> dict:
    """Per class: best loss with each sign, and the share of '+' among the top patterns."""
    top = top or max(1, len(results) // 4)
    best = results[:top]
    table = {}
    for name in results[0].signs:
        plus = [r.loss for r in results if r.signs[name] == "+"]
        minus = [r.loss for r in results if r.signs[name] == "-"]
        table[name] = {"best_loss_excitatory": min(plus), "best_loss_inhibitory": min(minus),
                       "excitatory_share_of_top": sum(r.signs[name] == "+" for r in best) / top,
                       "predicted": "+" if min(plus) < min(minus) else "-"}
    return table
