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

/V is one contiguous block starting on a page, placed when the file is created: run
(p, k) lies at its start + (p·sets + k)·samples·recorded values, so the file holds the
traces and no padding.  The recorder says how many parameter sets each kernel call of
:func:`~neurosim.simulate.simulate_batch` runs (:meth:`HDF5BatchRecorder.sets_per_call`:
about CALL_BYTES of traces, never more).  The kernels fill a buffer of the recorder's
(:meth:`HDF5BatchRecorder.buffer`: page-aligned, reused from call to call), and each
lockstep group's runs go to their place in the file as soon as the group finishes (on a
writer thread, while the other groups compute): the whole pages with O_DIRECT, around
the page cache, which cost this 2-core machine ~1 ms of CPU per 4 MB taken from the
kernels; the fragments at their ends through the page cache (and everything where the
file system refuses O_DIRECT).  A run's status says "written" only once its bytes are.
The space the file takes is checked before any run (a disk too small refuses the batch
there); the file is created on the writer thread while the first call computes, every
block of its datasets taken on the disk then, and METADATA_RESERVE beyond its end for
closing it (on Linux; elsewhere that much must stay free), so a disk filled since the
check stops the batch in its first call, and one that another program fills later stops
nothing.  Runs not written (an interrupted or failed
batch) keep status -1: :func:`load_batch_V` shows NaN there, never the undefined bytes
of the file.

The file follows :mod:`neurosim.io.hdf5`'s rules: written as ``OUT.h5.partial``,
created and locked (one writer), renamed when the batch ends; an existing file is
replaced only with ``overwrite``, and only by a complete batch (an interrupted or failed
one then stays in the partial, beside it).
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import shutil
import threading
from pathlib import Path

import h5py
import numpy as np

from neurosim.errors import ResultFileError, StorageError
from neurosim.io.hdf5 import (METADATA_RESERVE, BackgroundWriter, _claim, _close_quietly,
                              _holds, _identity, _pwrite_all, abandon_open, check_target,
                              placed_dataset, publish, release_reserve, reserve_beyond,
                              start_writeback, take_blocks, write_failure_reason)
from neurosim.io.yaml import dump_circuit
from neurosim.record import BatchHeader
from neurosim.resources import require_disk
from neurosim.signals import HeldSignals

