"""Tests for k2v_hub.baselines: transferability estimators, no-data baselines, metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from k2v_hub import baselines as B
from k2v_hub.methods import ESTIMATORS, RERANK_METHODS, rerank_method

# --------------------------------------------------------------------------- helpers


def _class_signal(rng, n, f, c, strength=3.0, noise=1.0):
    """Features whose first c dims carry a one-hot class signal, plus isotropic noise."""
    y = np.arange(n) % c
    rng.shuffle(y)
    x = noise * rng.normal(size=(n, f))
    x[np.arange(n), y] += strength
    return x, y


def _logme_reference(f, y, *, thuml_compat=False):
    """Slow, explicit LogME: per class, per iteration, build A = alpha I + beta F^T F."""
    f = np.asarray(f, dtype=np.float64)
    n, d = f.shape
    ftf = f.T @ f
    classes = np.unique(y)
    rank = np.linalg.matrix_rank(f)
    evidences = []
    for cls in classes:
        t_vec = (y == cls).astype(np.float64)
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            t_old = alpha / beta
            a_mat = alpha * np.eye(d) + beta * ftf
            a_inv = np.linalg.inv(a_mat)
            m = beta * a_inv @ f.T @ t_vec
            gamma = float(np.trace(beta * ftf @ a_inv))
            m2 = float(m @ m)
            res2 = float(np.sum((f @ m - t_vec) ** 2))
            alpha = gamma / (m2 + 1e-5)
            beta = (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - t_old) / t_old <= 1e-3:
                break
        a_mat = alpha * np.eye(d) + beta * ftf
        _, logdet = np.linalg.slogdet(a_mat)
        if thuml_compat:  # reference code keeps only the rank(F) non-trivial eigenvalues
            logdet -= (d - rank) * math.log(alpha)
        ev = (
            d / 2 * math.log(alpha)
            + n / 2 * math.log(beta)
            - n / 2 * math.log(2 * math.pi)
            - beta / 2 * res2
            - alpha / 2 * m2
            - 0.5 * logdet
        )
        evidences.append(ev / n)
    return float(np.mean(evidences))


# --------------------------------------------------------------------------- LogME


def test_logme_prefers_informative_features_over_noise():
    rng = np.random.default_rng(0)
    x, y = _class_signal(rng, 300, 64, 5)
    noise = rng.normal(size=x.shape)
    good, bad = B.logme(x, y), B.logme(noise, y)
    assert good > bad + 0.05
    # more signal -> higher evidence
    x_strong, _ = _class_signal(np.random.default_rng(0), 300, 64, 5, strength=6.0)
    assert B.logme(x_strong, y) > good


@pytest.mark.parametrize("n,d,c", [(120, 15, 4), (25, 40, 3), (60, 60, 5)])
def test_logme_matches_slow_reference(n, d, c):
    rng = np.random.default_rng(n * 7 + d)
    x, y = _class_signal(rng, n, d, c, strength=1.5)
    assert B.logme(x, y) == pytest.approx(_logme_reference(x, y), abs=1e-6)
    assert B.logme(x, y, thuml_compat=True) == pytest.approx(_logme_reference(x, y, thuml_compat=True), abs=1e-6)


def test_logme_thuml_compat_only_differs_for_rank_deficient_features():
    rng = np.random.default_rng(1)
    x, y = _class_signal(rng, 200, 20, 4)
    assert B.logme(x, y) == pytest.approx(B.logme(x, y, thuml_compat=True), abs=1e-12)
    x_wide, y_wide = _class_signal(rng, 30, 80, 3)  # N < F: rank 30 < 80
    assert B.logme(x_wide, y_wide) != pytest.approx(B.logme(x_wide, y_wide, thuml_compat=True), abs=1e-3)


def test_logme_is_numerically_safe():
    rng = np.random.default_rng(2)
    x, y = _class_signal(rng, 50, 10, 3)
    y = y.copy()
    y[0] = 7  # a single-sample class with a non-contiguous id
    assert math.isfinite(B.logme(x, y))
    # relabelling classes does not change the score
    assert B.logme(x, y) == pytest.approx(B.logme(x, np.unique(y, return_inverse=True)[1]), abs=1e-12)
    # duplicated (rank-deficient) columns and all-zero features stay finite
    assert math.isfinite(B.logme(np.hstack([x, x]), y))
    assert math.isfinite(B.logme(np.zeros((50, 10)), y))
    with pytest.raises(ValueError):
        B.logme(np.full((5, 2), np.nan), np.zeros(5, int))


def test_logme_probs_black_box_variant():
    rng = np.random.default_rng(3)
    n, c = 300, 4
    y = rng.integers(0, c, n)
    # informative predictor: source class z == target class with prob .8
    logits_good = rng.normal(size=(n, 8))
    logits_good[np.arange(n), y] += 3.0
    logits_bad = rng.normal(size=(n, 8))
    to_p = lambda z: np.exp(z) / np.exp(z).sum(1, keepdims=True)  # noqa: E731
    assert B.logme_probs(to_p(logits_good), y) > B.logme_probs(to_p(logits_bad), y)
    # clr of softmax == centred logits exactly
    z = logits_good
    assert B.logme_probs(to_p(z), y) == pytest.approx(B.logme(z - z.mean(1, keepdims=True), y), abs=1e-9)


# --------------------------------------------------------------------------- LEEP


def _leep_by_hand(p, y):
    n, zdim = p.shape
    c = int(y.max()) + 1
    joint = [[0.0] * zdim for _ in range(c)]
    for i in range(n):
        for z in range(zdim):
            joint[y[i]][z] += p[i, z] / n
    pz = [sum(joint[yy][z] for yy in range(c)) for z in range(zdim)]
    total = 0.0
    for i in range(n):
        s = 0.0
        for z in range(zdim):
            if pz[z] > 0:
                s += joint[y[i]][z] / pz[z] * p[i, z]
        total += math.log(s)
    return total / n


def test_leep_matches_hand_computation_and_is_nonpositive():
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.full(6, 0.5), size=80)
    p[:, 5] = 0.0  # a never-predicted source class (P(z)=0)
    p /= p.sum(1, keepdims=True)
    y = rng.integers(0, 3, 80)
    v = B.leep(p, y)
    assert v == pytest.approx(_leep_by_hand(p, y), abs=1e-12)
    assert v <= 0.0


def test_leep_perfect_deterministic_mapping_is_zero():
    z = np.array([0, 1, 2, 3, 4, 5, 0, 1, 2, 3])
    y = np.array([0, 0, 1, 1, 2, 2, 0, 0, 1, 1])  # y = z // 2
    p = np.eye(6)[z]
    assert B.leep(p, y) == pytest.approx(0.0, abs=1e-12)
    # an informative soft predictor beats an uninformative (uniform) one
    assert B.leep(np.full((10, 6), 1 / 6), y) < B.leep(0.9 * p + 0.1 / 6, y) < 0.0


# --------------------------------------------------------------------------- NCE


def test_nce_matches_hand_entropy():
    rng = np.random.default_rng(5)
    z = rng.integers(0, 5, 200)
    y = (z + (rng.random(200) < 0.3) * rng.integers(0, 3, 200)) % 3
    n = len(y)
    h = 0.0
    for zz in np.unique(z):
        idx = z == zz
        pz = idx.sum() / n
        for yy in np.unique(y):
            pyz = np.sum(idx & (y == yy)) / idx.sum()
            if pyz > 0:
                h -= pz * pyz * math.log(pyz)
    assert B.nce(z, y) == pytest.approx(-h, abs=1e-12)
    assert B.nce(z, y) < 0


def test_nce_zero_for_deterministic_mapping_and_from_probs():
    z = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    y = z % 2
    assert B.nce(z, y) == pytest.approx(0.0, abs=1e-15)
    rng = np.random.default_rng(6)
    p = rng.dirichlet(np.ones(4), size=50)
    yy = rng.integers(0, 3, 50)
    assert B.nce_from_probs(p, yy) == B.nce(p.argmax(1), yy)
    # independence: H(Y|Z) = H(Y) for a constant source label
    y_bal = np.array([0, 1] * 10)
    assert B.nce(np.zeros(20, int), y_bal) == pytest.approx(-math.log(2))


# --------------------------------------------------------------------------- H-score


def test_h_score_prefers_separable_classes_and_matches_formula():
    rng = np.random.default_rng(7)
    x, y = _class_signal(rng, 400, 20, 4, strength=4.0)
    noise = rng.normal(size=x.shape)
    assert B.h_score(x, y) > 5 * B.h_score(noise, y)
    # direct formula (np.linalg.pinv, 1/N covariances)
    xc = x - x.mean(0)
    g = np.zeros_like(x)
    for c in np.unique(y):
        g[y == c] = xc[y == c].mean(0)
    ref = np.trace(np.linalg.pinv(xc.T @ xc / len(x)) @ (g.T @ g / len(x)))
    assert B.h_score(x, y) == pytest.approx(ref, rel=1e-8)


def test_h_score_shrinkage_and_degenerate_inputs():
    sklearn_cov = pytest.importorskip("sklearn.covariance")
    rng = np.random.default_rng(8)
    x, y = _class_signal(rng, 60, 100, 3)  # N < F: singular covariance
    assert math.isfinite(B.h_score(x, y))
    xc = x - x.mean(0)
    assert B._ledoit_wolf_shrinkage(xc) == pytest.approx(
        sklearn_cov.ledoit_wolf_shrinkage(xc, assume_centered=True), rel=1e-9
    )
    assert math.isfinite(B.h_score(x, y, shrinkage="ledoit_wolf"))
    assert B.h_score(x, y, shrinkage=0.0) == pytest.approx(B.h_score(x, y), rel=1e-8)
    assert B.h_score(np.ones((10, 3)), np.arange(10) % 2) == 0.0


# --------------------------------------------------------------------------- NLEEP


def test_nleep_ranks_discriminative_features_above_noise():
    rng = np.random.default_rng(9)
    n, c = 400, 4
    y = np.arange(n) % c
    centers = rng.normal(scale=6.0, size=(c, 16))
    good = centers[y] + rng.normal(size=(n, 16))
    noise = rng.normal(size=(n, 16))
    s_good, s_noise = B.nleep(good, y), B.nleep(noise, y)
    assert s_good > s_noise + 0.3
    assert s_good <= 0.0
    assert B.nleep(good, y) == s_good  # seeded: deterministic


def test_pca_keeps_variance_fraction_like_sklearn():
    decomposition = pytest.importorskip("sklearn.decomposition")
    rng = np.random.default_rng(10)
    x = rng.normal(size=(200, 30)) * np.linspace(5, 0.1, 30)
    ours = B._pca(x, 0.8)
    theirs = decomposition.PCA(n_components=0.8, svd_solver="full").fit(x)
    assert ours.shape[1] == theirs.n_components_
    assert B._pca(x, 5).shape == (200, 5)


# --------------------------------------------------------------------------- registry / ranking


def test_estimator_registry_metadata_and_calls():
    by_name = {m.name: m for m in ESTIMATORS}
    assert {"logme", "leep", "nce", "h_score", "h_score_reg", "nleep", "logme_probs"} <= set(by_name)
    assert by_name["logme"].access == "grey-box (features)" and by_name["logme"].rerank == "grey-box"
    assert by_name["leep"].access == "black-box (predictions, all models)" and by_name["leep"].rerank == "black-box"
    assert RERANK_METHODS == ("leep", "nce", "logme-probs", "head-accuracy", "logme")
    assert rerank_method("logme-probs") is rerank_method("logme_probs") is by_name["logme_probs"]
    assert rerank_method("h_score") is None and rerank_method("magic") is None
    rng = np.random.default_rng(11)
    feats, y = _class_signal(rng, 60, 8, 3)
    probs = rng.dirichlet(np.ones(5), size=60)
    for name, method in by_name.items():
        arg = feats if method.inputs == "features" else probs
        names = ([f"l{z}" for z in range(5)], ["l0", "l1", "l2"]) if method.needs_names else ()
        assert math.isfinite(method.estimator(arg, y, *names)), name


def test_head_accuracy_scores_the_model_as_it_is_on_the_class_names_it_has():
    """Its own head over the dataset's names it has (exact names; case counts); a class it lacks counts wrong."""
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    y = np.array([0, 1, 1, 2])  # cat, dog, dog, bird
    model = [" cat", "fish", "dog "]
    # the head restricted to cat/dog: row 0 cat (right), row 1 dog (right), row 2 dog (0.3 > 0.2, right), row 3 cat
    # (a bird the model cannot name: wrong)
    assert B.head_accuracy(probs, y, model, ["cat", "dog", "bird"]) == 0.75
    assert B.head_accuracy(probs, y, model, ["class_0", "class_1", "class_2"]) == 0.0  # label-blind: no evidence
    assert B.head_accuracy(probs, y, model, ["Cat", "dog", "bird"]) == 0.5  # "Cat" is not "cat": rows 0, 3 wrong
    with pytest.raises(ValueError, match="columns"):
        B.head_accuracy(probs, y, ["cat", "dog"], ["cat", "dog", "bird"])


