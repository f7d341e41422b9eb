"""Planted-interest generator and the temporal train/test split."""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest

from interestflow.datasets import _vocabulary as S
from interestflow.datasets._vocabulary import TOPICS as _TOPICS
from interestflow.synthetic import (
    TOPIC_NAMES,
    make_demo_events,
    train_test_split_by_time,
)


@pytest.fixture(scope="module")
def demo():
    return make_demo_events()


def _event_topics(data):
    return data.events["item_id"].map(data.item_topic)


def test_frame_schema_and_sizes(demo):
    ev = demo.events
    assert ev.columns.tolist() == ["user_id", "text", "ts", "item_id", "weight"]
    assert str(ev["ts"].dtype) == "datetime64[ns, UTC]"
    assert ev["weight"].dtype == np.float64 and (ev["weight"] == 1.0).all()
    assert ev["user_id"].nunique() == 400
    assert ev["user_id"].str.fullmatch(r"u\d{4}").all()
    assert sorted(ev["user_id"].unique())[0] == "u0001"
    sizes = ev.groupby("user_id").size()
    assert sizes.min() >= 8 and sizes.max() <= 20
    assert sizes.nunique() > 5                      # spread over the range, not constant
    assert demo.topic_names == list(TOPIC_NAMES[:8])
    assert set(demo.user_topic.index) == set(ev["user_id"])
    assert set(demo.user_topic) <= set(demo.topic_names)
    assert demo.items.columns.tolist() == ["item_id", "text"]
    assert demo.items["item_id"].is_unique


def test_requested_counts_and_ranges():
    data = make_demo_events(37, n_topics=3, events_per_user=(2, 4), days=10, random_state=5)
    sizes = data.events.groupby("user_id").size()
    assert len(sizes) == 37 and sizes.between(2, 4).all()
    assert data.topic_names == list(TOPIC_NAMES[:3])
    ts = data.events["ts"]
    assert ts.min() >= pd.Timestamp("2024-01-01", tz="UTC")
    assert ts.max() <= pd.Timestamp("2024-01-11", tz="UTC")


def test_timestamps_strictly_increase_per_user(demo):
    ev = demo.events
    diffs = ev.groupby("user_id")["ts"].diff().dropna()
    assert (diffs > pd.Timedelta(0)).all()
    # The period is covered: events span most of the 180 days.
    span = ev["ts"].max() - ev["ts"].min()
    assert span > pd.Timedelta(days=150)


def test_deterministic_for_a_seed():
    a = make_demo_events(60, random_state=3)
    b = make_demo_events(60, random_state=3)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.items, b.items)
    pd.testing.assert_series_equal(a.user_topic, b.user_topic)
    pd.testing.assert_series_equal(a.drifted, b.drifted)
    c = make_demo_events(60, random_state=4)
    assert not a.events["text"].equals(c.events["text"])
    assert not a.user_topic.equals(c.user_topic)


def test_items_per_topic_and_references(demo):
    counts = demo.item_topic.value_counts()
    assert set(counts.index) == set(demo.topic_names)
    assert counts.between(15, 25).all()
    assert set(demo.items["item_id"]) == set(demo.item_topic.index)
    assert demo.events["item_id"].isin(demo.items["item_id"]).all()
    # Item descriptions are short product blurbs naming the product type of their topic.
    by_name = {t.name: t for t in _TOPICS}
    for item_id, text in zip(demo.items["item_id"], demo.items["text"]):
        topic = by_name[demo.item_topic[item_id]]
        assert 5 <= len(text.split()) <= 40
        assert any(p.lower() in text.lower() for p in topic.products), text


def test_each_text_talks_about_its_items_topic(demo):
    by_name = {t.name: t for t in _TOPICS}
    vocab = {}
    for name, t in by_name.items():
        phrases = (t.brands + t.models + t.products + t.adjectives + t.attributes + t.features
                   + t.purposes + t.experiences + t.complaints + t.questions)
        vocab[name] = [p.lower() for p in phrases]
    topics = _event_topics(demo)
    for text, topic in zip(demo.events["text"], topics):
        low = text.lower()
        assert any(p in low for p in vocab[topic]), (topic, text)


