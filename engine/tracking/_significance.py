"""Which candidate lifecycle events are real: stability of the segments involved, novelty
p-values of their kinds of user, hysteresis against flips, and the sampling noise of a
centroid (drift). The rules are described in :mod:`interestflow.tracking`
("Significance").
"""

from __future__ import annotations

import numpy as np

from ._clustering import run_kmeans

__all__ = ["stability", "with_nearest", "split_p", "novelty", "novelty_parts",
           "unreported", "centroid_noise"]

# half-samples per stability score (see stability)
_STABILITY_REPEATS = 10
# a split undone by a merge (or the reverse), or an appear then vanish, within this many
# snapshots is transient: neither event is reported
_HYSTERESIS = 2


def stability(snap, rows, t, *, random_state, backend, device) -> float:
    """Stability of the split of the users of segments ``rows`` (of ``snap``) into those
    segments: mean adjusted Rand index between that split and a fresh K-means (k-means++,
    3 starts, K = ``len(rows)``) of a random half of those users, over
    :data:`_STABILITY_REPEATS` halves (seeded by ``random_state``, ``t`` and ``rows``).
    About 1 for well separated groups; about 0 for an arbitrary cut through one cloud of
    users. NaN with fewer than two segments."""
    from sklearn.metrics import adjusted_rand_score

    rows = np.asarray(rows, np.int64)
    if len(rows) < 2:
        return float("nan")
    member = np.isin(snap["labels"], rows)
    x, lab = snap["x"][member], snap["labels"][member]
    rng = np.random.default_rng([int(random_state), int(t), *rows.tolist()])
    half = max(len(x) // 2, 2 * len(rows))
    scores = []
    for _ in range(_STABILITY_REPEATS):
        pick = np.sort(rng.choice(len(x), size=min(half, len(x)), replace=False))
        got, _, _ = run_kmeans(x[pick], len(rows), "k-means++", n_init=3,
                               random_state=int(rng.integers(2**31)), backend=backend,
                               device=device)
        scores.append(adjusted_rand_score(lab[pick], got))
    return float(max(0.0, np.mean(scores)))


def with_nearest(snap, row) -> list:
    """``[row, the segment of snap whose centroid is nearest to row's]`` ([row] if alone)."""
    c = snap["centroids"]
    if len(c) < 2:
        return [int(row)]
    cos = c @ c[row]
    cos[row] = -np.inf
    return [int(row), int(np.argmax(cos))]


def split_p(snap, prev, parts) -> float:
    """p-value that a split's parts hold kinds of user the previous snapshot lacked: two
    tests of that null, Bonferroni-combined (twice the smaller p-value): the parts pooled
    (together they replace the parent), and any single part new (the smallest part p-value
    times their number; the other part may be the parent's continuation)."""
    per, pooled = novelty_parts(snap, prev, parts)
    any_part = min(1.0, len(per) * min(per))
    return float(min(1.0, 2.0 * min(pooled, any_part)))


def novelty(snap, other, row) -> float:
    """:func:`novelty_parts` of one segment."""
    return novelty_parts(snap, other, [row])[1]


def novelty_parts(snap, other, rows) -> tuple[list, float]:
    """One-sided p-values that the kinds of user of segments ``rows`` of ``snap`` are new
    there (against ``other``): ``([p per row], p of the rows pooled)``.

    A user is of a segment's kind when its nearest centroid of ``snap`` is that segment's
    and its cosine to it is at least the lower quartile of the segment's members' cosines.
    Null: the share of such users in ``snap`` is at most twice their share in ``other``
    (binomial with the ``other`` share, Laplace-smoothed, taken as known: its own sampling
    error is ignored, so with a small ``other`` snapshot the p-value is too small; the
    doubling margin and ``max_p_value`` absorb part of that). Small for segments whose kind
    of user ``other`` lacked; about 1 when ``other`` held as many such users and only the
    clustering changed (for example a segment resolved once more users arrived)."""
    from scipy.stats import binom

    rows = np.atleast_1d(np.asarray(rows, np.int64))
    if len(snap["x"]) == 0 or len(other["x"]) == 0:
        return [float("nan")] * len(rows), float("nan")
    c = snap["centroids"]
    floor = _kind_floors(snap, rows)
    x1, x0 = _kind_counts(snap["x"], c, floor, rows), _kind_counts(other["x"], c, floor, rows)
    n1, n0 = len(snap["x"]), len(other["x"])

    def p(a, b):
        return float(binom.sf(a - 1, n1, min(1.0, 2.0 * (b + 1) / (n0 + 2))))

    return [p(a, b) for a, b in zip(x1, x0)], p(int(x1.sum()), int(x0.sum()))


def _kind_floors(snap, rows) -> np.ndarray:
    """Per segment of ``snap``: the lower quartile of its members' cosines to its centroid
    for the segments ``rows`` (inf for the others and for an empty segment)."""
    c = snap["centroids"]
    floor = np.full(len(c), np.inf)
    for r in rows:
        own = snap["x"][snap["labels"] == r] @ c[r]
        if len(own):
            floor[r] = float(np.quantile(own, 0.25))
    return floor


def _kind_counts(x, c, floor, rows) -> np.ndarray:
    """Users of ``x`` of each segment's kind in ``rows``: nearest to its centroid (of ``c``)
    and at least as close as its ``floor``."""
    sims = x @ c.T
    near = np.argmax(sims, axis=1)
    ok = sims[np.arange(len(x)), near] >= floor[near]
    return np.array([int((ok & (near == r)).sum()) for r in rows])


def _transient(events) -> list:
    """Per event ``(t, kind, from, to, ..., p_value, stability)``: "" or why it is transient
    (hysteresis: a split undone by a merge of the same segments, a merge split again, or a
    segment that appears and vanishes, within :data:`_HYSTERESIS` snapshots; both events of
    such a pair). Events around an empty snapshot (no test possible) never pair. A pair is
    formed whatever the events' significance: a flip that fails the tests on one side is
    still a flip."""
    reason = [""] * len(events)
    untested = [np.isnan(e[-2]) and np.isnan(e[-1]) and e[1] != "drift" for e in events]
    for ia, a in enumerate(events):
        for ib, b in enumerate(events):
            if untested[ia] or untested[ib] or not 0 < b[0] - a[0] <= _HYSTERESIS:
                continue
            undo = ((a[1] == "split" and b[1] == "merge" and len(set(a[3]) & set(b[2])) >= 2)
                    or (a[1] == "merge" and b[1] == "split" and list(b[2]) == list(a[3]))
                    or (a[1] == "appear" and b[1] == "vanish" and list(b[2]) == list(a[3])))
            if undo:
                reason[ia] = f"transient: {b[1]} at snapshot {b[0]}"
                reason[ib] = f"transient: {a[1]} at snapshot {a[0]}"
    return reason


def unreported(events, max_p: float, min_stability: float) -> list:
    """Why each event ``(..., p_value, stability)`` is not reported ("" = reported):
    transient (see :func:`_transient`), not new (p-value above ``max_p``) or not stable
    (stability below ``min_stability``). NaN (not tested for that kind) passes, but for an
    appearing / vanishing segment that was its snapshot's only one (no stability: nothing
    to be separate from; "everyone" turning into segments is a change of K)."""
    out = _transient(events)
    for i, e in enumerate(events):
        p, st = e[-2], e[-1]
        if out[i]:
            continue
        if e[1] in ("appear", "vanish") and np.isnan(st) and not np.isnan(p):
            out[i] = "alone in its snapshot: a change of K, nothing to be separate from"
        elif p > max_p:
            out[i] = f"not new: p = {p:.3g} > {max_p:g}"
        elif st < min_stability:
            out[i] = f"not stable: stability {st:.2f} < {min_stability:g}"
    return out


def centroid_noise(r_a, n_a, r_b, n_b) -> float:
    """Expected ``1 - cos`` between two centroids of the same segment from sampling alone.

    A centroid is the mean of ``n`` unit vectors with mean resultant length ``R``; its error
    has expected squared norm ``(1 - R**2) / n``, and two independent estimates of the same
    direction differ by ``1 - cos ~ (e_a + e_b) / (2 R_a R_b)`` (small-error expansion).
    """
    if r_a <= 0 or r_b <= 0:
        return 0.0
    return 0.5 * ((1.0 - r_a ** 2) / n_a + (1.0 - r_b ** 2) / n_b) / (r_a * r_b)