def test_rank_models_best_first_deterministic_ties_nan_last():
    scores = {"b": 1.0, "a": 1.0, "c": 2.0, "d": float("nan"), "e": -1.0}
    assert B.rank_models(scores) == ["c", "a", "b", "e", "d"]
    assert B.rank_models(dict(reversed(list(scores.items())))) == ["c", "a", "b", "e", "d"]


# --------------------------------------------------------------------------- no-data baselines


def test_random_popularity_size_scores():
    ids = ["m1", "m2", "m3", "m4"]
    r = B.random_scores(ids, seed=0)
    assert r == B.random_scores(list(reversed(ids)), seed=0)  # order-independent
    assert r != B.random_scores(ids, seed=1)
    assert all(0.0 <= v < 1.0 for v in r.values()) and len(set(r.values())) == 4
    pop = B.popularity_scores({"a": {"downloads": 10, "likes": 5}, "b": {"downloads": 10, "likes": 7}, "c": {}})
    assert pop == {"a": pytest.approx(10.005), "b": pytest.approx(10.007), "c": 0.0}
    assert B.rank_models(pop) == ["b", "a", "c"]
    assert B.rank_models(B.size_scores({"s": 10, "l": 1000})) == ["l", "s"]


def test_normalize_label_and_label_match():
    assert B.normalize_label("Ａ") == B.normalize_label("a") == "a"
    assert B.normalize_label("Grinning-Face!") == B.normalize_label("grinning face") == "grinningface"
    assert B.normalize_label("Straße") == B.normalize_label("STRASSE")
    assert B.normalize_label("  犬\t") == "犬"  # other scripts kept, whitespace dropped
    assert B.normalize_label("ﬁsh_２") == "fish2"
    scores = B.label_match_scores(
        ["Ａpple", "Grinning-Face!", "cat", "cat"],
        {"m1": ["apple", "grinning face", "CAT"], "m2": ["apple pie", "dog"], "m3": []},
    )
    assert scores == {"m1": 1.0, "m2": 0.0, "m3": 0.0}
    assert B.label_match_scores(["cat", "dog"], {"m": ["Dog"]}) == {"m": 0.5}
    assert B.label_match_scores(["!!"], {"m": ["x"]}) == {"m": 0.0}


