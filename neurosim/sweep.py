"""Parameter sweeps: many runs of one circuit, chunked, on this machine or a Dask cluster.

A sweep specification (YAML) names parameters by the names of the parameter layout
(``synapses[AVD->AVA].w``) or by the patterns of fit specifications (``synapses[*].w``,
one value for every match), and how to sample them:

.. code-block:: yaml

    parameters:
      - {select: "synapses[AVD->AVA].w", range: [0, 3], steps: 7}     # a grid axis
      - {select: "synapses[*].nu", values: [0.05, 0.1, 0.2]}
      - {select: "gap_junctions[*].g", range: [0.5, 2], steps: 4, scale: true, log: true}
    sample: {method: grid}          # or {method: random | lhs, n: 1000, seed: 0}
    protocols: [tap, tap_no_PLM]     # default: every protocol
    simulation: {integrator: dopri5, rtol: 1.0e-6, dt_out: 5.0, precision: float64}
    record: all                      # or a list of neurons, or readout (scores only)
    chunk: 500                       # runs per task

``scale: true`` multiplies the circuit's own values instead of setting them.  A grid
crosses every axis; random and Latin-hypercube samples draw ``n`` points in the ranges
(log-uniformly with ``log``), from ``seed``.

:func:`sweep` runs the chunks with ``simulate_batch`` — in this process, or on a
``dask.distributed`` client (a ``LocalCluster`` of ``workers`` processes, or the cluster
a scheduler address names) — and streams them into one resumable HDF5 file
(:mod:`neurosim.io.sweep_file`).  Workers receive the circuit as YAML text and the
chunk's parameter values, never compiled objects; each runs one thread, and the kernels
are compiled once (on one worker, into the shared disk cache) before the others start.
Every run equals the same run of ``simulate_batch`` bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from neurosim._version import __version__
from neurosim.behaviour import motor_output, score_weights
from neurosim.compile import check_theta, compile_circuit
from neurosim.distributed import Executor
from neurosim.errors import CircuitError
from neurosim.fit.parameters import select
from neurosim.io.sweep_file import (COMPLETED, FAILED, SweepHeader, SweepWriter, chunk_count,
                                    chunk_runs)
from neurosim.io.yaml import dump_circuit, loads_circuit, parse_spec, read_text
from neurosim.model import Circuit
from neurosim.simulate import BatchPlan, simulate_batch

#: a sweep larger than this many runs is refused before any work (a typo in `steps`)
MAX_RUNS = 10_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParameterSpec(_Strict):
    select: str
    values: Annotated[list[float], Field(min_length=1)] | None = None
    range: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None
    steps: Annotated[int, Field(ge=2)] | None = None
    log: bool = False
    scale: bool = False


class SampleSpec(_Strict):
    method: Literal["grid", "random", "lhs"] = "grid"
    n: Annotated[int, Field(ge=1)] | None = None
    seed: int = 0


class SimulationSpec(_Strict):
    integrator: Literal["euler", "rk4", "exp_euler", "ltc", "dopri5", "rosenbrock23"] = "dopri5"
    dt: Annotated[float, Field(gt=0)] | None = None
    rtol: Annotated[float, Field(gt=0)] | None = None
    atol: Annotated[float, Field(gt=0)] | None = None
    dt_out: Annotated[float, Field(gt=0)] = 5.0
    precision: Literal["float64", "float32"] = "float64"
    initial: Literal["rest", "as_given"] | None = None


class SweepFileSpec(_Strict):
    parameters: Annotated[list[ParameterSpec], Field(min_length=1)]
    sample: SampleSpec = SampleSpec()
    protocols: Annotated[list[str], Field(min_length=1)] | None = None
    simulation: SimulationSpec = SimulationSpec()
    record: Literal["all", "readout"] | Annotated[list[str], Field(min_length=1)] = "all"
    readout: str = "behaviour"
    chunk: Annotated[int, Field(ge=1)] = 500


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep specification and its source text."""

    spec: SweepFileSpec
    text: str
    source: str
    locate: object


def loads_sweep_spec(text: str, source: str = "<string>") -> SweepSpec:
    """A sweep specification from YAML text; errors name the file, line and key."""
    spec, locate = parse_spec(text, source, SweepFileSpec, "a sweep specification")
    return SweepSpec(spec, text, source, locate)


def load_sweep_spec(path) -> SweepSpec:
    return loads_sweep_spec(read_text(path, "sweep specification"), str(path))


