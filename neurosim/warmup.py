"""Compile every kernel ahead of its first use (``neurosim warmup``).

Numba compiles a kernel on its first call and caches the machine code on disk, so the
first use of each feature after installing or changing neurosim waits for it (announced
on the ``neurosim`` logger).  :func:`warmup` takes that wait up front: it runs each
feature once on a four-neuron circuit, through the same calls users make, so that every
kernel is compiled for the argument types those calls pass.
"""

from __future__ import annotations

import time

import numpy as np

from neurosim.compile import compile_circuit
from neurosim.fit import Objective, Parameterization, TraceTarget
from neurosim.integrators import METHODS, SENSITIVITY_METHODS, compile_seconds
from neurosim.model import Circuit, GapJunction, Neuron, Protocol, Stimulus, Synapse
from neurosim.simulate import rest_state, simulate, simulate_batch


def _warmup_circuit() -> Circuit:
    """Four neurons with what a circuit can hold: a clamp, synapses of both signs, a gap
    junction, a current pulse and a voltage step."""
    neurons = (Neuron("S", clamp=-40.0), Neuron("A"), Neuron("B"), Neuron("M", C=5.0))
    synapses = (Synapse("S", "A", w=0.5, E=0.0), Synapse("A", "B", w=0.5, E=-90.0),
                Synapse("B", "M", w=0.3, E=0.0), Synapse("A", "M", w=0.2, E=0.0, kappa=0.0))
    stimuli = {"pulse": Stimulus("pulse", "A", amplitude=5.0, start=1.0, duration=1.0),
               "step": Stimulus("step", "S", quantity="voltage", amplitude=10.0, start=2.0)}
    return Circuit("warmup", neurons, synapses, (GapJunction("B", "M", g=0.1),), stimuli,
                   {"p": Protocol(4.0, stimuli=("pulse", "step"))})


def _features(circuit: Circuit):
    """(what, call) for every feature whose kernels differ."""
    theta = np.tile(compile_circuit(circuit).theta, (2, 1))
    yield "rest states", lambda: rest_state(circuit, "p")
    for name in METHODS:
        yield f"single runs, {name}", lambda name=name: simulate(circuit, "p", integrator=name,
                                                                dt_out=1.0)
    yield "batches, dopri5", lambda: simulate_batch(circuit, theta, "p", dt_out=1.0)
    yield "batches, dopri5 float32", lambda: simulate_batch(
        circuit, theta, "p", rtol=1e-4, dt_out=1.0, precision="float32")
    yield "batches, other integrators", lambda: simulate_batch(circuit, theta, "p",
                                                              integrator="rk4", dt_out=1.0)
    par = Parameterization(circuit, [{"select": "synapses[*].w", "bounds": [0, 3]}])
    target = TraceTarget("p", "M", (1.0, 2.0, 3.0), (-70.0, -69.0, -68.0))
    for name in SENSITIVITY_METHODS:
        objective = Objective(par, [target], integrator=name, dt_out=1.0)
        yield f"gradients, {name}", lambda objective=objective: objective.value_and_grad(par.x0)


def warmup(report=None) -> list[tuple[str, float, float]]:
    """Load every kernel from the disk cache, or compile it where the cache lacks it.

    Runs each feature once: rest states, single runs with every integrator, batches
    (dopri5 in float64 and float32, the other integrators), and gradients (dopri5 and the
    fixed-step methods, through the rest).  Afterwards, in this process and in later
    ones, no call of the public API compiles.

    Parameters
    ----------
    report : callable, optional
        Called with each (what, seconds, seconds compiling) as it is done.

    Returns
    -------
    list of (str, float, float)
        What was done, its seconds, and how many of them went to compiling (0 where the
        cache had everything).
    """
    done = []
    for what, call in _features(_warmup_circuit()):
        started, compiling = time.perf_counter(), compile_seconds()
        call()
        done.append((what, time.perf_counter() - started, compile_seconds() - compiling))
        if report is not None:
            report(*done[-1])
    return done