def test_texts_are_varied(demo):
    texts = demo.events["text"]
    assert texts.nunique() / len(texts) > 0.90
    words = texts.str.split().str.len()
    assert words.min() >= 3 and words.max() <= 60
    assert words.quantile(0.9) >= 30 and words.quantile(0.1) <= 8
    # All four kinds occur in sensible shares: queries are lower case without a final stop,
    # questions end with "?", reviews have several sentences.
    queries = texts.str.fullmatch(r"[^A-Z.?!]+")
    questions = texts.str.contains(r"\?")
    multi = texts.str.count(r"[.!?](?:\s|$)") >= 2
    assert 0.15 < queries.mean() < 0.35
    assert questions.mean() > 0.05
    assert multi.mean() > 0.25


def _template_regex(template: str) -> re.Pattern:
    parts = re.split(r"\{[a-z0-9_]+\}", template)
    literal = [re.escape(p).replace(r"\ a\ ", r"\ an?\ ") for p in parts]
    return re.compile("(?:.+?)".join(literal), re.IGNORECASE | re.DOTALL)


def test_every_template_is_used(demo):
    # At least 80 phrase templates, and every one of them shows up in the default demo
    # (reviews compose several sentence templates, so those are searched inside texts).
    templates = S.REVIEW_SENTENCES + S.QUERIES + S.POSTS + S.RATINGS
    assert len(set(templates)) >= 80
    texts = demo.events["text"].tolist()
    unused = []
    for tpl in templates:
        rx = _template_regex(tpl)
        anchored = tpl not in S.REVIEW_SENTENCES
        if not any((rx.fullmatch(t) if anchored else rx.search(t)) for t in texts):
            unused.append(tpl)
    assert unused == []


def test_drifted_users_end_on_their_planted_topic(demo):
    drifted = demo.drifted
    assert drifted.dtype == bool and int(drifted.sum()) == 100     # round(0.25 * 400)
    topics = _event_topics(demo)
    ev = demo.events.assign(topic=topics.to_numpy())
    last = ev.groupby("user_id").tail(1).set_index("user_id")["topic"]
    first = ev.groupby("user_id").head(1).set_index("user_id")["topic"]
    # Every user's last event is about their planted current topic.
    assert (last == demo.user_topic.loc[last.index]).all()
    d_users = drifted[drifted].index
    assert (demo.user_topic[d_users] != demo.user_initial_topic[d_users]).all()
    nd_users = drifted[~drifted].index
    assert (demo.user_topic[nd_users] == demo.user_initial_topic[nd_users]).all()
    # Drifted users start on their initial topic (noise aside).
    assert (first[d_users] == demo.user_initial_topic[d_users]).mean() > 0.8
    # The latest 3 events of a user are mostly about the planted topic.
    tail = ev.groupby("user_id").tail(3)
    share = (tail["topic"].to_numpy() == demo.user_topic.loc[tail["user_id"]].to_numpy()).mean()
    assert share > 0.9


def test_noise_share_is_about_ten_percent(demo):
    stayed = demo.drifted[~demo.drifted].index
    ev = demo.events[demo.events["user_id"].isin(stayed)]
    planted = demo.user_topic.loc[ev["user_id"]].to_numpy()
    off = ev["item_id"].map(demo.item_topic).to_numpy() != planted
    assert 0.06 < off.mean() < 0.14


def test_topics_balanced_and_no_drift():
    data = make_demo_events(80, n_topics=4, drift_fraction=0.0, random_state=2)
    assert not data.drifted.any()
    assert data.user_topic.value_counts().tolist() == [20, 20, 20, 20]
    one = make_demo_events(10, n_topics=1, drift_fraction=0.0, random_state=0)
    assert set(one.item_topic) == {TOPIC_NAMES[0]}


