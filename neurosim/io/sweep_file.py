"""The sweep file: many runs in one HDF5 file, written chunk by chunk, resumable.

Layout (format ``neurosim-sweep``, version 1)::

    /parameters   (runs, parameters)            the sampled values, one column per spec entry
    /status       (protocols, runs) int8        -1 not run yet, 0 completed, 1 failed
    /message      (protocols, runs) str         why a run failed ("" otherwise; 256 bytes)
    /stats        (protocols, runs, 4) int64    steps, rejected, rhs evaluations, Jacobians
    /V            (protocols, runs, samples, neurons)   traces (unless only read-outs)
    /score        (protocols, runs)             the read-out's score (when asked)
    /time         (samples,) ms
    /done         (chunks,) bool                which chunks are in the file

and attributes naming the circuit (its YAML), the sweep specification, the protocols, the
recorded neurons, the parameters and the hash of all of it (``plan_sha256``), which a
resumed sweep must match.  A chunk's rows are written, flushed, and only then marked
done, so a sweep killed at any point resumes with every run exactly once.  Every block
the file will need is placed and taken on the disk when it is created (a full disk
refuses the sweep then, not in the middle of a chunk); /V of runs not yet run is
undefined (load_sweep shows NaN there).

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
from neurosim.io.hdf5 import (METADATA_RESERVE, _claim, _close_quietly, placed_dataset,
                              publish, take_blocks)
from neurosim.resources import require_disk

FORMAT = "neurosim-sweep"
FORMAT_VERSION = 1
NOT_RUN, COMPLETED, FAILED = -1, 0, 1
#: bytes of a failure message kept per run (a fixed width: a variable-length string would
#: need new space in the file as the sweep goes, which a full disk refuses mid-write)
MESSAGE_BYTES = 256


def chunk_count(n_runs: int, chunk: int) -> int:
    """How many chunks of ``chunk`` runs hold ``n_runs`` runs."""
    return -(-n_runs // chunk)


def chunk_runs(k: int, n_runs: int, chunk: int) -> slice:
    """The runs of chunk ``k``."""
    return slice(k * chunk, min((k + 1) * chunk, n_runs))


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
        return chunk_count(self.n_runs, self.chunk)

    def runs(self, k: int) -> slice:
        return chunk_runs(k, self.n_runs, self.chunk)

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
                 overwrite: bool = False):
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
        try:
            self._fd = _claim(self.partial, resuming or overwrite, self.path)
        except ResultFileError as exc:
            if "left by an earlier run" not in str(exc):
                raise
            raise ResultFileError(f"{self.partial} holds a sweep that did not finish: continue "
                                  "it with resume=True (--resume), or pass overwrite=True "
                                  "(--overwrite) to start afresh") from None
        try:
            if resuming:
                self.file = h5py.File(self.partial, "r+", locking=False)
                self._check_same_plan()
            else:
                require_disk(header.nbytes() + METADATA_RESERVE, self.target.parent,
                             f"{self.path} ({header.n_runs:,} runs)",
                             "record fewer neurons (record:), sample less often "
                             "(simulation.dt_out), keep only the read-out's scores (record: "
                             "readout), or free some space")
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
        # a chunk marked done has every status written (a file left by a version that
        # could mark a chunk done before its rows were on the disk is repaired here)
        status = self.file["status"][:]
        for k in np.flatnonzero(self.done):
            if (status[:, self.header.runs(k)] == NOT_RUN).any():
                self.done[k] = False
        #: failed runs in the file's finished chunks
        self.failed = sum(int((status[:, self.header.runs(k)] == FAILED).sum())
                          for k in np.flatnonzero(self.done))
        self._broken = False

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
        placed_dataset(f, "status", (n_p, h.n_runs), "i1", fill=NOT_RUN)
        placed_dataset(f, "message", (n_p, h.n_runs), f"S{MESSAGE_BYTES}", fill=b"")  # UTF-8
        placed_dataset(f, "stats", (n_p, h.n_runs, 4), "i8", fill=0)
        if h.traces:
            samples, rec = h.time.size, len(h.neuron_names)
            placed_dataset(f, "V", (n_p, h.n_runs, samples, rec), h.dtype,
                    chunks=(1, min(h.chunk, h.n_runs), samples, max(rec, 1))).attrs["units"] = "mV"
        if h.scores:
            placed_dataset(f, "score", (n_p, h.n_runs), "f8", fill=np.nan)
        placed_dataset(f, "done", (h.n_chunks,), bool, fill=False)
        f.flush()
        # take every block now, and room for the metadata written later (attributes)
        take_blocks(self._fd, 0, f.id.get_filesize() + METADATA_RESERVE)

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
        if self._broken:
            raise StorageError(f"{self.path}: an earlier write failed; nothing more is written")
        runs, f = self.header.runs(k), self.file
        try:
            f["status"][:, runs] = status
            f["message"][:, runs] = np.array([[m.encode("utf-8")[:MESSAGE_BYTES] for m in row]
                                              for row in message], dtype=f"S{MESSAGE_BYTES}")
            f["stats"][:, runs] = stats
            if V is not None:
                f["V"][:, runs] = V
            if score is not None:
                f["score"][:, runs] = score
            f.flush()
            f["done"][k] = True
            f.flush()
            self.failed += int((np.asarray(status) == FAILED).sum())
        except Exception as exc:  # noqa: BLE001 - HDF5 reports a full disk as OSError or RuntimeError
            self._broken = True
            raise StorageError(f"writing {self.path} failed: {' '.join(str(exc).split())}; the "
                               f"chunks written before are kept in {self.partial} (resume the "
                               "sweep when the cause is gone)") from None
        self.done[k] = True

    def close(self) -> Path | None:
        """Finish: the complete file gets its final name (returned); an incomplete one stays
        in the partial, for a resume (returned), unless it holds no chunk (None)."""
        complete = bool(self.done.all()) and not self._broken
        if self._broken:  # the library's state after a failed write is not to be trusted
            _close_quietly(self.file)
            os.close(self._fd)
            return self.partial
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
        message = np.array([[m.decode("utf-8", "replace") if isinstance(m, bytes) else m
                             for m in row] for row in f["message"][:]], dtype=object)
        status = f["status"][:]
        V = None
        if traces and "V" in f:
            V = f["V"][:]
            V[status == NOT_RUN] = np.nan  # never written: undefined on the disk
        return SweepResult(
            str(path), bool(attrs.get("complete", False)), tuple(json.loads(attrs["protocols"])),
            tuple(json.loads(attrs["neuron_names"])), tuple(json.loads(attrs["parameter_names"])),
            f["parameters"][:], status, message, f["stats"][:], f["time"][:], V,
            f["score"][:] if "score" in f else None, attrs)
