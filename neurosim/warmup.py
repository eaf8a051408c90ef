"""Compile kernels ahead of their first use (``neurosim warmup``).

Numba compiles a kernel on its first call and caches the machine code on disk, so the
first use of each feature after installing or changing neurosim waits for it (announced
on the ``neurosim`` logger).  :func:`warmup` takes that wait up front: it runs each
feature once on a four-neuron circuit, through the same calls users make, so that every
kernel is compiled for the argument types those calls pass.

Numba compiles one kernel at a time in a process, so the features are compiled in
parallel in worker processes (``jobs``), which share the disk cache; and
:func:`compile_ahead` compiles what a command needs later in one background process while
the command goes on (``neurosim fit`` compiles its gradients and final runs while its
first batches run).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import numba
import numpy as np

from neurosim.compile import compile_circuit
from neurosim.fit import Objective, Parameterization, TraceTarget
from neurosim.integrators import (METHODS, SENSITIVITY_METHODS, compile_seconds,
                                  count_compile_wait)
from neurosim.model import Circuit, GapJunction, Neuron, Protocol, Stimulus, Synapse
from neurosim.simulate import rest_state, simulate, simulate_batch


def _warmup_circuit() -> Circuit:
    """Four neurons with what a circuit can hold: a clamp, synapses of both signs, a gap
    junction, a current pulse and a voltage step; protocol ``p`` starts at rest, ``given``
    as given (so that compiling a run's time loop does not wait for the rest's kernels)."""
    neurons = (Neuron("S", clamp=-40.0), Neuron("A"), Neuron("B"), Neuron("M", C=5.0))
    synapses = (Synapse("S", "A", w=0.5, E=0.0), Synapse("A", "B", w=0.5, E=-90.0),
                Synapse("B", "M", w=0.3, E=0.0), Synapse("A", "M", w=0.2, E=0.0, kappa=0.0))
    stimuli = {"pulse": Stimulus("pulse", "A", amplitude=5.0, start=1.0, duration=1.0),
               "step": Stimulus("step", "S", quantity="voltage", amplitude=10.0, start=2.0)}
    return Circuit("warmup", neurons, synapses, (GapJunction("B", "M", g=0.1),), stimuli,
                   {"p": Protocol(4.0, stimuli=("pulse", "step")),
                    "given": Protocol(4.0, stimuli=("pulse", "step"), initial="as_given")})


def _features(circuit: Circuit) -> dict:
    """what → call, for every feature whose kernels differ, the longest first."""
    theta = np.tile(compile_circuit(circuit).theta, (2, 1))
    features = {
        "rest states": lambda: rest_state(circuit, "p"),
        "batches, dopri5": lambda: simulate_batch(circuit, theta, "given", dt_out=1.0),
        "batches, dopri5 float32": lambda: simulate_batch(
            circuit, theta, "given", rtol=1e-4, dt_out=1.0, precision="float32"),
        "batches, other integrators": lambda: simulate_batch(
            circuit, theta, "given", integrator="rk4", dt_out=1.0)}
    for name in METHODS:
        features[f"single runs, {name}"] = lambda name=name: simulate(
            circuit, "given", integrator=name, dt_out=1.0)
    par = Parameterization(circuit, [{"select": "synapses[*].w", "bounds": [0, 3]}])
    target = TraceTarget("p", "M", (1.0, 2.0, 3.0), (-70.0, -69.0, -68.0))
    for name in SENSITIVITY_METHODS:  # through the rest: its derivative has kernels too
        objective = Objective(par, [target], integrator=name, dt_out=1.0)
        features[f"gradients, {name}"] = \
            lambda objective=objective: objective.value_and_grad(par.x0)
    return features


def features() -> tuple[str, ...]:
    """The names of the features :func:`warmup` compiles."""
    return tuple(_features(_warmup_circuit()))


def _timed(what: str) -> tuple[str, float, float]:
    """Run feature ``what``: (what, seconds, seconds compiling)."""
    call = _features(_warmup_circuit())[what]
    started, compiling = time.perf_counter(), compile_seconds()
    call()
    return what, time.perf_counter() - started, compile_seconds() - compiling


def _one_thread() -> None:
    """A compiling worker runs its features' tiny runs on one thread: the others are
    compiling."""
    numba.set_num_threads(1)


def default_jobs() -> int:
    """The processors this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def warmup(report=None, *, jobs: int = 1, only=None) -> list[tuple[str, float, float]]:
    """Load every kernel from the disk cache, or compile it where the cache lacks it.

    Runs each feature once: rest states, single runs with every integrator, batches
    (dopri5 in float64 and float32, the other integrators), and gradients (dopri5 and the
    fixed-step methods, through the rest).  Afterwards, in later processes (and in this
    one with ``jobs=1``), no call of the public API compiles.

    Parameters
    ----------
    report : callable, optional
        Called with each (what, seconds, seconds compiling) as it is done.
    jobs : int
        Worker processes compiling at once (Numba compiles one kernel at a time per
        process); 1 compiles in this process.  :func:`default_jobs` uses every processor.
    only : iterable of str, optional
        The features to compile (names from :func:`features`); default all.

    Returns
    -------
    list of (str, float, float)
        What was done, its seconds, and how many of them went to compiling (0 where the
        cache had everything), in the order done.
    """
    names = features()
    chosen = names if only is None else tuple(only)
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise ValueError(f"unknown warmup features {unknown}; known: {', '.join(names)}")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    done = []

    def finished(result):
        done.append(result)
        if report is not None:
            report(*result)

    if jobs == 1:
        for what in chosen:
            finished(_timed(what))
        return done
    with ProcessPoolExecutor(min(jobs, len(chosen)), multiprocessing.get_context("spawn"),
                             initializer=_one_thread) as pool:
        for future in as_completed([pool.submit(_timed, what) for what in chosen]):
            finished(future.result())
    return done


class CompileAhead:
    """Features compiling in one background process (:func:`compile_ahead`), in order."""

    def __init__(self, only):
        context = multiprocessing.get_context("spawn")
        self._done, sent = context.Pipe(duplex=False)
        self._finished: set[str] = set()
        self._process = context.Process(target=_compile_quietly, args=(tuple(only), sent),
                                        daemon=True)
        self._process.start()
        sent.close()

    def wait(self, feature: str | None = None) -> None:
        """Return once ``feature`` (default: every feature) is compiled in the background
        process, or that process has ended (its kernels are then in the disk cache; had it
        failed, a first call compiles them as usual)."""
        started = time.perf_counter()
        while feature is None or feature not in self._finished:
            try:
                self._finished.add(self._done.recv())
            except EOFError:  # the process has ended
                break
        if feature is None:
            self._process.join()
        count_compile_wait(time.perf_counter() - started)  # not run time


def _compile_quietly(only, sent) -> None:
    _one_thread()
    with sent:
        warmup(only=only, report=lambda what, *_: sent.send(what))


def compile_ahead(only) -> CompileAhead:
    """Compile the features ``only`` (names from :func:`features`) in a background
    process, while this one goes on; :meth:`CompileAhead.wait` before using them.  Where
    the cache has them already, the process only loads them (about a second of another
    processor)."""
    unknown = sorted(set(only) - set(features()))
    if unknown:
        raise ValueError(f"unknown warmup features {unknown}")
    return CompileAhead(only)
