"""How `k2v-hub bench` scores a ranking: recall with ties, the two-stage hybrid, the random row, intervals, folds and
the leakage check."""

from types import SimpleNamespace

import numpy as np
import pytest

from k2v_hub.bench import score_method, with_hybrids
from k2v_hub.bench.folds import domain_folds
from k2v_hub.bench.leakage import disjoint_images
from k2v_hub.bench.uncertainty import bootstrap_interval, paired_difference, random_expectation
from k2v_hub.zoo.data import ZooData


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


def test_fused_rerank_keeps_the_data_evidence_as_find_model_does():
    """``fused-data-leep@3``: the data stage's 3 candidates ordered by z(LEEP) + weight x z(data) over them (the
    function `find_model` uses); LEEP alone would put model 2 first, the data score's lead puts model 0 first."""
    from k2v_hub.rerank import fuse_scores

    data = np.array([[0.95, 0.5, 0.45, 0.1]])
    leep = np.array([[-1.05, -1.2, -1.0, 0.0]])  # model 3 (best LEEP) is not a candidate
    m, s = with_hybrids({"know2vec": data, "leep": leep, "data": data}, {"know2vec": 0.0, "leep": 4.0, "data": 0.1},
                        np.zeros_like(data), n_models=4, fusion=0.5)
    assert list(np.argsort(-m["two-stage-data-leep@3"][0])) == [2, 0, 1, 3]
    assert list(np.argsort(-m["fused-data-leep@3"][0])) == [0, 2, 1, 3]
    assert list(np.argsort(-fuse_scores(leep[0, :3], data[0, :3], 0.5))) == [0, 2, 1]
    assert s["fused-data-leep@3"] == s["two-stage-data-leep@3"] == 0.1 + 4.0 * 3 / 4
    m0, _ = with_hybrids({"know2vec": data, "leep": leep, "data": data}, {"know2vec": 0.0, "leep": 0.0, "data": 0.0},
                         np.zeros_like(data), n_models=4, fusion=0.0)
    assert np.array_equal(np.argsort(-m0["fused-data-leep@3"][0]), np.argsort(-m0["two-stage-data-leep@3"][0]))


def test_head_accuracy_reranks_the_data_candidates_and_its_ties_keep_the_first_stage_order():
    """``two-stage-data-head-accuracy@3`` (only with class names): the data stage's 3 candidates by their own
    head's accuracy; two candidates at the same accuracy stay in the data stage's order, whatever the seed."""
    data = np.array([[0.9, 0.8, 0.7, 0.1]])
    head = np.array([[0.5, 1.0, 1.0, 1.0]])  # model 3 is not a candidate; models 1 and 2 tie
    leep = np.zeros_like(data)
    m, s = with_hybrids({"know2vec": data, "leep": leep, "data": data, "head_accuracy": head},
                        {"know2vec": 0.0, "leep": 4.0, "data": 0.1, "head_accuracy": 4.0}, np.zeros_like(data),
                        n_models=4)
    assert list(np.argsort(-m["two-stage-data-head-accuracy@3"][0], kind="stable")) == [1, 2, 0, 3]
    assert s["two-stage-data-head-accuracy@3"] == 0.1 + 4.0 * 3 / 4
    truth = np.array([[0.0, 0.5, 1.0, 0.0]])
    hits = [score_method(m["two-stage-data-head-accuracy@3"], truth, truth, truth, seed)["r@1"] for seed in range(8)]
    assert hits == [0.0] * 8  # model 1 (first by data among the tied) is picked with every seed, never model 2
    blind, _ = with_hybrids({"know2vec": data, "leep": leep, "data": data}, {"know2vec": 0.0, "leep": 0.0,
                            "data": 0.0}, np.zeros_like(data), n_models=4)
    assert not any("head-accuracy" in name for name in blind)  # label-blind runs have no head_accuracy matrix


def test_data_and_vector_mix_only_on_tasks_whose_best_data_match_is_a_trained_model():
    """``data+know2vec``: task 0's best data match (model 0) was trained on, so the vector decides between it and
    its trained near tie (model 1); task 1's (model 2) was not, so the data order stays, vector or not. Without a
    mask (no retriever's models) there is no such row; its LEEP two-stage re-ranks its own candidates."""
    data = np.array([[0.90, 0.89, 0.5, 0.1], [0.6, 0.5, 0.9, 0.1]])
    vector = np.array([[0.1, 0.9, 0.2, 0.0], [0.9, 0.8, 0.0, 0.1]])
    leep = np.array([[-1.0, -2.0, -3.0, 0.0], [-1.0, -2.0, -3.0, 0.0]])
    trained = np.array([True, True, False, False])
    base = {"know2vec": vector, "leep": leep, "data": data}
    m, s = with_hybrids(base, {"know2vec": 0.01, "leep": 4.0, "data": 0.1}, np.zeros_like(data), n_models=4,
                        trained=trained)
    assert [int(np.argmax(row)) for row in m["data+know2vec"]] == [1, 2]
    assert list(np.argsort(-m["data+know2vec"][1])) == list(np.argsort(-data[1]))
    assert s["data+know2vec"] == 0.11
    assert int(np.argmax(m["two-stage-data+know2vec-leep@3"][0])) == 0  # LEEP's best of the top 3 by the mix
    assert s["two-stage-data+know2vec-leep@3"] == s["fused-data+know2vec-leep@3"] == 0.11 + 4.0 * 3 / 4
    plain, _ = with_hybrids(base, {"know2vec": 0.0, "leep": 0.0, "data": 0.0}, np.zeros_like(data), n_models=4)
    assert not any("data+know2vec" in name for name in plain)