FORMAT = "neurosim-batch"
FORMAT_VERSION = 1
NOT_RUN, COMPLETED, FAILED = -1, 0, 1
#: bytes of traces per kernel call the recorder asks for, at most.  The runs are written
#: as the kernels finish them, so a call's size is not its write's: it is the memory in
#: flight, and calls of it run at full width with few pauses between calls (2,000 runs,
#: 53 MB: one call of 64 MB ran 4 ms (6 %) faster than two of 32 MB)
CALL_BYTES = 64 << 20
#: kernel-call output buffers per batch: one filled by the kernels while the other's last
#: rows are written
BUFFERS = 2
#: memory a finished batch leaves for the next one, in CALL_BYTES: its largest buffers
#: that fit in all (a loop of batches then pays no page faults; no more stays in the
#: process)
SPARE_CALLS = 2
#: bytes of a memory page and the alignment O_DIRECT asks of memory, file offsets and sizes
PAGE = 4096
HUGE_PAGE = 2 << 20
#: objects of the file from this size on start on a page (smaller ones are not padded)
ALIGN_FROM = 1 << 16


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
                      unit: int = 1, itemsize: int = 8) -> int:
        """Parameter sets per kernel call: as many whole ``unit``s of sets as fit in
        CALL_BYTES of traces (a unit is what the kernels run at full width: whole groups
        of lockstep lanes on every thread; a call of 633 sets left a quarter of the lanes
        idle, one of 512 none), counted in ``itemsize``-byte values (the call's buffer)
        or the stored ones, whichever are larger.  Where even one unit does not fit, as
        many sets as do, at least one: lanes then idle, but memory stays bounded (a unit
        of the whole worm recorded every 1 ms took 1.2 GB)."""
        per_set = max(1, n_protocols * n_samples * n_recorded
                      * max(itemsize, self.dtype.itemsize))
        units = CALL_BYTES // (per_set * unit)
        return unit * units if units else max(1, CALL_BYTES // per_set)

    def _reason(self, exc: BaseException) -> str:
        return write_failure_reason(exc, self.target.parent, METADATA_RESERVE)

    def open(self, header: BatchHeader) -> None:
        if self._opened:
            raise ResultFileError(f"this recorder has recorded a batch to {self.path} already; "
                                  "a recorder writes one batch: make a new one")
        self._opened = True
        self.header = header
        n_p, n_sets = len(header.protocols), header.n_sets
        samples, n_rec = header.time.size, len(header.neuron_names)
        self._circuit_text = dump_circuit(header.circuit) if header.circuit is not None else ""
        # what is known of each run (status, stats, start, rest report), in memory until
        # the file closes, when it goes straight to its datasets' places
        self._parts = {name: np.full(shape, fill, dtype)
                       for name, shape, dtype, fill in _summaries(header)}
        # every byte the file takes: the traces and the summaries, placed now; the header;
        # a page of alignment per dataset; and the reserve for closing it
        size = (n_p * n_sets * samples * n_rec * self.dtype.itemsize
                + sum(values.nbytes for values in self._parts.values()))
        strings = (*header.neuron_names, *header.protocols, *header.parameter_names)
        size += (header.time.nbytes + sum(16 + len(name.encode()) for name in strings)
                 + len(self._circuit_text.encode()) + 8 * PAGE + METADATA_RESERVE)
        if header.theta is not None:
            size += header.theta.nbytes
        self._fd = _claim(self.partial, self.overwrite, self.path)
        try:
            require_disk(size, self.target.parent,
                         f"{self.path} ({n_p * n_sets:,} runs x {samples:,} samples x "
                         f"{n_rec:,} neurons)",
                         "record fewer neurons (record=), sample less often (dt_out=), store "
                         "float32 (dtype='float32'), or free some space",
                         check=self.check_space)
        except BaseException as exc:
            abandon_open(self, exc, self._reason(exc))
            raise
        self._messages: dict = {}
        self._error: BaseException | None = None
        self._created = False
        self._direct_fd = None
        self._scratch = None     # aligned memory for what must be converted or copied first
        self._free: list[np.ndarray] = []    # call buffers whose rows are all written
        self._lent: dict[int, np.ndarray] = {}   # address of a buffer's memory -> it
        self._buffers_changed = threading.Condition()
        # The writer thread creates the file (3 ms) while the first call computes, then
        # writes each lockstep group's runs as it finishes.  Where the file cannot be
        # created (the disk filled since the check above, an I/O error), the batch stops
        # at its next buffer or group.  No bound on the queue: what it holds are rows of
        # the (at most BUFFERS) buffers.
        self._writer = BackgroundWriter(self._write_item, self._report, depth=0,
                                        first=self._start_file)

    def _start_file(self):
        """On the writer thread: the file, its O_DIRECT descriptor, the parameter sets;
        where any of them fails, the batch stops and nothing is kept (see :meth:`_close`)."""
        self._create(self.header)
        self._direct_fd = _open_direct(self.partial, self._fd)
        if self.header.theta is not None:
            self._write_stored(self.header.theta, self._theta_offset, np.float64)
        self._created = True

    def _create(self, header: BatchHeader):
        # /V starts on a page boundary, so the whole pages of runs go straight from the
        # kernels' (page-aligned) output to the disk (O_DIRECT: no page cache)
        n_p, n_sets = len(header.protocols), header.n_sets
        shape = (n_p, n_sets, header.time.size, len(header.neuron_names))
        V_bytes = int(np.prod(shape)) * self.dtype.itemsize
        self.file = h5py.File(self.partial, "w", locking=False, alignment_interval=PAGE,
                              alignment_threshold=max(PAGE, min(V_bytes, ALIGN_FROM)))
        self.V = placed_dataset(self.file, "V", shape, self.dtype)
        self._V_at = self.V.id.get_offset()
        # the summaries go straight to their places when the file closes; until then every
        # status says "not run" (the rest's bytes mean nothing)
        self._summary_at = {
            name: placed_dataset(self.file, name, shape, dtype).id.get_offset()
            for name, shape, dtype, _ in _summaries(header)}
        placed = [self.V, *(self.file[name] for name in self._summary_at)]
        if header.theta is not None:  # what each run ran: a batch reruns from its file
            # written on the writer thread, while the first call computes
            placed.append(placed_dataset(self.file, "theta", header.theta.shape, np.float64))
            self._theta_offset = placed[-1].id.get_offset()
            self.file.create_dataset("parameter_names",
                                     data=np.array(header.parameter_names, dtype=h5py.string_dtype()))
        # every block of them taken now: a disk filled since the space check stops the
        # batch here, in its first call
        for dataset in placed:
            take_blocks(self._fd, dataset.id.get_offset(), dataset.id.get_storage_size())
        _pwrite_all(self._fd, self._parts["status"], self._summary_at["status"])
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
            attrs["circuit_yaml"] = self._circuit_text
            attrs["circuit_sha256"] = hashlib.sha256(
                self._circuit_text.encode("utf-8")).hexdigest()
        self.file.flush()
        # the room closing needs, beyond the end (or, where it cannot be taken, free now)
        end = max(os.fstat(self._fd).st_size, self.file.id.get_filesize())
        self._keeps_reserve = reserve_beyond(self._fd, end, METADATA_RESERVE)
        if not self._keeps_reserve and self._too_full():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def _too_full(self) -> bool:
        """Whether less than METADATA_RESERVE is free (where it cannot be taken ahead)."""
        return shutil.disk_usage(self.target.parent).free < METADATA_RESERVE

    def _report(self, exc: BaseException) -> None:
        self._error = self._error or exc
        with self._buffers_changed:  # a batch waiting for a buffer stops now
            self._buffers_changed.notify_all()

    def _failed(self) -> StorageError:
        return StorageError(f"writing {self.path} failed: {self._reason(self._error)}")

    def buffer(self, shape: tuple, dtype) -> np.ndarray:
        """A C-contiguous array of ``shape`` on page-aligned memory, for a kernel call to fill
        and :meth:`append` to write from.  Its memory is one of at most BUFFERS, reused
        once :meth:`release` has been called for it and its rows are written (memory stays
        bounded, and reused pages cost no page faults); waits for one until then.
        Raises StorageError once a write has failed."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        with self._buffers_changed:
            while True:
                if self._error is not None:
                    raise self._failed()
                fits = [m for m in self._free if m.nbytes >= nbytes]
                if fits:
                    memory = fits[0]
                    self._free.remove(memory)
                    break
                if len(self._lent) + len(self._free) < BUFFERS:
                    if self._free:  # too small for this call: replaced
                        self._free.pop()
                    memory = _spare_buffer(nbytes)
                    break
                self._buffers_changed.wait()
            out = memory[:nbytes].view(dtype).reshape(shape)
            self._lent[out.ctypes.data] = memory
        return out

    def release(self, buffer: np.ndarray) -> None:
        """Give a :meth:`buffer` back once every row :meth:`append` was given from it is
        written (the calling thread does not wait)."""
        self._writer.put((self._give_back, buffer.ctypes.data))

    def _give_back(self, address: int) -> None:
        with self._buffers_changed:
            self._free.append(self._lent.pop(address))
            self._buffers_changed.notify_all()

    def append(self, protocol: int, first: int, V: np.ndarray, status: np.ndarray,
               stats: np.ndarray, initial_V: np.ndarray, rest_reports: np.ndarray,
               messages: dict) -> None:
        """Runs of parameter sets first… under ``protocol``: V (m, samples, recorded), status
        (m,) of 0/1, stats (m, 4), initial_V, rest_reports; ``messages`` maps (protocol,
        set) to a failure's sentence.  V is written on the writer thread: it must stay as
        it is until then (rows of a :meth:`buffer`, released after).  Raises StorageError
        once a write has failed, ResultFileError once the file is closed."""
        if self._closed:
            raise ResultFileError(f"{self.path} is closed; a recorder writes one batch")
        if self._error is not None:
            raise self._failed()
        self._writer.put((self._write_runs, protocol, first, V,
                          (status.copy(), stats.copy(), initial_V.copy(), rest_reports.copy(),
                           messages)))

    def _write_item(self, function, *args):
        """On the writer thread: one queued job (runs, a buffer given back, theta)."""
        function(*args)

    def _write_runs(self, protocol, first, V, summary):
        """On the writer thread: the traces of runs first… of ``protocol`` straight to their
        place in /V, then (once they are written) their statuses in memory, for close to
        store.  Where the room for closing the file could not be taken ahead, a disk
        filled (by anyone) below METADATA_RESERVE stops the recording here, so that
        closing the file keeps what was written."""
        if not self._keeps_reserve and self._too_full():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        m, n_sets = V.shape[0], self._parts["status"].shape[1]
        offset = self._V_at + (protocol * n_sets + first) * V[0].size * self.dtype.itemsize
        self._write_stored(V, offset, self.dtype)
        status, stats, initial_V, rest_reports, messages = summary
        rows = slice(first, first + m)
        self._parts["stats"][protocol, rows] = stats
        self._parts["initial_V"][protocol, rows] = initial_V
        self._parts["rest_reports"][protocol, rows] = rest_reports
        self._messages.update(messages)
        self._parts["status"][protocol, rows] = np.where(status == 0, COMPLETED, FAILED)

    def _write_stored(self, data: np.ndarray, offset: int, dtype) -> None:
        """``data`` stored as ``dtype`` at ``offset``, through memory aligned as the file is
        there (address ≡ offset modulo a page) where O_DIRECT is in use: ``data`` itself
        where it is, else a conversion or copy into aligned memory (copying costs a
        fraction of the CPU that writing through the page cache takes)."""
        if data.dtype != dtype or (self._direct_fd is not None
                                   and (data.ctypes.data - offset) % PAGE):
            shift = offset % PAGE
            nbytes = shift + data.size * np.dtype(dtype).itemsize
            if self._scratch is None or self._scratch.nbytes < nbytes:
                self._scratch = _spare_buffer(nbytes)
            aligned = self._scratch[shift:nbytes].view(dtype).reshape(data.shape)
            aligned[...] = data
            data = aligned
        self._write_block(data, offset)

    def _write_block(self, data: np.ndarray, offset: int) -> None:
        """``data`` (C-contiguous) at ``offset``: the whole pages inside with O_DIRECT where
        memory and file are aligned alike (no page cache: the writer thread then takes
        almost no CPU from the kernels), the fragments around them through the page cache.
        O_DIRECT refused (EINVAL: a file system without it) writes this block and the rest
        of the file through the page cache."""
        data = memoryview(data).cast("B")
        head = min(-offset % PAGE, data.nbytes)
        whole = (data.nbytes - head) // PAGE * PAGE
        if whole and self._direct_fd is not None and (_address(data) - offset) % PAGE == 0:
            try:
                done = _pwrite_direct(self._direct_fd, data[head:head + whole], offset + head)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                os.close(self._direct_fd)
                self._direct_fd = None
            else:
                pieces = ((0, head), (head + done, data.nbytes))
                for a, b in pieces:
                    if b > a:
                        _pwrite_all(self._fd, data[a:b], offset + a)
                        start_writeback(self._fd, offset + a, b - a)
                return
        _pwrite_all(self._fd, data, offset)
        start_writeback(self._fd, offset, data.nbytes)

    def parts(self) -> dict:
        """What :func:`read_batch_parts` reads from the finished file, from memory."""
        return {**self._parts, "messages": dict(self._messages)}

    def close(self, status: str, message: str) -> Path | None:
        """Finish the file and give it its final name; returns where the batch is (None
        when nothing could be kept).  An interrupted batch's ``message`` gets how many runs
        the file holds.  After a write error the file is finished where possible (status
        ``failed``, the sets written before kept) and StorageError raised.  A Ctrl-C
        meanwhile waits until the file is finished and named.  A second call returns the
        first's answer."""
        if self._closed:
            return self._stored
        self._closed = True
        with HeldSignals() as held:  # a second Ctrl-C would leave a locked partial
            stored = self._close(status, message)
            held.deliver()
        return stored

    def _close(self, status: str, message: str) -> Path | None:
        self._writer.finish()
        self._let_go_of_memory()
        if not self._created:  # the writer thread could not create the file: nothing is kept
            self._stored = None
            reason = self._reason(self._error)
            abandon_open(self, self._error, reason)
            raise StorageError(f"cannot write {self.path}: {reason}")
        written = int((self._parts["status"] != NOT_RUN).sum())
        if self._error is not None:
            status = "failed"
            message = (f"recording stopped after {written:,} runs: writing "
                       f"failed: {self._reason(self._error)}")
        elif status == "interrupted":
            runs = self._parts["status"].size
            message = f"{message}: {written:,} of {runs:,} runs are in the file"
        finished = self._finish(status, message, written)
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
            where = (f"the {written:,} runs written before are in {stored}"
                     if stored is not None else "nothing could be kept")
            error = StorageError(f"writing {self.path} failed: {self._reason(self._error)}; {where}")
            error.path = stored
            raise error
        return stored

    def _let_go_of_memory(self) -> None:
        """Close the O_DIRECT descriptor, drop the buffers (the writer has finished)."""
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None
        _keep_spare(self._free + ([self._scratch] if self._scratch is not None else []))
        self._free, self._scratch = [], None

    def _finish(self, status: str, message: str, written: int) -> bool:
        try:
            f = self.file
            for name, values in self._parts.items():
                _pwrite_all(self._fd, values, self._summary_at[name])
            attrs = f.attrs
            attrs["messages"] = json.dumps([[p, k, text] for (p, k), text
                                            in sorted(self._messages.items())])
            attrs["runs_written"] = written
            attrs["status"] = status
            attrs["message"] = message
            f.flush()
            attrs["complete"] = status == "complete" and self._error is None
            f.close()
            release_reserve(self._fd)
            os.fsync(self._fd)  # on the disk before the final name points at it
            return True
        except Exception as exc:  # noqa: BLE001 - becomes the StorageError of close()
            self._error = self._error or exc
            self.V = None
            _close_quietly(self.file)
            return False
        finally:
            self.file = None


def _summaries(header: BatchHeader) -> tuple:
    """(name, shape, dtype, value before the run) of each per-run dataset of the file."""
    grid = (len(header.protocols), header.n_sets)
    return (("status", grid, np.int8, NOT_RUN), ("stats", (*grid, 4), np.int64, 0),
            ("initial_V", (*grid, header.n_neurons), np.float64, np.nan),
            ("rest_reports", (*grid, header.n_report), np.float64, np.nan))


_spares: list[np.ndarray] = []
_spares_lock = threading.Lock()


def _spare_buffer(nbytes: int) -> np.ndarray:
    """The smallest buffer of at least ``nbytes`` left by an earlier batch, or a new one
    (:func:`_page_aligned`): memory touched before costs no page faults, and new huge
    pages can cost the kernel's compaction (the first 27 MB of a process took 63 ms, the
    next 1.5–3 ms)."""
    with _spares_lock:
        for k, memory in enumerate(_spares):
            if memory.nbytes >= nbytes:
                return _spares.pop(k)
    return _page_aligned(nbytes)


def _keep_spare(buffers: list) -> None:
    """Keep a finished batch's buffers (its call buffers and its aligned scratch memory)
    for the next batch: the largest of them and of those kept before that fit in
    SPARE_CALLS x CALL_BYTES in all; the others are dropped (their memory goes back)."""
    with _spares_lock:
        kept, total = [], 0
        for memory in sorted(_spares + buffers, key=lambda memory: memory.nbytes, reverse=True):
            if total + memory.nbytes <= SPARE_CALLS * CALL_BYTES:
                kept.append(memory)
                total += memory.nbytes
        _spares[:] = kept[::-1]  # smallest first: a request takes the smallest that fits


def _page_aligned(nbytes: int) -> np.ndarray:
    """``nbytes`` bytes (uint8) of private anonymous memory starting on a huge page, in huge
    pages where the system has them: first touched, 27 MB took 1.6 ms so, 13 ms in 4 KB
    pages."""
    size = max(PAGE, -(-nbytes // PAGE) * PAGE)
    if hasattr(mmap, "MAP_PRIVATE"):
        memory = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            memory.madvise(mmap.MADV_HUGEPAGE)
        raw = np.frombuffer(memory, dtype=np.uint8)
    else:  # Windows: no anonymous private mappings in the mmap module
        raw = np.empty(size + HUGE_PAGE, dtype=np.uint8)
    start = -raw.ctypes.data % HUGE_PAGE
    return raw[start:start + size]


def _address(view: memoryview) -> int:
    """Where the bytes of a contiguous memoryview start in memory."""
    return np.frombuffer(view, dtype=np.uint8).ctypes.data if view.nbytes else 0


def _open_direct(path: Path, fd: int) -> int | None:
    """A second descriptor of the file open as ``fd``, writing with O_DIRECT; None where
    the system or file system has no O_DIRECT (everything then goes through the page
    cache).  The lock stays with ``fd``."""
    flag = getattr(os, "O_DIRECT", None)
    if flag is None:
        return None
    try:
        direct = os.open(path, os.O_WRONLY | flag | os.O_NOFOLLOW)
    except OSError:
        return None
    if not os.path.samestat(os.fstat(direct), os.fstat(fd)):  # replaced meanwhile
        os.close(direct)
        return None
    return direct


def _pwrite_direct(fd: int, data: memoryview, offset: int) -> int:
    """Write whole pages of ``data`` at ``offset`` (both page-aligned) with the O_DIRECT
    descriptor ``fd``; returns the bytes written: all, or fewer after a short write that
    ended inside a page (the caller writes the rest through the page cache)."""
    done = 0
    while done < data.nbytes:
        written = os.pwrite(fd, data[done:], offset + done)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += written
        if written % PAGE:
            break
    return done


def batch_identity(path) -> tuple:
    """What tells one version of a batch file from another (file, size, time)."""
    return _identity(os.stat(path))


def _open_batch(path) -> h5py.File:
    """``path`` opened for reading (without HDF5's lock: the partial of a batch still
    running is readable), refused unless it is a batch file."""
    f = h5py.File(path, "r", locking=False)
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise ResultFileError(f"{path} is not a neurosim batch file")
    return f


def load_batch_V(path, identity: tuple | None = None, run: tuple | None = None) -> np.ndarray:
    """/V of a batch file (protocols, sets, samples, recorded) as float64, NaN for the
    runs that were not written; with ``run`` = (protocol, set) only that run's traces
    (samples, recorded), read alone; with ``identity`` (:func:`batch_identity`), refused
    if the file has been removed, replaced or rewritten since."""
    if identity is not None:
        try:
            same = batch_identity(path) == identity
        except OSError:
            same = False
        if not same:
            raise ResultFileError(f"{path} was removed, replaced or rewritten after this batch "
                                  "was recorded to it; its traces are no longer there")
    where = (slice(None),) if run is None else tuple(run)
    with _open_batch(path) as f:
        V = f["V"][where].astype(np.float64)
        if "status" in f and f.attrs.get("status") != "running":
            V[f["status"][where] == NOT_RUN] = np.nan
        else:  # left by a killed batch: nothing says which runs are there
            V[...] = np.nan
        return V


def read_batch_parts(path) -> dict:
    """Everything of a batch file but its traces: status (-1 not run, 0 completed, 1
    failed), stats, initial_V, rest_reports, and messages {(protocol, set): sentence}."""
    with _open_batch(path) as f:
        if f.attrs.get("status") == "running":
            raise ResultFileError(f"{path} was left by a batch that was killed: which runs it "
                                  "holds was never written (load_batch_V reads it as NaN)")
        parts = {name: f[name][()] for name in ("status", "stats", "initial_V", "rest_reports")}
        parts["messages"] = {(p, k): text for p, k, text in json.loads(f.attrs["messages"])}
    return parts


def batch_summary(path) -> dict:
    """What a batch file holds, without its traces: status and message, the grid
    (protocols, sets, samples, recorded neurons), how many runs completed, failed and
    were not written, the integrator and the circuit.  A file left by a killed batch says
    so (which of its runs were written was never recorded)."""
    with _open_batch(path) as f:
        attrs = f.attrs
        metadata = json.loads(attrs.get("metadata", "{}"))
        killed = attrs.get("status") == "running"
        status = None if killed else f["status"][()]
        time = f["time"][()]
        return {"format": FORMAT, "status": "killed while running" if killed
                else str(attrs["status"]), "complete": bool(attrs["complete"]),
                "message": "" if killed else str(attrs.get("message", "")),
                "protocols": [str(p) for p in f["protocols"].asstr()[()]],
                "sets": int(f["V"].shape[1]), "samples": int(f["V"].shape[2]),
                "t_end_ms": float(time[-1]) if time.size else 0.0,
                "neurons": [str(n) for n in f["neuron_names"].asstr()[()]],
                "completed": None if killed else int((status == COMPLETED).sum()),
                "failed": None if killed else int((status == FAILED).sum()),
                "not_run": None if killed else int((status == NOT_RUN).sum()),
                "dtype": str(f["V"].dtype), "integrator": metadata.get("integrator", ""),
                "integrator_options": metadata.get("integrator_options", {}),
                "circuit": metadata.get("circuit", ""),
                "circuit_sha256": str(attrs.get("circuit_sha256", "")),
                "neurosim_version": metadata.get("neurosim_version", "")}
