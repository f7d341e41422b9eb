"""The count and staging passes: distinct users counted with a k-minimum-values sketch, then
every row validated, rejected with a reason or spilled to its user's bucket on disk.

Both passes run one task per input file (in this process or as Dask tasks);
:func:`stage` drives them from the job's process.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ._common import (COMPLETE_MARKER, MAX_EXAMPLES, is_int_index, staging_dir,
                      write_json_atomic)
from ._inputs import (R_CONTENT, R_TS_LATE, R_TS_RANGE, R_USER, R_VEC_LEN, R_VEC_NONFINITE,
                      REJECT_REASONS, id_array, id_kind, list_values, open_dataset, plain,
                      ts_range_reason, ts_to_seconds, weights)
from ._model import build_catalogue, build_index
from ._planning import DEFAULT_CHUNK_USERS, bytes_per_row, chunk_users_for_memory

logger = logging.getLogger(__package__)

#: Rows read per batch while counting and staging.
_READ_BATCH_ROWS = 131_072
#: Spill buffer of the staging pass, bytes (smaller when max_memory asks for less).
_STAGING_BUFFER_BYTES = 256 * 2**20
#: Distinct-user sketch size: exact counts up to this many users, ~1% error above.
_SKETCH_K = 16_384


def _hash_ids(values) -> np.ndarray:
    """Fixed seeded 64-bit hash of ids (pandas' SipHash with its fixed key): the same in
    every process and run, unlike Python's hash()."""
    return pd.util.hash_array(np.asarray(values), categorize=False)


def _iter_batches(dataset, columns, batch_rows=_READ_BATCH_ROWS):
    """Record batches of ``columns`` in file order, then row order (deterministic)."""
    for frag in dataset.get_fragments():
        yield from frag.to_batches(columns=columns, batch_size=batch_rows,
                                   use_threads=True)


def _first(reason: np.ndarray, mask: np.ndarray, code: int) -> None:
    """Give rows still without a reason (0) where ``mask`` holds the reason ``code``."""
    reason[(reason == 0) & mask] = code


def _blank(arr) -> np.ndarray:
    """Rows of a string column that are null, empty or only white space."""
    import pyarrow.compute as pc

    return pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(arr)), 0),
                        True).to_numpy(zero_copy_only=False)


@dataclass(frozen=True)
class _Input:
    """The events input as the file tasks of the count and staging passes need it."""

    files: tuple
    fmt: str
    string_cols: tuple
    cols: tuple  # ((standard name, source column), ...)

    def dataset(self, fi: int):
        return open_dataset([Path(self.files[fi])], self.fmt, self.string_cols)


# --------------------------------------------------------------------------- count pass
def _count_file(inp: _Input, fi: int) -> dict:
    """Rows of file ``fi`` and the k-minimum-values sketch of its user id hashes (the
    ``_SKETCH_K`` smallest distinct hashes), reading only the user id column."""
    user_col = dict(inp.cols)["user_id"]
    kept = np.zeros(0, np.uint64)
    rows = 0
    for batch in _iter_batches(inp.dataset(fi), [user_col]):
        uid = id_array(batch.column(0))
        vals = uid.drop_null().to_numpy(zero_copy_only=False)
        if len(vals):
            h = np.unique(_hash_ids(vals))
            kept = np.union1d(kept, h[:_SKETCH_K])[:_SKETCH_K]
        rows += batch.num_rows
    return {"rows": rows, "sketch": kept}


def _merge_sketches(sketches) -> np.ndarray:
    """The sketch of a union of files: the ``_SKETCH_K`` smallest distinct hashes of their
    sketches (order-independent, so tasks may finish in any order)."""
    kept = np.zeros(0, np.uint64)
    for sk in sketches:
        kept = np.union1d(kept, sk)[:_SKETCH_K]
    return kept


def _sketch_count(kept: np.ndarray) -> tuple[int, bool]:
    """(distinct users, exact?) from a sketch: exact below ``_SKETCH_K`` hashes, else the
    k-minimum-values estimate (the K-th smallest of n uniform hashes sits near K/n of the
    range; relative error about 1/sqrt(K) = 0.8%)."""
    if len(kept) < _SKETCH_K:
        return len(kept), True
    return int(round((_SKETCH_K - 1) / (float(kept[-1]) / 2.0**64))), False