@dataclass(frozen=True)
class SweepPlan:
    """Everything a chunk needs, in plain data: what workers receive."""

    circuit_yaml: str
    base_theta: np.ndarray
    columns: tuple[tuple[int, ...], ...]   # θ positions of each spec parameter
    scale: tuple[bool, ...]
    values: np.ndarray                     # (runs, parameters)
    names: tuple[str, ...]                 # each parameter's select string
    protocols: tuple[str, ...]
    options: dict                          # simulate_batch's keyword arguments
    readout: str | None                    # keep only this read-out's score
    chunk: int

    @property
    def n_runs(self) -> int:
        return self.values.shape[0]

    @property
    def n_chunks(self) -> int:
        return chunk_count(self.n_runs, self.chunk)

    def runs(self, k: int) -> slice:
        return chunk_runs(k, self.n_runs, self.chunk)

    def sha256(self) -> str:
        """Hash of what determines the results: a resumed sweep must have the same."""
        digest = hashlib.sha256()
        for part in (self.circuit_yaml, json.dumps([self.names, self.protocols, self.scale,
                                                    self.options, self.readout, self.chunk],
                                                   sort_keys=True, default=str)):
            digest.update(part.encode("utf-8"))
        for array in (self.base_theta, self.values):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def theta_rows(plan: SweepPlan, runs: slice) -> np.ndarray:
    """θ of the runs ``runs``: the circuit's own, with each spec parameter set (or
    scaled) to the run's value."""
    values = plan.values[runs]
    theta = np.repeat(plan.base_theta[None, :], values.shape[0], axis=0)
    for j, (columns, scale) in enumerate(zip(plan.columns, plan.scale)):
        columns = list(columns)
        theta[:, columns] = (plan.base_theta[columns][None, :] * values[:, j, None] if scale
                             else values[:, j, None])
    return theta


def _axis(entry: ParameterSpec, where: str, locate) -> np.ndarray:
    """A grid axis: the values, or ``steps`` points over the range (log-spaced with log)."""
    if entry.values is not None:
        if entry.range is not None or entry.steps is not None:
            raise locate(CircuitError("give values or range with steps, not both"), where)
        return np.array(entry.values, dtype=np.float64)
    if entry.range is None or entry.steps is None:
        raise locate(CircuitError("a grid axis needs values, or range and steps"), where)
    if entry.steps > MAX_RUNS:
        raise locate(CircuitError(f"{entry.steps:,} steps are more than {MAX_RUNS:,} runs"),
                     f"{where}.steps")
    lo, hi = _bounds(entry, where, locate)
    return np.geomspace(lo, hi, entry.steps) if entry.log else np.linspace(lo, hi, entry.steps)


def _bounds(entry: ParameterSpec, where: str, locate) -> tuple[float, float]:
    lo, hi = entry.range
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise locate(CircuitError(f"range must be [low, high] with low < high, got "
                                  f"{entry.range}"), f"{where}.range")
    if entry.log and lo <= 0:
        raise locate(CircuitError(f"a log range needs a positive low end, got {lo:g}"),
                     f"{where}.range")
    return lo, hi


def _sample(spec: SweepSpec) -> np.ndarray:
    """(runs, parameters): the grid, or n random or Latin-hypercube points."""
    s, locate = spec.spec, spec.locate
    entries = s.parameters
    method = s.sample.method
    if method == "grid":
        if s.sample.n is not None:
            raise locate(CircuitError("a grid has as many runs as its axes make; n is for "
                                      "random and lhs samples"), "sample.n")
        axes = [_axis(e, f"parameters[{j}]", locate) for j, e in enumerate(entries)]
        count = math.prod(a.size for a in axes)
        if count > MAX_RUNS:
            raise locate(CircuitError(f"the grid has {count:,} runs, more than {MAX_RUNS:,}"),
                         "parameters")
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1)
    if s.sample.n is None:
        raise locate(CircuitError(f"a {method} sample needs n, its number of runs"), "sample")
    if s.sample.n > MAX_RUNS:
        raise locate(CircuitError(f"n = {s.sample.n:,} is more than {MAX_RUNS:,} runs"),
                     "sample.n")
    bounds = []
    for j, e in enumerate(entries):
        if e.values is not None or e.range is None or e.steps is not None:
            raise locate(CircuitError(f"a {method} sample draws from a range: give range "
                                      "(and log), not values or steps"), f"parameters[{j}]")
        bounds.append(_bounds(e, f"parameters[{j}]", locate))
    if method == "random":
        unit = np.random.default_rng(s.sample.seed).random((s.sample.n, len(entries)))
    else:
        from scipy.stats import qmc
        unit = qmc.LatinHypercube(d=len(entries), seed=s.sample.seed).random(s.sample.n)
    out = np.empty_like(unit)
    for j, ((lo, hi), e) in enumerate(zip(bounds, entries)):
        out[:, j] = (np.exp(np.log(lo) + unit[:, j] * (np.log(hi) - np.log(lo))) if e.log
                     else lo + unit[:, j] * (hi - lo))
    return out


