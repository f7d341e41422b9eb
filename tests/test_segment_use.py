"""interestflow.segments.segment_popularity_recall: the usefulness measure behind choosing K
(issue 14) by hand, and its best K on a planted case with a known number of groups."""

import numpy as np

from interestflow.segments import USE_KS, segment_popularity_recall


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
    inside the block); every user's latest 20% held out. K = 8 (the planted groups, found by
    K-means on noisy group vectors) gives the best segment-popularity recall of USE_KS."""
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
    scores = {}
    for k in USE_KS:
        labels = KMeans(n_clusters=k, n_init=3, random_state=0).fit_predict(
            U / np.linalg.norm(U, axis=1, keepdims=True))
        scores[k] = segment_popularity_recall(np.asarray(labels), users[~held], items[~held],
                                              t[:, 0], t[:, 1], g * block)
    assert max(scores, key=scores.get) == 8, scores
    assert scores[8] > 1.2 * scores[2] and scores[8] > scores[64]