# --------------------------------------------------------------------------- staging pass
class _Stager:
    """Staging of one input file: validate, reject with reasons, spill rows per bucket.

    Spills are named ``bNNNNN/fFFFFF-sSSSSSS.parquet`` (file, flush), so the stagers of
    different files (Dask tasks) never write the same file.
    """

    def __init__(self, st: Path, n_buckets: int, cols: dict, user_kind: str, dim: int,
                 catalogue_ids: pd.Index, now_s, buffer_bytes: int, file_index: int,
                 file_name: str, row0: int, ts_unit: str = "s"):
        import pyarrow as pa

        self.st, self.B, self.cols, self.dim = st, n_buckets, cols, dim
        self.ts_unit = ts_unit
        self.reasons = {**REJECT_REASONS, R_TS_RANGE: ts_range_reason(ts_unit)}
        self.cat_index = catalogue_ids
        self.now_s = now_s
        self.buffer_bytes = buffer_bytes
        self.file_index, self.file_name, self.row0 = file_index, file_name, row0
        self.buffers: list[list] = [[] for _ in range(n_buckets)]
        self.buffered = 0
        self.rejected: list = []
        self.rejected_rows = 0
        self.flushes = 0
        self.rows = 0
        self.accepted = 0
        self.by_reason: dict[str, int] = {}
        self.examples: list = []
        self.max_ts = -np.inf
        self.max_item_ts = -np.inf  # latest event with a catalogue item (fit's behaviour_time_)
        self.bucket_rows = np.zeros(n_buckets, np.int64)
        self.schema = self._spill_schema(cols, user_kind)
        self.reject_schema = pa.schema([("row", pa.int64()), ("file", pa.string()),
                                        ("file_row", pa.int64()), ("reason", pa.string()),
                                        ("user_id", pa.string())])

    @staticmethod
    def _spill_schema(cols: dict, user_kind: str):
        """Schema of the staged rows: the standard columns present, ``row`` (the input row)
        and ``item_row`` (the catalogue row of the event's item, -1: none)."""
        import pyarrow as pa

        fields = [("user_id", pa.string() if user_kind == "str" else pa.int64()),
                  ("row", pa.int64()), ("ts", pa.float64())]
        if "weight" in cols:
            fields.append(("weight", pa.float64()))
        if "item_id" in cols:
            fields.append(("item_row", pa.int64()))
        if "text" in cols:
            fields.append(("text", pa.string()))
        if "vector" in cols:
            fields.append(("vector", pa.list_(pa.float32())))
        return pa.schema(fields)

    def add(self, batch) -> None:
        """Validate one record batch: its bad rows are recorded with their first reason, its
        good rows buffered per bucket (spilled when the buffer is full)."""
        import pyarrow as pa

        n = batch.num_rows
        file_row0 = self.rows
        rows = np.arange(self.row0 + file_row0, self.row0 + file_row0 + n, dtype=np.int64)
        self.rows += n
        reason = np.zeros(n, np.int8)
        uid = self._user_ids(batch, reason)
        ts, w = self._times_and_weights(batch, reason)
        has_content = np.zeros(n, bool)
        vec_col = self._vectors(batch, reason, has_content)
        text = self._texts(batch, has_content)
        item_row = self._item_rows(batch, has_content)
        _first(reason, ~has_content, R_CONTENT)

        bad = reason != 0
        if bad.any():
            self._reject(rows[bad], reason[bad], uid.filter(pa.array(bad)),
                         file_row0 + np.flatnonzero(bad))
        good = ~bad
        if good.any():
            self._keep(good, uid, rows, ts, w, item_row, text, vec_col)

    def _user_ids(self, batch, reason: np.ndarray):
        """The user id column (string or int64); missing or blank ids get their reason."""
        import pyarrow as pa

        uid = id_array(batch.column(self.cols["user_id"]))
        u_null = uid.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_string(uid.type):
            u_null |= _blank(uid)
        _first(reason, u_null, R_USER)
        return uid

    def _times_and_weights(self, batch, reason: np.ndarray):
        """(seconds, weights or None without a weight column); bad ones get their reason."""
        ts, ts_reason = ts_to_seconds(batch.column(self.cols["ts"]), self.ts_unit)
        reason[reason == 0] = ts_reason[reason == 0]
        if self.now_s is not None:
            _first(reason, np.nan_to_num(ts, nan=-np.inf) > self.now_s, R_TS_LATE)
        w = None
        if "weight" in self.cols:
            w, w_reason = weights(batch.column(self.cols["weight"]))
            reason[reason == 0] = w_reason[reason == 0]
        return ts, w

    def _vectors(self, batch, reason: np.ndarray, has_content: np.ndarray):
        """The vector column as list<float32> with bad vectors nulled (None without one);
        wrong lengths and non-finite values get their reason, good vectors are content."""
        if "vector" not in self.cols:
            return None
        import pyarrow as pa
        import pyarrow.compute as pc

        n = batch.num_rows
        arr = plain(batch.column(self.cols["vector"]))
        flat, lengths, vnull = list_values(arr)
        _first(reason, ~vnull & (lengths != self.dim), R_VEC_LEN)
        good_len = ~vnull & (lengths == self.dim)
        starts = np.concatenate([[0], np.cumsum(lengths)])[:-1]
        if good_len.any():
            idx = (starts[good_len][:, None] + np.arange(self.dim)).ravel()
            finite = np.isfinite(flat[idx]).reshape(-1, self.dim).all(axis=1)
            nonfinite = np.zeros(n, bool)
            nonfinite[np.flatnonzero(good_len)[~finite]] = True
            _first(reason, nonfinite, R_VEC_NONFINITE)
            good_len[nonfinite] = False
        has_content |= good_len
        return pc.if_else(pa.array(good_len), pc.cast(arr, pa.list_(pa.float32())),
                          pa.nulls(n, pa.list_(pa.float32())))

    def _texts(self, batch, has_content: np.ndarray):
        """The text column with blank texts nulled (None without one); texts are content."""
        if "text" not in self.cols:
            return None
        import pyarrow as pa
        import pyarrow.compute as pc

        text = plain(batch.column(self.cols["text"]))
        if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)
                or pa.types.is_null(text.type)):
            raise ValueError(f"events column {self.cols['text']!r} has type {text.type}; "
                             "expected strings")
        text = pc.cast(text, pa.string())
        blank = _blank(text)
        has_content |= ~blank
        return pc.if_else(pa.array(blank), pa.nulls(batch.num_rows, pa.string()), text)

    def _item_rows(self, batch, has_content: np.ndarray):
        """Catalogue row of each event's item_id (-1: none or unknown; None without an
        item_id column); catalogue items are content."""
        if "item_id" not in self.cols:
            return None
        import pyarrow as pa
        import pyarrow.compute as pc

        iid = id_array(batch.column(self.cols["item_id"]))
        i_null = iid.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_string(iid.type):  # "" or "  " names no item, as for user_id
            i_null |= _blank(iid)
        vals = pc.fill_null(iid, "" if pa.types.is_string(iid.type) else 0).to_numpy(
            zero_copy_only=False)
        item_row = self.cat_index.get_indexer(pd.Index(vals)).astype(np.int64)
        item_row[i_null] = -1
        has_content |= item_row >= 0
        return item_row

    def _keep(self, good, uid, rows, ts, w, item_row, text, vec_col) -> None:
        """Buffer the ``good`` rows in their users' buckets; spill when the buffer is full."""
        import pyarrow as pa

        self.accepted += int(good.sum())
        self.max_ts = max(self.max_ts, float(ts[good].max()))
        if item_row is not None and (good & (item_row >= 0)).any():
            self.max_item_ts = max(self.max_item_ts, float(ts[good & (item_row >= 0)].max()))
        keep = pa.array(good)
        uid_g = uid.filter(keep)
        hashes = _hash_ids(uid_g.to_numpy(zero_copy_only=False))
        bucket = (hashes % np.uint64(self.B)).astype(np.int64)
        cols = {"user_id": uid_g, "row": pa.array(rows[good]), "ts": pa.array(ts[good])}
        if w is not None:
            cols["weight"] = pa.array(w[good])
        if item_row is not None:
            cols["item_row"] = pa.array(item_row[good])
        if text is not None:
            cols["text"] = text.filter(keep)
        if vec_col is not None:
            cols["vector"] = vec_col.filter(keep)
        table = pa.table(cols, schema=self.schema)
        order = np.argsort(bucket, kind="stable")
        table = table.take(pa.array(order))
        bounds = np.searchsorted(bucket[order], np.arange(self.B + 1))
        for b in np.flatnonzero(np.diff(bounds)):
            self.buffers[b].append(table.slice(bounds[b], bounds[b + 1] - bounds[b]))
        self.bucket_rows += np.diff(bounds)
        self.buffered += table.nbytes
        if self.buffered >= self.buffer_bytes:
            self.flush()

    def _reject(self, rows, codes, uid, file_rows) -> None:
        """Record rejected rows: counts by reason, the first examples, a table to spill."""
        import pyarrow as pa

        reasons = np.array([self.reasons[int(x)] for x in codes], dtype=object)
        for r, cnt in zip(*np.unique(reasons.astype(str), return_counts=True)):
            self.by_reason[str(r)] = self.by_reason.get(str(r), 0) + int(cnt)
        uid_s = pa.array(uid.to_pandas().astype("string"), pa.string()) if len(uid) else \
            pa.array([], pa.string())
        fname = self.file_name
        t = pa.table({"row": pa.array(rows, pa.int64()),
                      "file": pa.array([fname] * len(rows), pa.string()),
                      "file_row": pa.array(np.asarray(file_rows, np.int64)),
                      "reason": pa.array(reasons.tolist(), pa.string()), "user_id": uid_s},
                     schema=self.reject_schema)
        for i in range(min(len(rows), MAX_EXAMPLES - len(self.examples))):
            self.examples.append({"row": int(rows[i]), "file": fname,
                                  "file_row": int(file_rows[i]), "reason": str(reasons[i]),
                                  "user_id": uid_s[i].as_py()})
        self.rejected.append(t)
        self.rejected_rows += len(rows)
        self.buffered += t.nbytes

    def flush(self) -> None:
        """Spill the buffered rows (one file per bucket) and rejected rows; empty the buffer."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        seq = self.flushes
        for b, parts in enumerate(self.buffers):
            if not parts:
                continue
            folder = self.st / f"b{b:05d}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.concat_tables(parts), folder / f"f{self.file_index:05d}-"
                           f"s{seq:06d}.parquet")
            self.buffers[b] = []
        if self.rejected:
            folder = self.st / "rejected"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.concat_tables(self.rejected),
                           folder / f"f{self.file_index:05d}-s{seq:06d}.parquet")
            self.rejected = []
        self.flushes += 1
        self.buffered = 0


@dataclass(frozen=True)
class _StageSpec:
    """What a staging task needs besides its file."""

    inp: _Input
    out: str
    n_buckets: int
    user_kind: str
    dim: int
    now_s: float | None
    buffer_bytes: int
    index_id: str
    ts_unit: str = "s"


_CATALOGUE_IDS: dict = {}


def _catalogue_ids(out: str, index_id: str) -> pd.Index:
    """The catalogue's item ids (saved with the index), once per process and job."""
    ids = _CATALOGUE_IDS.get((out, index_id))
    if ids is None:
        import pyarrow.parquet as pq

        table = pq.read_table(staging_dir(Path(out)) / "index" / "ids.parquet")
        ids = pd.Index(table.column("id").to_pandas()).rename(None)
        _CATALOGUE_IDS.clear()
        _CATALOGUE_IDS[(out, index_id)] = ids
    return ids


