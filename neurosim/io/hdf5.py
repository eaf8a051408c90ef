"""HDF5 results: a recorder that streams while the run goes, and a reader.

Layout (format version 2, readable by any HDF5 tool)::

    /time          (n_samples,)             float64, ms; a dimension scale of /V
    /neuron_names  (n_recorded,)            UTF-8 strings; a dimension scale of /V
    /V             (n_samples, n_recorded)  float64 (or float32), mV, chunked by rows
    attributes of /:
        units, complete, status, message, integrator, integrator_options, protocol,
        circuit_name, circuit_yaml, circuit_sha256, neurosim_version, dt_out_ms,
        samples_written, wall_time_s, stats, metadata (JSON)

(Version 1 kept the names in an attribute ``neuron_names``, which HDF5 limits to about
4,000 names; such files are still read.)

``complete`` is written False when the file is opened and set True only after the last
sample is flushed, so a file left by a crash or Ctrl-C says so.  While a run goes, /time
and /V end with a chunk placed in the file before it is filled (samples go straight to
their offsets); ``samples_written`` counts the valid rows, and the datasets are cut to
it when the file closes.

What the recorder guarantees about ``OUT.h5``:

* It only ever holds a finished file.  The run writes ``OUT.h5.partial`` and renames it
  when the run ends (completed, failed or interrupted); without ``overwrite`` the rename
  never replaces a file that appeared meanwhile (the result then stays in the partial).
* One writer at a time.  The partial is created and locked (``flock``) before anything is
  written, so a second run writing the same output is refused while the first goes and
  touches nothing of it; a partial left by a killed run (only SIGKILL or power loss leave
  one) is replaced only with ``overwrite``.
* Only regular files are written: a device, FIFO or socket is refused even with
  ``overwrite``; through a symbolic link, the file it points to is replaced.
* A full disk stops the run, not the file.  The space a run needs is checked before it
  starts; each chunk's blocks are reserved before it is written and a reserve is kept for
  the file's own metadata, so recording stops between chunks with the file still
  readable: status ``failed``, every sample written before kept, and the error
  (:class:`~neurosim.errors.StorageError`) says where they are.  A compressed file's
  sizes are not known ahead: it is not refused up front, and it stops while its next
  chunk, uncompressed, would still fit with the reserve.
* A second Ctrl-C while the file is being finished is held until it is finished and
  named.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import queue
import re
import secrets
import shutil
import stat
import threading
import time
import weakref
from pathlib import Path

import h5py
import numpy as np

from neurosim.errors import ResultFileError, StorageError
from neurosim.io.yaml import dump_circuit
from neurosim.record import Recorder, Result, RunHeader
from neurosim.resources import format_bytes, require_disk
from neurosim.signals import HeldSignals

try:
    import fcntl
except ImportError:  # Windows: one writer per output is then the user's care
    fcntl = None

#: the HDF5 filters a result file may be compressed with (every h5py has them)
COMPRESSIONS = ("gzip", "lzf")
#: values per HDF5 chunk of /V: 1 MiB chunks fit h5py's default chunk cache, so appends
#: never read a chunk back from disk (a 10 MB chunk made recording 8x slower)
CHUNK_VALUES = 1 << 17
#: seconds between flushes of a file being written (a flush per chunk cost ~10 % of a run)
FLUSH_INTERVAL_S = 1.0
#: bytes kept for the file's own metadata (chunk index, attributes) when the disk fills,
#: so that the file can still be closed (the metadata written at close is a few KB;
#: tests/test_data_safety.py fills real disks, from the run and from another process).
#: A run's file leaves them free (recording stops before the disk is full); a batch file,
#: whose runs are all written to blocks taken at the start, takes them on the disk
#: beyond its end when it is created (:func:`reserve_beyond`)
METADATA_RESERVE = 1 << 20

#: seconds that interpreter exit waits for the writer of a recorder never closed
EXIT_WAIT_S = 30.0

FORMAT_VERSION = 2


def _claim(partial: Path, overwrite: bool, shown: Path) -> int:
    """A descriptor of ``partial`` holding an exclusive lock on it.

    The partial is created if absent, already locked (:func:`_create_locked`), so that a
    partial that exists unlocked is one left by a killed run, never one that a writer
    has just created: a second writer finds it locked (refused) or, once the first has
    finished, finds none.  One left by a killed run is replaced only with ``overwrite``.
    The lock is taken on the file that is at the name after locking, never on one a
    finishing writer has just renamed away."""
    target = partial.with_name(partial.name[:-len(".partial")])
    for _ in range(100):
        fd = _create_locked(partial, shown)
        if fd is not None:
            if overwrite or not target.exists():
                return fd
            # another run finished this output since it was checked: nothing to write to
            partial.unlink()
            os.close(fd)
            raise ResultFileError(f"{shown} exists; pass overwrite=True (--overwrite) to "
                                  "replace it")
        try:
            fd = os.open(partial, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:  # its writer renamed it just now
            continue
        except OSError as exc:
            raise ResultFileError(f"cannot write {shown}: {partial} is in the way "
                                  f"({exc.strerror}); move it away") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ResultFileError(f"cannot write {shown}: {partial} is not a regular file; "
                                  "move it away")
        if not _lock(fd):
            os.close(fd)
            raise ResultFileError(f"{shown} is being written by another run (its "
                                  f"{partial.name} is locked); wait for that run to end "
                                  "or choose another output")
        if not _holds(fd, partial):  # renamed or replaced between open and lock: look again
            os.close(fd)
            continue
        if not overwrite:
            os.close(fd)
            raise ResultFileError(f"{partial} was left by an earlier run that did not finish "
                                  "it (killed, or its output appeared meanwhile; neurosim info "
                                  "reads it); move it away, or pass overwrite=True "
                                  "(--overwrite) to replace it")
        return fd
    raise ResultFileError(f"cannot write {shown}: {partial} keeps changing")


def _lock(fd: int, shared: bool = False) -> bool:
    """Take the exclusive (or a ``shared``) lock of ``fd`` without waiting; False if
    another holds it exclusively (or, for an exclusive one, at all)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _create_locked(partial: Path, shown: Path) -> int | None:
    """``partial`` created and locked in one step, or None where it exists: a new file
    under a name of its own is locked, then linked to the partial's name (which fails
    where the name is taken).  Two writers once both lost a race: the second locked the
    first's new partial before the first did, and took it for a killed run's.  Where
    the file system has no hard links, the partial is created and then locked."""
    claim = partial.with_name(f".{partial.name}.{os.getpid()}.{secrets.token_hex(4)}")
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(claim, flags, 0o666)
    except OSError as exc:  # a read-only or pseudo file system, no permission
        raise ResultFileError(f"cannot write {shown}: {exc.strerror}") from None
    try:
        _lock(fd)  # a file nobody else has seen
        try:
            os.link(claim, partial, follow_symlinks=False)
            return fd
        except FileExistsError:
            os.close(fd)
            return None
        except OSError:  # no hard links here
            os.close(fd)
        try:
            fd = os.open(partial, flags, 0o666)
        except FileExistsError:
            return None
        except OSError as exc:
            raise ResultFileError(f"cannot write {shown}: {exc.strerror}") from None
        _lock(fd)
        return fd
    finally:
        claim.unlink(missing_ok=True)


