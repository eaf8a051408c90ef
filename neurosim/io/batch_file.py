"""A batch streamed to one HDF5 file while it runs: a batch larger than memory.

Layout (format ``neurosim-batch``, version 1, readable by any HDF5 tool)::

    /V           (protocols, sets, samples, recorded)  float64 (or float32), mV
    /time        (samples,) ms
    /status      (protocols, sets) int8     -1 not run, 0 completed, 1 failed
    /stats       (protocols, sets, 4) int64 steps, rejected, rhs evaluations, Jacobians
    /initial_V   (protocols, sets, neurons) every neuron's initial potential
    /rest_reports (protocols, sets, 6)      how each rest was found (NaN: as given)
    /theta       (sets, parameters)        the parameter vectors the runs ran
    /neuron_names, /protocols, /parameter_names   UTF-8 strings
    attributes: format, complete, status, message, runs_written, messages (JSON),
                metadata (JSON), circuit_yaml, circuit_sha256

/V is chunked as (1, sets per kernel call, samples, recorded): the recorder says how many
parameter sets each kernel call of :func:`~neurosim.simulate.simulate_batch` runs
(:meth:`HDF5BatchRecorder.sets_per_call`), so every call fills whole chunks, which go
from the kernels' output to their place in the file as they are (``pwrite``, on a
writer thread, while the next call computes).  Every block of /V is placed and taken
on the disk when the file is created, so a disk too small refuses the batch before it
starts, never in the middle.  Runs not written (an interrupted or failed batch) keep
status -1: :func:`load_batch_V` shows NaN there, never the undefined bytes of the file.

The file follows :mod:`neurosim.io.hdf5`'s rules: written as ``OUT.h5.partial``,
created and locked (one writer), renamed when the batch ends; an existing file is
replaced only with ``overwrite``, and only by a complete batch (an interrupted or failed
one then stays in the partial, beside it).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from neurosim.errors import ResultFileError, StorageError
from neurosim.io.hdf5 import (METADATA_RESERVE, WriterThread, _claim, _close_quietly,
                              _holds, _identity, _preallocated_full, _pwrite_all, abandon_open,
                              check_target, publish, start_writeback, write_failure_reason)
from neurosim.io.yaml import dump_circuit
from neurosim.record import BatchHeader
from neurosim.resources import require_disk

FORMAT = "neurosim-batch"
FORMAT_VERSION = 1
NOT_RUN, COMPLETED, FAILED = -1, 0, 1
#: bytes of traces per kernel call the recorder asks for: whole HDF5 chunks of tens of
#: MB (few, large writes), while two calls in flight stay small beside the batch
CALL_BYTES = 32 << 20


class HDF5BatchRecorder:
    """Stream a batch's traces to ``path`` (see the module docstring).

    Parameters
    ----------
    path : str or Path
    overwrite : bool
        Replace an existing file (a regular file only).
    dtype : {"float64", "float32"}
        Storage type of /V (a float64 batch stored as float32 is rounded once).
    check_space : bool
        Refuse a batch whose file would not fit in the free disk space.
    """

    def __init__(self, path, *, overwrite: bool = False, dtype: str = "float64",
                 check_space: bool = True):
        self.path = Path(path)
        if dtype not in ("float64", "float32"):
            raise ResultFileError(f"dtype must be float64 or float32, got {dtype!r}")
        self.target, self.partial = check_target(self.path, overwrite)
        self.overwrite, self.dtype, self.check_space = overwrite, np.dtype(dtype), check_space
        self.file = None
        self._closed = False
        self._opened = False

    def sets_per_call(self, n_protocols: int, n_samples: int, n_recorded: int,
                      unit: int = 1) -> int:
        """Parameter sets per kernel call (and per HDF5 chunk of /V): about CALL_BYTES of
        traces, in whole ``unit``s of sets (what the kernels run at full width: whole
        groups of lockstep lanes on every thread; a call of 633 sets left a quarter of
        the lanes idle, one of 512 none)."""
        per_set = max(1, n_protocols * n_samples * n_recorded * self.dtype.itemsize)
        return unit * max(1, round(CALL_BYTES / (per_set * unit)))

    def _reason(self, exc: BaseException) -> str:
        return write_failure_reason(exc, self.target.parent, METADATA_RESERVE)

    def open(self, header: BatchHeader, sets_per_call: int) -> None:
        if self._opened:
            raise ResultFileError(f"this recorder has recorded a batch to {self.path} already; "
                                  "a recorder writes one batch: make a new one")
        self._opened = True
        self.header = header
        n_p, n_sets = len(header.protocols), header.n_sets
        samples, n_rec = header.time.size, len(header.neuron_names)
        self._chunk = (1, max(1, min(sets_per_call, n_sets)), samples, max(1, n_rec))
        # the traces, and what is known of each run (status, stats, start, rest report),
        # whose datasets are placed now too: closing then needs no more than METADATA_RESERVE
        per_run = 1 + 4 * 8 + header.n_neurons * 8 + header.n_report * 8
        size = n_p * n_sets * (samples * n_rec * self.dtype.itemsize + per_run)
        if header.theta is not None:
            size += header.theta.nbytes
        self._fd = _claim(self.partial, self.overwrite, self.path)
        try:
            require_disk(size + METADATA_RESERVE, self.target.parent,
                         f"{self.path} ({n_p * n_sets:,} runs x {samples:,} samples x "
                         f"{n_rec:,} neurons)",
                         "record fewer neurons (record=), sample less often (dt_out=), store "
                         "float32 (dtype='float32'), or free some space",
                         check=self.check_space)
            self._create(header)
        except BaseException as exc:
            abandon_open(self, exc, self._reason(exc))
            raise
        self._status = np.full((n_p, n_sets), NOT_RUN, dtype=np.int8)
        self._stats = np.zeros((n_p, n_sets, 4), dtype=np.int64)
        self._initial = np.full((n_p, n_sets, header.n_neurons), np.nan)
        self._rests = np.full((n_p, n_sets, header.n_report), np.nan)
        self._messages: dict = {}
        self._error: BaseException | None = None
        self._written = 0        # parameter sets whose traces are in the file
        self._writer = WriterThread(self._write_sets, self._report, depth=2,
                                    name="neurosim-hdf5-batch")

    def _create(self, header: BatchHeader):
        self.file = h5py.File(self.partial, "w", locking=False)
        n_p, n_sets = len(header.protocols), header.n_sets
        shape = (n_p, n_sets, header.time.size, len(header.neuron_names))
        self.V = _preallocated_full(self.file, "V", shape, self._chunk, self.dtype)
        # every block of /V taken now: a full disk refuses the batch here
        for p in range(n_p):
            for first in range(0, n_sets, self._chunk[1]):
                info = self.V.id.get_chunk_info_by_coord((p, first, 0, 0))
                _reserve(self._fd, info.byte_offset, info.size)
        for name, shape, dtype, fill in (
                ("status", (n_p, n_sets), np.int8, NOT_RUN),
                ("stats", (n_p, n_sets, 4), np.int64, 0),
                ("initial_V", (n_p, n_sets, header.n_neurons), np.float64, np.nan),
                ("rest_reports", (n_p, n_sets, header.n_report), np.float64, np.nan)):
            self.file.create_dataset(name, data=np.full(shape, fill, dtype=dtype))
        if header.theta is not None:  # what each run ran: a batch reruns from its file
            self.file.create_dataset("theta", data=header.theta)
            self.file.create_dataset("parameter_names",
                                     data=np.array(header.parameter_names, dtype=h5py.string_dtype()))
        self.file.create_dataset("time", data=header.time).attrs["units"] = "ms"
        self.V.attrs["units"] = "mV"
        strings = h5py.string_dtype()
        self.file.create_dataset("neuron_names", data=np.array(header.neuron_names, dtype=strings))
        self.file.create_dataset("protocols", data=np.array(header.protocols, dtype=strings))
        attrs = self.file.attrs
        attrs["format"] = FORMAT
        attrs["format_version"] = FORMAT_VERSION
        attrs["complete"] = False
        attrs["status"] = "running"
        attrs["runs_written"] = 0
        attrs["metadata"] = json.dumps(header.metadata)
        if header.circuit is not None:
            text = dump_circuit(header.circuit)
            attrs["circuit_yaml"] = text
            attrs["circuit_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        self.file.flush()

    def _report(self, exc: BaseException) -> None:
        self._error = self._error or exc

    def append(self, first: int, V: np.ndarray, status: np.ndarray, stats: np.ndarray,
               initial_V: np.ndarray, rest_reports: np.ndarray, messages: dict) -> None:
        """Parameter sets first… of every protocol: V (protocols, m, samples, recorded),
        status (protocols, m) of 0/1, stats (protocols, m, 4), initial_V, rest_reports;
        ``messages`` maps (protocol, set) to a failure's sentence.  The recorder owns V from
        now on (it is written on the writer thread).  Raises StorageError once a write has
        failed."""
        if self._error is not None:
            raise StorageError(f"writing {self.path} failed: {self._reason(self._error)}")
        self._writer.put((first, V, (status, stats, initial_V, rest_reports, messages)))

    def _write_sets(self, first, V, summary):
        """On the writer thread: the traces of sets first… straight to their chunks, then
        (once they are written) their statuses in memory, for close to store.  A disk
        filled (by anyone) below METADATA_RESERVE stops the recording here, between
        calls, so that closing the file keeps what was written."""
        if shutil.disk_usage(self.target.parent).free < METADATA_RESERVE:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        m = V.shape[1]
        data = np.ascontiguousarray(V, dtype=self.dtype)
        for p in range(V.shape[0]):
            for a in range(0, m, self._chunk[1]):
                b = min(m, a + self._chunk[1])
                block = data[p, a:b]
                offset = self.V.id.get_chunk_info_by_coord((p, first + a, 0, 0)).byte_offset
                _pwrite_all(self._fd, block, offset)
                start_writeback(self._fd, offset, block.nbytes)
        status, stats, initial_V, rest_reports, messages = summary
        rows = slice(first, first + m)
        self._stats[:, rows] = stats
        self._initial[:, rows] = initial_V
        self._rests[:, rows] = rest_reports
        self._messages.update({(p, first + k): text for (p, k), text in messages.items()})
        self._status[:, rows] = np.where(status == 0, COMPLETED, FAILED)
        self._written = max(self._written, first + m)

    def close(self, status: str, message: str) -> Path | None:
        """Finish the file and give it its final name; returns where the batch is (None
        when nothing could be kept).  After a write error the file is finished where
        possible (status ``failed``, the sets written before kept) and StorageError
        raised.  A second call returns the first's answer."""
        if self._closed:
            return self._stored
        self._closed = True
        self._writer.finish()
        if self._error is not None:
            status = "failed"
            message = (f"recording stopped after {self._written} parameter sets: writing "
                       f"failed: {self._reason(self._error)}")
        finished = self._finish(status, message)
        stored = None
        if finished and status != "complete" and self.target.exists():
            # overwrite replaces a file with a complete batch only: an interrupted or
            # failed one stays in the partial, beside the file it would have replaced
            stored = self.partial
        elif finished:
            try:
                stored = publish(self._fd, self.partial, self.target, self.path, self.overwrite)
            except ResultFileError as exc:
                self._error = exc
                stored = self.partial if self.partial.exists() and _holds(self._fd, self.partial) \
                    else None
        else:
            self.partial.unlink(missing_ok=True)
        os.close(self._fd)
        self._stored = stored
        if self._error is not None:
            where = (f"the {self._written} parameter sets written before are in {stored}"
                     if stored is not None else "nothing could be kept")
            error = StorageError(f"writing {self.path} failed: {self._reason(self._error)}; {where}")
            error.path = stored
            raise error
        return stored

    def _finish(self, status: str, message: str) -> bool:
        try:
            f = self.file
            for name, values in (("status", self._status), ("stats", self._stats),
                                 ("initial_V", self._initial), ("rest_reports", self._rests)):
                f[name][...] = values  # placed when the file was made
            attrs = f.attrs
            attrs["messages"] = json.dumps([[p, k, text] for (p, k), text
                                            in sorted(self._messages.items())])
            attrs["runs_written"] = int((self._status != NOT_RUN).sum())
            attrs["status"] = status
            attrs["message"] = message
            f.flush()
            attrs["complete"] = status == "complete" and self._error is None
            f.close()
            os.fsync(self._fd)  # on the disk before the final name points at it
            return True
        except Exception as exc:  # noqa: BLE001 - becomes the StorageError of close()
            self._error = self._error or exc
            self.V = None
            _close_quietly(self.file)
            return False
        finally:
            self.file = None


