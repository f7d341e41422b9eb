"""A persistent store of text embeddings: each text is encoded once, ever (issue 15).

Keyed by (encoder identity, text): the identity (:func:`encoder_identity`: a hash of the
model's weight and tokenizer files, pooling, max length, dtype, normalisation) is written
into the store when it is created, and a store is never used with another encoder (opening
it with a different identity raises). Texts are keyed by a 16-byte BLAKE2b hash of their
UTF-8 bytes; vectors are float32 rows.

Format: one SQLite database file. Why SQLite: it ships with Python (no dependency), is one
file that is safe under concurrent readers and one writer (write-ahead log; a writer waits
up to ``timeout`` seconds for another), looks up thousands of keys per statement through
its primary-key B-tree, and keeps its pages when the process dies mid-write. Tables:
``vectors`` (``key`` 16 bytes, ``vec`` 4 x dim bytes) and ``lru`` (``key``, ``used``: a
counter, for eviction). ``used`` lives apart from the vectors because a hit rewrites it: in
the vector table each bump rewrote a 64 KiB page holding ~40 vectors (measured: 88% of a hit's
time at 200,000 rows); the ``lru`` table packs thousands of counters per page.

Bounded: ``max_rows`` (default 10,000,000, ~15.6 GB at dim 384); when a write would exceed
it, the least recently used rows (by the ``used`` counter, bumped on every hit and write) are
deleted first (LRU eviction).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import numpy as np

__all__ = ["EmbeddingStore", "encoder_identity"]

FORMAT = "interestflow.embedding_store/2"
_CHUNK = 500  # keys per SQL statement (SQLite's default limit is 32,766 variables)


def _hash_files(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def encoder_identity(encoder, *, normalize: bool = True) -> dict:
    """What makes two encoders give the same vectors: the SHA-256 of the model directory's
    weight, config and tokenizer files, pooling, max length, dtype and normalisation.
    Cached on the encoder (hashing ~90 MB of weights takes ~0.2 s)."""
    cached = getattr(encoder, "_identity_files", None)
    if cached is None:
        root = Path(encoder.model_path)
        files = [p for p in root.rglob("*") if p.is_file() and p.suffix in
                 (".safetensors", ".bin", ".json", ".txt", ".model")]
        if not files:
            raise ValueError(f"no model files under {root} to identify the encoder by")
        cached = _hash_files(files)
        try:
            encoder._identity_files = cached
        except AttributeError:  # an object without a __dict__: hash again next time
            pass
    return {"files_sha256": cached, "pooling": str(encoder.pooling),
            "max_length": int(encoder.max_length), "dtype": str(encoder.dtype),
            "normalize": bool(normalize), "dim": int(encoder.dim)}


def _keys(texts) -> list[bytes]:
    return [hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts]


class EmbeddingStore:
    """Text -> vector store for one encoder identity, in one SQLite file.

    Parameters
    ----------
    path : str or os.PathLike
        The database file (created with its parent directory when missing).
    identity : dict
        :func:`encoder_identity` of the encoder whose vectors the store holds.
    max_rows : int, default 10_000_000
        Most vectors kept; least recently used ones are evicted beyond it.
    timeout : float, default 60.0
        Seconds a writer waits for another writer's lock.

    Attributes
    ----------
    hits, misses : int
        Texts found / not found by :meth:`get` since opening.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> ident = {"files_sha256": "x", "dim": 2}
    >>> with EmbeddingStore(os.path.join(tempfile.mkdtemp(), "e.sqlite"), ident) as st:
    ...     st.put(["a"], np.array([[1.0, 0.0]], np.float32))
    ...     vec, found = st.get(["a", "b"])
    >>> found.tolist(), st.hits, st.misses
    ([True, False], 1, 1)
    """

    def __init__(self, path, identity: dict, *, max_rows: int = 10_000_000,
                 timeout: float = 60.0):
        if not isinstance(identity, dict) or "dim" not in identity:
            raise ValueError("identity must be a dict with at least 'dim' "
                             "(see encoder_identity)")
        if isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer)) \
                or max_rows < 1:
            raise ValueError(f"max_rows={max_rows!r} must be an int >= 1")
        self.path = Path(os.fspath(path)).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.identity = dict(identity)
        self.dim = int(identity["dim"])
        self.max_rows = int(max_rows)
        self.hits = self.misses = 0
        self._db = sqlite3.connect(self.path, timeout=float(timeout), isolation_level=None,
                                   check_same_thread=False)
        # 64 KiB pages hold a 1.5 KB vector row inside the B-tree (4 KiB pages spill every
        # row to overflow pages: ~3x the bytes); only takes effect on a new file
        self._db.execute("PRAGMA page_size=65536")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")
            rows = dict(self._db.execute("SELECT k, v FROM meta").fetchall())
            want = json.dumps(self.identity, sort_keys=True)
            if not rows:
                self._db.execute("CREATE TABLE vectors (key BLOB PRIMARY KEY, "
                                 "vec BLOB NOT NULL) WITHOUT ROWID")
                self._db.execute("CREATE TABLE lru (key BLOB PRIMARY KEY, "
                                 "used INTEGER NOT NULL) WITHOUT ROWID")
                self._db.execute("CREATE INDEX lru_used ON lru(used)")
                self._db.executemany("INSERT INTO meta VALUES (?, ?)",
                                     [("format", FORMAT), ("identity", want)])
            elif rows.get("format") != FORMAT:
                raise ValueError(f"{self.path} is not an interestflow embedding store "
                                 f"(format {rows.get('format')!r}, expected {FORMAT!r})")
            elif rows.get("identity") != want:
                raise ValueError(
                    f"{self.path} holds vectors of another encoder: stored identity "
                    f"{rows.get('identity')}, this encoder {want}; use another path (a store "
                    "is never mixed across encoders)")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            self._db.close()
            raise

    # ------------------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._db is not None:
            self._db.close()
            self._db = None

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM lru").fetchone()[0])

    def _clock(self) -> int:
        row = self._db.execute("SELECT MAX(used) FROM lru").fetchone()
        return int(row[0] or 0) + 1

    def get(self, texts) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors (n, dim) float32, found (n,) bool)``; rows not found are zero."""
        texts = list(texts)
        keys = _keys(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        found = np.zeros(len(texts), bool)
        pos: dict[bytes, list[int]] = {}
        for i, k in enumerate(keys):
            pos.setdefault(k, []).append(i)
        uniq = list(pos)
        for s in range(0, len(uniq), _CHUNK):
            part = uniq[s:s + _CHUNK]
            q = "SELECT key, vec FROM vectors WHERE key IN (%s)" % ",".join("?" * len(part))
            for k, v in self._db.execute(q, part):
                vec = np.frombuffer(v, np.float32)
                if vec.shape[0] != self.dim:
                    raise ValueError(f"{self.path}: a stored vector has {vec.shape[0]} values, "
                                     f"expected {self.dim}; the file is damaged")
                for i in pos[k]:
                    out[i] = vec
                    found[i] = True
        self.hits += int(found.sum())
        self.misses += int((~found).sum())
        if found.any():
            self._touch([k for k, ok in zip(keys, found) if ok])
        return out, found

    def _touch(self, keys):
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # another writer holds the lock: skip the LRU bump
            return
        clock = self._clock()
        self._db.executemany("UPDATE lru SET used = ? WHERE key = ?",
                             [(clock, k) for k in sorted(set(keys))])
        self._db.execute("COMMIT")

    def put(self, texts, vectors) -> None:
        """Store ``vectors`` (n, dim) for ``texts``; existing keys are overwritten."""
        texts = list(texts)
        vec = np.ascontiguousarray(vectors, dtype=np.float32)
        if vec.ndim != 2 or vec.shape != (len(texts), self.dim):
            raise ValueError(f"vectors must have shape ({len(texts)}, {self.dim}), got "
                             f"{vec.shape}")
        if not np.isfinite(vec).all():
            i = int(np.argmax(~np.isfinite(vec).all(axis=1)))
            raise ValueError(f"vectors row {i} holds NaN or inf; nothing was stored")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            clock = self._clock()
            rows = sorted({k: i for i, k in enumerate(_keys(texts))}.items())
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                                 [(k, vec[i].tobytes()) for k, i in rows])
            self._db.executemany("INSERT OR REPLACE INTO lru VALUES (?, ?)",
                                 [(k, clock) for k, _ in rows])
            extra = len(self) - self.max_rows
            if extra > 0:  # least recently used first
                old = self._db.execute("SELECT key FROM lru ORDER BY used, key LIMIT ?",
                                       (extra,)).fetchall()
                self._db.executemany("DELETE FROM vectors WHERE key = ?", old)
                self._db.executemany("DELETE FROM lru WHERE key = ?", old)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
