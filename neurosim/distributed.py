"""Independent chunks of work on a ``dask.distributed`` cluster (the ``[dask]`` extra).

:func:`connect` starts a ``LocalCluster`` sized as asked (one thread per worker process,
``NUMBA_NUM_THREADS=1`` in each, so that workers do not oversubscribe the processors) or
joins a running scheduler; :func:`map_chunks` sends the plan once to every worker,
yields results as they finish; :func:`warm_workers` compiles the kernels on one worker
first (the others then load them from the shared disk cache: no simultaneous cold
compiles on one host).  A
chunk lost with its worker is run again elsewhere by the scheduler.
"""

from __future__ import annotations

import logging
import time

from neurosim.errors import CircuitError

logger = logging.getLogger("neurosim")

#: the environment of each worker process: one thread for Numba and BLAS
WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}


def _dask():
    try:
        import dask.distributed
    except ImportError:
        raise CircuitError("running on workers needs dask.distributed: install neurosim with "
                           "its dask extra (pip install -e \".[dask]\")") from None
    return dask.distributed


def connect(workers: int | None = None, scheduler: str | None = None):
    """(client, things to close, in order) for ``workers`` local processes or the cluster
    of ``scheduler``."""
    distributed = _dask()
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout="10s")
        except OSError as exc:
            raise CircuitError(f"cannot reach the scheduler at {scheduler}: {exc}") from None
        return client, [client]
    if workers is None or workers < 1:
        raise CircuitError(f"workers must be at least 1, got {workers}")
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR,
                                       env=dict(WORKER_ENV))
    client = distributed.Client(cluster)
    return client, [client, cluster]


def map_tasks(client, run, shared, keys):
    """``run(shared, key)`` for every key on the cluster: (key, result) pairs as they
    finish.  ``shared`` is sent once to every worker."""
    distributed = _dask()
    keys = list(keys)
    if not keys:
        return
    [shared_future] = client.scatter([shared], broadcast=True)
    futures = {client.submit(run, shared_future, key, pure=False): key for key in keys}
    try:
        for future in distributed.as_completed(futures):
            yield futures[future], future.result()
            future.release()
    finally:
        client.cancel([f for f in futures if not f.done()])


def warm_workers(client, run, shared, key) -> None:
    """``run(shared, key)``, a small task, first on one worker (which compiles the kernels
    into the disk cache, or loads them), then on each of the others (which load them):
    no host compiles the same kernels in several processes at once."""
    distributed = _dask()
    workers = list(client.scheduler_info()["workers"])
    if not workers:
        return
    started = time.perf_counter()
    logger.info("preparing %d workers (their kernels compile on first use) …", len(workers))
    client.submit(run, shared, key, workers=workers[:1], pure=False).result()
    distributed.wait([client.submit(run, shared, key, workers=[w], pure=False)
                      for w in workers[1:]])
    logger.info("… workers ready in %.1f s", time.perf_counter() - started)


class Executor:
    """Where independent tasks run: in this process (no client, no ``workers``, no
    ``scheduler``), or on a Dask cluster — a client of your own, a ``LocalCluster`` of
    ``workers`` processes, or the cluster of ``scheduler``.  A context manager; inside,
    ``executor.warm(run, shared, key)`` prepares the workers with a small task and
    ``executor.map(run, shared, keys)`` yields (key, result) pairs as tasks finish (in
    key order in this process)."""

    def __init__(self, client=None, workers: int | None = None, scheduler: str | None = None):
        if workers is not None and workers < 0:
            raise CircuitError(f"workers must be 0 (this process) or more, got {workers}")
        self.client, self.workers, self.scheduler = client, workers, scheduler
        self._owned = []

    @property
    def local(self) -> bool:
        return self.client is None and not self.workers and self.scheduler is None

    def __enter__(self):
        if not self.local and self.client is None:
            self.client, self._owned = connect(self.workers, self.scheduler)
        return self

    def warm(self, run, shared, key) -> None:
        """Run a small task where the tasks will run, so that their kernels are compiled
        (announced) or loaded before the work and its clock start."""
        if self.client is None:
            run(shared, key)
        else:
            warm_workers(self.client, run, shared, key)

    def map(self, run, shared, keys):
        if self.client is None:
            return ((key, run(shared, key)) for key in keys)
        return map_tasks(self.client, run, shared, keys)

    def __exit__(self, *exc):
        for thing in self._owned:
            thing.close()
        if self._owned:
            self.client = None
        return False