def plan_sweep(circuit: Circuit, spec: SweepSpec) -> SweepPlan:
    """Check ``spec`` against ``circuit`` and lay out every run; every error names the
    specification's file, line and key."""
    s, locate = spec.spec, spec.locate
    compiled = compile_circuit(circuit)
    columns = []
    for j, entry in enumerate(s.parameters):
        try:
            columns.append(tuple(select(compiled, entry.select)))
        except CircuitError as err:
            raise locate(CircuitError(err.message), f"parameters[{j}].select") from None
    taken = {}
    for j, cols in enumerate(columns):
        for c in cols:
            if c in taken:
                raise locate(CircuitError(
                    f"{compiled.layout.names[c]} is also set by parameters[{taken[c]}]"),
                    f"parameters[{j}].select")
            taken[c] = j
    values = _sample(spec)
    protocols = tuple(s.protocols or circuit.protocols)
    if not protocols:
        raise locate(CircuitError("the circuit defines no protocols; a sweep runs protocols"),
                     "protocols")
    for k, name in enumerate(protocols):
        try:
            circuit.protocol(name)
        except CircuitError as err:
            raise locate(err, f"protocols[{k}]") from None
        if name in protocols[:k]:
            raise locate(CircuitError(f"protocol {name!r} is listed twice; a sweep runs each "
                                      "protocol once"), f"protocols[{k}]")
    readout = None
    options = {key: value for key, value in s.simulation.model_dump().items()
               if value is not None}
    if s.record == "readout":
        try:
            r = circuit.readout(s.readout)
        except CircuitError as err:
            raise locate(err, "readout") from None
        readout = s.readout
        options["record"] = list(r.neurons)
    elif s.record != "all":
        for k, name in enumerate(s.record):
            if name not in circuit.neuron_names:
                raise locate(CircuitError(f"unknown neuron {name!r} to record"), f"record[{k}]")
        options["record"] = list(s.record)
    plan = SweepPlan(dump_circuit(circuit), compiled.theta.copy(), tuple(columns),
                     tuple(e.scale for e in s.parameters), values,
                     tuple(e.select for e in s.parameters), protocols, options, readout,
                     min(s.chunk, values.shape[0]))
    for j in range(len(columns)):  # θ's rules (C > 0, w >= 0, ...) at both ends of each axis
        for extreme in (values[:, j].min(), values[:, j].max()):
            row = values[:1].copy()
            row[0, j] = extreme
            try:
                check_theta(theta_rows(dataclasses.replace(plan, values=row), slice(0, 1))[0],
                            compiled)
            except CircuitError as err:
                raise locate(CircuitError(f"{err.path}: {err.message} (the value "
                                          f"{extreme:g})"), f"parameters[{j}]") from None
    return plan


@functools.lru_cache(maxsize=4)
def _circuit(text: str) -> Circuit:
    """A worker's circuit from its YAML text, parsed once per text."""
    return loads_circuit(text, "<sweep circuit>")


def run_chunk(plan: SweepPlan, k: int) -> dict:
    """Chunk k of ``plan``: its runs with ``simulate_batch`` (here or on a worker)."""
    circuit = _circuit(plan.circuit_yaml)
    batch = simulate_batch(circuit, theta_rows(plan, plan.runs(k)), list(plan.protocols),
                           **plan.options)
    message = np.full(batch.failed.shape, "", dtype=object)
    for (p, b), text in batch.messages.items():
        message[p, b] = text
    out = {"status": np.where(batch.failed, FAILED, COMPLETED).astype(np.int8),
           "message": message, "stats": batch.stats}
    if plan.readout is None:
        out["V"] = batch.V
    else:
        durations = [circuit.protocol(name).duration for name in plan.protocols]
        out["score"] = _scores(circuit.readout(plan.readout), batch, durations)
    return out


def _scores(readout, batch, durations) -> np.ndarray:
    """The read-out's score of every run (NaN for failed runs); an ablated motor neuron
    counts as silent, as in :func:`neurosim.behaviour.contrast`."""
    names = list(batch.neuron_names)
    columns = [names.index(readout.reverse), names.index(readout.forward)]
    scores = np.empty(batch.V.shape[:2])
    for p, duration in enumerate(durations):
        rows = batch.t <= duration  # the common grid is the longest protocol's
        V = batch.V[p][:, rows][:, :, columns]         # (runs, samples, [reverse, forward])
        silent = np.isnan(V).all(axis=1, keepdims=True)
        out = np.where(silent, 0.0, motor_output(readout, V))
        scores[p] = (out[:, :, 0] - out[:, :, 1]) @ score_weights(readout, batch.t[rows])
    scores[batch.failed] = np.nan
    return scores


