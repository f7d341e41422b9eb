"""The HTML report: structure, escaping, colours, errors, CLI, and a real headless Chromium."""

import base64
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interestflow.cli import main
from interestflow.report import LIFECYCLE_EVENTS, render_report, write_report
from interestflow.report._sections import sample_users as _sample

EVIL = "<script>alert('xss')</script>"
EVIL_ATTR = '"><img src=x onerror=alert(1)>'
CHINESE = ["电影", "剧情", "演员"]
SECTIONS = ("map", "sizes", "transitions", "lifecycle", "trends", "keywords")
T = 4


def _planted_assignments(n_users: int, seed: int) -> pd.DataFrame:
    """Users in segments 0..2 at t0; S1 splits into S1+S3 at t1; S2 merges into S0 at t2;
    S4 appears at t3; S3 vanishes at t3; some noise users throughout."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 3, size=n_users)
    rows = []
    for t in range(T):
        for u in range(n_users):
            s = int(base[u])
            if t >= 1 and s == 1 and u % 2 == 0:
                s = 3
            if t >= 2 and s == 2:
                s = 0
            if t >= 3 and s == 3:
                s = 1
            if t >= 3 and u % 7 == 0:
                s = 4
            if u % 23 == 5:
                s = -1
            rows.append((t, f"user{u:04d}", s))
    return pd.DataFrame(rows, columns=["snapshot", "user_id", "segment_id"])


def make_run_dir(path: Path, *, n_users: int = 240, tracking: bool = True, seed: int = 0
                 ) -> dict:
    """A run directory that follows the schema in the issue-5 notes; returns the tables."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    asg = _planted_assignments(n_users, seed)
    last = asg[asg["snapshot"] == T - 1]
    users = pd.DataFrame({"user_id": last["user_id"].to_numpy(),
                          "segment": last["segment_id"].to_numpy().astype(np.int64)})
    centers = rng.normal(size=(6, 8)) * 3
    users["vector"] = [list(centers[s] + rng.normal(size=8) * 0.3) for s in users["segment"]]
    users.to_parquet(path / "users.parquet")
    seg_ids = sorted(s for s in users["segment"].unique() if s >= 0)
    segs = pd.DataFrame({
        "segment": np.array(seg_ids, dtype=np.int64),
        "size": np.array([(users["segment"] == s).sum() for s in seg_ids], dtype=np.int64),
        "keywords": [CHINESE if s == 0 else [f"kw{s}a", f"kw{s}b", EVIL] for s in seg_ids],
    })
    segs.to_parquet(path / "segments.parquet")
    (path / "summary.json").write_text(json.dumps({"users": n_users, "note": EVIL_ATTR},
                                                  ensure_ascii=False), encoding="utf-8")
    out = {"assignments": asg, "users": users, "segments": segs}
    if not tracking:
        return out
    tdir = path / "tracking"
    tdir.mkdir()
    starts = pd.date_range("2024-01-01", periods=T, freq="7D", tz="UTC")
    snap_rows = []
    for t in range(T):
        counts = asg[(asg["snapshot"] == t) & (asg["segment_id"] >= 0)].groupby(
            "segment_id").size()
        for s, n in counts.items():
            snap_rows.append({
                "snapshot": np.int32(t), "window_start": starts[t],
                "window_end": starts[t] + pd.Timedelta(days=7), "segment_id": np.int64(s),
                "size": np.int64(n),
                "keywords": CHINESE if s == 0 else [f"kw{s}a", f"kw{s}b"],
                "representative_texts": ([EVIL, "这部电影的剧情很好看"] if s == 1
                                         else [f"text about {s}", "x" * 900]),
            })
    snaps = pd.DataFrame(snap_rows)
    snaps["snapshot"] = snaps["snapshot"].astype(np.int32)
    snaps.to_parquet(tdir / "snapshots.parquet")
    asg.astype({"snapshot": np.int32, "segment_id": np.int64}).to_parquet(
        tdir / "assignments.parquet")
    prev = asg.rename(columns={"segment_id": "from_segment"}).assign(
        snapshot=lambda d: d["snapshot"] + 1)
    trans = (asg.rename(columns={"segment_id": "to_segment"})
             .merge(prev, on=["snapshot", "user_id"])
             .groupby(["snapshot", "from_segment", "to_segment"]).size()
             .rename("n_users").reset_index())
    trans = trans.astype({"snapshot": np.int32, "from_segment": np.int64,
                          "to_segment": np.int64, "n_users": np.int64})
    trans.to_parquet(tdir / "transitions.parquet")
    life = pd.DataFrame({
        "snapshot": np.array([1, 2, 3, 3, 1], dtype=np.int32),
        "event": ["split", "merge", "appear", "vanish", "drift"],
        "segments_from": [[1], [0, 2], [], [3], [0]],
        "segments_to": [[1, 3], [0], [4], [], [0]],
        "value": [0.5, 0.33, np.nan, np.nan, 0.12],
        "detail": ["S1 split", EVIL_ATTR, "new", "gone", "centroid moved"],
    })
    life.to_parquet(tdir / "lifecycle.parquet")
    mp = asg[["snapshot", "user_id", "segment_id"]].copy()
    ang = mp["segment_id"].to_numpy() * 1.1 + mp["snapshot"].to_numpy() * 0.05
    mp["x"] = (np.cos(ang) * 5 + rng.normal(size=len(mp))).astype(np.float32)
    mp["y"] = (np.sin(ang) * 5 + rng.normal(size=len(mp))).astype(np.float32)
    mp = mp.drop(columns="segment_id").astype({"snapshot": np.int32})
    mp.to_parquet(tdir / "map.parquet")
    out.update(snapshots=snaps, transitions=trans, lifecycle=life, map=mp)
    return out