def _stage_file(spec: _StageSpec, fi: int, row0: int) -> dict:
    """Stage file ``fi`` (its rows numbered from ``row0``); returns its counts."""
    inp = spec.inp
    stager = _Stager(staging_dir(Path(spec.out)), spec.n_buckets, dict(inp.cols),
                     spec.user_kind, spec.dim, _catalogue_ids(spec.out, spec.index_id),
                     spec.now_s, spec.buffer_bytes, fi, inp.files[fi], row0, spec.ts_unit)
    src_cols = list(dict.fromkeys(c for _, c in inp.cols))
    for frag in inp.dataset(fi).get_fragments():
        for batch in frag.to_batches(columns=src_cols, batch_size=_READ_BATCH_ROWS):
            stager.add(batch)
    stager.flush()
    return {"file": fi, "rows": stager.rows, "accepted": stager.accepted,
            "rejected": stager.rejected_rows, "by_reason": stager.by_reason,
            "examples": stager.examples, "max_ts": float(stager.max_ts),
            "max_item_ts": float(stager.max_item_ts),
            "bucket_rows_max": int(stager.bucket_rows.max()), "pid": os.getpid()}


# --------------------------------------------------------------------------- driver
def stage(runner, out: Path, man_path: Path, manifest: dict, model: dict, events, *, items,
          index_kind: str, mem, chunk_users, k: int, now_s, ts_unit: str, show) -> dict:
    """Catalogue and index (here), then the count and staging passes as one task per input
    file (``runner``: in this process, or Dask tasks); returns the staging record, written
    to the staging folder's marker and (its counts) to the manifest.

    ``events``: the job's :class:`~interestflow.batch._inputs.Events`."""
    st = staging_dir(out)
    _reset(st, manifest, man_path)
    timings = {}
    t = time.perf_counter()
    cat = build_catalogue(model, items, events.vector_col, events.column_map, show)
    built_index = build_index(index_kind, cat["vectors"], cat["ids"], st / "index")
    timings["catalogue_s"] = time.perf_counter() - t
    _check_item_ids(events, cat["ids"])
    inp = _Input(files=tuple(str(f) for f in events.files), fmt=events.fmt,
                 string_cols=tuple(events.string_cols), cols=tuple(events.cols.items()))
    t = time.perf_counter()
    file_rows, counted = _count_users(runner, inp, show)
    timings["count_users_s"] = time.perf_counter() - t
    per_chunk, buffer_bytes, n_buckets = _plan_chunks(
        events, counted, mem, chunk_users, n_items=len(cat["ids"]), model=model, k=k,
        built_index=built_index)
    t = time.perf_counter()
    spec = _StageSpec(inp=inp, out=str(out), n_buckets=n_buckets, user_kind=events.user_kind,
                      dim=model["dim"], now_s=now_s, buffer_bytes=buffer_bytes,
                      index_id=built_index["save_id"], ts_unit=ts_unit)
    totals = _stage_files(runner, spec, file_rows, counted["rows"], show)
    timings["staging_s"] = time.perf_counter() - t
    if totals["accepted"] == 0:
        raise ValueError(f"events: none of the {counted['rows']} rows is usable; rejected by "
                         f"reason: {totals['by_reason']}; first: {totals['examples'][:3]}")
    staged = {"n_buckets": n_buckets, "chunk_users": per_chunk,
              "users_estimate": counted["users"], "users_exact": counted["exact"],
              "rows": counted["rows"], "accepted": totals["accepted"],
              "rejected": totals["rejected"], "rejected_by_reason": totals["by_reason"],
              "rejected_examples": totals["examples"],
              "reference_time": float(totals["max_ts"]) if now_s is None else float(now_s),
              "behaviour_time": (float(totals["max_item_ts"])
                                 if np.isfinite(totals["max_item_ts"]) else None),
              "user_kind": events.user_kind, "columns": events.cols,
              "catalogue": {"items": int(len(cat["ids"])), "source": cat["source"]},
              "index": built_index, "bucket_rows_max": totals["bucket_rows_max"],
              "timings_s": dict(timings)}
    _record(staged, st, manifest, man_path)
    return staged


