import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"<!-- this block is run by tests/test_readme.py -->\n```python\n(.*?)```",
                      README.read_text(), flags=re.S)


def test_readme_example_runs(tmp_path, monkeypatch):
    blocks = _python_blocks()
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(blocks[0], str(README), "exec"), scope)
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
