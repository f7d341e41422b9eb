"""Segment keywords (c-TF-IDF) and representative texts."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from interestflow.labels import detect_language, representative_texts, segment_keywords

# Hand-made corpus. With stop words removed and min_df=2 the kept terms and their counts are:
#   label -1: great 1, green 1, roots 1                  (3 words)
#   label  0: espresso 3, crema 2, great 1               (6 words)
#   label  1: monstera 3, leaves 2, green 1, roots 1     (7 words)
# so the average words per class is 16/3 and f(espresso) = f(monstera) = 3, the others 2.
TOY_TEXTS = [
    "the espresso is great", "espresso and crema", "an espresso with crema",
    "the monstera is green", "monstera leaves and roots", "a monstera with leaves",
    "great and green", "the roots", "solo",
]
TOY_LABELS = [0, 0, 0, 1, 1, 1, -1, -1, -1]


def test_toy_corpus_values_match_hand_computed_ctfidf():
    kw = segment_keywords(TOY_TEXTS, TOY_LABELS)
    assert list(kw) == [-1, 0, 1]
    idf3 = math.log(1 + (16 / 3) / 3)
    idf2 = math.log(1 + (16 / 3) / 2)
    expected = {
        0: [("espresso", 3 / 6 * idf3), ("crema", 2 / 6 * idf2), ("great", 1 / 6 * idf2)],
        1: [("monstera", 3 / 7 * idf3), ("leaves", 2 / 7 * idf2), ("green", 1 / 7 * idf2),
            ("roots", 1 / 7 * idf2)],
        # a three-way tie, broken alphabetically
        -1: [("great", 1 / 3 * idf2), ("green", 1 / 3 * idf2), ("roots", 1 / 3 * idf2)],
    }
    for label, want in expected.items():
        got = kw[label]
        assert [t for t, _ in got] == [t for t, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-12)


def test_top_n_and_min_df():
    kw = segment_keywords(TOY_TEXTS, TOY_LABELS, top_n=1)
    assert {k: v[0][0] for k, v in kw.items()} == {-1: "great", 0: "espresso", 1: "monstera"}
    assert all(len(v) == 1 for v in kw.values())
    # min_df counts texts, not class documents: "crema" only occurs in segment 0 (in two
    # texts) and is kept; "solo" occurs once and is dropped at min_df=2, kept at min_df=1.
    assert "solo" not in dict(segment_keywords(TOY_TEXTS, TOY_LABELS)[-1])
    assert "solo" in dict(segment_keywords(TOY_TEXTS, TOY_LABELS, min_df=1)[-1])


def test_stop_words_never_appear_in_keywords():
    from interestflow.synthetic import make_demo_events

    data = make_demo_events(120, n_topics=6, random_state=7)
    ev = data.events
    topics = ev["item_id"].map(data.item_topic)
    names = sorted(set(topics))
    labels = topics.map({n: i for i, n in enumerate(names)}).to_numpy()
    kw = segment_keywords(ev["text"].tolist(), labels, top_n=40)
    words = {t for v in kw.values() for t, _ in v}
    assert words and not (words & ENGLISH_STOP_WORDS)
    # Each planted topic is recognisable: its top 8 keywords include a product-type word.
    from interestflow.datasets._vocabulary import TOPICS as _TOPICS

    products = {t.name: {w for p in t.products for w in re.findall(r"\w\w+", p.lower())}
                for t in _TOPICS}
    for i, name in enumerate(names):
        top8 = {t for t, _ in kw[i][:8]}
        assert top8 & products[name], (name, top8)
    # With stop_words=None they do show up (frequent words like "the" survive).
    kw_all = segment_keywords(ev["text"].tolist(), labels, top_n=200, stop_words=None)
    assert {t for v in kw_all.values() for t, _ in v} & ENGLISH_STOP_WORDS


def test_custom_stop_list_and_bigrams():
    kw = segment_keywords(TOY_TEXTS, TOY_LABELS, stop_words=["espresso", "the", "and", "is",
                                                             "with", "an", "a"])
    assert kw[0][0][0] == "crema"
    texts = ["milk frother foams", "milk frother broke", "snake plant grows", "snake plant died"]
    kw = segment_keywords(texts, [0, 0, 1, 1], ngram_range=(1, 2), top_n=3)
    assert {t for t, _ in kw[0]} == {"milk", "frother", "milk frother"}
    assert {t for t, _ in kw[1]} == {"snake", "plant", "snake plant"}


CJK_TEXTS = [
    "这家的咖啡很好喝，咖啡豆新鲜", "拿铁咖啡不错，咖啡香味浓", "手冲咖啡是我的最爱",
    "咖啡豆的烘焙很均匀",
    "这部电影的剧情很精彩", "电影演员的表演很好", "电影配乐非常动人，剧情紧凑",
    "看完电影很感动",
]
CJK_LABELS = [0, 0, 0, 0, 1, 1, 1, 1]


def test_cjk_corpus_yields_cjk_bigrams():
    assert detect_language(CJK_TEXTS) == "cjk"
    kw = segment_keywords(CJK_TEXTS, CJK_LABELS)
    assert kw[0][0][0] == "咖啡"
    assert kw[1][0][0] == "电影"
    assert {t for t, _ in kw[0]} >= {"咖啡", "啡豆"}
    assert "剧情" in {t for t, _ in kw[1]}
    cjk_bigram = re.compile(r"[\u4e00-\u9fff]{2}")
    for v in kw.values():
        for term, _ in v:
            assert cjk_bigram.fullmatch(term), term
            assert not set(term) & set("的了是很我这")       # function characters skipped
    # Forcing the Latin analyser on Chinese text gives whole clauses, not bigrams.
    latin = segment_keywords(CJK_TEXTS, CJK_LABELS, language="latin", min_df=1)
    assert any(len(t) > 2 for v in latin.values() for t, _ in v)
    # stop_words=None keeps function-character bigrams.
    raw = segment_keywords(CJK_TEXTS, CJK_LABELS, stop_words=None, top_n=50, min_df=1)
    assert any("的" in t for v in raw.values() for t, _ in v)


def test_detect_language():
    assert detect_language(["great espresso", "bad coffee"]) == "latin"
    assert detect_language(["很好", "a"]) == "cjk"
    assert detect_language(["这部电影很好看", "this one is a great movie"]) == "latin"
    assert detect_language([]) == "latin"


@pytest.mark.parametrize(
    ("texts", "labels", "kwargs", "exc", "match"),
    [
        (["a b", "c d"], [0], {}, ValueError, "labels has 1 entries but there are 2 texts"),
        (["a b", "c d"], [0.0, 1.0], {}, TypeError, "labels must be integers"),
        (["a b", 3], [0, 1], {}, TypeError, "texts[1] must be a str, got int"),
        ("a b", [0], {}, TypeError, "not a single string"),
        (["alpha", "beta"], [0, 1], {}, ValueError, "lower min_df"),
        (TOY_TEXTS, TOY_LABELS, {"language": "fr"}, ValueError, "language='fr'"),
        (TOY_TEXTS, TOY_LABELS, {"top_n": 0}, ValueError, "top_n=0"),
        (TOY_TEXTS, TOY_LABELS, {"ngram_range": (2, 1)}, ValueError, "ngram_range=(2, 1)"),
        (TOY_TEXTS, TOY_LABELS, {"stop_words": "german"}, ValueError, "stop_words='german'"),
        ([], [], {}, ValueError, "texts is empty"),
    ],
)
def test_segment_keywords_bad_input(texts, labels, kwargs, exc, match):
    with pytest.raises(exc, match=re.escape(match)):
        segment_keywords(texts, labels, **kwargs)


# --- representative_texts ------------------------------------------------------------------

REP_TEXTS = ["east", "north-east", "north", "almost north", "west", "south-west", "noise a",
             "noise b"]
REP_VECS = np.array([
    [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.1, 1.0],      # segment 0 (around north-east)
    [-1.0, 0.0], [-1.0, -1.0],                           # segment 1 (around west)
    [0.0, -1.0], [0.3, -1.0],                            # noise
])
REP_LABELS = [0, 0, 0, 0, 1, 1, -1, -1]


def test_representative_texts_nearest_to_centroid():
    cents = {0: [1.0, 1.0], 1: [-1.0, -0.2], -1: [1.0, -1.0]}
    rep = representative_texts(REP_TEXTS, REP_VECS, REP_LABELS, cents, n=2)
    assert list(rep) == [-1, 0, 1]
    assert rep[0] == ["north-east", "almost north"]     # cos 1.0, then 0.77 (> east's 0.707)
    assert rep[1] == ["west", "south-west"]
    assert rep[-1] == ["noise b", "noise a"]
    # An array of centroids is indexed by label; noise needs a centroid too.
    rep = representative_texts(REP_TEXTS[:6], REP_VECS[:6], REP_LABELS[:6],
                               np.array([[0.0, 1.0], [-1.0, -1.0]]), n=1)
    assert rep == {0: ["north"], 1: ["south-west"]}
    with pytest.raises(ValueError, match="label -1 has no centroid"):
        representative_texts(REP_TEXTS, REP_VECS, REP_LABELS, np.eye(2))


def test_representative_texts_mean_centroid_ties_and_duplicates():
    # Mean of segment 0 is (0.525, 0.75): nearest by cosine are north-east, then almost north.
    rep = representative_texts(REP_TEXTS, REP_VECS, REP_LABELS, None, n=3)
    assert rep[0] == ["north-east", "almost north", "north"]
    assert len(rep[1]) == 2                              # only two members
    texts = ["dup", "dup", "other", "far"]
    vecs = np.array([[1.0, 0.0], [2.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    rep = representative_texts(texts, vecs, [0, 0, 0, 0], {0: [1.0, 0.0]}, n=3)
    assert rep[0] == ["dup", "other", "far"]
    # A zero vector has cosine 0 and ranks after positive matches.
    rep = representative_texts(["z", "p", "n"], np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]),
                               [5, 5, 5], {5: [1.0, 0.0]}, n=3)
    assert rep == {5: ["p", "z", "n"]}


@pytest.mark.parametrize(
    ("vecs", "cents", "kwargs", "match"),
    [
        (np.array([[np.nan, 0.0], [1.0, 0.0]]), None, {}, "vectors has NaN or inf at row 0"),
        (np.ones((3, 2)), None, {}, "vectors must have shape (n_texts, dim) = (2, dim)"),
        (np.ones((2, 2)), {0: [0.0, 0.0], 1: [1.0, 0.0]}, {}, "centroid of label 0 is zero"),
        (np.ones((2, 2)), {0: [1.0, 0.0, 0.0], 1: [1.0, 0.0]}, {},
         "centroid of label 0 has shape (3,)"),
        (np.ones((2, 2)), {0: [1.0, 0.0]}, {}, "label 1 has no centroid"),
        (np.ones((2, 2)), None, {"n": 0}, "n=0"),
    ],
)
def test_representative_texts_bad_input(vecs, cents, kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        representative_texts(["a", "b"], vecs, [0, 1], cents, **kwargs)
