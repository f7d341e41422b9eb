"""The scoring job: parameters, the manifest that makes it resumable, the chunks run on a
runner (this process or Dask), and the summary at the end; :func:`score` drives it all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import numbers
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from .._utils import renamed
from ..outdir import FolderLock, check_location
from ..validation import check_ts_unit, now_seconds
from ._chunk import Job, score_chunk
from ._common import (COMPLETE_MARKER, MAX_EXAMPLES, REASON_ZERO_WEIGHT, py_scalar,
                      staging_dir, write_json_atomic)
from ._inputs import file_stamp, open_events, parse_memory, resolve_inputs
from ._model import read_model
from ._planning import DEFAULT_CHUNK_USERS
from ._staging import stage

logger = logging.getLogger(__package__)

MANIFEST_FORMAT = "interestflow.batch.score"
MANIFEST_VERSION = 1


class RejectedRowsError(ValueError):
    """:func:`score` finished and wrote every output, but rejected more rows than
    ``max_rejected`` allows.  ``summary`` is the job's summary (also in ``summary.json``)."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


def score(events, model_dir, out, *, items=None, k: int = 10, chunk_users=None,
          max_memory=None, vector_col=None, index="auto", now=None, dask=None,
          show_progress=None, column_map=None, ts_unit="s", max_rejected=None,
          embedding_cache=None, progress=None) -> dict:
    """Score every user of an event table with a fitted model, in bounded memory, resumably.

    Parameters
    ----------
    events : str or os.PathLike
        Events: a Parquet file, a folder of Parquet files (a dataset) or a glob pattern; CSV
        and JSON Lines files (also compressed) work too. Columns ``user_id``, ``ts`` (unix
        times in ``ts_unit``, timestamps or ISO 8601 strings, from 1990-01-01 to 2100-01-01
        UTC) and at least one of ``text``, ``item_id``, ``vector_col``; optional ``weight``
        (>= 0, default 1). Other columns are not read. Ids are kept as written: CSV ids are
        strings (``"007"`` is not ``"7"``), Parquet and JSON ids keep the file's type.
    model_dir : str or os.PathLike
        A saved :class:`~interestflow.InterestEngine` (its encoder, half-life, segment
        centroids and temperature, and by default its items). With a learned ranker
        (``ranker="lightgbm"``) its candidate generator and ranker too: the users' lists
        then come from the same two stages as ``InterestEngine.recommend`` (see the module
        docstring; ``items=`` is refused, and ``index=`` only indexes the catalogue for
        staging: the content source searches the generator's own index, as ``recommend``
        does). With ``segment_assignment="hard"`` the segment weights are the one-hot of the
        nearest centroid (``fit`` uses the clustering's labels, which may differ for users at
        a segment border; HDBSCAN noise users get a segment here).
    out : str or os.PathLike
        Output folder: ``users/part-NNNNN.parquet`` (``user_id``, ``vector`` list<float32>
        (dim,), ``segment``, ``segment_0..K-1``), ``recommendations/part-NNNNN.parquet``
        (``user_id``, ``item_id``, ``score``, ``rank`` from 1), ``manifest.json``,
        ``summary.json`` and ``rejected.parquet`` (``row``, ``file``, ``file_row``,
        ``reason``, ``user_id`` of every rejected row). Must be new, empty, or the folder of
        an earlier run of the same job (which is then resumed). Checked before anything is
        read; one job at a time: the job holds the lock ``.NAME.lock`` beside the folder
        (:class:`interestflow.outdir.FolderLock`) and a second job is refused.
    items : str or os.PathLike, optional
        Items to recommend instead of the model's: ``item_id`` and a vector column
        (``vector_col`` if the items have it, else ``"vector"``) or ``text`` (encoded with the
        model's encoder).
    k : int, default 10
        Recommendations per user (fewer when fewer unseen items exist).
    chunk_users : int, optional
        Users per chunk (approximately: users are hashed into ``ceil(n_users / chunk_users)``
        chunks). Default: from ``max_memory`` if given, else :data:`DEFAULT_CHUNK_USERS`.
    max_memory : int or str, optional
        Memory budget of one scoring process (each Dask worker), e.g. ``"2GB"``; sets
        ``chunk_users`` from an estimate of the fixed cost (the process, catalogue, buffers)
        and the per-user cost, with 15% headroom: a target, not a hard limit. Not with
        ``chunk_users``.
    vector_col : str, optional
        Column of precomputed event vectors (list of ``dim`` numbers): such events are not
        encoded. Also read from ``items`` when the items table has it.
    index : {"auto", "exact", "ivf"}, default "auto"
        Kind of :class:`~interestflow.retrieval.ItemIndex` over the catalogue: ``"exact"``
        cosine top-k, ``"ivf"`` FAISS IVF (candidates re-scored exactly), ``"auto"`` IVF from
        ``AUTO_IVF_MIN_ITEMS`` items when faiss is installed. Built once per job.
    now : float, str or datetime, optional
        Reference time of the decay (a number is unix seconds, whatever ``ts_unit``); default
        the latest valid event time. Events after it are rejected.
    dask : str, optional
        ``"local"`` / ``"local:N"`` (a LocalCluster of N single-threaded worker processes;
        N defaults to the CPU count) or a scheduler address ``"tcp://host:8786"`` (workers must
        see ``out`` and the inputs at the same paths). Default: chunks run in this process.
    show_progress : bool, optional
        Progress bars (users/s and ETA); default: when stderr is a terminal. (``progress``:
        its deprecated name.)
    column_map : dict, optional
        ``{standard name: column in the file}`` for ``user_id``, ``ts``, ``text``,
        ``item_id``, ``weight`` (``item_id`` and ``text`` apply to ``items`` too).
    ts_unit : {"s", "ms", "us", "ns"}, default "s"
        Unit of numeric ``ts`` values. A row whose time falls outside 1990-01-01..2100-01-01
        UTC (e.g. milliseconds read as seconds) is rejected with the reason "implausible ts".
    max_rejected : int, float or str, optional
        Most rejected rows allowed: a count (``100``) or a share of the input rows (``0.05``
        or ``"5%"``). Above it, ``score`` still finishes and writes every output and the
        summary (which records the limit and that it was exceeded), then raises
        :class:`RejectedRowsError`. Default: no limit (the counts are in the summary).
    embedding_cache : str, os.PathLike or False, optional
        A persistent embedding store for the texts (see ``Encoder(cache=...)``; refused if
        another encoder made it); default: the one the model was saved with, else a store
        for this job only (``OUT/_staging``), so that every chunk and worker encodes each
        distinct text once (two workers that meet a new text at the same moment may both
        encode it). ``False``: no store; each chunk encodes its own distinct texts. The
        summary's ``texts`` counts the distinct texts of each chunk summed (``looked_up``)
        and how many of them were encoded.

    Returns
    -------
    dict
        The summary also written to ``out/summary.json``: counts (rows, accepted, rejected
        rows by reason with examples, users, recommendations, chunks done now and earlier),
        the reference time, the catalogue, timings per stage (s), users/s, peak RSS (MiB),
        and ``max_rejected`` (the limit, the rows it allows, whether it was exceeded; None
        without a limit).

    Raises
    ------
    RejectedRowsError
        (a ValueError) More rows were rejected than ``max_rejected`` allows; raised after
        the job completed, with the summary as its ``summary``.
    ValueError
        Bad parameters, missing columns, a model or items that do not fit together, an
        ``out`` holding a different job (the message lists what changed), an ``out`` that
        cannot be written, or (:class:`~interestflow.outdir.FolderLockedError`) an ``out``
        being written by another job (the message names it).
    FileNotFoundError
        ``events``, ``items`` or ``model_dir`` do not exist.

    Examples
    --------
    >>> from interestflow.batch import score                                # doctest: +SKIP
    >>> summary = score("events/", "model/", "scores/", k=20, chunk_users=100_000)  # doctest: +SKIP
    >>> summary["users"], summary["rejected"]["total"]                      # doctest: +SKIP
    """
    t_start = time.perf_counter()
    mem = _check_params(k, chunk_users, max_memory, index, embedding_cache, vector_col)
    now_s = now_seconds(now)
    check_ts_unit(ts_unit)
    limit = _parse_max_rejected(max_rejected)
    show = _show_progress(renamed("show_progress", show_progress, "progress", progress,
                                  None))
    dask_spec = None
    if dask is not None:
        from ..distributed import parse_dask

        dask_spec = parse_dask(dask)
    # one job per folder, checked before any input is read or the model loaded
    out = check_location(out)
    with FolderLock(out, command="score"):
        man_path = out / "manifest.json"
        if not man_path.is_file() and out.is_dir() and any(out.iterdir()):
            raise ValueError(f"out={str(out)!r} exists and is not an interestflow score "
                             "folder (no manifest.json); pass a new or empty folder")
        files, fmt = resolve_inputs(events, "events")
        items_files = resolve_inputs(items, "items")[0] if items is not None else None
        model = read_model(model_dir)
        _check_model(model, items)
        ev = open_events(files, fmt, column_map, vector_col)
        params = _job_params(k, chunk_users, mem, vector_col, index, now_s, ev.column_map,
                             ts_unit)
        manifest = _open_manifest(out, man_path,
                                  _fingerprint(files, fmt, items_files, model, params))
        if manifest.get("complete") and (out / "summary.json").is_file():
            return _already_complete(out, limit, max_rejected)

        timings = {}
        marker = staging_dir(out) / COMPLETE_MARKER
        staged = json.loads(marker.read_text()) if marker.is_file() else None
        workers: dict = {}
        with _runner(dask_spec) as runner:
            if staged is None:
                staged = _stage_or_undo(runner, out, man_path, manifest, model, ev, items=items,
                                        index_kind=index, mem=mem, chunk_users=chunk_users,
                                        k=k, now_s=now_s, ts_unit=ts_unit, show=show)
            job = _make_job(out, model, staged, marker, k, embedding_cache)
            done_before, pending = _pending_chunks(out, manifest, job.n_buckets)
            t = time.perf_counter()
            _run_chunks(runner, job, pending, manifest, man_path, staged, workers, show)
        timings["chunks_wall_s"] = time.perf_counter() - t
        missing = [b for b in range(job.n_buckets) if str(b) not in manifest["chunks"]]
        if missing:  # a failed task raises in runner.map; this guards the bookkeeping itself
            raise RuntimeError(f"chunks {missing[:10]} were not recorded as done")

        summary = _finish(out, manifest, man_path, staged, job, timings, t_start,
                          pending, len(done_before), workers, dask, limit, max_rejected)
        return _check_rejected(summary)


