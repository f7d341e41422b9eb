"""Batch scoring (interestflow.batch.score, `interestflow score`): values against the engine,
rejected rows, input formats, job fingerprint, and resume after a real SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from interestflow import InterestEngine
from interestflow.batch import parse_memory, score
from interestflow.recommend import RecommendConfig
from interestflow.synthetic import make_demo_events

from _fakes import DIM, HashEncoder


def fit_tiny_model(folder: Path):
    """A content-only InterestEngine (no ranker) fitted on the 40-user demo with 16-d hash
    vectors, saved to folder (the two-stage engine has its own tests below)."""
    data = make_demo_events(40)
    eng = InterestEngine(encoder=HashEncoder(), n_segments=3, ranker=None,
                         recommend_config=RecommendConfig(weights={"content": 1.0}))
    eng.fit(data.events, data.items)
    eng.save(folder)
    return eng, data


def scoring_events(eng, n_users: int, seed: int = 0) -> pd.DataFrame:
    """Events of new users: item-only events (vector from the catalogue) and events with a
    vector column; ts as datetimes, some weights."""
    rng = np.random.default_rng(seed)
    n_ev = rng.integers(3, 9, size=n_users)
    user = np.repeat([f"n{i:05d}" for i in range(n_users)], n_ev)
    n = len(user)
    items = eng.item_ids_.to_numpy()
    item = items[rng.integers(0, len(items), size=n)]
    ts = pd.Timestamp("2024-03-01", tz="UTC") + pd.to_timedelta(rng.uniform(0, 90, n), "D")
    with_vec = rng.random(n) < 0.4
    vecs = HashEncoder().encode([f"event {i}" for i in range(n)])
    keep_item = ~with_vec | (rng.random(n) < 0.5)  # vector events: half also name an item
    df = pd.DataFrame({"user_id": user, "ts": ts,
                       "item_id": pd.Series(item, dtype=object).where(keep_item),
                       "weight": rng.choice([1.0, 2.0, 0.5], size=n),
                       "vec": [v if m else None for v, m in zip(vecs, with_vec)]})
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # users interleaved


def read_out(out: Path):
    users = pq.read_table(out / "users").to_pandas().sort_values("user_id").reset_index(drop=True)
    recs = pq.read_table(out / "recommendations").to_pandas().sort_values(
        ["user_id", "rank"]).reset_index(drop=True)
    return users, recs


def assert_same_output(a: Path, b: Path):
    ua, ra = read_out(a)
    ub, rb = read_out(b)
    assert ua["user_id"].is_unique
    pd.testing.assert_frame_equal(ua.drop(columns="vector"), ub.drop(columns="vector"))
    np.testing.assert_array_equal(np.stack(ua["vector"]), np.stack(ub["vector"]))
    pd.testing.assert_frame_equal(ra, rb)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    eng, data = fit_tiny_model(root / "model")
    ev = scoring_events(eng, 300)
    ev.to_parquet(root / "events.parquet")
    return {"root": root, "model": root / "model", "eng": eng, "data": data, "events": ev}


def test_user_vectors_segments_and_recommendations_equal_the_engine(tiny, tmp_path):
    eng, data = tiny["eng"], tiny["data"]
    ev = data.events.copy()
    ev["vec"] = list(HashEncoder().encode(ev["text"].tolist()))
    ev.drop(columns="text").to_parquet(tmp_path / "ev.parquet")
    s = score(tmp_path / "ev.parquet", tiny["model"], tmp_path / "out", k=5, chunk_users=7,
              vector_col="vec", show_progress=False)
    assert s["users"] == 40 and s["chunks"]["total"] == 6 and s["rejected"]["total"] == 0
    assert s["events"] == {"rows": len(ev), "accepted": len(ev), "scored": len(ev)}
    users, recs = read_out(tmp_path / "out")
    rows = eng.user_rows(users["user_id"])
    # the fitted users' own events at the model's reference time rebuild its user vectors
    np.testing.assert_allclose(np.stack(users["vector"]), eng.user_vectors_[rows], atol=1e-6)
    assert (users["segment"].to_numpy() == eng.segments_[rows]).all()
    soft = users[[f"segment_{j}" for j in range(eng.n_segments_)]].to_numpy()
    np.testing.assert_allclose(soft, eng.segment_soft_[rows], atol=1e-5)
    # content-only engine: same items in the same order, seen items left out
    expect = eng.recommend(list(users["user_id"]), k=5)
    assert len(recs) == len(expect) == 200
    m = recs.merge(expect, on=["user_id", "rank"], suffixes=("", "_engine"))
    assert (m["item_id"] == m["item_id_engine"]).all()
    seen = set(zip(ev["user_id"], ev["item_id"]))
    assert not any((u, i) in seen for u, i in zip(recs["user_id"], recs["item_id"]))
    cos = (np.stack(users.set_index("user_id").loc[recs["user_id"], "vector"])
           * eng.item_vectors_[eng.item_ids_.get_indexer(recs["item_id"])]).sum(1)
    np.testing.assert_allclose(recs["score"], cos, atol=1e-5)
    assert (recs.groupby("user_id")["score"].diff().dropna() <= 1e-7).all()
    assert not (tmp_path / "out" / "_staging").exists()
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["complete"] and sorted(map(int, man["chunks"])) == list(range(6))
    assert sum(c["users"] for c in man["chunks"].values()) == 40


def test_chunking_does_not_change_results_and_items_table_matches_model(tiny, tmp_path):
    ev = tiny["events"]
    a = score(tiny["root"] / "events.parquet", tiny["model"], tmp_path / "a", k=4,
              chunk_users=1000, vector_col="vec", show_progress=False)
    # the same catalogue given as an items table with a vector column
    eng = tiny["eng"]
    pd.DataFrame({"item_id": eng.item_ids_, "vector": list(eng.item_vectors_)}).to_parquet(
        tmp_path / "items.parquet")
    b = score(tiny["root"] / "events.parquet", tiny["model"], tmp_path / "b", k=4,
              chunk_users=23, vector_col="vec", items=tmp_path / "items.parquet",
              show_progress=False)
    assert a["chunks"]["total"] == 1 and b["chunks"]["total"] == 14
    assert a["users"] == b["users"] == ev["user_id"].nunique() == 300
    assert "column 'vector'" in b["catalogue"]["source"]
    ua, ra = read_out(tmp_path / "a")
    ub, rb = read_out(tmp_path / "b")
    pd.testing.assert_frame_equal(ua.drop(columns="vector"), ub.drop(columns="vector"))
    np.testing.assert_allclose(np.stack(ua["vector"]), np.stack(ub["vector"]), atol=1e-6)
    assert (ra["item_id"] == rb["item_id"]).all()
    # decayed mean by hand for one user: weights * 2^(-(ref - ts)/half_life)
    u = ua["user_id"].iloc[7]
    e = ev[ev["user_id"] == u]
    ref = ev["ts"].max().timestamp()
    age_days = (ref - e["ts"].map(pd.Timestamp.timestamp)) / 86400
    wt = e["weight"].to_numpy() * 2.0 ** (-age_days.to_numpy() / eng.half_life_days)
    rows = eng.item_ids_.get_indexer(e["item_id"].fillna("?"))
    vec = np.stack([v if v is not None else eng.item_vectors_[r]
                    for v, r in zip(e["vec"], rows)])
    mean = (wt[:, None] * vec).sum(0)
    np.testing.assert_allclose(ua["vector"].iloc[7], mean / np.linalg.norm(mean), atol=1e-5)
    assert a["reference_time"] == pytest.approx(ref)


def test_bad_rows_are_rejected_with_reasons_and_counted(tiny, tmp_path):
    eng = tiny["eng"]
    good_item = eng.item_ids_[0]
    v = list(np.ones(DIM, np.float32))
    rows = [
        ("a", "2024-01-01T00:00:00Z", good_item, 1.0, None),            # ok
        ("a", "2024-01-02T00:00:00Z", None, 1.0, v),                     # ok (vector)
        (None, "2024-01-01T00:00:00Z", good_item, 1.0, None),           # missing user_id
        ("b", "not a time", good_item, 1.0, None),                       # unparseable ts
        ("b", None, good_item, 1.0, None),                               # missing ts
        ("b", "2024-01-01T00:00:00Z", "no-such-item", 1.0, None),        # no content
        ("c", "2024-01-01T00:00:00Z", good_item, -1.0, None),            # negative weight
        ("c", "2024-01-01T00:00:00Z", None, 1.0, v[:3]),                 # wrong length
        ("c", "2024-01-01T00:00:00Z", None, 1.0, [float("nan")] * DIM),  # non-finite
        ("d", "2024-01-01T00:00:00Z", good_item, 0.0, None),             # zero-weight user
        ("e", "2024-01-03T00:00:00Z", good_item, 1.0, None),             # ok
        ("e", "2025-01-03T00:00:00Z", good_item, 1.0, None),             # after now
    ]
    df = pd.DataFrame(rows, columns=["user_id", "ts", "item_id", "weight", "vec"])
    df.to_parquet(tmp_path / "ev.parquet")
    s = score(tmp_path / "ev.parquet", tiny["model"], tmp_path / "out", k=3, vector_col="vec",
              now="2024-06-01T00:00:00Z", show_progress=False)
    assert s["rejected"]["by_reason"] == {
        "missing user_id": 1, "unparseable ts": 1, "missing ts": 1,
        "no text, no vector and no item_id of a catalogue item": 1, "negative weight": 1,
        "vector of the wrong length": 1, "non-finite vector value": 1, "ts after now": 1,
        "every event of the user has weight 0": 1}
    assert s["rejected"]["total"] == 9 and s["rejected"]["zero_weight_users"] == 1
    assert s["rejected"]["zero_weight_user_examples"] == ["d"]
    assert s["events"] == {"rows": 12, "accepted": 4, "scored": 3}
    assert s["users"] == 2
    assert s["reference_time"] == pd.Timestamp("2024-06-01", tz="UTC").timestamp()
    rej = pq.read_table(tmp_path / "out" / "rejected.parquet").to_pandas()
    assert rej["file_row"].tolist() == [2, 3, 4, 5, 6, 7, 8, 11]
    assert rej.loc[rej["file_row"] == 3, "reason"].item() == "unparseable ts"
    assert rej.loc[rej["file_row"] == 3, "user_id"].item() == "b"
    assert s["rejected"]["examples"][0] == {
        "row": 2, "file": str((tmp_path / "ev.parquet").resolve()), "file_row": 2,
        "reason": "missing user_id", "user_id": None}
    users, recs = read_out(tmp_path / "out")
    assert users["user_id"].tolist() == ["a", "e"]
    assert not ((recs["user_id"] == "e") & (recs["item_id"] == good_item)).any()


def test_parquet_folder_glob_csv_and_jsonl_give_the_same_output(tiny, tmp_path):
    ev = tiny["events"].drop(columns="vec")  # item-only events (text formats hold no lists)
    ev = ev[ev["item_id"].notna()].reset_index(drop=True)
    ref = score_to(tmp_path, tiny["model"], "ref", ev, "parquet")
    (tmp_path / "parts").mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(ev)), 3)):
        ev.iloc[part].to_parquet(tmp_path / "parts" / f"p{i}.parquet")
    (tmp_path / "parts" / "_SUCCESS").write_text("")  # marker files are skipped
    for name, events in (("folder", tmp_path / "parts"),
                         ("glob", str(tmp_path / "parts" / "p*.parquet"))):
        s = score(events, tiny["model"], tmp_path / name, k=4, chunk_users=60, show_progress=False)
        assert s["users"] == ref["users"]
        assert_same_output(tmp_path / "ref", tmp_path / name)
    for fmt in ("csv", "jsonl"):
        score_to(tmp_path, tiny["model"], fmt, ev, fmt)
        assert_same_output(tmp_path / "ref", tmp_path / fmt)


def score_to(tmp_path, model, name, ev, fmt):
    src = tmp_path / f"{name}.{fmt}"
    out = ev.rename(columns={"user_id": "uid", "ts": "time"})
    if fmt == "parquet":
        out.to_parquet(src)
    elif fmt == "csv":
        out.assign(time=out["time"].map(lambda t: t.isoformat())).to_csv(src, index=False)
    else:
        out.assign(time=out["time"].map(lambda t: t.isoformat())).to_json(
            src, orient="records", lines=True)
    return score(src, model, tmp_path / name, k=4, chunk_users=60, show_progress=False,
                 column_map={"user_id": "uid", "ts": "time"})


def test_a_chunk_without_any_text_scores_from_its_vectors(cached_encoder, tmp_path):
    """Events with a text and a vector column where some chunks hold no text at all (this
    crashed: the chunk had no encoded texts to index)."""
    data = make_demo_events(24, random_state=5)
    eng = InterestEngine(encoder=cached_encoder, n_segments=2, ranker=None).fit(
        data.events, data.items)
    eng.save(tmp_path / "model")
    ev = data.events.copy()
    ev["vec"] = list(cached_encoder.encode(ev["text"].tolist()))
    first = ev["user_id"].isin(sorted(ev["user_id"].unique())[:3])
    ev["text"] = ev["text"].where(first, None)           # only 3 users' events have text
    ev["vec"] = ev["vec"].where(~first, None)            # ... and those have no vector
    ev.to_parquet(tmp_path / "ev.parquet")
    s = score(tmp_path / "ev.parquet", tmp_path / "model", tmp_path / "out", k=3,
              chunk_users=4, vector_col="vec", show_progress=False)
    assert s["users"] == 24 and s["rejected"]["total"] == 0 and s["chunks"]["total"] >= 4
    assert s["texts"]["encoded"] == ev.loc[first, "text"].nunique()
    users, _ = read_out(tmp_path / "out")
    rows = eng.user_rows(users["user_id"])
    # the texts are encoded again by the model's encoder (other batches: bf16 rounding)
    np.testing.assert_allclose(np.stack(users["vector"]), eng.user_vectors_[rows], atol=3e-3)


def test_cli_score_and_a_changed_job_refuses_to_resume(tiny, tmp_path, capsys):
    from interestflow.cli import main

    args = ["score", "--events", str(tiny["root"] / "events.parquet"), "--model-dir",
            str(tiny["model"]), "--out", str(tmp_path / "o"), "--vector-col", "vec",
            "--chunk-users", "100", "--k", "3", "--no-progress"]
    assert main(args) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["users"] == 300 and s["recommendations"] == 900 and s["chunks"]["total"] == 3
    # the same command again: already complete, nothing redone
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["already_complete"] is True
    # a changed parameter or changed input: refused with what changed
    assert main(args[:-2] + ["5", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "different scoring job" in err and "params.k: 3 -> 5" in err
    src = tiny["root"] / "events.parquet"
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert main(args) == 2
        assert "events.files" in capsys.readouterr().err
    finally:
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    assert main(args[:6] + [str(tmp_path / "other")] + args[7:]) == 2
    assert "not an interestflow score folder" in capsys.readouterr().err


def test_parameter_errors_name_the_parameter(tiny, tmp_path):
    ev = tiny["root"] / "events.parquet"
    with pytest.raises(ValueError, match="chunk_users or max_memory, not both"):
        score(ev, tiny["model"], tmp_path / "o", chunk_users=5, max_memory="1GB")
    with pytest.raises(ValueError, match="k=0 must be >= 1"):
        score(ev, tiny["model"], tmp_path / "o", k=0)
    with pytest.raises(ValueError, match="index='hnsw' is not valid"):
        score(ev, tiny["model"], tmp_path / "o", index="hnsw")
    with pytest.raises(ValueError, match="vector_col='nope' is not a column"):
        score(ev, tiny["model"], tmp_path / "o", vector_col="nope")
    with pytest.raises(ValueError, match="did you pass it reversed"):
        score(ev, tiny["model"], tmp_path / "o", column_map={"uid": "user_id"})
    with pytest.raises(ValueError, match="does not hold a saved InterestEngine"):
        score(ev, tmp_path, tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="no file matches"):
        score(str(tmp_path / "*.parquet"), tiny["model"], tmp_path / "o")
    with pytest.raises(ValueError, match="max_memory=.* is too small"):
        score(ev, tiny["model"], tmp_path / "o", max_memory="10MB")
    assert parse_memory("2GB") == 2 * 10**9 and parse_memory("1.5GiB") == 3 * 2**29
    with pytest.raises(ValueError, match="not a size"):
        parse_memory("lots")


def test_max_memory_sets_the_chunk_size(tiny, tmp_path):
    s = score(tiny["root"] / "events.parquet", tiny["model"], tmp_path / "o", k=3,
              vector_col="vec", max_memory="4GiB", show_progress=False)
    assert s["chunks"]["total"] == 1 and s["chunks"]["chunk_users"] > 300


_CHILD = textwrap.dedent("""
    import sys, time
    import interestflow.batch._staging as batch, interestflow.io as io  # the staging pass's names
    # make the run slow and fine-grained so that the parent's SIGKILL lands mid-run
    batch._READ_BATCH_ROWS = 200
    batch._STAGING_BUFFER_BYTES = 1
    flush = batch._Stager.flush
    def slow_flush(self):
        flush(self)
        time.sleep(0.05)
    batch._Stager.flush = slow_flush
    write = io.write_parquet
    def slow_write(df, path):
        out = write(df, path)
        time.sleep(0.05)
        return out
    io.write_parquet = slow_write
    from interestflow.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _run_until(cmd, out: Path, condition, timeout=60.0):
    """Start cmd, SIGKILL it as soon as condition(out) holds; returns the return code."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    try:
        while proc.poll() is None and time.time() - t0 < timeout:
            if condition(out):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, proc.stderr.read().decode()


def _manifest(out: Path):
    try:
        return json.loads((out / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def test_resume_after_sigkill_gives_the_uninterrupted_output(tiny, tmp_path, capsys):
    args = ["score", "--events", str(tiny["root"] / "events.parquet"), "--model-dir",
            str(tiny["model"]), "--out", str(tmp_path / "killed"), "--vector-col", "vec",
            "--chunk-users", "30", "--k", "4", "--no-progress"]
    cmd = [sys.executable, "-c", _CHILD, *args]
    out = tmp_path / "killed"

    def staging_started(o):
        st = o / "_staging"
        return any(st.glob("b*/*.parquet")) and not (st / "_COMPLETE.json").exists()

    rc, err = _run_until(cmd, out, staging_started)
    assert rc == -signal.SIGKILL, err
    assert not (out / "_staging" / "_COMPLETE.json").exists()
    assert _manifest(out)["chunks"] == {}

    def some_chunks_done(o):
        m = _manifest(o)
        return m is not None and len(m["chunks"]) >= 1

    rc, err = _run_until(cmd, out, some_chunks_done)
    assert rc == -signal.SIGKILL, err
    m = _manifest(out)
    total = m["staging"]["n_buckets"]
    assert 1 <= len(m["chunks"]) < total and not m["complete"]

    # the same command, run to the end (in this process: the CLI's own entry point)
    from interestflow.cli import main

    assert main(args) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["chunks"]["done_before"] >= 1
    assert s["chunks"]["done_before"] + s["chunks"]["done_now"] == total
    assert not list(out.rglob("*.tmp")) and not (out / "_staging").exists()

    ref = score(tiny["root"] / "events.parquet", tiny["model"], tmp_path / "ref",
                vector_col="vec", chunk_users=30, k=4, show_progress=False)
    assert s["users"] == ref["users"] == 300
    assert sorted(p.name for p in (out / "users").iterdir()) == \
        [f"part-{b:05d}.parquet" for b in range(total)]
    assert_same_output(out, tmp_path / "ref")


def test_text_events_are_encoded_with_the_models_encoder(cached_encoder, tmp_path):
    data = make_demo_events(8, random_state=3)
    eng = InterestEngine(encoder=cached_encoder, n_segments=2).fit(data.events, data.items)
    eng.save(tmp_path / "model")
    data.events.to_csv(tmp_path / "ev.csv", index=False)
    s = score(tmp_path / "ev.csv", tmp_path / "model", tmp_path / "out", k=3, chunk_users=4,
              show_progress=False)
    assert s["users"] == 8 and s["rejected"]["total"] == 0
    users, _ = read_out(tmp_path / "out")
    V = np.stack(users["vector"])
    E = eng.user_vectors_[eng.user_rows(users["user_id"])]
    # the same default encoder rebuilt from the saved model (texts batched differently)
    assert (V * E).sum(1).min() > 0.999
    assert (users["segment"].to_numpy() == eng.segments_[eng.user_rows(users["user_id"])]).all()


def test_a_job_failing_before_staging_completes_leaves_nothing_behind(tiny, tmp_path):
    pd.DataFrame({"user_id": ["a", "b"], "ts": ["never", "nope"],
                  "item_id": [tiny["eng"].item_ids_[0]] * 2}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="none of the 2 rows is usable.*unparseable ts"):
        score(tmp_path / "bad.parquet", tiny["model"], tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()
    # the corrected job (other input, other k) then runs in the same out
    s = score(tiny["root"] / "events.parquet", tiny["model"], tmp_path / "out", k=2,
              vector_col="vec", show_progress=False)
    assert s["users"] == 300 and s["recommendations"] == 600


def test_ivf_index_kind_is_used_and_its_scores_are_exact_cosines(tiny, tmp_path):
    pytest.importorskip("faiss", reason="index='ivf' needs interestflow[faiss]")
    s = score(tiny["root"] / "events.parquet", tiny["model"], tmp_path / "ivf", index="ivf",
              k=5, chunk_users=100, vector_col="vec", show_progress=False)
    assert s["index"]["requested"] == "ivf" and s["index"]["kind"] == "ivf"
    assert 1 <= s["index"]["nprobe"] <= s["index"]["nlist"] < 178
    users, recs = read_out(tmp_path / "ivf")
    assert len(recs) == 1500  # random 16-d vectors: recall is low, but every list is full
    eng = tiny["eng"]
    U = np.stack(users.set_index("user_id").loc[recs["user_id"], "vector"])
    cos = (U * eng.item_vectors_[eng.item_ids_.get_indexer(recs["item_id"])]).sum(1)
    np.testing.assert_allclose(recs["score"], cos, atol=1e-5)
    assert (recs.groupby("user_id")["score"].diff().dropna() <= 0).all()


def test_memory_estimate_counts_the_bf16_ivf_copy(monkeypatch):
    """max_memory -> chunk_users: a bf16 IVF scan's copy of the lists is part of the fixed
    cost, so the chunk gets fewer users by exactly that many bytes' worth."""
    from interestflow import batch
    from interestflow.batch import _planning
    from interestflow.retrieval import SCAN_PAD

    monkeypatch.setattr(_planning, "_rss_bytes", lambda: 300 * 2**20)
    args = dict(n_items=1_000_000, dim=384, n_seg=32, k=10, rows_per_user=20.0,
                bytes_per_row=64.0, has_text=False, has_vector=False)
    mem = 6 * 2**30
    ivf32 = {"kind": "ivf", "nlist": 4096, "candidates": "float32"}
    ivf16 = dict(ivf32, candidates="bfloat16")
    base = batch._chunk_users_for_memory(mem, **args)
    assert batch._chunk_users_for_memory(mem, **args, index=ivf32) == base
    fewer = base - batch._chunk_users_for_memory(mem, **args, index=ivf16)
    extra = 2 * 384 * (1_000_000 + 4096 * SCAN_PAD)
    per_user = 20 * (3 * 64 + 24) + 3 * 384 * 4 + 3 * 32 * 4 + (10 + 20) * 48
    assert abs(fewer - extra / per_user) <= 1