@pytest.fixture()
def run_dir(tmp_path):
    d = tmp_path / "run"
    tables = make_run_dir(d)
    return d, tables


def _snapshot_groups(text: str) -> list[str]:
    return re.findall(r'<g class="snap".*?</g></g>(?=<g class="snap"|</svg>)', text, flags=re.S)


def _fills(text: str, sid: int) -> set[str]:
    return set(re.findall(rf'class="sg s{sid}(?: [^"]*)?" fill="(#[0-9a-f]{{6}})"', text))


# --------------------------------------------------------------------------------------------
# structure
# --------------------------------------------------------------------------------------------

def test_report_has_all_sections_and_no_external_references(run_dir):
    d, _ = run_dir
    out = write_report(d, d / "r.html")
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in text
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in text
        assert f'href="#{sid}"' in text
    # nothing fetched from anywhere: no URLs at all, no external-resource tags
    assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/", text, flags=re.I)
    assert not re.search(r"<(link|img|iframe|object|embed)\b", text, flags=re.I)
    assert "@import" not in text and "url(" not in text
    assert text.count("<script") == 1  # the page's own script only
    # the CSP allows exactly that script, by hash, and nothing external
    js = re.search(r"<script>(.*?)</script>", text, flags=re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(js.encode()).digest()).decode()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1)
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    assert (out.stat().st_mode & 0o777) == 0o644


def test_report_escapes_text_and_keeps_chinese(run_dir):
    d, _ = run_dir
    text = render_report(d)
    assert EVIL not in text and "<img" not in text and "onerror=alert(1)>" not in text
    assert "&lt;script&gt;alert(&#x27;xss&#x27;)&lt;/script&gt;" in text
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in text  # lifecycle detail, summary
    assert "电影, 剧情, 演员" in text and "这部电影的剧情很好看" in text
    # long representative texts are clipped with an ellipsis
    assert "x" * 399 + "…" in text and "x" * 400 not in text


def test_map_draws_every_user_per_snapshot_with_stable_colours(run_dir):
    d, tables = run_dir
    text = render_report(d)
    groups = _snapshot_groups(text)
    assert len(groups) == T
    asg = tables["assignments"]
    for t, g in enumerate(groups):
        assert f'data-snapshot="{t}"' in g
        assert g.count("<circle") == int((asg["snapshot"] == t).sum())
        for s, n in asg[asg["snapshot"] == t].groupby("segment_id").size().items():
            grp = re.search(rf'<g class="sg s{s}" fill="[^"]+"><title>[^<]*</title>(.*?)</g>',
                            g).group(1)
            assert grp.count("<circle") == n
    # the last snapshot is the visible one, the others are hidden until chosen
    hidden = ['style="display:none"' in g.split(">", 1)[0] for g in groups]
    assert hidden == [True] * (T - 1) + [False]
    # one colour per segment id in every plot (map, areas, sankey, timeline), distinct ids
    colours = {}
    for s in (-1, 0, 1, 2, 3, 4):
        f = _fills(text, s)
        assert len(f) == 1, (s, f)
        colours[s] = f.pop()
    assert len(set(colours.values())) == 6 and colours[-1] == "#a3a3a3"
    legend = re.search(r'<div class="legend">(.*?)</div>', text).group(1)
    for s, c in colours.items():
        assert f'data-seg="{s}"><span class="sw" style="background:{c}">' in legend