def test_generation_is_fast():
    make_demo_events(50)      # warm caches
    t0 = time.perf_counter()
    make_demo_events(400)
    # About 0.15 s on a loaded 2-core machine; a wide bound keeps the test about regressions.
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_topics": 13}, ValueError, "n_topics=13 exceeds the 12 available"),
        ({"n_topics": 0}, ValueError, "n_topics=0"),
        ({"n_users": 0}, ValueError, "n_users=0"),
        ({"n_users": 2.5}, TypeError, "n_users must be an int"),
        ({"events_per_user": (5, 3)}, ValueError, "max < min"),
        ({"events_per_user": 5}, TypeError, "events_per_user"),
        ({"drift_fraction": 1.5}, ValueError, "drift_fraction"),
        ({"n_topics": 1}, ValueError, "at least two topics"),
        ({"events_per_user": (1, 1)}, ValueError, "at least 2 events"),
        ({"days": 0}, ValueError, "days=0"),
        ({"start": "not a date"}, ValueError, "start="),
        ({"seed": -1}, ValueError, "seed=-1"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=re.escape(match)):
        make_demo_events(**{"n_users": 20, **kwargs})


# --- train_test_split_by_time --------------------------------------------------------------

def test_split_holds_out_latest_share(demo):
    train, test = train_test_split_by_time(demo.events)
    assert len(train) + len(test) == len(demo.events)
    assert set(train.index).isdisjoint(test.index)
    sizes = demo.events.groupby("user_id").size()
    n_test = test.groupby("user_id").size().reindex(sizes.index, fill_value=0)
    expected = sizes.map(lambda n: max(1, round(0.2 * n)))
    assert (n_test == expected).all()
    last_train = train.groupby("user_id")["ts"].max()
    first_test = test.groupby("user_id")["ts"].min()
    assert (first_test.loc[last_train.index] > last_train).all()


def test_split_on_unsorted_hand_frame():
    ev = pd.DataFrame({
        "user_id": ["a", "b", "a", "a", "c", "a", "a", "b"],
        "ts": pd.to_datetime([5, 2, 1, 4, 9, 2, 3, 1], unit="D", utc=True),
        "text": list("pqrstuvw"),
    })
    train, test = train_test_split_by_time(ev)
    # a: 5 events -> 1 held out (ts 5); b: 2 events -> max(1, round(0.4)) = 1 (ts 2);
    # c: 1 event -> held out.
    assert test["text"].tolist() == ["p", "q", "t"]
    assert train["text"].tolist() == ["r", "u", "v", "s", "w"]
    train, test = train_test_split_by_time(ev, frac=0.5)
    # a: round(2.5) half up = 3 -> ts 3, 4, 5.
    assert test[test["user_id"] == "a"]["text"].tolist() == ["v", "s", "p"]


@pytest.mark.parametrize(
    ("frame", "frac", "exc", "match"),
    [
        (pd.DataFrame({"user_id": ["a"]}), 0.2, ValueError, "missing column(s) ['ts']"),
        (pd.DataFrame({"user_id": ["a", None], "ts": [1, 2]}), 0.2, ValueError,
         "events['user_id'] is null at row 1"),
        (pd.DataFrame({"user_id": ["a", "b"], "ts": [1, np.nan]}), 0.2, ValueError,
         "events['ts'] is null at row 1"),
        (pd.DataFrame({"user_id": ["a"], "ts": [1]}), 1.0, ValueError, "frac=1.0"),
        (pd.DataFrame({"user_id": ["a"], "ts": [1]}), "x", TypeError, "frac must be"),
        ([1, 2], 0.2, TypeError, "pandas DataFrame"),
    ],
)
def test_split_bad_input(frame, frac, exc, match):
    with pytest.raises(exc, match=re.escape(match)):
        train_test_split_by_time(frame, frac=frac)