def publish(fd: int, partial: Path, target: Path, shown, overwrite: bool) -> Path:
    """Give the finished ``partial`` (open and locked as ``fd``) its final name ``target``:
    never over a file that appeared meanwhile unless ``overwrite``; ResultFileError where
    it cannot (the result then stays in the partial, which the message names)."""
    if not _holds(fd, partial):
        raise ResultFileError(f"{partial} was replaced by another program while the run went; "
                              "this run's result is lost")
    old = None
    try:
        if overwrite:
            try:  # freed when this closes, on a thread: large files take a while
                old = os.open(target, os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                old = None
            os.replace(partial, target)
        else:
            try:  # a link fails where a file appeared meanwhile; a rename would replace it
                os.link(partial, target)
            except FileExistsError:
                raise
            except OSError:  # no hard links on this file system
                if target.exists():
                    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST)) from None
                os.replace(partial, target)
            else:
                os.unlink(partial)
    except FileExistsError:
        raise ResultFileError(f"{shown} appeared while the run went; the run's result is in "
                              f"{partial}") from None
    finally:
        if old is not None:
            threading.Thread(target=os.close, args=(old,), daemon=True).start()
    return target


def check_target(path: Path, overwrite: bool) -> tuple[Path, Path]:
    """(the file a result written to ``path`` replaces, its partial), or a ResultFileError
    saying why ``path`` cannot take a result: written through a symbolic link, the file it
    points to is replaced; only regular files, never an existing one without
    ``overwrite``."""
    target = Path(os.path.realpath(path))
    if target.is_dir():
        raise ResultFileError(f"{path} is a directory; give a file name such as run.h5")
    if os.path.lexists(target) and not target.exists():
        raise ResultFileError(f"{path} is a symbolic link that loops or leads nowhere")
    if target.name.endswith(".partial"):
        raise ResultFileError(f"{path}: names ending in .partial are those of results "
                              "being written; choose another name")
    if target.exists() and not target.is_file():
        raise ResultFileError(f"{path} is not a regular file (a device, FIFO or "
                              "socket); results are written only to regular files")
    if target.exists() and not overwrite:
        raise ResultFileError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    if not target.parent.is_dir():
        raise ResultFileError(f"cannot write {path}: no directory {path.parent}")
    return target, target.with_name(target.name + ".partial")


def _holds(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
    except OSError:
        return False


def _pwrite_all(fd: int, data: np.ndarray, offset: int) -> None:
    """Write all of ``data`` at ``offset``: a short write is continued, never counted whole."""
    view = memoryview(data).cast("B")
    while view.nbytes:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]
        offset += written