def _time_grid(plan: SweepPlan, circuit: Circuit) -> np.ndarray:
    """The output grid of the sweep's runs: the longest protocol's (as in a batch)."""
    batch = BatchPlan(circuit, list(plan.protocols), **plan.options)
    return np.arange(int(batch.rows.max()) + 1) * batch.dt_out


def _header(plan: SweepPlan, spec: SweepSpec, circuit: Circuit) -> SweepHeader:
    """The file's header: what the plan says, and the provenance."""
    traces = plan.readout is None
    neurons = tuple(plan.options.get("record") or ()) if traces else ()
    if traces and not neurons:
        neurons = circuit.neuron_names
    dtype = "float32" if plan.options.get("precision") == "float32" else "float64"
    attributes = {"circuit_yaml": plan.circuit_yaml, "spec_yaml": spec.text,
                  "spec_source": spec.source, "neurosim_version": __version__,
                  "options": json.dumps(plan.options), "readout": plan.readout or ""}
    return SweepHeader(plan.n_runs, plan.chunk, plan.protocols, tuple(neurons),
                       _time_grid(plan, circuit), plan.values, plan.names, traces, not traces, dtype,
                       attributes, plan.sha256())


@dataclass
class SweepSummary:
    """How a sweep went: where its file is, runs done and failed, seconds."""

    path: str
    runs: int
    chunks_run: int
    chunks_skipped: int
    failed: int
    complete: bool
    seconds: float

    def line(self) -> str:
        done = "complete" if self.complete else "incomplete (resume it)"
        skipped = f", {self.chunks_skipped} chunks already done" if self.chunks_skipped else ""
        return (f"{self.runs:,} runs in {self.chunks_run} chunks{skipped}, {self.failed:,} "
                f"failed, {self.seconds:.1f} s -> {self.path} ({done})")


def sweep(circuit: Circuit, spec, out, *, client=None, workers: int | None = None,
          scheduler: str | None = None, resume: bool = False, overwrite: bool = False,
          progress=None) -> SweepSummary:
    """Run every run of the sweep ``spec`` (a SweepSpec or YAML path) and write ``out``.

    Parameters
    ----------
    circuit : Circuit
    spec : SweepSpec or path
    out : path of the HDF5 file (see :mod:`neurosim.io.sweep_file`)
    client : dask.distributed.Client, optional
        Run the chunks on this client's cluster.
    workers : int, optional
        Without a client: start a ``LocalCluster`` of this many worker processes (one
        thread each); 0 (or None without ``scheduler``) runs the chunks in this process.
    scheduler : str, optional
        Without a client: the address of a running scheduler (``tcp://host:8786``).
    resume : bool
        Continue the partial file of a stopped sweep, skipping its finished chunks.
    overwrite : bool
        Replace an existing output (or a stale partial).
    progress : callable, optional
        ``progress(done_chunks, total_chunks)`` after each chunk.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_sweep_spec(spec)
    plan = plan_sweep(circuit, spec)
    executor = Executor(client, workers, scheduler)  # its options checked before the file
    writer = SweepWriter(out, _header(plan, spec, circuit), resume=resume, overwrite=overwrite)
    skipped = int(writer.done.sum())
    try:
        todo = [k for k in range(plan.n_chunks) if not writer.done[k]]
        with executor:
            if todo:  # kernels compiled (announced) or loaded before the clock starts
                executor.warm(run_chunk, dataclasses.replace(plan, values=plan.values[:1],
                                                             chunk=1), 0)
            started = time.perf_counter()
            if progress:
                progress(skipped, plan.n_chunks)
            with _Writing(writer) as writing:
                for count, (k, result) in enumerate(executor.map(run_chunk, plan, todo), 1):
                    writing.put(k, result)
                    if progress:
                        progress(skipped + count, plan.n_chunks)
    finally:
        done = writer.done.copy()
        path = writer.close()
    return SweepSummary(str(path), plan.n_runs, int(done.sum()) - skipped, skipped,
                        writer.failed, bool(done.all()), time.perf_counter() - started)


class _Writing:
    """Writes finished chunks into the file on a thread of its own, so that the next
    chunk computes meanwhile; a chunk handed over is written whole, also when the sweep
    is interrupted (Ctrl-C reaches only the main thread; leaving waits for the writes).
    A failed write is raised at the next hand-over or on leaving."""

    def __init__(self, writer: SweepWriter):
        self.writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="neurosim-sweep", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def _run(self):
        while (item := self._queue.get()) is not None:
            if self._error is None:
                k, result = item
                try:
                    self.writer.write_chunk(k, result["status"], result["message"],
                                            result["stats"], V=result.get("V"),
                                            score=result.get("score"))
                except BaseException as exc:  # noqa: BLE001 - raised in the main thread
                    self._error = exc

    def put(self, k: int, result: dict) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((k, result))

    def __exit__(self, *exc):
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and exc[0] is None:
            raise self._error
        return False