# ------------------------------------------------------------------ two stages (ranker)
@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    """InterestEngine(ranker="lightgbm") on 300 demo users (4,347 events, 154 items): every
    candidate source proposes items (content, item-kNN, EASE, popularity, both segment
    sources), saved; its training events with the encoded texts as a vector column."""
    root = tmp_path_factory.mktemp("ranked")
    data = make_demo_events(300, random_state=3)
    eng = InterestEngine(encoder=HashEncoder(), n_segments=3, device="cpu",
                         ranker="lightgbm").fit(data.events, data.items)
    assert eng.ranker_ is not None and eng.candidates_.ease_b_ is not None
    eng.save(root / "model")
    ev = data.events.copy()
    ev["vec"] = list(HashEncoder().encode(ev["text"].tolist()))
    ev = ev.drop(columns="text").sample(frac=1.0, random_state=0)  # users interleaved
    ev.to_parquet(root / "events.parquet")
    return {"root": root, "eng": eng, "events": ev}


def _assert_equals_recommend(eng, out: Path, k: int):
    users, recs = read_out(out)
    expect = eng.recommend(list(eng.user_ids_), k=k)
    assert users["user_id"].tolist() == sorted(eng.user_ids_)
    expect = expect.sort_values(["user_id", "rank"]).reset_index(drop=True)
    assert len(recs) == len(expect) == k * len(eng.user_ids_)
    # every user: the same items in the same order, scores to float32 precision
    pd.testing.assert_frame_equal(recs[["user_id", "item_id", "rank"]],
                                  expect[["user_id", "item_id", "rank"]], check_dtype=False)
    np.testing.assert_allclose(recs["score"].to_numpy(), expect["score"].to_numpy(),
                               rtol=1e-6, atol=1e-6)
    return recs