def _load_libc_call(name: str, argtypes: tuple):
    """A function of libc (Linux) that Python's os module lacks, or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        call = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    call.argtypes = argtypes
    call.restype = ctypes.c_int
    return call


_sync_file_range = _load_libc_call(
    "sync_file_range", (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint))
_fallocate = _load_libc_call("fallocate64",
                             (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64))
FALLOC_FL_KEEP_SIZE = 1
SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Start writing bytes offset…offset+nbytes of ``fd`` to the disk, without waiting.

    A finished file is fsynced before it gets its name (data safety), and that fsync,
    or ext4 when HDF5 closes a file it created with O_TRUNC, wrote the whole run's
    dirty pages after the run: 11 ms of a 28 ms dopri5 run that records 24 MB.  Started
    chunk by chunk on the writer thread, the writes overlap the run and the final fsync
    finds little left.  Nothing happens where the call is missing (not Linux)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE)


def take_blocks(fd: int, offset: int, nbytes: int) -> None:
    """Take the disk blocks of bytes offset…offset+nbytes of ``fd`` now (a full disk fails
    here, with ENOSPC, not in a later write); where the system or file system cannot,
    nothing happens (the caller's free-space check stands)."""
    try:
        os.posix_fallocate(fd, offset, nbytes)
    except AttributeError:  # no posix_fallocate (macOS)
        pass
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise


def reserve_beyond(fd: int, offset: int, nbytes: int) -> bool:
    """Take the disk blocks of bytes offset…offset+nbytes of ``fd`` without changing its
    size (Linux's fallocate with FALLOC_FL_KEEP_SIZE): the file's later appends there
    (HDF5's metadata at close) use them, so another program filling the disk cannot take
    that room.  True if taken; False where the system or file system cannot (the caller
    then checks the free space instead); OSError (ENOSPC) where the disk has no room."""
    if _fallocate is None or _fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, nbytes) == 0:
        return _fallocate is not None
    code = ctypes.get_errno()
    if code in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(code, os.strerror(code))


def release_reserve(fd: int) -> None:
    """Give back the blocks :func:`reserve_beyond` took past the end of a finished file
    (truncating a file to its own size frees them on ext4, XFS and tmpfs)."""
    os.ftruncate(fd, os.fstat(fd).st_size)


def _close_quietly(file: h5py.File) -> None:
    """Close an HDF5 file once, whatever state a failed write left it in."""
    try:
        file.close()
    except Exception:  # noqa: BLE001 - the write error already reported is the news
        pass


class _PooledThread(threading.Thread):
    """A daemon thread that runs the jobs given to it, one at a time, and waits idle in
    between.  Starting a thread for each run cost 0.75 ms of a 22 ms run (``start`` waits
    until the new thread, busy creating the file with the GIL held, lets it go)."""

    _idle: list[_PooledThread] = []
    _idle_lock = threading.Lock()

    def __init__(self):
        super().__init__(name="neurosim-writer", daemon=True)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.start()

    @classmethod
    def run_job(cls, job) -> None:
        """Run ``job()`` on an idle pooled thread (a new one where none is idle)."""
        with cls._idle_lock:
            thread = cls._idle.pop() if cls._idle else None
        (thread or cls())._jobs.put(job)

    def run(self):
        while True:
            self._jobs.get()()
            with self._idle_lock:
                self._idle.append(self)


def _forget_pooled_threads() -> None:
    """In a child process just forked: none of the parent's threads is there, and the
    pool's lock may have been held by one of them when the process forked."""
    _PooledThread._idle = []
    _PooledThread._idle_lock = threading.Lock()
    BackgroundWriter.running = weakref.WeakSet()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pooled_threads)


class BackgroundWriter:
    """Writes queued items in order on a pooled thread while the run computes (the kernels
    release the GIL): ``first()`` once, then ``write(*item)`` and ``between()`` for each
    item :meth:`put` (at most ``depth`` waiting, 0 for no bound), until
    :meth:`finish`.  The first exception goes to ``report`` and the items after it are
    dropped; the recorder says so at its next append or close."""

    #: writers whose items are not all written yet (see :func:`_finish_writers_at_exit`)
    running: weakref.WeakSet = weakref.WeakSet()
    #: items waiting at most, by default: where writing falls behind (or the first step
    #: fails late), ``put`` waits, so the caller is never more than DEPTH + 1 items ahead
    DEPTH = 8

    def __init__(self, write, report, *, first=None, between=None, depth: int = DEPTH):
        self._write, self._report, self._first, self._between = write, report, first, between
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._done = threading.Event()
        self.failed = False
        self.running.add(self)
        _PooledThread.run_job(self._run)

    def put(self, item: tuple) -> None:
        self._queue.put(item)

    def finish(self, timeout: float | None = None) -> None:
        """Wait until every item put is written (or dropped after a failure), or for
        ``timeout`` seconds."""
        self._queue.put(None, timeout=timeout)
        self._done.wait(timeout)

    def _run(self):
        try:
            if self._first is not None:
                self._call(self._first)
            while (item := self._queue.get()) is not None:
                if not self.failed:
                    self._call(self._write, *item)
                    if not self.failed and self._between is not None:
                        self._call(self._between)
        finally:
            self.running.discard(self)
            self._done.set()

    def _call(self, function, *args):
        try:
            function(*args)
        except BaseException as exc:  # noqa: BLE001 - reported by the next append or close
            self.failed = True
            self._report(exc)


@atexit.register
def _finish_writers_at_exit() -> None:
    """At interpreter exit, let writers of recorders never closed (a script that failed
    between a recorder's open and close) write what they were given and stop: a pooled
    thread frozen inside an HDF5 call at finalization kept HDF5's lock, and the exit hung
    on it or crashed.  The file is then what a killed run leaves: readable, marked
    running, its partial name kept."""
    for writer in list(BackgroundWriter.running):
        with contextlib.suppress(queue.Full):  # a writer stuck this long is left as it is
            writer.finish(timeout=EXIT_WAIT_S)