# --------------------------------------------------------------------------- parameters
def _check_params(k, chunk_users, max_memory, index, embedding_cache, vector_col):
    """Check :func:`score`'s parameters (named errors); returns ``max_memory`` in bytes
    (None without it)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    if chunk_users is not None and max_memory is not None:
        raise ValueError("pass chunk_users or max_memory, not both (max_memory sets "
                         "chunk_users from the estimated cost per user)")
    if chunk_users is not None:
        if isinstance(chunk_users, bool) or not isinstance(chunk_users, numbers.Integral):
            raise TypeError(f"chunk_users must be an int, got {type(chunk_users).__name__}")
        if chunk_users < 1:
            raise ValueError(f"chunk_users={chunk_users} must be >= 1")
    mem = parse_memory(max_memory) if max_memory is not None else None
    if index not in ("auto", "exact", "ivf"):
        raise ValueError(f"index={index!r} is not valid; pass one of 'auto', 'exact', 'ivf'")
    if not (embedding_cache is None or embedding_cache is False
            or isinstance(embedding_cache, (str, os.PathLike))):
        raise TypeError(f"embedding_cache must be a path, None or False, got "
                        f"{embedding_cache!r}")
    if vector_col is not None and not isinstance(vector_col, str):
        raise TypeError(f"vector_col must be a column name (str), got "
                        f"{type(vector_col).__name__}")
    return mem


def _show_progress(progress) -> bool:
    """Whether to show progress bars: ``show_progress``, or (None) whether stderr is a
    terminal."""
    if progress is None:
        try:
            return sys.stderr.isatty()
        except (AttributeError, ValueError):
            return False
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"show_progress must be True, False or None, got {progress!r}")
    return bool(progress)


def _check_model(model: dict, items) -> None:
    """A model with a ranker scores its own items only, and not with multi_interest."""
    if model["two_stage"] and items is not None:
        raise ValueError(f"items= cannot be used with the model in {model['dir']}: it has a "
                         "ranker, whose candidate sources (item-kNN, EASE, popularity, "
                         "trends) are fitted on the model's own items; score without items=")
    if model["two_stage"] and model["multi_interest"]:
        raise ValueError(f"the model in {model['dir']} has a ranker and multi_interest=True; "
                         "batch scoring does not build per-user interests from the events "
                         "yet, so its lists would differ from InterestEngine.recommend's; "
                         "use InterestEngine.recommend for this model")


# --------------------------------------------------------------------------- max_rejected
def _parse_max_rejected(value):
    """``max_rejected`` -> None, ("count", n) or ("share", fraction in [0, 1])."""
    if value is None:
        return None
    expected = ("a count of rows (int >= 0, e.g. 100) or a share of the rows (a float in "
                "[0, 1] such as 0.05, or a string such as '5%')")
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"max_rejected must be {expected}, got bool")
    if isinstance(value, numbers.Integral):
        kind, x = "count", int(value)
    elif isinstance(value, numbers.Real):
        kind, x = "share", float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            if text.endswith("%"):
                kind, x = "share", float(text[:-1]) / 100.0
            elif text.isdigit():
                kind, x = "count", int(text)
            else:
                kind, x = "share", float(text)
        except ValueError:
            raise ValueError(f"max_rejected={value!r} is not {expected}") from None
    else:
        raise TypeError(f"max_rejected must be {expected}, got {type(value).__name__}")
    if kind == "count" and x < 0 or kind == "share" and not 0.0 <= x <= 1.0:
        raise ValueError(f"max_rejected={value!r} is out of range; pass {expected}")
    return kind, x


def _rejected_limit(limit, value, summary: dict) -> dict | None:
    """The ``max_rejected`` record of a summary: the limit, rows it allows, exceeded or not."""
    if limit is None:
        return None
    kind, x = limit
    rows = int(summary["events"]["rows"])
    total = int(summary["rejected"]["total"])
    allowed = x if kind == "count" else int(math.floor(round(x * rows, 9)))
    return {"limit": value if isinstance(value, str) else py_scalar(value), "kind": kind,
            "allowed_rows": int(allowed), "rejected_rows": total, "rows": rows,
            "exceeded": total > allowed}


def _check_rejected(summary: dict) -> dict:
    """``summary``, or :class:`RejectedRowsError` when it exceeded ``max_rejected``."""
    rec = summary.get("max_rejected")
    if rec and rec["exceeded"]:
        share = rec["rejected_rows"] / max(1, rec["rows"])
        raise RejectedRowsError(
            f"{rec['rejected_rows']} of {rec['rows']} rows rejected ({share:.1%}), more than "
            f"max_rejected={rec['limit']!r} allows ({rec['allowed_rows']} rows); the outputs "
            f"and summary were written (rejected rows by reason: "
            f"{summary['rejected']['by_reason']}; every one in "
            f"{summary['rejected']['file']})", summary)
    return summary


# --------------------------------------------------------------------------- manifest
def _job_params(k, chunk_users, mem, vector_col, index, now_s, column_map, ts_unit) -> dict:
    """The parameters that are part of the job's fingerprint (a resumed run must match)."""
    return {"k": int(k), "chunk_users": None if chunk_users is None else int(chunk_users),
            "max_memory": mem, "vector_col": vector_col, "index": index,
            "now": now_s, "column_map": {c: column_map[c] for c in sorted(column_map)},
            "default_chunk_users": DEFAULT_CHUNK_USERS, "ts_unit": ts_unit}


