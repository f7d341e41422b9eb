"""InterestEngine(multi_interest=True): interests table, mixed recommendations, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from interestflow import InterestEngine
from interestflow.synthetic import make_demo_events


@pytest.fixture(scope="module")
def fitted():
    data = make_demo_events(60, n_topics=4, random_state=11)
    return data, InterestEngine(multi_interest=True).fit(data.events, data.items)


def test_interests_table_accounts_for_every_event_and_weight(fitted):
    data, eng = fitted
    table = eng.interests()
    assert list(table.columns) == ["user_id", "interest", "importance", "size"]
    per_user = table.groupby("user_id")
    # every event of every user is in exactly one interest (no cap reached at this size)
    sizes = per_user["size"].sum()
    counts = data.events.groupby("user_id").size()
    assert (sizes.loc[counts.index] == counts).all()
    # importances add up to the user's total decayed weight
    total = per_user["importance"].sum().loc[eng.user_ids_].to_numpy()
    np.testing.assert_allclose(np.log2(total), eng.user_log2_weight_, rtol=1e-9, atol=1e-9)
    # ordered by importance within a user, interest 0 first
    for _, g in per_user:
        assert g["interest"].tolist() == list(range(len(g)))
        assert (np.diff(g["importance"].to_numpy()) <= 0).all()
    assert per_user.size().max() > 1  # users with several interests exist


def test_mixed_recommendations_exclude_seen_and_survive_save_load(fitted, tmp_path):
    data, eng = fitted
    users = list(eng.user_ids_[:10])
    recs = eng.recommend(users, k=6)
    assert (recs.groupby("user_id").size() == 6).all()
    seen = data.events.groupby("user_id")["item_id"].apply(set)
    for u, g in recs.groupby("user_id"):
        assert not set(g["item_id"]) & seen[u]
        assert g["rank"].tolist() == list(range(1, 7))
        assert (np.diff(g["score"].to_numpy()) <= 1e-7).all()
    eng.save(tmp_path / "m")
    again = InterestEngine.load(tmp_path / "m", encoder=eng.encoder)
    assert again.multi_interest
    back = again.recommend(users, k=6)
    assert (back["item_id"].to_numpy() == recs["item_id"].to_numpy()).all()
    np.testing.assert_array_equal(back["score"].to_numpy(), recs["score"].to_numpy())


def test_partial_fit_and_bad_flag_raise(fitted):
    data, eng = fitted
    with pytest.raises(ValueError, match="partial_fit does not update per-user interests"):
        eng.partial_fit(data.events.head(3))
    with pytest.raises(TypeError, match="multi_interest must be a bool"):
        InterestEngine(multi_interest="yes").fit(data.events)
    with pytest.raises(ValueError, match="multi_interest=False"):
        InterestEngine().fit(data.events, data.items).interests()