def test_card_dataset_scores():
    cards = {"a": ["uoft-cs/cifar10", "imagenet-1k"], "b": ["CIFAR10"], "c": ["other/cifar10"], "d": []}
    assert B.card_dataset_scores("cifar10", cards) == {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.0}
    assert B.card_dataset_scores("uoft-cs/cifar10", cards) == {"a": 1.0, "b": 1.0, "c": 0.0, "d": 0.0}
    assert B.card_dataset_scores(None, cards) == {"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0}


def test_param_count_from_safetensors_reads_header_only(tmp_path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    tensors = {
        "w": torch.zeros(17, 33),
        "b": torch.ones(33, dtype=torch.float16),
        "s": torch.tensor(3.0),
        "e": torch.zeros(0, 4),
        "k": torch.zeros(2, 3, 4, 5, dtype=torch.int8),
    }
    path = tmp_path / "model.safetensors"
    st.save_file(tensors, str(path), metadata={"format": "pt"})
    expected = sum(t.numel() for t in tensors.values())
    assert B.param_count_from_safetensors(path) == expected
    # cut the file right after the header: no tensor data left, still counts
    raw = path.read_bytes()
    hlen = int.from_bytes(raw[:8], "little")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(raw[: 8 + hlen])
    assert B.param_count_from_safetensors(cut) == expected
    # and a header that is itself truncated is an error, not a wrong count
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(raw[: 8 + hlen // 2])
    with pytest.raises(ValueError):
        B.param_count_from_safetensors(bad)


# --------------------------------------------------------------------------- correlation metrics


def test_correlation_metrics():
    truth = [0.9, 0.7, 0.5, 0.3, 0.1]
    assert B.weighted_kendall_tau(truth, truth) == pytest.approx(1.0)
    assert B.weighted_kendall_tau([1, 2, 3, 4, 5], truth) == pytest.approx(-1.0)
    assert B.pearson([2, 4, 6, 8, 10], [1, 2, 3, 4, 5]) == pytest.approx(1.0)
    assert B.spearman([1, 10, 100, 1000, 10000], [1, 2, 3, 4, 5]) == pytest.approx(1.0)
    for fn in (B.weighted_kendall_tau, B.pearson, B.spearman):
        assert fn([1.0, 1.0, 1.0], [1, 2, 3]) == 0.0
        assert fn([1.0], [2.0]) == 0.0
    # top-weighted: a swap at the top costs more than one at the bottom
    top_swap = [0.7, 0.9, 0.5, 0.3, 0.1]
    bottom_swap = [0.9, 0.7, 0.5, 0.1, 0.3]
    assert B.weighted_kendall_tau(top_swap, truth) < B.weighted_kendall_tau(bottom_swap, truth) < 1.0
    # dicts align by model id; a failed (NaN) estimator score ranks last
    s = {"a": 3.0, "b": 2.0, "c": float("nan")}
    t = {"c": 0.1, "b": 0.5, "a": 0.9, "zzz": 1.0}
    assert B.weighted_kendall_tau(s, t) == pytest.approx(1.0)
    assert B.spearman(s, t) == pytest.approx(1.0)