def _reserve(fd: int, offset: int, nbytes: int) -> None:
    """Take the blocks of a byte range on the disk now (a full disk fails here)."""
    try:
        os.posix_fallocate(fd, offset, nbytes)
    except AttributeError:  # no posix_fallocate (macOS): the free-space check stands
        pass
    except OSError as exc:
        if exc.errno not in (95, 38, 22):  # EOPNOTSUPP, ENOSYS, EINVAL: not supported here
            raise


def batch_identity(path) -> tuple:
    """What tells one version of a batch file from another (file, size, time)."""
    return _identity(os.stat(path))


def load_batch_V(path, identity: tuple | None = None) -> np.ndarray:
    """/V of a batch file (protocols, sets, samples, recorded) as float64, NaN for the
    runs that were not written; with ``identity`` (:func:`batch_identity`), refused if
    the file has been removed, replaced or rewritten since."""
    if identity is not None:
        try:
            same = batch_identity(path) == identity
        except OSError:
            same = False
        if not same:
            raise ResultFileError(f"{path} was removed, replaced or rewritten after this batch "
                                  "was recorded to it; its traces are no longer there")
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise ResultFileError(f"{path} is not a neurosim batch file")
        V = f["V"][()].astype(np.float64)
        if "status" in f:
            V[f["status"][()] == NOT_RUN] = np.nan
        else:  # left by a killed batch: nothing says which runs are there
            V[:] = np.nan
        return V


def read_batch_parts(path) -> dict:
    """Everything of a batch file but its traces: status (-1 not run, 0 completed, 1
    failed), stats, initial_V, rest_reports, and messages {(protocol, set): sentence}."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise ResultFileError(f"{path} is not a neurosim batch file")
        if f.attrs.get("status") == "running":
            raise ResultFileError(f"{path} was left by a batch that was killed: which runs it "
                                  "holds was never written (load_batch_V reads it as NaN)")
        parts = {name: f[name][()] for name in ("status", "stats", "initial_V", "rest_reports")}
        parts["messages"] = {(p, k): text for p, k, text in json.loads(f.attrs["messages"])}
    return parts
