"""interestflow.segments.segment_popularity_recall: the usefulness measure behind choosing K
(issue 14) by hand, and its best K on a planted case with a known number of groups."""

import numpy as np

from interestflow.segments import USE_KS, one_standard_error_k, segment_popularity_recall


def test_segment_popularity_recall_by_hand():
    # users 0-2 in segment 0, 3-4 in segment 1; the toy of test_recsys_baselines
    pairs = [(0, 1), (1, 1), (2, 2), (1, 2), (0, 3), (3, 4), (4, 4), (3, 5), (4, 6), (3, 6),
             (2, 6)]
    ku, ki = np.array(pairs).T
    labels = np.array([0, 0, 0, 1, 1])
    # user 0's list: 2, 6, 4 (see the benchmark test); held out {2, 5}: one of two in top 3
    assert segment_popularity_recall(labels, ku, ki, [0, 0], [2, 5], 7, k=3) == 0.5
    # user 2's list: 1, 3, 4; held out {4}: hit
    assert segment_popularity_recall(labels, ku, ki, [2], [4], 7, k=3) == 1.0
    # both users: mean of 0.5 and 1.0; a user without a segment gets global popularity
    assert segment_popularity_recall(labels, ku, ki, [0, 0, 2], [2, 5, 4], 7, k=3) == 0.75
    none = np.array([-1, 0, 0, 1, 1])
    # user 0 by global popularity, unseen: 6 (3 users), 2 (2), 4 (2)
    assert segment_popularity_recall(none, ku, ki, [0], [4], 7, k=3) == 1.0
    assert segment_popularity_recall(none, ku, ki, [0], [5], 7, k=3) == 0.0


def test_the_planted_number_of_groups_is_the_most_useful_k():
    """8 groups of 40 users, each taking items from its own block of 30 (skewed popularity
    inside the block); every user's latest 20% held out. Fewer segments than groups mix
    groups and lose recall; K = 8 (the planted groups, found exactly by K-means on the noisy
    group vectors) is within 2% of the best; the rule's choice never mixes groups (here it
    takes K = 12, splitting a few groups: a chance gain of ~2 paired standard errors)."""
    from sklearn.metrics import adjusted_rand_score

    from interestflow import KMeans

    rng = np.random.default_rng(0)
    g, per, block, d = 8, 40, 30, 16
    centres = rng.normal(size=(g, d))
    group = np.repeat(np.arange(g), per)
    U = centres[group] + 0.3 * rng.normal(size=(len(group), d))
    users, items = [], []
    for u, gr in enumerate(group):
        picks = gr * block + np.minimum((rng.random(12) ** 2 * block).astype(int), block - 1)
        users += [u] * 12
        items += picks.tolist()
    users, items = np.array(users), np.array(items)
    held = np.zeros(len(users), bool)
    for u in range(len(group)):
        held[np.flatnonzero(users == u)[-3:]] = True
    seen = set(zip(users[~held].tolist(), items[~held].tolist()))
    t = np.array([(u, i) for u, i in zip(users[held], items[held]) if (u, i) not in seen])
    per_user, labels = {}, {}
    for k in USE_KS:
        labels[k] = np.asarray(KMeans(n_clusters=k, n_init=3, random_state=0).fit_predict(
            U / np.linalg.norm(U, axis=1, keepdims=True)))
        per_user[k] = segment_popularity_recall(labels[k], users[~held], items[~held],
                                                t[:, 0], t[:, 1], g * block, per_user=True)
    chosen, best, scores = one_standard_error_k(per_user)
    assert adjusted_rand_score(group, labels[8]) == 1.0
    assert scores[8] >= 0.98 * scores[best]
    assert scores[8] > 1.2 * scores[4] > 1.2 * 1.2 * scores[2] and scores[8] > scores[64]
    assert chosen in (8, 12) and scores[chosen] >= 0.98 * scores[best]
    # no segment of the choice mixes two planted groups
    for s in np.unique(labels[chosen]):
        assert len(np.unique(group[labels[chosen] == s])) == 1


def test_one_standard_error_rule():
    rng = np.random.default_rng(0)
    base = rng.random(400)
    # K=16 beats K=8 by 0.002 on average, within noise of +-0.1 per user: K=8
    noisy = {4: base - 0.05, 8: base, 16: base + 0.002 + 0.1 * rng.standard_normal(400)}
    assert one_standard_error_k(noisy)[:2] == (8, 16)
    # the same mean gain for every single user is no noise: K=16
    steady = {4: base - 0.05, 8: base, 16: base + 0.002}
    assert one_standard_error_k(steady)[:2] == (16, 16)
    # the per-user scores of one K: its mean is returned
    k, best, means = one_standard_error_k({2: np.array([0.0, 1.0])})
    assert (k, best, means) == (2, 2, {2: 0.5})


def test_engine_chooses_k_by_use_on_a_user_sample(monkeypatch, cached_encoder):
    """With more users than the sample, K is chosen on a seeded sample of them (and their
    events); the rule and the per-K recall are recorded and saved."""
    import interestflow.engine as E
    from interestflow import InterestEngine
    from interestflow.synthetic import make_demo_events

    data = make_demo_events(n_users=120, n_topics=4, random_state=3)
    full = InterestEngine(encoder=cached_encoder, ranker=None, show_progress=False).fit(
        data.events, data.items)
    monkeypatch.setattr(E, "_USE_SAMPLE", 60)
    sampled = InterestEngine(encoder=cached_encoder, ranker=None, show_progress=False).fit(
        data.events, data.items)
    assert full.n_segments_rule_ == sampled.n_segments_rule_ == "use"
    assert full.segment_use_by_k_ != sampled.segment_use_by_k_   # other users, other recall
    assert set(sampled.segment_use_by_k_) == {2, 3, 4, 6, 8, 12, 16, 24, 32, 48}  # K < 60
    assert sampled.n_segments_ == full.n_segments_ == 4          # the 4 planted topics
