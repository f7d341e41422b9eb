"""InterestEngine.partial_fit equals a full refit (vectors) and keeps segments consistent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from interestflow import InterestEngine
from interestflow.synthetic import make_demo_events


@pytest.fixture(scope="module")
def split_data(cached_encoder):
    data = make_demo_events(80, n_topics=4, seed=7)
    ev = data.events.sort_values("ts", kind="stable").reset_index(drop=True)
    cut = ev["ts"].quantile(0.75)
    return data, ev, ev[ev["ts"] <= cut], ev[ev["ts"] > cut], cached_encoder


def test_partial_fit_equals_full_refit(split_data, tmp_path):
    data, ev, old, new, enc = split_data
    new = pd.concat([new, pd.DataFrame({"user_id": ["zz_new_user"], "text": [
        "new guitar strings and a tuner for my acoustic"], "ts": [new["ts"].max()],
        "item_id": ["zz_new_item"], "weight": [2.0]})], ignore_index=True)
    full = InterestEngine(encoder=enc).fit(pd.concat([old, new], ignore_index=True), data.items)
    inc = InterestEngine(encoder=enc).fit(old, data.items)
    calls = []
    real = enc.encode
    enc.encode = lambda texts, show_progress=None: calls.append(list(texts)) or real(texts)
    try:
        inc.partial_fit(new)
    finally:
        enc.encode = real
    assert len(calls) == 1 and set(calls[0]) == set(new["text"])  # only new texts encoded
    assert inc.reference_time_ == full.reference_time_
    assert inc.n_events_ == full.n_events_
    rows = inc.user_ids_.get_indexer(full.user_ids_)
    assert (rows >= 0).all() and len(inc.user_ids_) == len(full.user_ids_)
    np.testing.assert_allclose(inc.user_vectors_[rows], full.user_vectors_, atol=2e-6)
    np.testing.assert_allclose(inc.user_log2_weight_[rows], full.user_log2_weight_, atol=1e-9)
    items = inc.item_ids_.get_indexer(full.item_ids_)
    assert (items >= 0).all()
    np.testing.assert_allclose(inc.item_vectors_[items], full.item_vectors_, atol=2e-6)
    assert adjusted_rand_score(inc.segments_[rows], full.segments_) >= 0.95
    users = list(full.user_ids_[:20])
    a = inc.recommend(users, k=5)
    b = full.recommend(users, k=5)
    assert (a["item_id"].to_numpy() == b["item_id"].to_numpy()).mean() > 0.9
    # state survives save/load and partial_fit still works after it
    inc.save(tmp_path / "m")
    again = InterestEngine.load(tmp_path / "m", encoder=enc)
    np.testing.assert_array_equal(again.user_mean_, inc.user_mean_)
    for key in inc.interactions_:
        np.testing.assert_array_equal(again.interactions_[key], inc.interactions_[key])


def test_partial_fit_leaves_unaffected_users_unchanged(split_data):
    data, ev, old, new, enc = split_data
    inc = InterestEngine(encoder=enc).fit(old, data.items)
    before = inc.user_vectors_.copy()
    one_user = new[new["user_id"] == new["user_id"].iloc[0]]
    inc.partial_fit(one_user)
    changed = np.flatnonzero(np.abs(inc.user_vectors_ - before).max(axis=1) > 0)
    assert changed.tolist() == [int(inc.user_ids_.get_loc(one_user["user_id"].iloc[0]))]


def test_partial_fit_rejects_bad_input(split_data):
    data, ev, old, new, enc = split_data
    inc = InterestEngine(encoder=enc).fit(old, data.items)
    with pytest.raises(ValueError, match="before the engine's reference time"):
        inc.partial_fit(new, now=old["ts"].min())
    bad = new.head(1).assign(user_id=1)
    with pytest.raises(ValueError, match="'user_id' holds int64 ids"):
        inc.partial_fit(bad)
    with pytest.raises(ValueError, match="no rows"):
        inc.partial_fit(new.head(0))
    with pytest.raises(RuntimeError, match="not fitted"):
        InterestEngine(encoder=enc).partial_fit(new)


def test_partial_fit_segments_agree_with_a_full_refit_on_the_planted_scenario(cached_encoder):
    from interestflow.planted import make_planted_scenario

    sc = make_planted_scenario(seed=0)
    ts = pd.to_datetime(sc.events["ts"], utc=True)
    cut = sc.window_edges[-2]  # the last window arrives as new events
    old, new = sc.events[ts <= cut], sc.events[ts > cut]
    assert len(old) and len(new)
    full = InterestEngine(encoder=cached_encoder).fit(sc.events, sc.items)
    inc = InterestEngine(encoder=cached_encoder).fit(old, sc.items).partial_fit(new)
    rows = inc.user_ids_.get_indexer(full.user_ids_)
    np.testing.assert_allclose(inc.user_vectors_[rows], full.user_vectors_, atol=1e-6)
    assert adjusted_rand_score(inc.segments_[rows], full.segments_) >= 0.95
