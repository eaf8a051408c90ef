"""What a run keeps: the Result type and the recorders that build it chunk by chunk.

A recorder receives the output grid in chunks while the run goes (``open``, ``append``
many times, ``close``), so a long run can stream to disk with bounded memory
(:class:`neurosim.io.hdf5.HDF5Recorder`) or stay in memory (:class:`MemoryRecorder`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurosim.errors import CircuitError
from neurosim.model import Circuit, unknown_name_message
from neurosim.resources import require_memory

#: how a run ended
RUN_STATUSES = ("complete", "failed", "interrupted")


@dataclass(frozen=True)
class RunHeader:
    """What a recorder learns before the first sample.

    Attributes
    ----------
    neuron_names : tuple of str
        Recorded neurons, in column order.
    n_samples : int
        Rows the finished run will have (t = 0 included).
    dt_out : float, ms
    metadata : dict
        Circuit, protocol, integrator and version information (JSON-able values).
    circuit : Circuit, optional
        The circuit as given (before ablation), for recorders that store it.
    """

    neuron_names: tuple[str, ...]
    n_samples: int
    dt_out: float
    metadata: dict
    circuit: Circuit | None = None


@dataclass(frozen=True)
class BatchHeader:
    """What a batch recorder (:class:`~neurosim.io.batch_file.HDF5BatchRecorder`) learns
    before the first kernel call of :func:`~neurosim.simulate.simulate_batch`."""

    protocols: tuple[str, ...]
    n_sets: int
    neuron_names: tuple[str, ...]     # recorded
    time: np.ndarray                  # (samples,) ms
    n_neurons: int                    # all neurons (initial_V)
    n_report: int                     # columns of a rest report
    metadata: dict
    circuit: Circuit | None = None    # for its YAML text
    theta: np.ndarray | None = None   # (sets, parameters): what each run ran
    parameter_names: tuple[str, ...] = ()  # theta's columns


class Result:
    """Traces of one run.

    Attributes
    ----------
    t : ndarray, shape (n_samples,), ms
    V : ndarray, shape (n_samples, n_recorded), mV
        Each given as an array, or as a function returning it (a result streamed to disk
        reads its times and traces only when first used, so memory stays bounded).
    neuron_names : tuple of str
        Column names of ``V``.
    status : str
        ``"complete"``, ``"failed"`` or ``"interrupted"``; a failed or interrupted run
        holds the samples computed before it stopped.
    message : str
    stats : dict
        Solver statistics: steps, rejected, rhs_evaluations, jacobians, wall_time_s.
    metadata : dict
    """

    def __init__(self, t, V, neuron_names, status="complete", message="", stats=None,
                 metadata=None):
        self._t = t
        self._V = V
        self.neuron_names = tuple(neuron_names)
        self.status = status
        self.message = message
        self.stats = {} if stats is None else stats
        self.metadata = {} if metadata is None else metadata

    @property
    def t(self) -> np.ndarray:
        if callable(self._t):
            self._t = self._t()
        return self._t

    @property
    def V(self) -> np.ndarray:
        if callable(self._V):
            self._V = self._V()
        return self._V

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    def v(self, name: str) -> np.ndarray:
        """Trace of neuron ``name`` (mV), shape (n_samples,)."""
        if name not in self.neuron_names:
            if name in self.metadata.get("ablated", ()):
                raise CircuitError(f"neuron {name!r} was ablated in this run: it has no trace")
            raise CircuitError(unknown_name_message("recorded neuron", name, list(self.neuron_names)))
        return self.V[:, self.neuron_names.index(name)]

    def __repr__(self):
        span = f"{self.t[-1]:g} ms" if self.t.size else "no samples"
        return (f"Result({self.status}, {len(self.neuron_names)} neurons, {self.t.size} samples, "
                f"{span})")


class Recorder:
    """Receives a run's output in chunks.  Subclasses implement the three calls."""

    #: the most values (rows × recorded neurons) the recorder wants per ``append``
    chunk_values: int = 1 << 20

    def open(self, header: RunHeader) -> None:
        raise NotImplementedError

    def append(self, t: np.ndarray, V: np.ndarray) -> None:
        """Rows ``V`` (shape (m, n_recorded)) at times ``t`` (shape (m,))."""
        raise NotImplementedError

    def close(self, status: str, message: str, stats: dict) -> Result:
        raise NotImplementedError


class MemoryRecorder(Recorder):
    """Keeps the run in preallocated arrays.

    Parameters
    ----------
    check_memory : bool
        Refuse a run whose output would not fit in the memory available when it starts.
    """

    def __init__(self, *, check_memory: bool = True):
        self.check_memory = check_memory

    def open(self, header):
        self.header = header
        n_rec = len(header.neuron_names)
        require_memory(8 * header.n_samples * (n_rec + 1),
                       f"the run's output ({header.n_samples:,} samples x {n_rec:,} neurons)",
                       "record fewer neurons (record=), sample less often (dt_out=), stream to "
                       "disk (recorder=HDF5Recorder(path)), or pass "
                       "recorder=MemoryRecorder(check_memory=False)", check=self.check_memory)
        self.t = np.empty(header.n_samples)
        self.V = np.empty((header.n_samples, len(header.neuron_names)))
        self.rows = 0

    def append(self, t, V):
        end = self.rows + t.shape[0]
        self.t[self.rows:end] = t
        self.V[self.rows:end] = V
        self.rows = end

    def close(self, status, message, stats):
        # a run cut short keeps a copy of its rows, not the whole preallocated array
        t, V = ((self.t, self.V) if self.rows == self.t.shape[0] else
                (self.t[:self.rows].copy(), self.V[:self.rows].copy()))
        return Result(t, V, self.header.neuron_names, status, message, dict(stats),
                      dict(self.header.metadata))
