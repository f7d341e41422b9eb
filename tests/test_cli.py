import io
import json
import re

import pandas as pd
import pyarrow.parquet as pq

from interestflow.cli import demo, main
from interestflow.synthetic import make_demo_events

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def test_demo_prints_segments_ari_and_recommendations(tmp_path):
    buf = io.StringIO()
    assert demo(n_users=120, random_state=1, show_progress=False, out=buf,
                out_dir=tmp_path / "d") == 0
    text = buf.getvalue()
    # segments over time on the planted scenario, written with a report
    prec, rec, ari_min = map(float, re.search(
        r"precision ([0-9.]+), recall ([0-9.]+); segment recovery ARI per snapshot: min "
        r"([0-9.]+)", text).groups())
    assert prec >= 0.9 and rec >= 0.9 and ari_min >= 0.9
    for name in ("users.parquet", "segments.parquet", "recommendations.parquet", "report.html",
                 "tracking/lifecycle.parquet", "tracking/assignments.parquet", "model/meta.json"):
        assert (tmp_path / "d" / name).is_file(), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dir gone
    assert "segments found:" in text
    ari = float(re.search(r"adjusted Rand index = ([0-9.]+)", text).group(1))
    assert ari > 0.8
    assert text.count("example recommendations") == 1
    assert len(re.findall(r"^\s+[1-5]\. i\d{4}", text, flags=re.M)) == 15


def test_run_writes_parquet_outputs_and_summary(tmp_path, capsys):
    data = make_demo_events(n_users=50, n_topics=3, random_state=2)
    ev = data.events.rename(columns={"user_id": "uid", "text": "review"})
    ev.to_csv(tmp_path / "events.csv", index=False)
    data.items.to_json(tmp_path / "items.jsonl", orient="records", lines=True)
    out = tmp_path / "out"
    rc = main(["run", "--events", str(tmp_path / "events.csv"), "--items",
               str(tmp_path / "items.jsonl"), "--out", str(out), "--k", "4",
               "--user-col", "uid", "--text-col", "review", "--no-progress"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["users"] == 50 and summary["events"] == len(ev)
    users = pq.read_table(out / "users.parquet").to_pandas()
    assert len(users) == 50 and len(users["vector"].iloc[0]) == 384
    recs = pq.read_table(out / "recommendations.parquet").to_pandas()
    assert recs.groupby("user_id").size().eq(4).all()
    segs = pq.read_table(out / "segments.parquet").to_pandas()
    assert segs["size"].sum() == 50
    assert (out / "model" / "meta.json").is_file()
    meta = json.loads((out / "model" / "meta.json").read_text())
    assert meta["params"]["ranker"] == "lightgbm"  # the default two-stage engine
    out2 = tmp_path / "out2"
    assert main(["run", "--events", str(tmp_path / "events.csv"), "--items",
                 str(tmp_path / "items.jsonl"), "--out", str(out2), "--k", "4",
                 "--user-col", "uid", "--text-col", "review", "--no-progress",
                 "--ranker", "none"]) == 0
    meta2 = json.loads((out2 / "model" / "meta.json").read_text())
    assert meta2["params"]["ranker"] is None and meta2["ranker"] is None
    assert not (out2 / "model" / "ranker.txt").exists()


def test_run_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    pd.DataFrame({"user_id": ["a", "b"], "text": ["fine", "  "], "ts": [1, 2]}).to_csv(
        tmp_path / "bad.csv", index=False)
    rc = main(["run", "--events", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "text" in err and "row 1" in err
    rc = main(["run", "--events", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "missing.csv" in capsys.readouterr().err


def test_run_matches_csv_string_ids_with_numeric_items_ids(tmp_path, capsys):
    ev = pd.DataFrame({"user_id": ["a", "a", "b", "b"], "item_id": [10, 11, 12, 13],
                       "text": ["guitar strings", "capo", "espresso beans", "milk frother"],
                       "ts": [T0 + 1, T0 + 2, T0 + 3, T0 + 4]})
    ev.to_csv(tmp_path / "ev.csv", index=False)
    pd.DataFrame({"item_id": [10, 11, 12, 13, 14], "text": ["strings", "capo", "beans",
                                                           "frother", "tuner"]}).to_json(
        tmp_path / "items.jsonl", orient="records", lines=True)
    out = tmp_path / "o"
    rc = main(["run", "--events", str(tmp_path / "ev.csv"), "--items",
               str(tmp_path / "items.jsonl"), "--out", str(out), "--k", "2",
               "--n-segments", "2", "--no-progress", "--ranker", "none"])
    assert rc == 0
    assert json.loads((out / "summary.json").read_text())["items"] == 5
    recs = pq.read_table(out / "recommendations.parquet").to_pandas()
    assert "14" in set(recs["item_id"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.tmp")]


def test_python_dash_m_runs_the_same_command(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "interestflow", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: interestflow") and "score" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "interestflow", "run", "--events",
                          str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "missing.csv" in bad.stderr
