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
