"""The temporal train/test split of the evaluation data (not a generator): per user, the
latest events are the test set. The benchmarks and tests split both generated and real event
tables with it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["train_test_split_by_time"]


def train_test_split_by_time(events: pd.DataFrame, frac: float = 0.2):
    """Hold out each user's latest events: the temporal protocol of the evaluation data.

    Per user, events are sorted by ``ts`` (ties keep their input order) and the last
    ``max(1, round(frac * n))`` of the user's ``n`` events (rounded half up) form the test
    set, so a user with a single event has it in the test set only.

    Parameters
    ----------
    events : pandas.DataFrame
        At least the columns ``user_id`` and ``ts`` (any sortable, non-null values).
    frac : float, default 0.2
        Share of each user's events to hold out, ``0 < frac < 1``.

    Returns
    -------
    train, test : pandas.DataFrame
        The rows of ``events`` (original index kept), each sorted by user then time.

    Examples
    --------
    >>> import pandas as pd
    >>> ev = pd.DataFrame({"user_id": ["a"] * 5, "ts": [5, 1, 4, 2, 3]})
    >>> train, test = train_test_split_by_time(ev)
    >>> test["ts"].tolist(), train["ts"].tolist()
    ([5], [1, 2, 3, 4])
    """
    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"events must be a pandas DataFrame, got {type(events).__name__}")
    missing = [c for c in ("user_id", "ts") if c not in events.columns]
    if missing:
        raise ValueError(
            f"events is missing column(s) {missing}; it has {list(events.columns)}")
    if isinstance(frac, bool) or not isinstance(frac, (int, float, np.integer, np.floating)):
        raise TypeError(f"frac must be a number in (0, 1), got {frac!r}")
    if not 0.0 < float(frac) < 1.0:
        raise ValueError(f"frac={frac} is invalid; pass 0 < frac < 1")
    for col in ("user_id", "ts"):
        nulls = events[col].isna().to_numpy()
        if nulls.any():
            row = events.index[int(np.argmax(nulls))]
            raise ValueError(
                f"events[{col!r}] is null at row {row!r} ({int(nulls.sum())} null rows); "
                f"every event needs a {col}")
    order = events.sort_values(["user_id", "ts"], kind="stable")
    grp = order.groupby("user_id", sort=False, observed=True)
    size = grp["ts"].transform("size").to_numpy()
    from_end = grp.cumcount(ascending=False).to_numpy()
    n_test = np.maximum(1, np.floor(float(frac) * size + 0.5)).astype(np.int64)
    is_test = from_end < n_test
    return order[~is_test], order[is_test]