def _fingerprint(files, fmt, items_files, model, params) -> dict:
    """What identifies a job: its input files (sizes, modification times), the model's save
    id and the parameters."""
    return {"events": {"format": fmt, "files": file_stamp(files)},
            "items": None if items_files is None else file_stamp(items_files),
            "model": {"dir": model["dir"], "save_id": model["save_id"]},
            "params": params}


def _diff(a, b, prefix="") -> list[str]:
    """Paths where two JSON-like values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if a == b else [f"{prefix}: {a!r} -> {b!r}"]


def _open_manifest(out: Path, man_path: Path, fp: dict) -> dict:
    """The manifest of ``out``: an earlier run's when it is this job (else a ValueError
    listing what changed), or a new one, written."""
    fp_id = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
    if man_path.is_file():
        manifest = json.loads(man_path.read_text())
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{man_path} is not an interestflow score manifest; pass a new or "
                             "empty out")
        if manifest.get("fingerprint_id") != fp_id:
            changes = _diff(manifest.get("fingerprint"), fp)
            raise ValueError(
                f"out={str(out)!r} holds a different scoring job, so it cannot be resumed: "
                + "; ".join(changes[:6]) + ("; ..." if len(changes) > 6 else "")
                + ". Pass a new out (or delete this one) to start this job")
        return manifest
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
                "fingerprint_id": fp_id, "fingerprint": fp, "complete": False,
                "staging": None, "chunks": {}}
    write_json_atomic(man_path, manifest)
    return manifest


def _already_complete(out: Path, limit, limit_value) -> dict:
    """The summary of a job that completed earlier (its staging folder removed if left)."""
    shutil.rmtree(staging_dir(out), ignore_errors=True)
    summary = json.loads((out / "summary.json").read_text())
    summary["already_complete"] = True
    logger.info("score: %s is already complete; nothing to do", out)
    summary["max_rejected"] = _rejected_limit(limit, limit_value, summary)
    return _check_rejected(summary)


def _on_chunk_done(manifest: dict, path: Path, b: int, stats: dict) -> None:
    """Record a finished chunk in the manifest (atomic rewrite; only the driver calls it)."""
    manifest["chunks"][str(b)] = stats
    write_json_atomic(path, manifest)


# --------------------------------------------------------------------------- running
class _LocalRunner:
    """Runs tasks one after the other in this process (the Dask runner's interface)."""

    def map(self, fn, arg_tuples, on_done) -> None:
        for args in arg_tuples:
            on_done(args, fn(*args))


@contextlib.contextmanager
def _runner(dask_spec):
    """The runner of the job's tasks: this process, or a Dask session."""
    if dask_spec is None:
        yield _LocalRunner()
        return
    from ..distributed import session

    with session(dask_spec) as runner:
        yield runner


def _stage_or_undo(runner, out: Path, man_path: Path, manifest: dict, model: dict, ev,
                   **settings) -> dict:
    """:func:`~interestflow.batch._staging.stage`; on failure nothing of this job is usable
    yet, so it leaves no manifest behind (a corrected command can start afresh in ``out``)."""
    try:
        return stage(runner, out, man_path, manifest, model, ev, **settings)
    except Exception:
        shutil.rmtree(staging_dir(out), ignore_errors=True)
        man_path.unlink(missing_ok=True)
        if not any(out.iterdir()):
            out.rmdir()
        raise


def _make_job(out: Path, model: dict, staged: dict, marker: Path, k, embedding_cache) -> Job:
    """The chunk tasks' description of the job, from the staging record."""
    scols = staged["columns"]
    if model["two_stage"] and "behaviour_time" not in staged:
        raise ValueError(f"{marker} was staged by an earlier interestflow without the "
                         "ranker's reference time; delete out and score again")
    return Job(out=str(out), model_dir=model["dir"], save_id=model["save_id"], k=int(k),
               n_buckets=int(staged["n_buckets"]),
               reference_time=float(staged["reference_time"]),
               has_text="text" in scols, has_vector="vector" in scols,
               has_weight="weight" in scols, has_item="item_id" in scols,
               user_kind=staged["user_kind"], index_id=staged["index"]["save_id"],
               two_stage=bool(model["two_stage"]),
               behaviour_time=staged.get("behaviour_time"),
               embedding_cache=embedding_cache if (embedding_cache is None
                                                   or embedding_cache is False)
               else str(Path(embedding_cache).expanduser()))


def _pending_chunks(out: Path, manifest: dict, n_buckets: int):
    """``(chunks done by earlier runs, chunks left to run)`` from the manifest."""
    done_before = {int(b) for b in manifest["chunks"]}
    pending = [b for b in range(n_buckets) if b not in done_before]
    if done_before:
        logger.info("score: resuming %s: %d of %d chunks already done", out,
                    len(done_before), n_buckets)
    return done_before, pending


def _run_chunks(runner, job: Job, pending: list, manifest: dict, man_path: Path,
                staged: dict, workers: dict, show) -> None:
    """Score the ``pending`` chunks on ``runner``, recording each in the manifest as it
    finishes and counting, per process, its chunks and resource loads in ``workers``."""
    from tqdm.auto import tqdm

    est_total = int(staged["users_estimate"])
    done_users = sum(int(s["users"]) for s in manifest["chunks"].values())
    with tqdm(total=max(est_total, done_users), initial=done_users, unit="users",
              desc="score users", disable=not show, dynamic_ncols=True) as bar:
        def done(args, stats):
            b = args[1]
            _on_chunk_done(manifest, man_path, b, stats)
            wk = workers.setdefault(str(stats.get("pid")), {"chunks": 0, "resource_loads": 0})
            wk["chunks"] += 1
            wk["resource_loads"] = max(wk["resource_loads"], int(stats["resource_loads"]))
            if bar.n + stats["users"] > bar.total:
                bar.total = bar.n + stats["users"]
            bar.update(stats["users"])
            bar.set_postfix(chunks=f"{len(manifest['chunks'])}/{job.n_buckets}", refresh=False)

        runner.map(score_chunk, [(job, b) for b in pending], done)


# --------------------------------------------------------------------------- finish
def _peak_rss_bytes() -> int:
    """Peak resident memory of this process so far."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def _finish(out: Path, manifest, man_path, staged, job, timings, t_start, pending, n_before,
            workers, dask, limit=None, limit_value=None) -> dict:
    """rejected.parquet, summary.json, manifest complete, staging removed (in that order)."""
    st = staging_dir(out)
    for sub in ("users", "recommendations"):  # temp files of attempts cut off by a crash
        for p in (out / sub).glob(".part-*.tmp"):
            p.unlink(missing_ok=True)
    _write_rejected(out, st)
    summary = _summary(manifest["chunks"], staged, job, timings, t_start, pending, n_before,
                       workers, dask)
    summary["max_rejected"] = _rejected_limit(limit, limit_value, summary)
    total = summary["rejected"]["total"]
    if total:
        logger.info("score: %d of %d rows rejected: %s (all in %s)", total,
                    summary["events"]["rows"], summary["rejected"]["by_reason"],
                    out / "rejected.parquet")
    write_json_atomic(out / "summary.json", summary)
    manifest["complete"] = True
    write_json_atomic(man_path, manifest)
    shutil.rmtree(st, ignore_errors=True)
    return summary


def _write_rejected(out: Path, st: Path) -> None:
    """``rejected.parquet`` from the staging pass's spills, one spill at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rej_files = sorted((st / "rejected").glob("f*.parquet")) if (st / "rejected").is_dir() \
        else []
    tmp = out / ".rejected.parquet.tmp"
    schema = pa.schema([("row", pa.int64()), ("file", pa.string()), ("file_row", pa.int64()),
                        ("reason", pa.string()), ("user_id", pa.string())])
    with pq.ParquetWriter(tmp, schema) as writer:
        for f in rej_files:  # one spill at a time: bounded memory
            writer.write_table(pq.read_table(f, schema=schema))
    os.replace(tmp, out / "rejected.parquet")


def _chunk_totals(chunks: dict, staged: dict) -> dict:
    """The chunks' records summed: rejected rows by reason (the staging pass's, plus the
    zero-weight users' rows), stage timings, zero-weight users, texts looked up/encoded."""
    by_reason = dict(staged["rejected_by_reason"])
    stage_t: dict = {}
    zero_users = 0
    zero_examples = []
    texts = {"looked_up": 0, "encoded": 0, "store": None}
    for s in chunks.values():
        if "texts" in s:
            texts["looked_up"] += int(s["texts"]["distinct"])
            texts["encoded"] += int(s["texts"]["encoded"])
            texts["store"] = s["texts"].get("store")
        for r, c in s.get("rejected", {}).items():
            by_reason[r] = by_reason.get(r, 0) + int(c)
        for key, v in s["timings_s"].items():
            stage_t[key] = stage_t.get(key, 0.0) + float(v)
        zero_users += int(s.get("zero_weight_users", 0))
        zero_examples += s.get("zero_weight_examples", [])
    return {"by_reason": by_reason, "stage_t": stage_t, "zero_users": zero_users,
            "zero_examples": zero_examples, "texts": texts}


def _summary(chunks: dict, staged: dict, job: Job, timings, t_start, pending, n_before,
             workers, dask) -> dict:
    """The job's summary (without ``max_rejected``), from the staging record and chunks."""
    tot = _chunk_totals(chunks, staged)
    by_reason = tot["by_reason"]
    users = sum(int(s["users"]) for s in chunks.values())
    users_now = sum(int(chunks[str(b)]["users"]) for b in pending)
    timings_s = {**staged.get("timings_s", {}), **{k_: round(v, 3) for k_, v in timings.items()}}
    timings_s["chunk_stages_sum_s"] = {k_: round(v, 3) for k_, v in sorted(tot["stage_t"].items())}
    timings_s["wall_s"] = round(time.perf_counter() - t_start, 3)
    return {
        "events": {"rows": staged["rows"], "accepted": staged["accepted"],
                   "scored": sum(int(s["events"]) for s in chunks.values())
                   - by_reason.get(REASON_ZERO_WEIGHT, 0)},
        "rejected": {"total": int(sum(by_reason.values())), "by_reason": by_reason,
                     "examples": staged["rejected_examples"],
                     "zero_weight_users": tot["zero_users"],
                     "zero_weight_user_examples": tot["zero_examples"][:MAX_EXAMPLES],
                     "file": "rejected.parquet"},
        "users": users,
        "recommendations": sum(int(s["recommendations"]) for s in chunks.values()),
        "k": job.k,
        "chunks": {"total": job.n_buckets, "done_now": len(pending), "done_before": n_before,
                   "chunk_users": staged["chunk_users"]},
        "reference_time": job.reference_time,
        "catalogue": staged["catalogue"],
        "index": staged["index"],
        "dask": dask,
        "workers": workers,
        "texts": tot["texts"],
        "timings_s": timings_s,
        "users_per_s": (round(users_now / timings["chunks_wall_s"], 1)
                        if users_now and timings.get("chunks_wall_s") else None),
        "peak_rss_mib": round(_peak_rss_bytes() / 2**20, 1),
        "outputs": {"users": "users/part-*.parquet",
                    "recommendations": "recommendations/part-*.parquet",
                    "rejected": "rejected.parquet", "manifest": "manifest.json"},
    }