def test_two_stage_lists_equal_recommend_for_every_user(ranked, tmp_path):
    eng, root = ranked["eng"], ranked["root"]
    s = score(root / "events.parquet", root / "model", tmp_path / "out", k=10,
              chunk_users=64, vector_col="vec", show_progress=False)
    assert s["users"] == 300 and s["chunks"]["total"] == 5 and s["rejected"]["total"] == 0
    recs = _assert_equals_recommend(eng, tmp_path / "out", 10)
    assert s["timings_s"]["chunk_stages_sum_s"]["two_stage_s"] > 0
    # the ranker's lists differ from the content-cosine lists (the stages are not a no-op)
    users, _ = read_out(tmp_path / "out")
    U = np.stack(users["vector"])
    cos = U @ eng.item_vectors_.T
    seen = eng.recommender_
    rows = eng.user_rows(users["user_id"])
    differ = 0
    for j, r in enumerate(rows):
        c = cos[j].copy()
        c[seen.seen_indices_[seen.seen_indptr_[r]:seen.seen_indptr_[r + 1]]] = -np.inf
        top = eng.item_ids_[np.argsort(-c, kind="stable")[:10]]
        got = recs["item_id"].to_numpy()[10 * j:10 * j + 10]
        differ += not np.array_equal(top, got)
    assert differ > 150


