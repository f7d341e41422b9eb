"""Batch scoring on Dask (interestflow.distributed): a 2-worker LocalCluster gives the
single-process output, loads the model once per worker, and survives a worker killed by SIGKILL
mid-run."""

import os
import signal

import numpy as np
import pytest

from interestflow import batch
from interestflow.batch import _job
from interestflow.distributed import parse_dask

distributed = pytest.importorskip("distributed", reason="needs interestflow[distributed]")

from test_batch import assert_same_output, fit_tiny_model, scoring_events  # noqa: E402


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    eng, _ = fit_tiny_model(root / "model")
    ev = scoring_events(eng, 240, seed=1)
    (root / "events").mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(ev)), 3)):  # staged file-parallel
        ev.iloc[part].to_parquet(root / "events" / f"part-{i}.parquet")
    kw = dict(k=4, chunk_users=20, vector_col="vec", show_progress=False)
    ref = batch.score(root / "events", root / "model", root / "single", **kw)
    return {"root": root, "kw": kw, "ref": ref}


def test_parse_dask():
    assert parse_dask("local:3") == ("local", 3)
    assert parse_dask("local") == ("local", os.cpu_count())
    assert parse_dask("tcp://10.0.0.5:8786") == ("address", "tcp://10.0.0.5:8786")
    with pytest.raises(ValueError, match="'local', 'local:N'"):
        parse_dask("local:two")
    with pytest.raises(ValueError, match="must be >= 1"):
        parse_dask("local:0")


def test_worker_killed_mid_run_loses_and_duplicates_nothing(job, tmp_path, monkeypatch):
    """dask='local:2': a LocalCluster of two worker processes; the worker that finishes the
    first chunk is SIGKILLed; its nanny starts a new one and the job completes."""
    from interestflow import distributed as dist

    root = job["root"]
    connect = dist._connect
    seen = {}

    def connect_and_slow_down(spec):
        client, cluster = connect(spec)

        def slow_chunks():  # runs in each worker: a slower chunk, so the kill lands mid-run
            import time

            import interestflow.batch._chunk as b  # workers unpickle score_chunk from here
            real = b.score_chunk

            def slow(job, i):
                time.sleep(0.3)
                return real(job, i)
            b.score_chunk = slow

        client.run(slow_chunks)
        seen["pids"] = set(client.run(os.getpid).values())
        seen["cluster"] = type(cluster).__name__
        return client, cluster

    killed = {}
    record = _job._on_chunk_done

    def on_done(manifest, path, b, stats):
        record(manifest, path, b, stats)
        if not killed:  # the worker that just finished a chunk: SIGKILL it
            killed["pid"] = stats["pid"]
            killed["chunks_done"] = len(manifest["chunks"])
            os.kill(stats["pid"], signal.SIGKILL)

    monkeypatch.setattr(dist, "_connect", connect_and_slow_down)
    monkeypatch.setattr(_job, "_on_chunk_done", on_done)
    s = batch.score(root / "events", root / "model", tmp_path / "out", dask="local:2",
                    **job["kw"])
    assert seen["cluster"] == "LocalCluster" and len(seen["pids"]) == 2
    total = job["ref"]["chunks"]["total"]
    assert total == 12 and s["chunks"]["total"] == total and s["chunks"]["done_now"] == total
    assert s["dask"] == "local:2"
    assert killed["pid"] in seen["pids"] and killed["chunks_done"] < total
    workers = s["workers"]
    # the killed worker, the survivor and the nanny's replacement (a new pid) if it got work
    assert str(killed["pid"]) in workers and len(workers) >= 2
    assert sum(w["chunks"] for w in workers.values()) == total
    # model, catalogue and index loaded once per worker process, not once per task
    assert all(w["resource_loads"] == 1 for w in workers.values())
    assert s["users"] == job["ref"]["users"] == 240
    # nothing lost or duplicated: the same parts, users and rows as the single-process run
    assert sorted(p.name for p in (tmp_path / "out" / "users").iterdir()) == \
        [f"part-{b:05d}.parquet" for b in range(total)]
    assert_same_output(tmp_path / "out", root / "single")


def test_two_stage_on_dask_equals_recommend(tmp_path):
    """A ranker model on dask='local:2': each worker loads the candidate generator and the
    ranker once, and every user's list equals InterestEngine.recommend's."""
    from test_batch import _assert_equals_recommend
    from _fakes import HashEncoder

    from interestflow import InterestEngine
    from interestflow.synthetic import make_demo_events

    data = make_demo_events(120, random_state=4)
    eng = InterestEngine(encoder=HashEncoder(), n_segments=3, device="cpu",
                         ranker="lightgbm").fit(data.events, data.items)
    assert eng.ranker_ is not None
    eng.save(tmp_path / "model")
    ev = data.events.copy()
    ev["vec"] = list(HashEncoder().encode(ev["text"].tolist()))
    ev.drop(columns="text").to_parquet(tmp_path / "events.parquet")
    s = batch.score(tmp_path / "events.parquet", tmp_path / "model", tmp_path / "out", k=6,
                    chunk_users=30, vector_col="vec", dask="local:2", show_progress=False)
    assert s["users"] == 120 and s["chunks"]["total"] == 4
    assert all(w["resource_loads"] == 1 for w in s["workers"].values())
    _assert_equals_recommend(eng, tmp_path / "out", 6)