def test_fuse_scores_ranks_a_failed_estimate_last_and_standardises_a_single_candidate_to_zero():
    from k2v_hub.rerank import fuse_scores

    fused = fuse_scores([-1.0, float("nan"), -2.0], [0.1, 0.9, 0.2], 0.5)
    assert np.isfinite(fused).all() and int(np.argmin(fused)) == 1
    assert fuse_scores([-3.0], [0.4], 0.5).tolist() == [0.0]



def test_random_row_is_the_exact_expectation_of_a_random_ranking():
    """What `random` reports is the mean over all orderings, not one lucky draw."""
    rng = np.random.default_rng(1)
    truth = rng.random((6, 9))
    truth[0, :3] = truth[0].max()  # a three-way tie for best counts each of the three as a hit
    v, ft = rng.random((6, 9)), rng.random((6, 9))
    exact = {k: float(np.mean(x)) for k, x in random_expectation(truth, v, ft).items()}
    assert exact["r@1"] == pytest.approx(np.mean([3 / 9] + [1 / 9] * 5))
    assert exact["tau_w"] == 0.0
    draws = [score_method(rng.random((6, 9)), truth, v, ft, seed=s) for s in range(2000)]
    for key in ("r@1", "r@3", "rel@1", "rel@3", "v_acc"):
        assert np.mean([d[key] for d in draws]) == pytest.approx(exact[key], abs=0.015), key


def test_bootstrap_intervals_cover_the_mean_and_shrink_with_more_tasks():
    few = bootstrap_interval([1, 0, 1, 1, 0, 1, 0, 1], seed=0)
    many = bootstrap_interval([1, 0, 1, 1, 0, 1, 0, 1] * 20, seed=0)
    assert few[0] <= 0.625 <= few[1] and many[0] <= 0.625 <= many[1]
    assert many[1] - many[0] < few[1] - few[0]
    d = paired_difference([1, 1, 1, 0, 1, 1], [0, 1, 0, 0, 1, 0])
    assert d["mean"] == 0.5 and d["ci95"][0] > 0 and d["p_a_better"] > 0.95
    with pytest.raises(ValueError, match="same tasks"):
        paired_difference([1, 0], [1])


def test_domain_folds_hold_out_every_domain_once_with_balanced_model_counts():
    models = {f"m{i}": {"domain": d} for i, d in enumerate(["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"] * 2 + ["e"])}
    data = SimpleNamespace(models=list(models), zoo=SimpleNamespace(models=models))
    folds = domain_folds(data, 3)
    assert sorted(d for f in folds for d in f) == ["a", "b", "c", "d", "e"]
    sizes = sorted(sum(1 for m in models.values() if m["domain"] in f) for f in folds)
    assert sizes == [5, 5, 5]
    assert len(domain_folds(data, 10)) == 5  # never more folds than domains


def test_the_built_zoo_keeps_training_and_evaluation_images_apart(tiny_zoo):
    """The bench's `disjoint_images`, read from the task folders a zoo build wrote."""
    report = disjoint_images(ZooData(tiny_zoo))
    assert report["train_vs_eval"] and report["train_vs_val"] and report["val_vs_eval"]
    assert min(report["images"].values()) > 0


def test_seed_spread_summarises_every_r_at_1_each_seed_has_and_reads_one_line_per_measure():
    """`bench --seeds/--zoo-seeds`: the data stage and the two-stage join the vector's rows; a measure a seed
    lacks (an older run's) is left out of the summary instead of averaged over fewer seeds."""
    from k2v_hub.bench.report import spread_table
    from k2v_hub.bench.studies import spread_summary

    per_seed = {"0": {"r@1": 0.5, "r@3": 0.7, "data+know2vec r@1": 0.75, "leep r@1": 0.6},
                "1": {"r@1": 0.7, "r@3": 0.9, "data+know2vec r@1": 0.75}}
    summary = spread_summary(per_seed)
    assert list(summary) == ["r@1", "data+know2vec r@1"]
    assert summary["r@1"] == {"mean": 0.6, "std": 0.1, "min": 0.5, "max": 0.7}
    assert summary["data+know2vec r@1"]["std"] == 0.0
    table = spread_table("measure", {"per_seed": per_seed, "summary": summary})
    assert table[0] == "| measure | 0 | 1 | mean ± std |"
    assert table[2:] == ["| r@1 | 0.5 | 0.7 | 0.6 ± 0.1 |", "| data+know2vec r@1 | 0.75 | 0.75 | 0.75 ± 0.0 |"]