def test_two_stage_chunking_and_resume_give_the_same_output(ranked, tmp_path, capsys):
    """Fewer, larger chunks give the same parts' union; a run SIGKILLed after its first
    chunk resumes to the uninterrupted output."""
    root = ranked["root"]
    score(root / "events.parquet", root / "model", tmp_path / "one", k=5, chunk_users=1000,
          vector_col="vec", show_progress=False)
    _assert_equals_recommend(ranked["eng"], tmp_path / "one", 5)
    args = ["score", "--events", str(root / "events.parquet"), "--model-dir",
            str(root / "model"), "--out", str(tmp_path / "killed"), "--vector-col", "vec",
            "--chunk-users", "40", "--k", "5", "--no-progress"]
    out = tmp_path / "killed"

    def some_chunks_done(o):
        m = _manifest(o)
        return m is not None and len(m["chunks"]) >= 1

    rc, err = _run_until([sys.executable, "-c", _CHILD, *args], out, some_chunks_done)
    assert rc == -signal.SIGKILL, err
    m = _manifest(out)
    assert 1 <= len(m["chunks"]) < m["staging"]["n_buckets"]
    from interestflow.cli import main

    assert main(args) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["chunks"]["done_before"] >= 1
    _assert_equals_recommend(ranked["eng"], out, 5)


