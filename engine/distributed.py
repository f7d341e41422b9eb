"""Batch scoring chunks as Dask tasks (``interestflow score --dask ...``).

:func:`interestflow.batch.score` runs three kinds of tasks here: counting the users of one input
file, staging one input file into the hashed user buckets on disk (both file-parallel), then
scoring one bucket (:func:`interestflow.batch.score_chunk`), which reads its staged events,
scores them and writes its two part files atomically. The catalogue's index is built once by
the driver before. Tasks carry only a small description (paths and parameters); every worker
process loads the model state, index and encoder on its first chunk and keeps them for the
next ones (:func:`interestflow.batch._resources`). The driver (this process) is the only
writer of the manifest: it records each chunk as its task finishes.

A task is idempotent (same input files, same output bytes), so a task that is retried after
its worker died, or that ran twice, does no harm: the job completes with every chunk written
exactly once under its final name.

Dask is optional: ``pip install "interestflow[distributed]"`` (``dask[distributed]``).
Dask sends the job description to workers with its own serialisation (cloudpickle); no data
array and no model crosses that way, and nothing is stored with pickle.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re

logger = logging.getLogger(__name__)

__all__ = ["parse_dask", "session"]

#: Times a failing chunk task is retried (on top of Dask's own rescheduling of tasks whose
#: worker died, bounded by ``distributed.scheduler.allowed-failures``).
TASK_RETRIES = 3


def parse_dask(spec) -> tuple[str, object]:
    """``("local", n_workers)`` or ``("address", address)`` from a ``--dask`` value.

    Parameters
    ----------
    spec : str
        ``"local"`` (one single-threaded worker process per CPU core), ``"local:N"`` (N
        worker processes) or a scheduler address such as ``"tcp://10.0.0.5:8786"``.

    Examples
    --------
    >>> parse_dask("local:2"), parse_dask("tcp://sched:8786")
    (('local', 2), ('address', 'tcp://sched:8786'))
    """
    if not isinstance(spec, str):
        raise TypeError(f"dask must be 'local', 'local:N' or a scheduler address (str), got "
                        f"{type(spec).__name__}")
    m = re.fullmatch(r"local(?:\[?:?(\d+)\]?)?", spec.strip())
    if m:
        n = int(m.group(1)) if m.group(1) else (os.cpu_count() or 1)
        if n < 1:
            raise ValueError(f"dask={spec!r}: the number of local workers must be >= 1")
        return "local", n
    if re.fullmatch(r"[a-z]+://\S+|[\w.\-]+:\d+", spec.strip()):
        return "address", spec.strip()
    raise ValueError(f"dask={spec!r} is not valid; pass 'local', 'local:N' (N worker "
                     "processes) or a scheduler address such as 'tcp://host:8786'")


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ImportError("dask= needs Dask's distributed scheduler; install it with "
                          "pip install \"interestflow[distributed]\" (or \"dask[distributed]\")"
                          ) from exc
    return distributed


def _connect(spec):
    """(client, cluster or None) for a parsed spec."""
    distributed = _import_distributed()
    kind, value = spec
    if kind == "local":
        # single-threaded worker processes: the chunk kernels are already parallel inside a
        # process, and Dask's nannies set OMP/MKL threads to 1 so N workers use N cores
        cluster = distributed.LocalCluster(n_workers=int(value), threads_per_worker=1,
                                           processes=True, dashboard_address=None)
        return distributed.Client(cluster), cluster
    return distributed.Client(value), None


class _DaskRunner:
    """Runs tasks on a Dask cluster; ``on_done`` in this process, in completion order."""

    def __init__(self, client):
        self.client = client

    def map(self, fn, arg_tuples, on_done) -> None:
        """``fn(*args)`` for every tuple as one task (retried up to :data:`TASK_RETRIES`);
        ``on_done(args, result)`` as each finishes.

        Raises the first task error that persisted through the retries (what was recorded
        before it stays recorded: rerunning the job resumes)."""
        distributed = _import_distributed()
        futures = {}
        for args in arg_tuples:
            # pure=False: a fresh key per submission, so a rerun never reuses a stale result
            futures[self.client.submit(fn, *args, retries=TASK_RETRIES, pure=False)] = args
        for fut in distributed.as_completed(futures):
            on_done(futures[fut], fut.result())


@contextlib.contextmanager
def session(spec):
    """A runner on the Dask cluster of ``spec`` (from :func:`parse_dask`) for the ``with``
    block; a LocalCluster it started is closed at the end."""
    client, cluster = _connect(spec)
    try:
        logger.info("score: Dask %s with %d worker(s)", client.scheduler.address,
                    len(client.scheduler_info()["workers"]))
        yield _DaskRunner(client)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
