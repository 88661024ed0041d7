"""How `k2v-hub bench` scores a ranking: recall with ties, the two-stage hybrid."""

import numpy as np

from k2v_hub.bench import score_method, with_hybrids


def _score(S, truth):
    truth = np.asarray(truth, dtype=float)
    return score_method(np.asarray(S, dtype=float), truth, truth, truth)


def test_recall_counts_a_tie_for_best_as_a_hit_and_ranks_a_constant_method_like_chance():
    truth = [[0.9, 0.9, 0.1, 0.2]] * 2
    assert _score([[0.5, 0.9, 0.1, 0.0], [0.9, 0.1, 0.0, 0.2]], truth)["r@1"] == 1.0
    wrong = _score([[0.0, 0.1, 0.9, 0.5]] * 2, truth)
    assert wrong["r@1"] == 0.0 and wrong["rel@1"] == round(0.1 / 0.9, 4)  # it picks column 2
    # a constant method is broken by a per-task permutation, never by column order: over many tasks it is chance
    n = 400
    flat = _score(np.zeros((n, 4)), [[1.0, 0.0, 0.0, 0.0]] * n)["r@1"]
    assert 0.15 < flat < 0.35


def test_two_stage_reranks_the_vector_candidates_by_leep_and_keeps_the_rest_below():
    vector = np.array([[0.9, 0.8, 0.7, 0.1]])
    leep = np.array([[-3.0, -1.0, -2.0, 0.0]])  # the best LEEP (model 3) is outside the top 3 vector candidates
    m, s = with_hybrids({"know2vec": vector, "leep": leep}, {"know2vec": 0.001, "leep": 4.0},
                        np.zeros_like(vector), n_models=4)
    assert list(np.argsort(-m["know2vec+leep@3"][0])) == [1, 2, 0, 3]
    assert s["know2vec+leep@3"] == 0.001 + 4.0 * 3 / 4  # three models run, not four
    # label names bring model 3 into the candidates of the product's rule
    lab = np.array([[0.0, 0.0, 0.0, 1.0]])
    m, _ = with_hybrids({"know2vec": vector, "leep": leep}, {"know2vec": 0.0, "leep": 0.0}, lab, n_models=4)
    assert int(np.argmax(m["two-stage-leep@3"][0])) == 3