def write_failure_reason(exc: BaseException, folder: Path, reserve: int = 0) -> str:
    """Why a write failed, in a few words (HDF5's own messages carry the errno among
    pointers and timestamps), with the free space when the disk in ``folder`` is (nearly)
    full (less than ``reserve`` bytes left)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    found = re.search(r"errno = (\d+)", text)
    code = getattr(exc, "errno", None) or (int(found.group(1)) if found else None)
    reason = os.strerror(code) if code else text
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return reason
    if code in (errno.ENOSPC, errno.EDQUOT) or free < reserve:
        # "full" only where it is: a disk too small for the file has room left
        state = "the disk is full: " if free < reserve else ""
        return f"{reason} ({state}only {format_bytes(free)} free in {folder})"
    return reason


def abandon_open(owner, exc: BaseException, reason: str) -> None:
    """After a refused or failed start: close ``owner``'s file, remove its partial file and
    release its lock; an OS error becomes a StorageError (``reason`` says why)."""
    if owner.file is not None:
        _close_quietly(owner.file)
        owner.file = None
    owner.partial.unlink(missing_ok=True)
    os.close(owner._fd)
    if isinstance(exc, OSError):
        raise StorageError(f"cannot write {owner.path}: {reason}") from None


class HDF5Recorder(Recorder):
    """Stream a run to ``path`` (see the module docstring for what is guaranteed).

    Parameters
    ----------
    path : str or Path
    overwrite : bool
        Replace an existing file (a regular file only); otherwise an existing file is an
        error.
    dtype : {"float64", "float32"}
        Storage type of /V.
    compression : {"gzip", "lzf"}, optional
        Compress /V and /time; off by default (it costs time while recording).
    check_space : bool
        Refuse a run whose uncompressed output would not fit in the free disk space.
    """

    #: one HDF5 chunk per kernel call: the writer thread keeps pace chunk by chunk, and
    #: what is left to write when the kernel ends is one chunk, not 8 MB (which made a
    #: 25 ms run 30-50 % slower on a new file)
    chunk_values = CHUNK_VALUES

    def __init__(self, path, *, overwrite: bool = False, dtype: str = "float64",
                 compression: str | None = None, check_space: bool = True):
        self.path = Path(path)
        if dtype not in ("float64", "float32"):
            raise ResultFileError(f"dtype must be float64 or float32, got {dtype!r}")
        if compression not in (None, *COMPRESSIONS):
            raise ResultFileError(f"compression must be one of {', '.join(COMPRESSIONS)} or "
                                  f"None, got {compression!r}")
        self.target, self.partial = check_target(self.path, overwrite)
        self.overwrite = overwrite
        self.dtype = dtype
        self.compression = compression
        self.check_space = check_space
        self.file = None
        self._result = None
        self._opened = False

    def open(self, header: RunHeader):
        if self._opened:
            raise ResultFileError(f"this recorder has recorded a run to {self.path} already; "
                                  "a recorder writes one run: make a new one")
        self._opened = True
        self.header = header
        n_rec = len(header.neuron_names)
        self._raw = self.compression is None
        size = header.n_samples * (8 + np.dtype(self.dtype).itemsize * n_rec)
        # what closing needs for metadata: a few KB, so a small file keeps a small reserve
        self._metadata_reserve = min(METADATA_RESERVE, (64 << 10) + size)
        self._fd = _claim(self.partial, self.overwrite, self.path)  # a read-only place fails here
        try:
            if self._raw:  # compressed sizes are not known ahead
                require_disk(size + self._metadata_reserve, self.target.parent,
                             f"{self.path} ({header.n_samples:,} samples x {n_rec:,} neurons)",
                             "record fewer neurons (--record), sample less often (--dt-out), "
                             "store float32 (--float32), or pass check_space=False "
                             "(--no-space-check)", check=self.check_space)
        except BaseException as exc:  # refused, or an I/O error at the start
            abandon_open(self, exc, self._reason(exc))
            raise
        self._error: BaseException | None = None
        self._written = 0
        self._created = False
        self._flushed = time.monotonic()
        # The writer thread creates the file while the first calls compute (creating it,
        # with the circuit's YAML text, took 3 ms of a 22 ms run), then overlaps disk
        # I/O with the run (the time loops release the GIL); the queue bound keeps 8
        # chunks in flight.  A file that cannot be created stops the run at its next
        # append, before the kernels have done more than one row.
        self._writer = BackgroundWriter(self._write_rows, self._report, first=self._start_file,
                                        between=self._flush_now_and_then)

    def _start_file(self):
        """On the writer thread: the file and its header; where either fails, the run
        stops and nothing is kept (see :meth:`_close`)."""
        self._create(self.header)
        self._write_header()
        self._created = True

    def _create(self, header: RunHeader):
        """The file with its datasets placed and what a reader needs to tell a file left by
        a killed run."""
        # our own flock guards the partial; HDF5's lock on a second descriptor would clash.
        # No chunk cache: rows come in whole chunks, and h5py's 8 MiB cache held eight
        # compressed ones back, to be written at close, where a full disk lost them all.
        self.file = h5py.File(self.partial, "w", locking=False, rdcc_nbytes=0)
        n_rec = len(header.neuron_names)
        rows = max(1, min(CHUNK_VALUES // max(1, n_rec), header.n_samples))
        # rows gather into whole HDF5 chunks that go to disk as they are (see _write_rows)
        self._t_buffer = np.empty(rows)
        self._V_buffer = np.empty((rows, n_rec), dtype=self.dtype)
        self._buffered = 0
        self._reserved = 0  # rows whose blocks are taken on the disk
        self._circuit_text = {}
        if self._raw:
            self.time = placed_dataset(self.file, "time", (0,), "f8", chunks=(rows,),
                                       extendable=True)
            self.V = placed_dataset(self.file, "V", (0, n_rec), self.dtype,
                                    chunks=(rows, n_rec), extendable=True)
            self._place_chunk(0)
        else:
            self.time = self.file.create_dataset("time", shape=(0,), maxshape=(None,),
                                                 dtype="f8", chunks=(rows,))
            self.V = self.file.create_dataset("V", shape=(0, n_rec), maxshape=(None, n_rec),
                                              dtype=self.dtype, chunks=(rows, n_rec),
                                              compression=self.compression)
        names = self.file.create_dataset(
            "neuron_names", data=np.array(header.neuron_names, dtype=h5py.string_dtype()))
        attrs = self.file.attrs
        attrs["format"] = "neurosim-result"
        attrs["format_version"] = FORMAT_VERSION
        attrs["complete"] = False
        attrs["status"] = "running"
        attrs["samples_written"] = 0
        self.file.flush()
        self._names = names

    def _write_header(self):
        header, meta, attrs = self.header, self.header.metadata, self.file.attrs
        self.time.attrs["units"] = "ms"
        self.V.attrs["units"] = "mV"
        # dimension scales: tools that know them label /V's axes with time and names
        self.time.make_scale("time")
        self._names.make_scale("neuron")
        self.V.dims[0].attach_scale(self.time)
        self.V.dims[1].attach_scale(self._names)
        attrs["units"] = json.dumps({"time": "ms", "V": "mV"})
        attrs["integrator"] = meta.get("integrator", "")
        attrs["integrator_options"] = json.dumps(meta.get("integrator_options", {}))
        attrs["protocol"] = meta.get("protocol", "")
        attrs["circuit_name"] = meta.get("circuit", "")
        attrs["neurosim_version"] = meta.get("neurosim_version", "")
        attrs["dt_out_ms"] = header.dt_out
        attrs["metadata"] = json.dumps(meta)
        if header.circuit is not None:
            text = dump_circuit(header.circuit)
            self._circuit_text = {"circuit_yaml": text,
                                  "circuit_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
            for key, value in self._circuit_text.items():
                attrs[key] = value

    def _report(self, exc: BaseException) -> None:
        """A write failed on the writer thread: reported by the next append or close."""
        self._error = self._error or exc

    def _flush_now_and_then(self):
        """A killed process leaves at most FLUSH_INTERVAL_S unreadable."""
        if time.monotonic() - self._flushed > FLUSH_INTERVAL_S:
            self.file.attrs["samples_written"] = self._written
            self.file.flush()
            self._flushed = time.monotonic()

    def _write_rows(self, t, V):
        """Write rows in whole HDF5 chunks, gathering partial ones in a buffer.

        Uncompressed, a whole chunk goes straight from ``V`` to its place in the file
        (no chunk cache, no copy unless stored as float32), which decides whether the
        writer keeps pace with the kernel."""
        rows = self._t_buffer.shape[0]
        done = 0
        while done < t.shape[0]:
            if self._buffered == 0 and t.shape[0] - done >= rows:
                try:
                    self._write_chunk(t[done:done + rows], np.ascontiguousarray(V[done:done + rows]))
                except OSError:  # kept for close(), which writes what of them still fits
                    self._t_buffer[:] = t[done:done + rows]
                    self._V_buffer[:] = V[done:done + rows]
                    self._buffered = rows
                    raise
                done += rows
                continue
            take = min(rows - self._buffered, t.shape[0] - done)
            end = self._buffered + take
            self._t_buffer[self._buffered:end] = t[done:done + take]
            self._V_buffer[self._buffered:end] = V[done:done + take]
            self._buffered = end
            done += take
            if self._buffered == rows:
                self._write_buffer()

    def _write_chunk(self, t, V):
        """Rows ``_written``… of the file, at most one chunk, starting a chunk; they count
        as written only once every byte is on its way to the disk."""
        n0 = self._written
        m = t.shape[0]
        if self._raw:
            if n0 + m > self._reserved:
                self._place_chunk(n0)
            # a chunk is rows × columns in C order, so a partial one is its first bytes
            for dataset, values, start in ((self.time, t, (n0,)), (self.V, V, (n0, 0))):
                data = np.ascontiguousarray(values, dtype=dataset.dtype)
                offset = dataset.id.get_chunk_info_by_coord(start).byte_offset
                _pwrite_all(self._fd, data, offset)
                start_writeback(self._fd, offset, data.nbytes)
        else:
            self._reserve_for_compressed(t.nbytes + V.nbytes + 4096)
            self.time.resize((n0 + m,))
            self.V.resize((n0 + m, self.V.shape[1]))
            self.time[n0:n0 + m] = t
            self.V[n0:n0 + m] = V
        self._written = n0 + m

    def _reserve_for_compressed(self, nbytes: int) -> None:
        """Before HDF5 writes a compressed chunk at the file's end: take the blocks it can
        need (its size is not known ahead, but deflate grows incompressible data by only
        a few bytes per block: ``nbytes``) and the metadata reserve, past the end, so that
        another program filling the disk while the chunk compresses cannot take them.  A
        write failing inside HDF5 left a file it could not close: nothing was kept.  Where
        blocks cannot be taken this way, the free space is checked instead."""
        end = max(os.fstat(self._fd).st_size, self.file.id.get_filesize())
        if not reserve_beyond(self._fd, end, nbytes + self._metadata_reserve):
            self._require_room(nbytes)

    def _require_room(self, nbytes: int) -> None:
        """ENOSPC unless ``nbytes`` fit on the disk with the metadata reserve left over."""
        if shutil.disk_usage(self.target.parent).free < nbytes + self._metadata_reserve:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def _place_chunk(self, n0: int):
        """Give /time and /V a chunk from row ``n0`` on and take its blocks on the disk now,
        leaving METADATA_RESERVE free: a filling disk stops recording between chunks,
        never inside one, and closing the file (which fills the unused end of the last
        chunk) needs no more space than the metadata.  The last chunk ends the datasets at
        the run's last row, so a finished file needs no cutting."""
        rows = self._t_buffer.shape[0]
        end = min(n0 + rows, self.header.n_samples) if self.header.n_samples > n0 else n0 + rows
        if end > self.time.shape[0]:
            self.time.resize((end,))
            self.V.resize((end, self.V.shape[1]))
        for dataset, start in ((self.time, (n0,)), (self.V, (n0, 0))):
            nbytes = rows * dataset.dtype.itemsize * (dataset.shape[1] if dataset.ndim > 1 else 1)
            self._require_room(nbytes)
            take_blocks(self._fd, dataset.id.get_chunk_info_by_coord(start).byte_offset, nbytes)
        self._reserved = end

    def _write_what_fits(self):
        """After a failed write: the gathered rows, if their chunk's blocks are taken."""
        if self._buffered and self._written + self._buffered <= self._reserved:
            self._write_buffer()
        self._buffered = 0

    def _write_buffer(self):
        if self._buffered:
            self._write_chunk(self._t_buffer[:self._buffered], self._V_buffer[:self._buffered])
            self._buffered = 0

    def _reason(self, exc: BaseException) -> str:
        return write_failure_reason(exc, self.target.parent, self._metadata_reserve)

    def append(self, t, V):
        """Queue rows for writing; the recorder owns ``t`` and ``V`` from now on.

        Raises StorageError once a write has failed (the run should then stop and close),
        ResultFileError once the file is closed."""
        if self._result is not None:
            raise ResultFileError(f"{self.path} is closed; a recorder writes one run")
        if self._error is not None:
            raise StorageError(f"writing {self.path} failed: {self._reason(self._error)}")
        self._writer.put((t, V))

    def close(self, status, message, stats):
        """Finish the file and give it its final name; returns the Result.

        After a write error the file is still finished where possible (status ``failed``,
        the samples written before it kept) and StorageError is raised, with the Result as
        its ``result`` (None when nothing could be kept).  A second call returns the
        first's Result."""
        if self._result is not None:
            return self._result
        with HeldSignals() as held:  # a second Ctrl-C would leave a locked partial
            result = self._close(status, message, stats)
            held.deliver()
        return result

    def _close(self, status, message, stats):
        self._writer.finish()
        if not self._created:  # the writer thread could not create the file: nothing is kept
            names = tuple(self.header.neuron_names)
            self._result = Result(np.empty(0), np.empty((0, len(names))), names, "failed",
                                  message, stats, {})
            reason = self._reason(self._error)
            abandon_open(self, self._error, reason)
            raise StorageError(f"cannot write {self.path}: {reason}")
        try:
            if self._error is None:
                self._write_buffer()
            elif self._raw:
                self._write_what_fits()
        except Exception as exc:  # noqa: BLE001 - reported below as a StorageError
            self._error = self._error or exc
        if self._error is not None:
            status = "failed"
            message = (f"recording stopped after {self._written} samples: writing failed: "
                       f"{self._reason(self._error)}")
        finished = self._finish(status, message, stats)
        if not self._raw:  # the blocks HDF5 did not use past the end are given back
            release_reserve(self._fd)
        stored = self._publish() if finished else self._keep_if_readable()
        identity = _identity(os.fstat(self._fd))
        os.close(self._fd)  # releases the lock, after the rename
        result = None
        if stored is not None:
            n = self._written
            metadata = dict(json.loads(json.dumps(self.header.metadata)), **self._circuit_text,
                            complete=status == "complete" and self._error is None)
            result = Result(lambda: _read_time(stored, n, identity),
                            lambda: _read_V(stored, n, identity),
                            tuple(self.header.neuron_names), status, message,
                            json.loads(json.dumps(stats)), metadata)
        self._result = result or Result(np.empty(0), np.empty((0, len(self.header.neuron_names))),
                                        self.header.neuron_names, status, message, stats, {})
        if self._error is not None:
            if isinstance(self._error, ResultFileError):  # says itself where the result is
                error = StorageError(str(self._error))
            else:
                where = (f"the {self._written} samples written before are in {stored}"
                         if stored is not None else "nothing could be kept")
                error = StorageError(f"writing {self.path} failed: "
                                     f"{self._reason(self._error)}; {where}")
            error.result = result
            raise error
        return result

    def _finish(self, status, message, stats) -> bool:
        """Cut the datasets to the rows written, store how the run ended, close the file;
        False if the file could not be finished (a full disk, an I/O error)."""
        try:
            if self._raw and self.time.shape[0] != self._written:
                self.time.resize((self._written,))
                self.V.resize((self._written, self.V.shape[1]))
            attrs = self.file.attrs
            attrs["samples_written"] = self._written
            attrs["status"] = status
            attrs["message"] = message
            attrs["stats"] = json.dumps(stats)
            attrs["wall_time_s"] = float(stats.get("wall_time_s", 0.0))
            self.file.flush()
            attrs["complete"] = status == "complete" and self._error is None
            self.file.close()
            os.fsync(self._fd)  # on the disk before the final name points at it
            return True
        except Exception as exc:  # noqa: BLE001 - becomes the StorageError of close()
            if self._error is None:
                self._error = exc
            # no handle into the file outlives its one close (a second one, at garbage
            # collection, crashed HDF5 after a failed flush)
            self.time = self.V = self._names = None
            _close_quietly(self.file)
            return False
        finally:
            self.file = None

    def _publish(self) -> Path | None:
        """Rename the finished partial to the final name; where that is not possible, the
        result stays in the partial (returned)."""
        try:
            return publish(self._fd, self.partial, self.target, self.path, self.overwrite)
        except ResultFileError as exc:
            self._error = exc
            return self.partial if self.partial.exists() and _holds(self._fd, self.partial) \
                else None
        except OSError as exc:
            self._error = exc
            return self.partial

    def _keep_if_readable(self) -> Path | None:
        """The partial of a file that could not be finished, if a reader can open it;
        otherwise it is removed (it holds nothing a reader could get back)."""
        try:
            with h5py.File(self.partial, "r", locking=False) as f:
                if _valid_rows(f) > 0:
                    return self.partial
        except Exception:  # noqa: BLE001 - unreadable: removed below
            pass
        self.partial.unlink(missing_ok=True)
        return None