def test_sizes_transitions_and_timeline_carry_the_tables_values(run_dir):
    d, tables = run_dir
    text = render_report(d)
    snaps, trans, life = tables["snapshots"], tables["transitions"], tables["lifecycle"]
    sizes_svg = re.search(r'<svg class="plot" id="sizes-svg".*?</svg>', text, re.S).group(0)
    for s in (0, 1, 3):
        per_t = snaps[snaps["segment_id"] == s].set_index("snapshot")["size"]
        want = ", ".join(f"t{t} {int(per_t.get(t, 0)):,}" for t in range(T))
        assert f"S{s} users per snapshot: {want}</title>" in sizes_svg
    noise = tables["assignments"].query("segment_id == -1").groupby("snapshot").size()
    assert ("noise users per snapshot: " + ", ".join(f"t{t} {noise[t]}" for t in range(T))
            in sizes_svg)
    assert sizes_svg.count("<polygon") == 6
    sankey = re.search(r'<svg class="plot" id="sankey-svg".*?</svg>', text, re.S).group(0)
    assert sankey.count('link"') == int((trans["n_users"] > 0).sum())
    for r in trans.itertuples():
        a = "noise" if r.from_segment == -1 else f"S{r.from_segment}"
        b = "noise" if r.to_segment == -1 else f"S{r.to_segment}"
        assert f"{a} (t{r.snapshot - 1}) → {b} (t{r.snapshot}): {r.n_users:,} users" in sankey
    # Sankey node heights are proportional to users: S0 at t0 vs S2 at t0 (both keep members)
    heights = {m[0]: float(m[1]) for m in re.findall(
        r'class="sg s(\d) node" x="40.0" y="[^"]+" width="12" height="([^"]+)"', sankey)}
    n0 = int(((tables["assignments"]["snapshot"] == 0)
              & (tables["assignments"]["segment_id"] == 0)).sum())
    n2 = int(((tables["assignments"]["snapshot"] == 0)
              & (tables["assignments"]["segment_id"] == 2)).sum())
    assert heights["0"] / heights["2"] == pytest.approx(n0 / n2, rel=0.02)
    timeline = re.search(r'<svg class="plot" id="timeline-svg".*?</svg>', text, re.S).group(0)
    assert timeline.count(' ev ev-') == len(life)
    for kind in LIFECYCLE_EVENTS:
        assert timeline.count(f"ev ev-{kind}\"") == int((life["event"] == kind).sum())
    assert "split at t1 · 2024-01-08 – 2024-01-15: S1 → S1, S3 · value 0.500 · S1 split" \
        in timeline
    assert "Counts: appear 1, vanish 1, split 1, merge 1, drift 1." in text


def test_map_subsamples_deterministically_and_says_so(run_dir):
    d, tables = run_dir
    text = render_report(d, max_map_points=50)
    groups = _snapshot_groups(text)
    assert [g.count("<circle") for g in groups] == [50] * T
    assert 'id="map-sample-note"' in text and "at most 50 users are drawn" in text
    assert render_report(d, max_map_points=50) == text
    # the same users are kept in every snapshot (all users are present in all snapshots)
    mp = tables["map"]
    picked = [set(_sample(mp[mp["snapshot"] == t], 50)["user_id"]) for t in range(T)]
    assert all(p == picked[0] for p in picked) and len(picked[0]) == 50
    assert "map-sample-note" not in render_report(d)


