import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"<!-- this block is run by tests/test_readme.py -->\n```python\n(.*?)```",
                      README.read_text(), flags=re.S)


def test_readme_example_runs(tmp_path, monkeypatch):
    blocks = _python_blocks()
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(blocks[0], str(README), "exec"), scope)
    exec(compile(blocks[1], str(README), "exec"), scope)  # the cold-start example
    out = scope["engine"].recommend_from_events(scope["new"], k=3)
    assert out["user_id"].tolist() == ["dee"] * 3 and out["rank"].tolist() == [1, 2, 3]
    recs = scope["recs"]
    assert len(recs) == 6 and set(recs["user_id"]) == {"ana", "ben"}
    # the example's runner and coffee drinker end up in different segments
    eng = scope["engine"]
    seg = dict(zip(eng.user_ids_, eng.segments_))
    assert seg["ana"] != seg["ben"]
    assert (tmp_path / "my-engine" / "meta.json").is_file()


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    cmds = re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)
    assert "interestflow demo" in cmds[0] and "pip install" in cmds[0]
    assert "pytest" in cmds[1] and ".[test,faiss,distributed]" in cmds[1]
    ci = (README.parent / ".ci" / "run").read_text()
    assert cmds[0] in ci and cmds[1] in ci


def test_readme_tracking_then_report_path(tmp_path, monkeypatch, cached_encoder):
    """The README's `tracker.to_run_dir("run/")`, then the `interestflow report` command its
    comment gives, on a tracking-only folder: the report draws the tracking tables."""
    import shlex

    from interestflow import InterestEngine
    from interestflow.cli import main
    from interestflow.synthetic import make_demo_events

    block = next(b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
                 if "tracker.to_run_dir" in b)
    lines = [line for line in block.splitlines() if line.startswith("tracker")]
    assert lines[0].startswith("tracker = engine.track(events") and \
        lines[-1].startswith('tracker.to_run_dir("run/")')
    command = re.search(r"# then: (interestflow report .*)$", lines[-1]).group(1)
    monkeypatch.chdir(tmp_path)
    scope = {"engine": InterestEngine(encoder=cached_encoder, n_segments=3),
             "events": make_demo_events(n_users=20, n_topics=3, random_state=3).events}
    exec(compile("\n".join(lines), str(README), "exec"), scope)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["tracking"]
    argv = shlex.split(command)
    assert argv[0] == "interestflow" and main(argv[1:]) == 0
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    tracker = scope["tracker"]
    n_snap = tracker.snapshots_["snapshot"].nunique()
    assert n_snap > 1 and "tracking-not-run" not in html
    assert f"{n_snap} snapshot(s) from" in html
    assert f"{tracker.assignments_['user_id'].nunique():,} users tracked" in html
    assert f"{len(tracker.lifecycle_):,} lifecycle events" in html
    for sid in ("map", "sizes", "transitions", "lifecycle", "keywords"):
        assert f'<section id="{sid}">' in html