def test_two_stage_refuses_items_table(ranked, tmp_path):
    root = ranked["root"]
    items = pd.DataFrame({"item_id": ranked["eng"].item_ids_[:5],
                          "vector": list(ranked["eng"].item_vectors_[:5])})
    items.to_parquet(tmp_path / "items.parquet")
    with pytest.raises(ValueError, match="items= cannot be used .* ranker"):
        score(root / "events.parquet", root / "model", tmp_path / "out", items=tmp_path /
              "items.parquet", vector_col="vec", show_progress=False)


def test_memory_estimate_counts_the_two_stages(ranked, monkeypatch):
    """A ranker model's fixed cost (loaded arrays, the generator's index, the candidates and
    EASE blocks of the num_threads (2) sub-chunks in flight) is charged: fewer users per
    chunk by that many bytes."""
    from interestflow import batch
    from interestflow.batch import _planning
    from interestflow.candidates import CandidateConfig
    from interestflow.ranker import RANKER_FEATURES

    monkeypatch.setattr(_planning, "_rss_bytes", lambda: 300 * 2**20)
    model = batch._read_model(ranked["root"] / "model")
    assert model["two_stage"]
    args = dict(n_items=model["n_items"], dim=DIM, n_seg=3, k=10, rows_per_user=15.0,
                bytes_per_row=64.0, has_text=False, has_vector=True)
    mem = 2 * 2**30
    two = batch._chunk_users_for_memory(mem, **args, two_stage=model)
    cfg = CandidateConfig()
    assert model["ranker_config"]["num_threads"] == 2
    n_items, n_feat = model["n_items"], len(RANKER_FEATURES)
    cand = 2 * cfg.chunk_users * 450 * (2 * n_feat * 4 + 48)
    ease = 2 * 2 * cfg.chunk_users * n_items * 4
    segment = 2 * 2 * cfg.chunk_users * min(n_items, 3 * 2 * 50) * 8
    extra = model["arrays_bytes"] + 2 * n_items * DIM * 4 + cand + ease + segment
    assert batch._two_stage_bytes(model, DIM, 3) == extra
    fixed = 300 * 2**20 + 2 * n_items * DIM * 4 + batch._RUNTIME_MARGIN_BYTES \
        + 2 * batch._GATHER_ROWS * DIM * 4
    per_user = 15 * (3 * 64 + 24 + 2 * DIM * 4) + 3 * DIM * 4 + 3 * 3 * 4 + (10 + 15) * 48
    per_user += 15 * 24 + 10 * 16 + 3 * 4 + 100 * 12
    assert two == int((mem / 1.15 - fixed - extra) // per_user)
    assert two < batch._chunk_users_for_memory(mem, **args)


def test_chunks_of_one_job_encode_each_distinct_text_once(cached_encoder, tmp_path,
                                                          monkeypatch, capsys):
    from interestflow.cli import main
    from interestflow.encoder import Encoder

    data = make_demo_events(24, random_state=5)
    eng = InterestEngine(encoder=cached_encoder, n_segments=2, ranker=None).fit(
        data.events, data.items)
    eng.save(tmp_path / "model")
    ev = data.events.copy()
    pool = sorted(ev["text"].unique())[:30]             # users of every chunk share texts
    ev["text"] = [pool[i % 30] for i in range(len(ev))]
    ev.to_csv(tmp_path / "ev.csv", index=False)
    encoded = []
    real = Encoder._encode_all
    monkeypatch.setattr(Encoder, "_encode_all",
                        lambda self, texts, *a, **k: encoded.extend(texts) or real(self, texts,
                                                                                    *a, **k))
    s = score(tmp_path / "ev.csv", tmp_path / "model", tmp_path / "out", k=3, chunk_users=4,
              show_progress=False)
    assert s["users"] == 24
    per_chunk = sum(g["text"].nunique() for _, g in ev.groupby(
        ev["user_id"].map({u: i // 4 for i, u in enumerate(sorted(ev["user_id"].unique()))})))
    assert len(encoded) == len(set(encoded)) == ev["text"].nunique() < per_chunk
    assert not (tmp_path / "out" / "_staging").exists()     # the job's store went with it
    assert s["texts"]["encoded"] == 30 and s["texts"]["store"] == "job"
    assert s["texts"]["looked_up"] > 30                      # chunks did share texts

    # no store (--no-embedding-cache, embedding_cache=False): each chunk encodes its own
    # distinct texts, same output
    encoded.clear()
    assert main(["score", "--events", str(tmp_path / "ev.csv"), "--model-dir",
                 str(tmp_path / "model"), "--out", str(tmp_path / "o0"), "--k", "3",
                 "--chunk-users", "4", "--no-progress", "--no-embedding-cache"]) == 0
    s0 = json.loads(capsys.readouterr().out)
    assert s0["texts"] == {"looked_up": s["texts"]["looked_up"],
                           "encoded": s["texts"]["looked_up"], "store": "none"}
    assert len(encoded) == s["texts"]["looked_up"]
    recs = [pd.read_parquet(tmp_path / o / "recommendations").sort_values(["user_id", "rank"],
                                                                          ignore_index=True)
            for o in ("out", "o0")]
    # same items; scores equal to bf16 rounding (a text's vector depends slightly on the
    # batch it was encoded in, and the two jobs batch differently)
    pd.testing.assert_frame_equal(recs[0], recs[1], check_exact=False, atol=1e-3)
    assert (recs[0]["item_id"] == recs[1]["item_id"]).all()

    # a persistent store given for the job: a second job (other out) encodes nothing
    store = tmp_path / "emb.sqlite"
    encoded.clear()
    score(tmp_path / "ev.csv", tmp_path / "model", tmp_path / "o2", k=3, chunk_users=4,
          show_progress=False, embedding_cache=store)
    assert len(encoded) == 30 and store.is_file()
    encoded.clear()
    s3 = score(tmp_path / "ev.csv", tmp_path / "model", tmp_path / "o3", k=3, chunk_users=4,
               show_progress=False, embedding_cache=store)
    assert encoded == [] and s3["texts"]["encoded"] == 0
    assert s3["texts"]["store"] == "persistent"
    with pytest.raises(TypeError, match="embedding_cache must be a path, None or False"):
        score(tmp_path / "ev.csv", tmp_path / "model", tmp_path / "o4", embedding_cache=True)
