"""Batch scoring chunks as Dask tasks (``interestflow score --dask ...``).

:func:`interestflow.batch.score` stages the events into hashed user buckets on disk first; each
bucket is then one task, :func:`interestflow.batch.score_chunk`, which reads its staged events,
scores them and writes its two part files atomically. Tasks carry only a small job
description (paths and parameters); every worker process loads the model state, catalogue,
index and encoder on its first task and keeps them for the next ones
(:func:`interestflow.batch._resources`). The driver (this process) is the only writer of the
manifest: it records each chunk as its task finishes.

A task is idempotent (same input files, same output bytes), so a task that is retried after
its worker died, or that ran twice, does no harm: the job completes with every chunk written
exactly once under its final name.

Dask is optional: ``pip install "interestflow[distributed]"`` (``dask[distributed]``).
Dask sends the job description to workers with its own serialisation (cloudpickle); no data
array and no model crosses that way, and nothing is stored with pickle.
"""

from __future__ import annotations

import logging
import os
import re

logger = logging.getLogger(__name__)

__all__ = ["parse_dask", "run_chunks"]

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


def _task(job, b: int) -> dict:
    from .batch import score_chunk

    return score_chunk(job, b)


def run_chunks(spec, job, buckets, on_done) -> None:
    """Run ``score_chunk(job, b)`` for every bucket as a Dask task; ``on_done(b, stats)`` in
    this process as each finishes (in completion order).

    Parameters
    ----------
    spec : tuple
        From :func:`parse_dask`.
    job : interestflow.batch._Job
        The staged job.
    buckets : list of int
        Chunks still to do.
    on_done : callable
        Called with ``(bucket, stats)`` per finished chunk.

    Raises
    ------
    Exception
        The first chunk error that persisted through the retries (the chunks recorded before
        it stay recorded: rerunning the job resumes).
    """
    distributed = _import_distributed()
    client, cluster = _connect(spec)
    try:
        logger.info("score: %d chunk(s) on Dask %s (%d worker(s))", len(buckets),
                    client.scheduler.address, len(client.scheduler_info()["workers"]))
        futures = {}
        for b in buckets:
            # pure=False: a fresh key per submission, so a rerun never reuses a stale result
            futures[client.submit(_task, job, b, retries=TASK_RETRIES, pure=False)] = b
        for fut in distributed.as_completed(futures):
            on_done(futures[fut], fut.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