def test_report_without_tracking_shows_static_segments(tmp_path):
    d = tmp_path / "static"
    tables = make_run_dir(d, tracking=False)
    text = write_report(d).read_text(encoding="utf-8")  # default output path
    assert (d / "report.html").is_file()
    assert text.count("Tracking was not run") == 5  # map, sizes, transitions, lifecycle, trends
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in text
    groups = _snapshot_groups(text)
    assert len(groups) == 1 and groups[0].count("<circle") == len(tables["users"])
    assert "principal-component projection" in text
    for r in tables["segments"].itertuples():
        assert f"{r.size:,}  " in text
    assert EVIL not in text and "电影, 剧情, 演员" in text
    assert "sankey-svg" not in text and "timeline-svg" not in text


def test_render_is_deterministic_and_title_is_escaped(run_dir):
    d, _ = run_dir
    a = render_report(d, title="<b>ç 报告</b>")
    assert a == render_report(d, title="<b>ç 报告</b>")
    assert "<title>&lt;b&gt;ç 报告&lt;/b&gt;</title>" in a


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------

def test_missing_files_and_columns_are_named(run_dir):
    d, _ = run_dir
    with pytest.raises(FileNotFoundError, match="does not exist"):
        render_report(d / "nope")
    (d / "tracking" / "map.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"tracking/map\.parquet"):
        render_report(d)
    shutil.rmtree(d / "tracking")
    pd.DataFrame({"user_id": ["a"], "seg": [0]}).to_parquet(d / "users.parquet")
    with pytest.raises(ValueError, match=r"users\.parquet lacks column\(s\) \['segment'\]"):
        render_report(d)
    (d / "users.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no users\.parquet"):
        render_report(d)


def test_tracking_only_run_dir_is_drawn_from_the_tracking_tables(run_dir):
    """What SegmentTracker.to_run_dir writes (tracking/ only) is a complete run directory;
    static tables that are there are still checked."""
    d, tables = run_dir
    full = render_report(d)
    users = pd.read_parquet(d / "users.parquet")
    (d / "users.parquet").unlink()
    (d / "segments.parquet").unlink()
    (d / "summary.json").unlink()
    html = render_report(d)
    assert "tracking-not-run" not in html
    assert _snapshot_groups(html) == _snapshot_groups(full)
    n_users = tables["assignments"]["user_id"].nunique()
    assert f"{T} snapshot(s) from" in html and f"{n_users:,} users tracked" in html
    users.drop(columns="segment").to_parquet(d / "users.parquet")
    with pytest.raises(ValueError, match=r"users\.parquet lacks column\(s\) \['segment'\]"):
        render_report(d)


def test_bad_values_are_named_with_file_column_and_row(run_dir):
    d, tables = run_dir
    life = tables["lifecycle"].copy()
    life.loc[2, "event"] = "explode"
    life.to_parquet(d / "tracking" / "lifecycle.parquet")
    with pytest.raises(ValueError, match=r"lifecycle\.parquet row 2: event 'explode' is not one"):
        render_report(d)
    tables["lifecycle"].to_parquet(d / "tracking" / "lifecycle.parquet")
    tr = tables["transitions"].astype({"n_users": float})
    tr.to_parquet(d / "tracking" / "transitions.parquet")
    with pytest.raises(TypeError, match=r"transitions\.parquet column 'n_users' must hold "
                                        r"integers"):
        render_report(d)
    tables["transitions"].to_parquet(d / "tracking" / "transitions.parquet")
    asg = tables["assignments"]
    asg[~((asg["snapshot"] == 2) & (asg["user_id"] == "user0007"))].to_parquet(
        d / "tracking" / "assignments.parquet")
    with pytest.raises(ValueError, match=r"1 \(snapshot, user_id\) rows with no row in "
                                         r"tracking/assignments\.parquet, e\.g\. snapshot 2, "
                                         r"user 'user0007'"):
        render_report(d)
    with pytest.raises(ValueError, match="max_map_points=0 must be >= 1"):
        render_report(d, max_map_points=0)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def test_cli_report_writes_file_and_names_errors(run_dir, tmp_path, capsys):
    d, _ = run_dir
    assert main(["report", str(d)]) == 0
    assert (d / "report.html").is_file()
    out = tmp_path / "sub" / "x.html"
    assert main(["report", str(d), "-o", str(out), "--title", "T"]) == 0
    assert "<title>T</title>" in out.read_text(encoding="utf-8")
    assert str(out) in capsys.readouterr().out
    (d / "tracking" / "snapshots.parquet").unlink()
    assert main(["report", str(d)]) == 2
    assert "tracking/snapshots.parquet" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# a real browser
# --------------------------------------------------------------------------------------------

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


# Runs before the page's own script: records uncaught errors, failed resource loads, CSP
# violations and console.error/warn calls.
_PROBE_HEAD = """
window.__errors = [];
window.addEventListener("error", function (e) {
  window.__errors.push("error: " + (e.message || (e.target && (e.target.src || e.target.href
    || e.target.tagName)) || "?"));
}, true);
document.addEventListener("securitypolicyviolation", function (e) {
  window.__errors.push("csp: " + e.violatedDirective + " " + e.blockedURI);
});
["error", "warn"].forEach(function (k) {
  var orig = console[k];
  console[k] = function () {
    window.__errors.push("console." + k + ": " + Array.prototype.join.call(arguments, " "));
    return orig.apply(console, arguments);
  };
});
"""

# Runs after the page's script: measures what was laid out and drives the slider.
_PROBE_TAIL = """
(function () {
  function box(el) { var r = el.getBoundingClientRect(); return [r.width, r.height]; }
  function visibleMarks(svg) {
    var n = 0, all = svg.querySelectorAll("circle,rect,path,polygon");
    for (var i = 0; i < all.length; i++) {
      var r = all[i].getBoundingClientRect();
      if (r.width > 0 && r.height > 0) { n++; }
    }
    return n;
  }
  var out = {svgs: {}, errors: window.__errors};
  var svgs = document.querySelectorAll("svg.plot");
  for (var i = 0; i < svgs.length; i++) {
    out.svgs[svgs[i].id] = {box: box(svgs[i]), marks: visibleMarks(svgs[i])};
  }
  var slider = document.getElementById("map-slider");
  var snaps = document.querySelectorAll("#map-svg g.snap");
  out.visible = [];
  for (var j = 0; j < snaps.length; j++) {
    out.visible.push(getComputedStyle(snaps[j]).display !== "none");
  }
  if (slider) {
    slider.value = "0";
    slider.dispatchEvent(new Event("input"));
    out.after_slide = [];
    for (var k = 0; k < snaps.length; k++) {
      out.after_slide.push(getComputedStyle(snaps[k]).display !== "none");
    }
    out.label = document.getElementById("map-label").textContent;
  }
  out.kw_font_height = box(document.querySelector("#keywords td")) [1];
  var pre = document.createElement("pre");
  pre.id = "render-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
"""


def _instrument(html_text: str) -> str:
    """The report plus the two probe scripts, whose hashes are added to the page's CSP."""
    def h(js):
        return "'sha256-" + base64.b64encode(hashlib.sha256(js.encode()).digest()).decode() + "'"
    html_text = html_text.replace("script-src ", f"script-src {h(_PROBE_HEAD)} {h(_PROBE_TAIL)} ",
                                  1)
    html_text = html_text.replace('<meta name="viewport"',
                                  f"<script>{_PROBE_HEAD}</script><meta name=\"viewport\"", 1)
    return html_text.replace("</body>", f"<script>{_PROBE_TAIL}</script></body>", 1)


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--no-first-run",
    "--disable-sync", "--disable-extensions", "--disable-default-apps",
    "--no-default-browser-check", "--mute-audio", "--hide-scrollbars",
    # any request to a host fails: a page that tried to fetch something would log an error
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--enable-logging=stderr", "--v=0",
]


