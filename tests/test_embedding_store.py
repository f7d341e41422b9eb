"""interestflow.embedding_store and Encoder(cache=...): hits and misses counted, identity
refused, concurrent readers beside a writer, LRU bound (issue 15, first part)."""

import threading

import numpy as np
import pytest

from interestflow.embedding_store import EmbeddingStore, encoder_identity

IDENT = {"files_sha256": "abc", "pooling": "mean", "max_length": 256, "dtype": "float32",
         "normalize": True, "dim": 4}


def _vec(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)


def test_put_get_counts_hits_and_misses_and_persists(tmp_path):
    path = tmp_path / "s" / "e.sqlite"
    v = _vec(3)
    with EmbeddingStore(path, IDENT) as st:
        st.put(["a", "b", "c"], v)
        got, found = st.get(["c", "x", "a", "a"])
        assert found.tolist() == [True, False, True, True]
        np.testing.assert_array_equal(got[[0, 2, 3]], v[[2, 0, 0]])
        assert (got[1] == 0).all() and (st.hits, st.misses) == (3, 1)
    with EmbeddingStore(path, IDENT) as again:           # reopened: still there
        assert len(again) == 3
        np.testing.assert_array_equal(again.get(["b"])[0], v[[1]])


def test_another_encoder_is_refused(tmp_path):
    path = tmp_path / "e.sqlite"
    EmbeddingStore(path, IDENT).close()
    with pytest.raises(ValueError, match="another encoder"):
        EmbeddingStore(path, {**IDENT, "max_length": 128})
    with pytest.raises(ValueError, match="vectors must have shape"):
        with EmbeddingStore(tmp_path / "x.sqlite", IDENT) as st:
            st.put(["a"], np.zeros((1, 3), np.float32))


def test_least_recently_used_rows_are_evicted(tmp_path):
    with EmbeddingStore(tmp_path / "e.sqlite", IDENT, max_rows=3) as st:
        st.put(["a", "b", "c"], _vec(3))
        st.get(["a"])                                     # a is used again
        st.put(["d"], _vec(1, 1))
        assert len(st) == 3
        assert st.get(["a", "b", "c", "d"])[1].tolist() == [True, False, True, True]


def test_readers_beside_a_writer(tmp_path):
    path = tmp_path / "e.sqlite"
    base = _vec(50)
    with EmbeddingStore(path, IDENT) as st:
        st.put([f"t{i}" for i in range(50)], base)
    errors, seen = [], []

    def read():
        try:
            with EmbeddingStore(path, IDENT) as r:
                for _ in range(20):
                    got, found = r.get([f"t{i}" for i in range(50)])
                    assert found.all()
                    np.testing.assert_array_equal(got, base)
                seen.append(r.hits)
        except Exception as exc:  # reported below
            errors.append(exc)

    def write():
        try:
            with EmbeddingStore(path, IDENT) as w:
                for j in range(20):
                    w.put([f"new{j}-{i}" for i in range(10)], _vec(10, j))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(3)] + [threading.Thread(target=write)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and seen == [1000, 1000, 1000]
    with EmbeddingStore(path, IDENT) as st:
        assert len(st) == 50 + 200


def test_encoder_cache_encodes_each_text_once(tmp_path, cached_encoder):
    from interestflow import Encoder

    enc = Encoder(cache=tmp_path / "emb.sqlite")
    texts = ["a guitar tuner", "new strings", "a guitar tuner", "pedal board"]
    first = enc.encode(texts)
    assert enc.cache_encoded_ == 3                        # distinct misses only
    np.testing.assert_allclose(first, cached_encoder.encode(texts), atol=1e-5)
    again = Encoder(cache=tmp_path / "emb.sqlite")
    second = again.encode(["pedal board", "a brand new text"])
    assert again.cache_encoded_ == 1 and again._store().hits == 1
    np.testing.assert_array_equal(second[0], first[3])
    ident = encoder_identity(again)
    assert ident["max_length"] == 256 and len(ident["files_sha256"]) == 64
    other = Encoder(cache=tmp_path / "emb.sqlite", max_length=128)
    with pytest.raises(ValueError, match="another encoder"):
        other.encode(["x"])


def test_encoder_writes_groups_and_skips_what_another_process_wrote(tmp_path, monkeypatch):
    import interestflow.encoder as enc_mod
    from interestflow import Encoder

    monkeypatch.setattr(enc_mod, "STORE_GROUP", {"cpu": 3})
    monkeypatch.setattr(enc_mod.os, "getpid", lambda: 1)   # start at the second group
    texts = [f"text number {i}" for i in range(8)]        # groups [0-2] [3-5] [6-7]
    path = tmp_path / "emb.sqlite"
    enc = Encoder(cache=path)
    calls = []
    real = Encoder._encode_all

    def encode_all(self, group, *a, **k):
        calls.append(list(group))
        if len(calls) == 1:  # meanwhile another process writes texts 6 and 0
            with EmbeddingStore(path, encoder_identity(enc)) as other:
                other.put([texts[6], texts[0]], np.full((2, enc.dim), 0.5, np.float32))
        return real(self, group, *a, **k)

    monkeypatch.setattr(Encoder, "_encode_all", encode_all)
    out = enc.encode(texts + texts[:2])
    assert calls == [texts[3:6], [texts[7]], texts[1:3]]  # its own start, then around
    assert enc.cache_encoded_ == 6
    assert (out[6] == 0.5).all() and (out[0] == 0.5).all() and (out[8] == 0.5).all()
    np.testing.assert_array_equal(out[9], out[1])
    with EmbeddingStore(path, encoder_identity(enc)) as st:
        assert len(st) == 8
    # each group's vectors are its own encode call's: equal to encoding the group alone
    np.testing.assert_allclose(out[3:6], Encoder().encode(texts[3:6]), atol=1e-6)


def test_engine_embedding_cache_is_saved_and_shared(tmp_path, cached_encoder):
    import pandas as pd

    from interestflow import Encoder, InterestEngine

    store = tmp_path / "emb.sqlite"
    ev = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2"],
                       "text": ["guitar strings", "a tuner", "espresso beans", "a grinder"],
                       "ts": [1.7e9, 1.7e9 + 60, 1.7e9 + 120, 1.7e9 + 180],
                       "item_id": ["i1", "i2", "i3", "i4"]})
    eng = InterestEngine(embedding_cache=store, ranker=None, n_segments=2,
                         show_progress=False).fit(ev)
    assert eng.encoder.cache == store and eng.encoder.cache_encoded_ == 4
    assert eng.get_params()["embedding_cache"] == str(store)
    eng.save(tmp_path / "model")
    back = InterestEngine.load(tmp_path / "model")
    back.partial_fit(ev.assign(ts=ev["ts"] + 3600))      # the same texts: all found
    assert back.encoder.cache_encoded_ == 0 and back.encoder._store().hits == 4
    with pytest.raises(ValueError, match="does not use it"):
        InterestEngine(encoder=cached_encoder, embedding_cache=store).fit(ev)
    assert InterestEngine(encoder=Encoder(cache=store), embedding_cache=store,
                          ranker=None, n_segments=2, show_progress=False).fit(ev)