def _reset(st: Path, manifest: dict, man_path: Path) -> None:
    """Start staging afresh: a cut-off staging pass is redone from scratch (its spills are
    partial), and so are the chunks recorded against it."""
    shutil.rmtree(st, ignore_errors=True)
    manifest["chunks"] = {}
    manifest["staging"] = None
    write_json_atomic(man_path, manifest)
    st.mkdir(parents=True)


def _record(staged: dict, st: Path, manifest: dict, man_path: Path) -> None:
    """The marker of a finished staging pass (written last), then its counts in the
    manifest."""
    write_json_atomic(st / COMPLETE_MARKER, staged)
    manifest["staging"] = {k_: staged[k_] for k_ in ("n_buckets", "chunk_users", "rows",
                                                    "accepted", "rejected",
                                                    "reference_time")}
    write_json_atomic(man_path, manifest)


def _check_item_ids(events, catalogue_ids: pd.Index) -> None:
    """The events' item ids must have the catalogue's id type (strings or integers)."""
    cols = events.cols
    if "item_id" not in cols:
        return
    ev_kind = id_kind(events.dataset.schema.field(cols["item_id"]).type)
    cat_kind = "int" if is_int_index(catalogue_ids) else "str"
    if ev_kind in ("str", "int") and ev_kind != cat_kind:
        raise ValueError(f"events column {cols['item_id']!r} holds {ev_kind} ids but the "
                         f"catalogue's item ids are {cat_kind}s "
                         f"(first: {catalogue_ids[0]!r}); store both with one type")
    if ev_kind not in ("str", "int", "null"):
        raise ValueError(f"events column {cols['item_id']!r} has type "
                         f"{events.dataset.schema.field(cols['item_id']).type}; expected "
                         "string or integer ids")


