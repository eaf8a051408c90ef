"""The sweep file: many runs in one HDF5 file, written chunk by chunk, resumable.

Layout (format ``neurosim-sweep``, version 1)::

    /parameters   (runs, parameters)            the sampled values, one column per spec entry
    /status       (protocols, runs) int8        -1 not run yet, 0 completed, 1 failed
    /message      (protocols, runs) str         why a run failed ("" otherwise)
    /stats        (protocols, runs, 4) int64    steps, rejected, rhs evaluations, Jacobians
    /V            (protocols, runs, samples, neurons)   traces (unless only read-outs)
    /score        (protocols, runs)             the read-out's score (when asked)
    /time         (samples,) ms
    /done         (chunks,) bool                which chunks are in the file

and attributes naming the circuit (its YAML), the sweep specification, the protocols, the
recorded neurons, the parameters and the hash of all of it (``plan_sha256``), which a
resumed sweep must match.  A chunk's rows are written, flushed, and only then marked
done, so a sweep killed at any point resumes with every run exactly once.

The file is written as ``OUT.h5.partial`` (created exclusively and locked, as results
are: :mod:`neurosim.io.hdf5`) and renamed when the last chunk is in.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from neurosim.errors import ResultFileError, StorageError
from neurosim.io.hdf5 import _claim, _close_quietly, publish
from neurosim.resources import require_disk

FORMAT = "neurosim-sweep"
FORMAT_VERSION = 1
NOT_RUN, COMPLETED, FAILED = -1, 0, 1


@dataclass(frozen=True)
class SweepHeader:
    """What a sweep file holds besides its results (see the module docstring)."""

    n_runs: int
    chunk: int
    protocols: tuple[str, ...]
    neuron_names: tuple[str, ...]   # recorded; empty when only read-outs are kept
    time: np.ndarray
    parameters: np.ndarray          # (runs, parameters)
    parameter_names: tuple[str, ...]
    traces: bool
    scores: bool
    dtype: str
    attributes: dict                # circuit, spec, versions: strings
    plan_sha256: str

    @property
    def n_chunks(self) -> int:
        return -(-self.n_runs // self.chunk)

    def runs(self, k: int) -> slice:
        return slice(k * self.chunk, min((k + 1) * self.chunk, self.n_runs))

    def nbytes(self) -> int:
        n_p, samples, rec = len(self.protocols), self.time.size, len(self.neuron_names)
        per_run = n_p * (samples * rec * np.dtype(self.dtype).itemsize if self.traces else 0)
        return self.n_runs * (per_run + n_p * (8 + 1 + 32 + 8) + 8 * self.parameters.shape[1])


class SweepWriter:
    """Writes the chunks of one sweep into ``path`` (see the module docstring).

    ``resume`` continues the partial file a stopped sweep left (the same plan only);
    otherwise an existing output is refused unless ``overwrite``.  :attr:`done` says
    which chunks are already in.
    """

    def __init__(self, path, header: SweepHeader, *, resume: bool = False,
                 overwrite: bool = False, check_space: bool = True):
        self.path = Path(path)
        self.header = header
        self.target = Path(os.path.realpath(self.path))
        if self.target.name.endswith(".partial"):
            raise ResultFileError(f"{self.path}: names ending in .partial are those of results "
                                  "being written; choose another name")
        if not self.target.parent.is_dir():
            raise ResultFileError(f"cannot write {self.path}: no directory {self.path.parent}")
        if self.target.exists() and not self.target.is_file():
            raise ResultFileError(f"{self.path} is not a regular file; sweeps are written only "
                                  "to regular files")
        self.partial = self.target.with_name(self.target.name + ".partial")
        resuming = resume and self.partial.exists()
        if self.target.exists() and not overwrite:
            if resume:
                raise ResultFileError(f"{self.path} is complete already: nothing to resume")
            raise ResultFileError(f"{self.path} exists; pass overwrite=True (--overwrite) to "
                                  "replace it")
        self.overwrite = overwrite
        # a partial is taken over only to resume it, or to start again with overwrite
        self._fd = _claim(self.partial, resuming or overwrite, self.path)
        try:
            if resuming:
                self.file = h5py.File(self.partial, "r+", locking=False)
                self._check_same_plan()
            else:
                if header.traces:
                    require_disk(header.nbytes(), self.target.parent,
                                 f"{self.path} ({header.n_runs:,} runs)",
                                 "record fewer neurons, sample less often (dt_out), keep only "
                                 "read-outs (record: readout), or check_space=False",
                                 check=check_space)
                self.file = h5py.File(self.partial, "w", locking=False)
                self._create()
        except BaseException as exc:
            if getattr(self, "file", None) is not None:
                _close_quietly(self.file)
            if not resuming:
                self.partial.unlink(missing_ok=True)
            os.close(self._fd)
            if isinstance(exc, OSError) and not isinstance(exc, ResultFileError):
                raise StorageError(f"cannot write {self.path}: {exc}") from None
            raise
        self.done = np.array(self.file["done"][:], dtype=bool)

    def _create(self) -> None:
        h, f = self.header, self.file
        n_p = len(h.protocols)
        f.attrs.update(format=FORMAT, format_version=FORMAT_VERSION, complete=False,
                       plan_sha256=h.plan_sha256, n_runs=h.n_runs, chunk=h.chunk,
                       protocols=json.dumps(list(h.protocols)),
                       neuron_names=json.dumps(list(h.neuron_names)),
                       parameter_names=json.dumps(list(h.parameter_names)), **h.attributes)
        f.create_dataset("parameters", data=h.parameters)
        f["parameters"].attrs["names"] = json.dumps(list(h.parameter_names))
        f.create_dataset("time", data=h.time).attrs["units"] = "ms"
        f.create_dataset("status", shape=(n_p, h.n_runs), dtype="i1", fillvalue=NOT_RUN)
        f.create_dataset("message", shape=(n_p, h.n_runs), dtype=h5py.string_dtype())
        f.create_dataset("stats", shape=(n_p, h.n_runs, 4), dtype="i8")
        if h.traces:
            samples, rec = h.time.size, len(h.neuron_names)
            f.create_dataset("V", shape=(n_p, h.n_runs, samples, rec), dtype=h.dtype,
                             chunks=(1, min(h.chunk, h.n_runs), samples, max(rec, 1)),
                             fillvalue=np.nan).attrs["units"] = "mV"
        if h.scores:
            f.create_dataset("score", shape=(n_p, h.n_runs), dtype="f8", fillvalue=np.nan)
        f.create_dataset("done", shape=(h.n_chunks,), dtype=bool, fillvalue=False)
        f.flush()

    def _check_same_plan(self) -> None:
        attrs = self.file.attrs
        if attrs.get("format") != FORMAT:
            raise ResultFileError(f"{self.partial} is not a sweep file; move it away")
        if attrs.get("plan_sha256") != self.header.plan_sha256:
            raise ResultFileError(
                f"{self.partial} was started with another circuit, specification or options; "
                "--resume continues the same sweep only (pass --overwrite to start afresh)")

    def write_chunk(self, k: int, status, message, stats, V=None, score=None) -> None:
        """The results of chunk ``k`` (arrays over protocols × the chunk's runs), written,
        flushed, then marked done; a chunk already done is not written again."""
        if self.done[k]:
            return
        runs, f = self.header.runs(k), self.file
        try:
            f["status"][:, runs] = status
            f["message"][:, runs] = message
            f["stats"][:, runs] = stats
            if V is not None:
                f["V"][:, runs] = V
            if score is not None:
                f["score"][:, runs] = score
            f.flush()
            f["done"][k] = True
            f.flush()
        except OSError as exc:
            raise StorageError(f"writing {self.path} failed: {exc}; the chunks written before "
                               f"are kept in {self.partial} (resume the sweep when there is "
                               "room)") from None
        self.done[k] = True

    def close(self) -> Path | None:
        """Finish: the complete file gets its final name (returned); an incomplete one stays
        in the partial, for a resume (returned), unless it holds no chunk (None)."""
        complete = bool(self.done.all())
        try:
            if complete:
                self.file.attrs["complete"] = True
            self.file.close()
            if not self.done.any():
                self.partial.unlink(missing_ok=True)
                return None
            os.fsync(self._fd)
            if not complete:
                return self.partial
            return publish(self._fd, self.partial, self.target, self.path, self.overwrite)
        except OSError as exc:
            if isinstance(exc, ResultFileError):
                raise
            raise StorageError(f"finishing {self.path} failed: {exc}; what was written is in "
                               f"{self.partial}") from None
        finally:
            _close_quietly(self.file)
            os.close(self._fd)


def is_sweep_file(path) -> bool:
    """Whether ``path`` is a sweep file (or its partial)."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            return f.attrs.get("format") == FORMAT
    except OSError:
        return False



@dataclass(frozen=True)
class SweepResult:
    """A sweep file read back (:func:`load_sweep`): arrays over protocols × runs."""

    path: str
    complete: bool
    protocols: tuple[str, ...]
    neuron_names: tuple[str, ...]
    parameter_names: tuple[str, ...]
    parameters: np.ndarray     # (runs, parameters)
    status: np.ndarray         # (protocols, runs): -1 not run, 0 completed, 1 failed
    message: np.ndarray        # (protocols, runs) str
    stats: np.ndarray          # (protocols, runs, 4)
    time: np.ndarray           # (samples,) ms
    V: np.ndarray | None       # (protocols, runs, samples, neurons) mV, or None
    score: np.ndarray | None   # (protocols, runs), or None
    attributes: dict

    def summary(self) -> dict:
        """Counts and names, for ``neurosim info``."""
        return {"kind": "sweep", "complete": self.complete, "runs": int(self.parameters.shape[0]),
                "protocols": list(self.protocols), "parameters": list(self.parameter_names),
                "completed": int((self.status == COMPLETED).sum()),
                "failed": int((self.status == FAILED).sum()),
                "not_run": int((self.status == NOT_RUN).sum()),
                "neurons": list(self.neuron_names), "samples": int(self.time.size),
                "readout": self.attributes.get("readout", ""),
                "neurosim_version": self.attributes.get("neurosim_version", "")}


def load_sweep(path, *, traces: bool = True) -> SweepResult:
    """Read a sweep file (or the partial of a stopped one); ``traces=False`` leaves /V on
    the disk."""
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise ResultFileError(f"cannot read {path}: {exc}") from None
    with f:
        if f.attrs.get("format") != FORMAT:
            raise ResultFileError(f"{path} is not a neurosim sweep file")
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        message = np.array([[m.decode() if isinstance(m, bytes) else m for m in row]
                            for row in f["message"][:]], dtype=object)
        return SweepResult(
            str(path), bool(attrs.get("complete", False)), tuple(json.loads(attrs["protocols"])),
            tuple(json.loads(attrs["neuron_names"])), tuple(json.loads(attrs["parameter_names"])),
            f["parameters"][:], f["status"][:], message, f["stats"][:], f["time"][:],
            f["V"][:] if traces and "V" in f else None,
            f["score"][:] if "score" in f else None, attrs)