def placed_dataset(file: h5py.File, name: str, shape: tuple, dtype, fill=None, chunks=None,
                   extendable: bool = False):
    """A dataset whose blocks are allocated in the file when it is created (early), so
    that writing it later needs no new space; filled with ``fill`` where given, never
    written otherwise.  ``extendable`` (with ``chunks``): its rows can be added later,
    the new chunks placed when the dataset is extended, so rows go to known offsets."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    if chunks is not None:
        dcpl.set_chunk(chunks)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    if fill is None:
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    else:
        if np.any(np.array(fill, dtype=dtype) != np.zeros((), dtype=dtype)):
            dcpl.set_fill_value(np.array(fill, dtype=dtype))  # HDF5's own default is zeros
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_ALLOC)
    space = h5py.h5s.create_simple(shape, (h5py.h5s.UNLIMITED,) + shape[1:] if extendable
                                   else shape)
    type_id = h5py.h5t.py_create(np.dtype(dtype), logical=True)
    dataset = h5py.h5d.create(file.id, name.encode(), type_id, space, dcpl=dcpl)
    return h5py.Dataset(dataset)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def file_format(path) -> str | None:
    """The ``format`` a neurosim HDF5 file says it has (``neurosim-result``,
    ``neurosim-batch``, ``neurosim-sweep``; its partial's too), or None for anything
    else, a file that does not open included."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            return _text(f.attrs.get("format", "")) or None
    except OSError:
        return None


def _being_written(path: Path) -> bool:
    """Whether a run holds ``path``'s lock (a partial nobody holds was left by a killed
    run)."""
    if fcntl is None:
        return True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        return not _lock(fd, shared=True)
    finally:
        os.close(fd)  # releases the shared lock, if taken


def _open_result(path: Path) -> h5py.File:
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        if partial.exists() and _being_written(partial):
            raise ResultFileError(f"{path}: no such result file yet; {partial} is being "
                                  "written by a run (neurosim info reads what it holds so far)")
        if partial.exists():
            raise ResultFileError(f"{path}: no such result file; {partial} was left by a run "
                                  "that was killed (neurosim info reads it)")
        raise ResultFileError(f"{path}: no such result file")
    if not path.is_file():
        raise ResultFileError(f"{path} is not a regular file, so not a result file")
    if path.stat().st_size == 0:
        state = ("a run has just started writing it" if _being_written(path) else
                 "left by a run killed before it wrote anything; remove it, or write that "
                 "output again with overwrite=True (--overwrite)")
        raise ResultFileError(f"{path} is empty: {state}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        if "unable to lock file" in str(exc):
            raise ResultFileError(f"cannot read {path}: a run is writing it; read it when "
                                  "that run has ended") from None
        raise ResultFileError(f"cannot read {path}: not an HDF5 file, or a damaged one "
                              f"({' '.join(str(exc).split())})") from None
    if _text(f.attrs.get("format", "")) != "neurosim-result":
        f.close()
        raise ResultFileError(f"{path} is an HDF5 file but not a neurosim result")
    try:
        _check_layout(f)
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file raises
        f.close()
        raise _damaged(path, exc) from None
    return f


def _check_layout(f: h5py.File) -> None:
    """ValueError unless the datasets have the shapes a reader relies on."""
    time, V = f.get("time"), f.get("V")
    if not isinstance(time, h5py.Dataset) or time.ndim != 1:
        raise ValueError("/time is not a 1-D dataset")
    if not isinstance(V, h5py.Dataset) or V.ndim != 2:
        raise ValueError("/V is not a 2-D dataset")
    names = len(_neuron_names(f))
    if names != V.shape[1]:
        raise ValueError(f"/V has {V.shape[1]} columns for {names} neuron names")
    if int(f.attrs.get("samples_written", 0)) < 0:
        raise ValueError("samples_written is negative")


def _json_attr(f: h5py.File, key: str) -> dict:
    """A JSON mapping stored as an attribute ({} where absent)."""
    value = json.loads(_text(f.attrs.get(key, "{}")))
    if not isinstance(value, dict):
        raise ValueError(f"attribute {key} is not a JSON mapping")
    return value


def _valid_rows(f: h5py.File) -> int:
    """Rows of /time and /V that hold samples: a file left by a killed writer has a chunk
    placed beyond ``samples_written`` (and older files may have one dataset resized only)."""
    rows = min(f["time"].shape[0], f["V"].shape[0])
    return min(rows, int(f.attrs.get("samples_written", rows)))


def _status(f: h5py.File) -> str:
    """How the run ended; a file still marked running was left by a run that was killed."""
    status = _text(f.attrs.get("status", "running"))
    return "interrupted" if status == "running" else status


def _message(f: h5py.File) -> str:
    """How the run ended, in a sentence (a killed writer left none)."""
    return _text(f.attrs.get("message", "the run stopped before it closed the file"))


def _complete(f: h5py.File) -> bool:
    return bool(f.attrs.get("complete", False))


def _neuron_names(f: h5py.File) -> tuple[str, ...]:
    """Column names of /V: a dataset since format 2, an attribute before."""
    names = f["neuron_names"][()] if "neuron_names" in f else f.attrs["neuron_names"]
    return tuple(_text(x) for x in names)


def _identity(stat_result) -> tuple:
    """What tells one version of a file from another: the file, its size and its time."""
    return (stat_result.st_dev, stat_result.st_ino, stat_result.st_size,
            stat_result.st_mtime_ns)


def _open_same(path: Path, identity: tuple) -> h5py.File:
    """The result file a lazy Result was made from, refused if it has been replaced or
    rewritten since (its traces would be another run's)."""
    try:
        same = _identity(os.stat(path)) == identity
    except OSError:
        same = False
    if not same:
        raise ResultFileError(f"{path} was removed, replaced or rewritten after this result "
                              "was made from it; read it again with load_result")
    return _open_result(path)


def _read_V(path: Path, n: int, identity: tuple) -> np.ndarray:
    with _open_same(path, identity) as f:
        return f["V"][:n].astype(np.float64)


def _read_time(path: Path, n: int, identity: tuple) -> np.ndarray:
    with _open_same(path, identity) as f:
        return f["time"][:n]


def _damaged(path: Path, exc: Exception) -> ResultFileError:
    return ResultFileError(f"{path} is damaged or not a complete neurosim result "
                           f"({type(exc).__name__}: {' '.join(str(exc).split())})")


@contextlib.contextmanager
def _reading(path: Path):
    """The open result file; whatever a damaged one raises becomes one ResultFileError."""
    try:
        with _open_result(path) as f:
            yield f
    except ResultFileError:
        raise
    except OSError as exc:
        raise ResultFileError(f"cannot read {path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - whatever else a damaged file raises
        raise _damaged(path, exc) from None


def load_result(path, *, lazy: bool = False) -> Result:
    """Read a result file written by :class:`HDF5Recorder` into a :class:`Result`.

    A file whose run was interrupted is read as it is, with ``status`` telling so.
    With ``lazy=True`` the times and traces are read when first used.
    """
    path = Path(path)
    with _reading(path) as f:
        n = _valid_rows(f)
        identity = _identity(os.stat(path))
        t = (lambda: _read_time(path, n, identity)) if lazy else f["time"][:n]
        V = (lambda: _read_V(path, n, identity)) if lazy else f["V"][:n].astype(np.float64)
        names = _neuron_names(f)
        status = _status(f)
        metadata = _json_attr(f, "metadata")
        for key in ("circuit_yaml", "circuit_sha256"):
            if key in f.attrs:
                metadata[key] = _text(f.attrs[key])
        metadata["complete"] = _complete(f)
        stats = _json_attr(f, "stats")
        message = _message(f)
    return Result(t, V, names, status, message, stats, metadata)


def result_summary(path) -> dict:
    """Key facts of a result file without reading the traces."""
    path = Path(path)
    with _reading(path) as f:
        n = _valid_rows(f)
        return {"status": _status(f),
                "complete": _complete(f),
                "samples": n,
                "t_end_ms": float(f["time"][n - 1]) if n else 0.0,
                "neurons": list(_neuron_names(f)),
                "integrator": _text(f.attrs.get("integrator", "")),
                "integrator_options": _json_attr(f, "integrator_options"),
                "protocol": _text(f.attrs.get("protocol", "")),
                "circuit": _text(f.attrs.get("circuit_name", "")),
                "circuit_sha256": _text(f.attrs.get("circuit_sha256", "")),
                "neurosim_version": _text(f.attrs.get("neurosim_version", "")),
                "stats": _json_attr(f, "stats"),
                "message": _message(f),
                "initial": _json_attr(f, "metadata").get("initial"),
                "size_bytes": os.path.getsize(path)}