def _count_users(runner, inp: _Input, show) -> tuple[np.ndarray, dict]:
    """The count pass: (rows per file, {"rows", "users", "exact"}), one task per file."""
    from tqdm.auto import tqdm

    n_files = len(inp.files)
    file_rows = np.zeros(n_files, np.int64)
    sketch = [np.zeros(0, np.uint64)]

    def counted_file(args, r):
        file_rows[args[1]] = r["rows"]
        sketch[0] = _merge_sketches([sketch[0], r["sketch"]])
        bar.update(1)

    with tqdm(total=n_files, unit="files", desc="count users", disable=not show) as bar:
        runner.map(_count_file, [(inp, fi) for fi in range(n_files)], counted_file)
    users, exact = _sketch_count(sketch[0])
    return file_rows, {"rows": int(file_rows.sum()), "users": users, "exact": exact}


def _plan_chunks(events, counted: dict, mem, chunk_users, *, n_items: int, model: dict,
                 k: int, built_index: dict) -> tuple[int, int, int]:
    """(users per chunk, staging buffer bytes, number of chunks) from ``chunk_users``, or
    from ``max_memory`` (``mem``) and the counted rows and users."""
    n_users = max(1, counted["users"])
    if mem is not None:
        bpr = bytes_per_row(events.dataset, events.files, events.fmt, set(events.cols.values()),
                            counted["rows"])
        per_chunk = chunk_users_for_memory(
            mem, n_items=n_items, dim=model["dim"], n_seg=len(model["centroids"]), k=int(k),
            rows_per_user=counted["rows"] / n_users, bytes_per_row=bpr,
            has_text="text" in events.cols, has_vector="vector" in events.cols,
            index=built_index, two_stage=model if model["two_stage"] else None)
        buffer_bytes = int(min(_STAGING_BUFFER_BYTES, max(16 * 2**20, mem // 4)))
    else:
        per_chunk = int(chunk_users) if chunk_users is not None else DEFAULT_CHUNK_USERS
        buffer_bytes = _STAGING_BUFFER_BYTES
    n_buckets = max(1, math.ceil(n_users / per_chunk))
    logger.info("score: %s%d users (%d rows in %d file(s)) -> %d chunk(s) of about %d users",
                "" if counted["exact"] else "about ", n_users, counted["rows"],
                len(events.files), n_buckets, per_chunk)
    return per_chunk, buffer_bytes, n_buckets


def _stage_files(runner, spec: _StageSpec, file_rows: np.ndarray, total_rows: int,
                 show) -> dict:
    """The staging pass, one task per file; its counts summed over the files."""
    from tqdm.auto import tqdm

    row0 = np.concatenate([[0], np.cumsum(file_rows)[:-1]])
    results = []
    with tqdm(total=total_rows, unit="rows", desc="stage events", disable=not show) as bar:
        runner.map(_stage_file, [(spec, fi, int(row0[fi])) for fi in range(len(file_rows))],
                   lambda args, r: (results.append(r), bar.update(r["rows"])))
    by_reason: dict = {}
    for r in results:
        for reason, c in r["by_reason"].items():
            by_reason[reason] = by_reason.get(reason, 0) + c
    return {"accepted": sum(r["accepted"] for r in results),
            "rejected": sum(r["rejected"] for r in results), "by_reason": by_reason,
            "examples": sorted((e for r in results for e in r["examples"]),
                               key=lambda e: e["row"])[:MAX_EXAMPLES],
            "max_ts": max(r["max_ts"] for r in results),
            "max_item_ts": max(r["max_item_ts"] for r in results),
            "bucket_rows_max": max(r["bucket_rows_max"] for r in results)}