@pytest.mark.skipif(_chromium() is None,
                    reason="chromium is not installed (Debian: apt-get install -y chromium); "
                           "the headless-browser render check needs it")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    d, tables = run_dir
    page = tmp_path / "instrumented.html"
    page.write_text(_instrument(render_report(d)), encoding="utf-8")
    profile = tmp_path / "profile"
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
           "--window-size=1280,2000", "--virtual-time-budget=3000", "--dump-dom",
           page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LANG": "C.UTF-8"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r'<pre id="render-check">(.*?)</pre>', proc.stdout, flags=re.S)
    assert m, f"the probe did not run; stderr:\n{proc.stderr[-3000:]}"
    check = json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<")
                       .replace("&gt;", ">").replace("&amp;", "&"))
    # no console errors: the in-page probe and Chromium's own console log on stderr
    assert check["errors"] == []
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln
               or "Uncaught" in ln or "Content Security Policy" in ln]
    assert console == []
    svgs = check["svgs"]
    assert set(svgs) == {"map-svg", "sizes-svg", "sankey-svg", "timeline-svg"}
    for name, s in svgs.items():
        assert s["box"][0] > 300 and s["box"][1] > 100, (name, s)
    n_last = int((tables["assignments"]["snapshot"] == T - 1).sum())
    # frame rect + the circles of the visible (last) snapshot only
    assert svgs["map-svg"]["marks"] == n_last + 1
    assert svgs["sizes-svg"]["marks"] == 6
    assert svgs["timeline-svg"]["marks"] == len(tables["lifecycle"])
    trans = tables["transitions"]
    assert svgs["sankey-svg"]["marks"] > int((trans["n_users"] > 0).sum())
    # the slider switches snapshots
    assert check["visible"] == [False] * (T - 1) + [True]
    assert check["after_slide"] == [True] + [False] * (T - 1)
    assert check["label"].startswith("t0 · 2024-01-01")


