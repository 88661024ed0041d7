"""Vector search: the index's matrix product ranks like an exact FAISS index (through `datasets`), and its partial
sort gives the head of a full stable sort."""

import numpy as np
import pytest

from k2v_hub.index import K2VIndex, best_first


def test_matrix_product_matches_faiss_through_datasets():
    datasets = pytest.importorskip("datasets")
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3000, 32)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    index = K2VIndex([{} for _ in range(len(emb))], emb, {}, "mem")
    queries = emb[[3, 77, 2999]] + 0.05 * rng.normal(size=(3, 32)).astype(np.float32)
    ds = datasets.Dataset.from_dict({"embedding": emb})
    ds.add_faiss_index("embedding", metric_type=faiss.METRIC_INNER_PRODUCT)
    for q in queries:
        scores = index.first_stage(q).scores
        order = best_first(scores, 10)
        exact = ds.search("embedding", q.astype(np.float32), k=10)
        assert order.tolist() == [int(i) for i in exact.indices]
        np.testing.assert_allclose(scores[order], exact.scores, atol=1e-5)
    assert best_first(index.first_stage(queries[0]).scores, 1)[0] == 3
    assert best_first(index.first_stage(queries[2]).scores, 1)[0] == 2999


def test_best_first_is_the_head_of_a_stable_full_sort():
    rng = np.random.default_rng(1)
    for scores in (rng.normal(size=500), rng.integers(0, 4, size=500).astype(np.float32),  # many ties
                   np.r_[np.ones(7), np.zeros(7)], np.full(20, 0.5)):
        full = np.argsort(-scores, kind="stable")
        for k in (1, 2, 5, 7, 8, 13, len(scores), len(scores) + 3, None):
            assert best_first(scores, k).tolist() == full[:k].tolist(), k
    index = K2VIndex([{} for _ in range(50)], np.eye(50, dtype=np.float32), {}, "mem")
    stage = index.first_stage(np.eye(50, dtype=np.float32)[4])  # no dataset means: no data scores, the cosine
    assert stage.knowledge[4] == 1 and np.isnan(stage.data).all() and (stage.scores == stage.knowledge).all()


def test_first_stage_order_interleaves_label_and_vector_rankings():
    from k2v_hub.find import first_stage_order

    vector = np.array([0.9, 0.8, 0.1, 0.2, 0.5])
    labels = np.array([0.0, 0.0, 1.0, 0.5, 0.0])
    # label ranking: 2, 3 (only models sharing a name); vector ranking: 0, 1, 4, 3, 2
    assert first_stage_order(vector, labels).tolist() == [2, 0, 3, 1, 4]
    assert first_stage_order(vector, None).tolist() == [0, 1, 4, 3, 2]
    assert first_stage_order(vector, np.zeros(5)).tolist() == [0, 1, 4, 3, 2]
    # equal label overlap: the vector breaks the tie
    assert first_stage_order(vector, np.array([1.0, 0, 1.0, 0, 0])).tolist() == [0, 2, 1, 4, 3]
