"""Vector search: the matrix product and the FAISS index (through `datasets`) rank alike."""

import numpy as np

from k2v_hub.index import K2VIndex


def test_faiss_through_datasets_matches_matrix_product():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3000, 32)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    index = K2VIndex([{} for _ in range(len(emb))], emb, {}, "mem")
    queries = emb[[3, 77, 2999]] + 0.05 * rng.normal(size=(3, 32)).astype(np.float32)
    exact = [index.search(q, 10) for q in queries]
    index.use_faiss()
    approx = [index.search(q, 10) for q in queries]
    for e, a in zip(exact, approx):
        assert [i for i, _ in e] == [i for i, _ in a]
        np.testing.assert_allclose([s for _, s in e], [s for _, s in a], atol=1e-5)
    assert exact[0][0][0] == 3 and exact[2][0][0] == 2999


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