def test_trends_and_significance_are_shown_when_the_tables_have_them(run_dir):
    d, tables = run_dir
    tdir = d / "tracking"
    life = tables["lifecycle"].assign(p_value=[0.5, 0.001, np.nan, 0.02, np.nan],
                                      stability=[0.7, 0.95, np.nan, 0.8, np.nan])
    life.to_parquet(tdir / "lifecycle.parquet")
    pd.DataFrame({"snapshot": np.array([1, 2], np.int32), "event": ["split", "appear"],
                  "reported": [False, False],
                  "reason": ["transient: merge at snapshot 2", "not new: p = 0.5 > 0.01"]}
                 ).to_parquet(tdir / "lifecycle_candidates.parquet")
    text = render_report(d)
    assert '<section id="trends">' in text and "no tracking/trends.parquet" in text
    assert "<th>p-value</th><th>stability</th>" in text
    # most significant first: the merge (p 0.001) heads the table, the split (0.5) trails
    rows = re.findall(r"<tr><td class=\"nw\">[^<]*</td><td class=\"nw\">(\w+)</td>", text)
    assert rows[:2] == ["merge", "vanish"] and rows.index("split") > rows.index("vanish")
    assert "2 candidate events were not reported (transient: 1, not new: 1" in text
    trends = pd.DataFrame({
        "snapshot": np.array([2, 3], np.int32), "segment_id": np.array([1, 0], np.int64),
        "kind": ["item", "keyword"], "key": ["i0042", EVIL], "share": [0.4, 0.3],
        "previous_share": [0.05, 0.0], "n_users": np.array([8, 6], np.int64),
        "p_value": [1e-5, 0.003]})
    trends.to_parquet(tdir / "trends.parquet")
    text = render_report(d)
    sec = re.search(r'<section id="trends">(.*?)</section>', text, flags=re.S).group(1)
    assert "i0042" in sec and "5% → 40%" in sec and "1e-05" in sec
    assert EVIL not in sec and html.escape(EVIL, quote=True) in sec
    assert sec.index("t3") < sec.index("t2")                       # latest snapshot first
    bad = trends.assign(share=[0.4, np.nan])
    bad.to_parquet(tdir / "trends.parquet")
    with pytest.raises(ValueError, match="trends.parquet"):
        render_report(d)


def test_transitions_of_many_snapshots_draw_the_latest_twelve(run_dir, monkeypatch):
    import interestflow.report._sections as report

    d, _ = run_dir
    text = render_report(d)
    assert "sankey-cut-note" not in text
    monkeypatch.setattr(report, "_SANKEY_SNAPSHOTS", 2)
    text = render_report(d)
    sec = re.search(r'<section id="transitions">(.*?)</section>', text, flags=re.S).group(1)
    assert "The last 2 of 4 snapshots are drawn" in sec
    assert "t2 · " in sec and "t3 · " in sec and "t1 · " not in sec
