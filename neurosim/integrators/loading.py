"""Kernels in memory before the work starts: loaded from Numba's disk cache or compiled,
announced on the ``neurosim`` logger, timed; and kernels run over item ranges in threads.

Kernels are loaded from Numba's disk cache, or compiled there on a cache miss (the first
use after installing or changing neurosim), before the work they do starts
(:func:`load_kernels`): a timer started afterwards measures running only, and a
compilation is announced on the ``neurosim`` logger.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager

import numba
from numba.core import event
from numba.core.registry import CPUDispatcher

logger = logging.getLogger("neurosim")


class _CompilationNotice(event.Listener):
    """Counts the seconds Numba spends compiling (it reports compilations, not loads from
    its cache) and logs one line when the first compilation starts."""

    def __init__(self):
        self.depth, self.seconds, self.started = 0, 0.0, None

    def on_start(self, event):
        if self.started is None:
            logger.info("compiling simulation kernels (first use only) …")
        if self.depth == 0:  # a kernel's callees compile inside it
            self.started = time.perf_counter()
        self.depth += 1

    def on_end(self, event):
        self.depth -= 1
        if self.depth == 0:
            seconds = time.perf_counter() - self.started
            self.seconds += seconds
            count_compile_wait(seconds)  # Numba reports on the thread that compiles


#: seconds each thread has spent compiling (.seconds): a batch's wall time once lost
#: another thread's compilation, 19 s of its 21
_compiled_here = threading.local()
_notice = None
_notice_users = 0
#: guards the two above: runs started from several threads at once share one notice
#: (a run that read the notice another thread had just ended failed, about one time in
#: a few thousand)
_notice_lock = threading.Lock()


def compile_seconds() -> float:
    """Seconds this thread has spent compiling kernels so far (or waiting for another
    process to compile them, :func:`count_compile_wait`): timers that may include a first
    call subtract the difference."""
    return getattr(_compiled_here, "seconds", 0.0)


def running_clock() -> float:
    """``time.perf_counter()`` less the seconds this thread has spent compiling so far: the
    difference of two readings is the time spent running, whatever compiled in between."""
    return time.perf_counter() - compile_seconds()


def count_compile_wait(seconds: float) -> None:
    """Count ``seconds`` this thread spent waiting for kernels compiled elsewhere as
    compiling."""
    _compiled_here.seconds = compile_seconds() + seconds


@contextmanager
def one_compile_notice():
    """Announce the compilations of every :func:`load_kernels` call inside as one, "… compiled
    in N s" at the end (a run that compiles its rest kernel, rests, then compiles its time
    loop is one wait for its user, not two).  Calls that overlap, nested or from several
    threads, share the notice of the first; the last to end announces it."""
    global _notice, _notice_users
    with _notice_lock:
        _notice_users += 1
        if _notice_users == 1:
            _notice = _CompilationNotice()
            event.register("numba:compile", _notice)
    try:
        yield
    finally:
        with _notice_lock:
            _notice_users -= 1
            if _notice_users == 0:
                event.unregister("numba:compile", _notice)
                _end_notice(_notice)
                _notice = None


def _end_notice(notice: _CompilationNotice) -> None:
    if notice.started is not None:
        logger.info("… compiled in %.1f s", notice.seconds)


def load_kernels(*calls) -> None:
    """Load every kernel of ``calls``, (kernel, args) pairs, for the types of its
    arguments, from memory or Numba's disk cache, or compile it (a cache miss).

    A compilation is announced on the ``neurosim`` logger at INFO, one line before it
    ("compiling simulation kernels (first use only) …") and its duration after (once for
    all the calls inside :func:`one_compile_notice`), and counted in
    :func:`compile_seconds`.  A kernel already in memory costs a type lookup per argument.
    """
    pending = []
    for kernel, args in calls:
        if isinstance(kernel, CPUDispatcher):  # not under NUMBA_DISABLE_JIT
            signature = tuple(kernel.typeof_pyval(a) for a in args)
            if signature not in kernel.overloads:
                pending.append((kernel, signature))
    if pending:
        with one_compile_notice():
            for kernel, signature in pending:
                kernel.compile(signature)


def call_kernel(kernel, *args):
    """``kernel(*args)``, loaded or compiled first by :func:`load_kernels`."""
    load_kernels((kernel, args))
    return kernel(*args)


def run_in_threads(kernel, n: int, args: tuple, on_done=None) -> None:
    """``kernel(first, last, *args)`` over items 0..n-1, cut into ranges (about four per
    thread, so that a thread finishing early takes another) on ``numba.get_num_threads()``
    threads; the kernels release the GIL and write disjoint rows of their outputs.

    ``on_done(first, last)``, if given, is called on this thread as each range finishes,
    in the order they finish: a caller streams each range's rows while the others compute.
    """
    load_kernels((kernel, (0, n) + args))
    threads = min(numba.get_num_threads(), n)
    if threads <= 1:
        kernel(0, n, *args)
        if on_done is not None:
            on_done(0, n)
        return
    size = math.ceil(n / (4 * threads))
    ranges = {_pool(threads).submit(kernel, first, min(first + size, n), *args):
              (first, min(first + size, n)) for first in range(0, n, size)}
    try:
        pending = set(ranges)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=ranges.get):
                future.result()
                if on_done is not None:
                    on_done(*ranges[future])
    finally:
        wait(ranges)  # on an interrupt too: no kernel writes the outputs after the return


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """A pool of ``threads`` threads, kept for the next call: starting them anew cost
    about 5 ms a call, which a sweep or a fit pays for every small batch."""
    with _pools_lock:  # runs started from several threads at once make one pool
        if threads not in _pools:
            _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="neurosim")
        return _pools[threads]
