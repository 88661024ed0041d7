"""Transferability estimators, no-data baselines and ranking-correlation metrics.

Everything here is a pure function over arrays or metadata: nothing downloads, loads
weights or touches the Hub. The estimators score how well a pre-trained model suits a
labelled target dataset from what the model emits on that dataset:

* **grey-box** estimators need penultimate-layer ``features: [N, F]`` (float);
* **black-box** estimators need only the model's predictions ``probs: [N, Z]`` (rows are
  probability vectors over the model's ``Z`` source labels, summing to 1).

Target ``labels: [N]`` are class ids ``0..C-1``. Any hashable labels are accepted (they are
re-indexed with :func:`numpy.unique`), so classes that never occur are simply absent rather
than degenerate. Larger scores mean "predicted to transfer better" for every estimator.

Shapes follow the thuml/LogME reference code (``N`` samples, ``F`` feature dims, ``C``
target classes, ``Z`` source classes). Linear algebra is done in float64 on the Gram
matrix of the smaller side, so ``N=2000, F=1280`` costs one ``1280 x 1280`` eigensolve.

Which estimator needs which inputs, what access to a model it takes and whether `find_model` can re-rank with it:
:mod:`k2v_hub.methods`.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike

import numpy as np
from scipy import sparse

__all__ = [
    "logme",
    "leep",
    "nce",
    "nce_from_probs",
    "h_score",
    "h_score_reg",
    "nleep",
    "logme_probs",
    "rank_models",
    "random_scores",
    "popularity_scores",
    "size_scores",
    "normalize_label",
    "label_match_scores",
    "card_dataset_scores",
    "param_count_from_safetensors",
    "weighted_kendall_tau",
    "pearson",
    "spearman",
]

_EPS = np.finfo(np.float64).eps
_TINY = 1e-300  # floor for alpha/beta so log() never sees 0
_PROB_FLOOR = 1e-300  # floor for probabilities passed to log()


# --------------------------------------------------------------------------- input checks


def _as_features(features, name: str = "features") -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, F], got shape {f.shape}")
    if f.shape[0] == 0 or f.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{name} contains NaN or inf")
    return f


def _as_labels(labels, n: int | None = None, name: str = "labels") -> tuple[np.ndarray, int]:
    """Return (y, C): ``y: [N]`` re-indexed to ``0..C-1`` over the classes actually present."""
    y = np.asarray(labels)
    if y.ndim != 1:
        y = y.reshape(-1)
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} entries but the inputs have {n} rows")
    if y.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    _, inv = np.unique(y, return_inverse=True)
    inv = inv.reshape(-1).astype(np.intp)
    return inv, int(inv.max()) + 1


def _as_probs(probs, name: str = "probs") -> np.ndarray:
    p = _as_features(probs, name)
    if np.any(p < 0):
        raise ValueError(f"{name} must be probabilities (non-negative), got negative entries")
    s = p.sum(axis=1, keepdims=True)
    if np.any(s <= 0):
        raise ValueError(f"{name} has an all-zero row; each row must be a probability vector")
    return p / s  # no-op (up to rounding) for valid rows


def _class_sums(x: np.ndarray, y: np.ndarray, c: int) -> np.ndarray:
    """``Y^T x`` for the one-hot ``Y`` of ``y``: ``[C, D]`` per-class row sums of ``x: [N, D]``."""
    n = y.shape[0]
    onehot_t = sparse.csr_matrix((np.ones(n), (y, np.arange(n))), shape=(c, n))
    return np.asarray(onehot_t @ x)


def _gram_eig(x: np.ndarray, rel_tol: float | None = None):
    """Thin SVD of ``x: [N, D]`` via the eigendecomposition of the smaller Gram matrix.

    Returns ``(sigma, vecs, side)`` with ``sigma: [k]`` the non-zero squared singular values
    (descending) and ``vecs`` the matching right (``side == "right"``, ``[D, k]``) or left
    (``side == "left"``, ``[N, k]``) singular vectors. Eigenvalues below
    ``rel_tol * max(sigma)`` (default ``max(N, D) * eps``, the rounding level of the Gram
    matrix) are treated as exact zeros, i.e. ``k`` is the numerical rank.
    """
    n, d = x.shape
    if n >= d:
        side = "right"
        g = x.T @ x
    else:
        side = "left"
        g = x @ x.T
    w, v = np.linalg.eigh(g)
    w, v = w[::-1], v[:, ::-1]
    tol = (max(n, d) * _EPS) if rel_tol is None else rel_tol
    top = w[0] if w.size else 0.0
    if not top > 0:
        return np.zeros(0), v[:, :0], side
    keep = w > tol * top
    return w[keep], v[:, keep], side


# --------------------------------------------------------------------------- LogME


def logme(features, labels, *, thuml_compat: bool = False) -> float:
    """LogME: average maximum log evidence of a Bayesian linear model on the features.

    You, Liu, Wang & Long, "LogME: Practical Assessment of Pre-trained Models for Transfer
    Learning", ICML 2021 (http://proceedings.mlr.press/v139/you21b.html); fixed-point
    solver from You et al., "Ranking and Tuning Pre-trained Models: A New Paradigm for
    Exploiting Model Hubs", JMLR 2022, as in the reference code github.com/thuml/LogME.

    Args:
        features: ``[N, F]`` penultimate-layer features (used as-is: no centring/scaling).
        labels: ``[N]`` target class ids ``0..C-1``.
        thuml_compat: reproduce ``thuml/LogME.LogME._fit_fixed_point`` bit-for-bit in
            formula. It differs from the paper only when ``rank(F) < F`` (e.g. ``N <= F``):
            the reference code then drops the ``(F - rank)/2 * log(alpha)`` part of
            ``-1/2 log|A|``. Default ``False`` uses the paper's exact evidence.

    For each class ``c`` the target is the one-hot column ``y = [labels == c]`` and the model
    is ``y = F w + N(0, 1/beta)``, ``w ~ N(0, I/alpha)``. With ``A = alpha I + beta F^T F``,
    ``m = beta A^-1 F^T y`` and ``gamma = sum_i beta s_i / (alpha + beta s_i)`` (``s_i`` the
    eigenvalues of ``F^T F``), alpha and beta are updated by the MacKay fixed point
    ``alpha <- gamma / m^T m``, ``beta <- (N - gamma) / ||F m - y||^2`` (``+1e-5`` in the
    denominators, start ``alpha = beta = 1``, at most 11 iterations, stop when
    ``alpha/beta`` moves by ``<= 1e-3`` relatively). The evidence

        L = F/2 log alpha + N/2 log beta - N/2 log 2pi - beta/2 ||F m - y||^2
            - alpha/2 m^T m - 1/2 log|A|

    is divided by ``N`` and averaged over the ``C`` classes present (thuml convention:
    ``m`` is from the last iterate, alpha/beta from the last update). Everything is
    expressed in the SVD of ``F`` and vectorised over classes.

    Returns:
        The LogME score (float; higher = better transfer expected).
    """
    f = _as_features(features)
    n, d = f.shape
    y, c = _as_labels(labels, n)
    return float(np.mean(_logme_evidences(f, y, c, thuml_compat=thuml_compat)))


def _logme_evidences(f: np.ndarray, y: np.ndarray, c: int, *, thuml_compat: bool = False) -> np.ndarray:
    n, d = f.shape
    counts = np.bincount(y, minlength=c).astype(np.float64)  # ||y_c||^2 of the one-hot columns
    sigma, vecs, side = _gram_eig(f)
    k = sigma.shape[0]
    if side == "right":
        # x = U^T y with U = F V / s  ->  x = V^T (F^T Y) / s; F^T Y is a per-class sum.
        fty = _class_sums(f, y, c).T  # [F, C]
        x = (vecs.T @ fty) / np.sqrt(sigma)[:, None]
    else:
        x = _class_sums(vecs, y, c).T  # U^T Y: per-class column sums of U
    x2 = x * x  # [k, C]
    res_x2 = np.maximum(counts - x2.sum(axis=0), 0.0)  # part of y outside the column space

    s = sigma[:, None]
    alpha = np.ones(c)
    beta = np.ones(c)
    m2 = np.zeros(c)
    res2 = np.zeros(c)
    active = np.arange(c)
    for _ in range(11):
        a, b = alpha[active], beta[active]
        t = a / b
        gamma = (s / (s + t)).sum(axis=0)
        m2_a = (s * x2[:, active] / (t + s) ** 2).sum(axis=0)
        res2_a = (x2[:, active] / (1.0 + s / t) ** 2).sum(axis=0) + res_x2[active]
        a = np.maximum(gamma / (m2_a + 1e-5), _TINY)
        b = np.maximum((n - gamma) / (res2_a + 1e-5), _TINY)
        alpha[active], beta[active] = a, b
        m2[active], res2[active] = m2_a, res2_a
        done = np.abs(a / b - t) / t <= 1e-3
        active = active[~done]
        if active.size == 0:
            break

    logdet = np.log(alpha[None, :] + beta[None, :] * s).sum(axis=0)  # [C], rank part of log|A|
    alpha_dims = d if thuml_compat else k  # paper: log|A| also has (d - k) * log(alpha)
    evidence = (
        (alpha_dims / 2.0) * np.log(alpha)
        + (n / 2.0) * np.log(beta)
        - 0.5 * logdet
        - beta / 2.0 * res2
        - alpha / 2.0 * m2
        - (n / 2.0) * np.log(2 * np.pi)
    )
    return evidence / n


def logme_probs(probs, labels, *, transform: str = "clr") -> float:
    """Black-box LogME: LogME with the model's predicted distribution as the feature vector.

    Not a separate paper: it applies You et al. 2021 (see :func:`logme`) to what a
    prediction-only API returns, the usual black-box stand-in when penultimate features are
    unavailable (LogME on logits is also used in You et al., JMLR 2022, for model hubs).

    Args:
        probs: ``[N, Z]`` source-label probability rows (each sums to 1).
        labels: ``[N]`` target class ids ``0..C-1``.
        transform: how probabilities become features ``[N, Z]``:
            ``"clr"`` (default) centred log-ratio ``log p - mean_z log p``, which equals the
            model's logits centred per row (softmax is invariant to the dropped shift), with
            ``p`` floored at ``1e-12`` so hard zeros stay finite;
            ``"log"`` plain ``log(max(p, 1e-12))``; ``"prob"`` the probabilities themselves.
    """
    p = _as_probs(probs)
    if transform == "prob":
        feats = p
    elif transform in ("log", "clr"):
        feats = np.log(np.maximum(p, 1e-12))
        if transform == "clr":
            feats = feats - feats.mean(axis=1, keepdims=True)
    else:
        raise ValueError(f"transform must be 'clr', 'log' or 'prob', got {transform!r}")
    return logme(feats, labels)


# --------------------------------------------------------------------------- LEEP / NCE


def leep(probs, labels) -> float:
    """LEEP: Log Expected Empirical Prediction.

    Nguyen, Hassner, Seeger & Archambeau, "LEEP: A New Measure to Evaluate Transferability
    of Learned Representations", ICML 2020 (http://proceedings.mlr.press/v119/nguyen20b.html).

    Args:
        probs: ``[N, Z]`` source-model predictions ``theta(x_i)``, rows summing to 1
            (rows are re-normalised; negative entries are rejected).
        labels: ``[N]`` target class ids ``0..C-1``.

    Empirical joint ``P(y, z) = 1/N sum_{i: y_i = y} theta(x_i)_z`` ``[C, Z]``, conditional
    ``P(y | z) = P(y, z) / P(z)``, and

        LEEP = 1/N sum_i log( sum_z P(y_i | z) theta(x_i)_z ).

    Source labels with ``P(z) = 0`` get ``P(y|z) = 0`` (they carry no mass in any row).
    Always ``<= 0``; ``0`` iff the expected empirical predictor is certain and right.
    """
    p = _as_probs(probs)
    n = p.shape[0]
    y, c = _as_labels(labels, n)
    joint = _class_sums(p, y, c) / n  # P(y, z) [C, Z]
    pz = joint.sum(axis=0)
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P(y|z) [C, Z]
    # eep[i] = sum_z theta_iz P(y_i|z): only the true-class column is needed.
    eep = np.einsum("iz,iz->i", p, cond[y])
    return float(np.mean(np.log(np.maximum(eep, _PROB_FLOOR))))


def nce(source_labels, labels) -> float:
    """NCE: Negative Conditional Entropy ``-H(Y | Z)`` of target given source labels.

    Tran, Nguyen & Hassner, "Transferability and Hardness of Supervised Classification
    Tasks", ICCV 2019 (arXiv:1908.08142).

    Args:
        source_labels: ``[N]`` hard source labels ``z_i`` (ids, e.g. argmax predictions).
        labels: ``[N]`` target class ids ``0..C-1``.

    With the empirical joint ``P(y, z) = #{i: y_i = y, z_i = z} / N``,

        NCE = -H(Y|Z) = sum_{y,z} P(y, z) log( P(y, z) / P(z) ),

    (``0 log 0 = 0``). Always ``<= 0``; ``0`` iff the target is a function of the source label.
    """
    z, nz = _as_labels(source_labels, name="source_labels")
    y, c = _as_labels(labels, z.shape[0])
    n = y.shape[0]
    joint = np.bincount(y * nz + z, minlength=c * nz).reshape(c, nz).astype(np.float64) / n
    pz = joint.sum(axis=0)
    nzmask = joint > 0
    ratio = joint / np.where(pz > 0, pz, 1.0)[None, :]
    return float(np.sum(joint[nzmask] * np.log(ratio[nzmask])))


def nce_from_probs(probs, labels) -> float:
    """NCE (Tran et al., ICCV 2019) with ``source_labels = argmax(probs, axis=1)``.

    Args:
        probs: ``[N, Z]`` source-model predictions; ties resolve to the lowest index.
        labels: ``[N]`` target class ids ``0..C-1``.
    """
    p = _as_features(probs, "probs")
    return nce(np.argmax(p, axis=1), labels)


def exact_label(name) -> str:
    """How :func:`head_accuracy` matches a dataset's class name to a model's label: exactly, surrounding spaces
    aside (case counts)."""
    return str(name).strip()


def head_accuracy(probs, labels, model_labels: Sequence[str], task_labels: Sequence[str]) -> float:
    """The model used as it is: the accuracy of its own head on the dataset's images, restricted to the dataset's
    class names it has; an image of a class the model lacks counts as wrong, and a model with none of the names
    scores 0. Names match exactly, surrounding spaces aside: case counts (``a`` and ``A`` are two classes of a
    letters dataset), so rename a dataset's classes to the model's labels before asking.

    Args:
        probs: ``[N, Z]`` the model's predictions, columns in the order of ``model_labels``.
        labels: ``[N]`` indices into ``task_labels``.
        model_labels: the model's label names (``config.id2label`` order).
        task_labels: the dataset's class names.
    """
    p = _as_probs(probs)
    y = np.asarray(labels).reshape(-1)
    if len(y) != len(p):
        raise ValueError(f"labels has {len(y)} entries but probs has {len(p)} rows")
    if len(model_labels) != p.shape[1]:
        raise ValueError(f"probs has {p.shape[1]} columns but the model has {len(model_labels)} labels")
    column = {exact_label(name): z for z, name in enumerate(model_labels)}
    shared = [(c, column[exact_label(name)]) for c, name in enumerate(task_labels) if exact_label(name) in column]
    if not shared:
        return 0.0
    classes = np.asarray([c for c, _ in shared])
    predicted = classes[p[:, [z for _, z in shared]].argmax(axis=1)]
    return float((predicted == y).mean())


# --------------------------------------------------------------------------- H-score


def h_score(features, labels, *, shrinkage: float | str | None = None, rcond: float | None = None) -> float:
    """H-score: ``tr( cov(f)^-1 cov(E[f | y]) )``.

    Bao, Li, Huang, Zhao, Tong & Zheng, "An Information-Theoretic Approach to
    Transferability in Task Transfer Learning", ICIP 2019 (doi:10.1109/ICIP.2019.8803726).

    Args:
        features: ``[N, F]`` penultimate-layer features.
        labels: ``[N]`` target class ids ``0..C-1``.
        shrinkage: ``None`` (default, as the paper and common code) inverts the empirical
            feature covariance with a pseudo-inverse. A float ``lam`` in ``[0, 1]`` or
            ``"ledoit_wolf"`` first shrinks it to ``(1 - lam) cov + lam * tr(cov)/F * I``
            (the regularised H-score of Ibrahim, Ponomareva & Mazumder, "Newer is not
            always better: Rethinking transferability metrics, their peculiarities,
            stability and performance", ECML-PKDD 2022), which helps when ``N <~ F``.
        rcond: pseudo-inverse cut-off relative to the largest eigenvalue
            (default ``F * eps``).

    Both covariances use the ``1/N`` normalisation (the ratio is what matters);
    ``cov(E[f|y]) = sum_c (n_c/N) (mu_c - mu)(mu_c - mu)^T``. Equivalent to
    ``sum_j ||M v_j||^2 / w_j`` over the eigenpairs ``(w_j, v_j)`` of ``cov(f)``, with rows
    ``M_c = sqrt(n_c/N) (mu_c - mu)``.
    """
    f = _as_features(features)
    n, d = f.shape
    y, c = _as_labels(labels, n)
    mu = f.mean(axis=0)
    xc = f - mu
    counts = np.bincount(y, minlength=c).astype(np.float64)
    sums = _class_sums(xc, y, c)
    means = sums / counts[:, None]  # mu_c - mu
    m = means * np.sqrt(counts / n)[:, None]  # [C, F]

    cov = (xc.T @ xc) / n
    if shrinkage is not None:
        lam = _ledoit_wolf_shrinkage(xc) if shrinkage == "ledoit_wolf" else float(shrinkage)
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1] or 'ledoit_wolf', got {shrinkage!r}")
        mu_tr = np.trace(cov) / d
        cov = (1.0 - lam) * cov
        cov[np.diag_indices(d)] += lam * mu_tr
    w, v = np.linalg.eigh(cov)
    top = w[-1] if w.size else 0.0
    if not top > 0:
        return 0.0  # constant features: no between-class signal at all
    tol = (d * _EPS if rcond is None else rcond) * top
    keep = w > tol
    proj = m @ v[:, keep]  # [C, k]
    return float(np.sum((proj * proj) / w[keep][None, :]))


def h_score_reg(features, labels) -> float:
    """The regularised H-score: :func:`h_score` with Ledoit-Wolf shrinkage of the feature covariance."""
    return h_score(features, labels, shrinkage="ledoit_wolf")


def _ledoit_wolf_shrinkage(xc: np.ndarray) -> float:
    """Ledoit & Wolf (2004) optimal shrinkage intensity for centred ``xc: [N, F]``.

    Same estimator as :func:`sklearn.covariance.ledoit_wolf_shrinkage` (``assume_centered``).
    """
    n, p = xc.shape
    x2 = xc * xc
    emp_cov_trace = x2.sum(axis=0) / n
    mu = emp_cov_trace.sum() / p
    beta_ = np.sum(x2.T @ x2)
    delta_ = np.sum((xc.T @ xc) ** 2) / n**2
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * emp_cov_trace.sum() + p * mu**2) / p
    beta = min(beta, delta)
    return 0.0 if beta == 0 else float(beta / delta)


# --------------------------------------------------------------------------- NLEEP


def nleep(features, labels, *, n_components_ratio: float = 5, pca_dim: float | int | None = 0.8, seed: int = 0) -> float:
    """N-LEEP: LEEP with a Gaussian mixture on the features as the "source classifier".

    Li, Jia, Tang, Kang, Lin, Song, Belongie & Cui, "Ranking Neural Checkpoints",
    CVPR 2021 (arXiv:2011.11200), Sec. 4 (NLEEP).

    Args:
        features: ``[N, F]`` penultimate-layer features.
        labels: ``[N]`` target class ids ``0..C-1``.
        n_components_ratio: mixture size ``K = round(n_components_ratio * C)`` (paper: 5),
            capped at ``N``.
        pca_dim: PCA before the mixture. A float in ``(0, 1]`` keeps the fewest leading
            components explaining at least that fraction of variance (paper: 0.8, same rule
            as ``sklearn.decomposition.PCA(n_components=0.8)``); an int keeps that many;
            ``None`` / ``0`` skips PCA.
        seed: random state of the mixture's k-means initialisation.

    The mixture is ``sklearn.mixture.GaussianMixture`` with diagonal covariances (the
    paper fits full ones; diagonal keeps this ``O(N K F)`` per EM step), and the score is
    :func:`leep` on its posteriors ``[N, K]``.
    """
    # only NLEEP needs scikit-learn: imported here, it costs `find_model` (which imports this module) nothing
    # (measured: +0.9 s on top of find_model's own imports)
    from sklearn.mixture import GaussianMixture

    f = _as_features(features)
    n, d = f.shape
    y, c = _as_labels(labels, n)
    z = _pca(f, pca_dim)
    k = int(max(1, min(n, round(n_components_ratio * c))))
    gmm = GaussianMixture(
        n_components=k,
        covariance_type="diag",
        reg_covar=1e-6,
        max_iter=100,
        random_state=seed,
    )
    # Scale to unit average variance: reg_covar is absolute, so this makes it scale-free.
    scale = np.sqrt(np.mean(z.var(axis=0))) or 1.0
    gmm.fit(z / scale)
    post = gmm.predict_proba(z / scale)
    return leep(post, y)


def _pca(f: np.ndarray, pca_dim) -> np.ndarray:
    if pca_dim is None or pca_dim == 0:
        return f
    xc = f - f.mean(axis=0)
    sigma, vecs, side = _gram_eig(xc)
    if sigma.size == 0:
        return xc[:, :1]  # constant features: one zero column
    if isinstance(pca_dim, (int, np.integer)) and not isinstance(pca_dim, bool) and pca_dim >= 1:
        q = int(min(pca_dim, sigma.size))
    else:
        frac = float(pca_dim)
        if not 0.0 < frac <= 1.0:
            raise ValueError(f"pca_dim must be a fraction in (0, 1] or an int >= 1, got {pca_dim!r}")
        ratio = np.cumsum(sigma) / sigma.sum()
        q = int(min(np.searchsorted(ratio, frac, side="right") + 1, sigma.size))
    if side == "right":
        return xc @ vecs[:, :q]
    return vecs[:, :q] * np.sqrt(sigma[:q])[None, :]


# --------------------------------------------------------------------------- ranking


def rank_models(scores: Mapping[str, float]) -> list[str]:
    """Model ids sorted best (highest score) first; ties by name; NaN scores last."""

    def key(item):
        name, s = item
        s = float(s)
        return (math.isnan(s), -s if not math.isnan(s) else 0.0, str(name))

    return [name for name, _ in sorted(scores.items(), key=key)]


# --------------------------------------------------------------------------- no-data baselines


def random_scores(model_ids: Iterable[str], seed: int) -> dict[str, float]:
    """Uniform ``[0, 1)`` score per model, a pure function of ``(seed, model_id)``.

    Independent of the order/contents of ``model_ids``, so a model keeps its score when the
    pool changes (SHA-256 of ``"{seed}\\x00{model_id}"``, first 53 bits).
    """
    out = {}
    for mid in model_ids:
        h = hashlib.sha256(f"{seed}\x00{mid}".encode()).digest()
        out[mid] = (int.from_bytes(h[:8], "big") >> 11) / float(1 << 53)
    return out


def popularity_scores(meta: Mapping[str, Mapping]) -> dict[str, float]:
    """``downloads + 1e-3 * likes`` (likes only break download ties); missing/None count as 0."""
    out = {}
    for mid, m in meta.items():
        m = m or {}
        out[mid] = float(m.get("downloads") or 0) + 1e-3 * float(m.get("likes") or 0)
    return out


def size_scores(param_counts: Mapping[str, int]) -> dict[str, float]:
    """Parameter count as the score (bigger model ranks higher); missing/None -> NaN."""
    return {mid: (float(p) if p is not None else float("nan")) for mid, p in param_counts.items()}


def normalize_label(s: str) -> str:
    """Canonical form of a class name for matching.

    Unicode NFKC (full-width ``"Ａ"`` -> ``"A"``, ligatures, ...), case-folded, NFKC again
    (case folding can denormalise), then every character in a punctuation (``P*``),
    separator (``Z*``) or other/control (``C*``: tabs, newlines, zero-width marks)
    category is dropped. Letters, combining marks, digits and symbols of any script stay,
    so ``"Grinning-Face!"``, ``"grinning_face"`` and ``"grinning face"`` all give
    ``"grinningface"``.
    """
    t = unicodedata.normalize("NFKC", str(s))
    t = unicodedata.normalize("NFKC", t.casefold())
    return "".join(ch for ch in t if unicodedata.category(ch)[0] not in "PZC")


def label_match_scores(task_labels: Sequence[str], model_labels: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Fraction of the task's distinct normalised label names found among a model's labels.

    ``model_labels[model_id]`` are the model's ``config.id2label`` names. Both sides go
    through :func:`normalize_label`; names that normalise to ``""`` are ignored. A task
    with no usable names scores 0.0 for every model.
    """
    task = {normalize_label(t) for t in task_labels} - {""}
    out = {}
    for mid, names in model_labels.items():
        if not task:
            out[mid] = 0.0
            continue
        have = {normalize_label(n) for n in (names or [])}
        out[mid] = len(task & have) / len(task)
    return out


def _dataset_key(name: str) -> str:
    return str(name).strip().strip("/").casefold()


def _same_dataset(a: str, b: str) -> bool:
    """Case-insensitive equality; a bare name also matches a namespaced one (``imdb`` ~
    ``stanfordnlp/imdb``), but two different namespaces never match."""
    a, b = _dataset_key(a), _dataset_key(b)
    if not a or not b:
        return False
    if a == b:
        return True
    if "/" in a and "/" in b:
        return False
    return a.rsplit("/", 1)[-1] == b.rsplit("/", 1)[-1]


def card_dataset_scores(task_source: str | None, card_datasets: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """1.0 if a model card's ``datasets:`` list names the task's source dataset, else 0.0.

    Matching is case-insensitive; a bare name matches its namespaced form (``"cifar10"``
    ~ ``"uoft-cs/cifar10"``). ``task_source=None`` gives 0.0 everywhere.
    """
    out = {}
    for mid, ds in card_datasets.items():
        if task_source is None or not ds:
            out[mid] = 0.0
            continue
        if isinstance(ds, str):
            ds = [ds]
        out[mid] = 1.0 if any(_same_dataset(task_source, d) for d in ds if d is not None) else 0.0
    return out


_MAX_SAFETENSORS_HEADER = 100_000_000  # the format's own limit


def param_count_from_safetensors(path: str | PathLike) -> int:
    """Total number of tensor elements in a ``.safetensors`` file, reading only its header.

    Format: 8-byte little-endian u64 header length ``L``, then ``L`` bytes of JSON
    ``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}``. Returns
    ``sum(prod(shape))`` over the tensors (a scalar ``shape == []`` counts 1). The tensor
    data is never read, so a file truncated right after the header works.
    """
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (hlen,) = struct.unpack("<Q", head)
        if hlen == 0 or hlen > _MAX_SAFETENSORS_HEADER:
            raise ValueError(f"{path}: implausible safetensors header length {hlen}")
        raw = fh.read(hlen)
    if len(raw) != hlen:
        raise ValueError(f"{path}: truncated safetensors header ({len(raw)} of {hlen} bytes)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: safetensors header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not a JSON object")
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ValueError(f"{path}: tensor {name!r} has no valid shape")
        total += math.prod(shape)
    return int(total)


# --------------------------------------------------------------------------- correlation metrics


def _paired(scores, truth, *, nan_scores_last: bool) -> tuple[np.ndarray, np.ndarray]:
    """Align ``scores``/``truth`` (dicts by model id on their common keys, or sequences).

    Pairs with a non-finite ``truth`` are dropped. Non-finite scores (a failed estimator)
    are either ranked below every finite score (``nan_scores_last``) or dropped.
    """
    if isinstance(scores, Mapping) and isinstance(truth, Mapping):
        keys = sorted(set(scores) & set(truth), key=str)
        s = np.array([scores[k] for k in keys], dtype=np.float64)
        t = np.array([truth[k] for k in keys], dtype=np.float64)
    elif isinstance(scores, Mapping) or isinstance(truth, Mapping):
        raise TypeError("pass scores and truth both as dicts (by model id) or both as sequences")
    else:
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        t = np.asarray(truth, dtype=np.float64).reshape(-1)
        if s.shape != t.shape:
            raise ValueError(f"scores and truth differ in length: {s.shape[0]} vs {t.shape[0]}")
    ok = np.isfinite(t)
    s, t = s[ok], t[ok]
    bad = ~np.isfinite(s)
    if bad.any():
        if nan_scores_last:
            finite = s[~bad]
            floor = (finite.min() if finite.size else 0.0) - 1.0
            s = np.where(np.isnan(s) | (s == -np.inf), floor, s)
            s = np.where(s == np.inf, (finite.max() if finite.size else 0.0) + 1.0, s)
        else:
            s, t = s[~bad], t[~bad]
    return s, t


def _degenerate(s: np.ndarray, t: np.ndarray) -> bool:
    return s.size < 2 or np.ptp(s) == 0 or np.ptp(t) == 0


def weighted_kendall_tau(scores, truth) -> float:
    """Weighted Kendall's tau, ``scipy.stats.weightedtau(truth, scores).statistic``.

    Hyperbolic weigher ``1/(r+1)`` with ``rank=True`` (the average over both lexicographic
    rankings), the convention of SFDA (Shao et al., ECCV 2022) and later transferability
    benchmarks: swaps among the top models cost most. ``scores``/``truth`` are equal-length
    sequences or dicts keyed by model id. Non-finite scores rank last; returns 0.0 with
    fewer than 2 models or a constant side.
    """
    from scipy import stats  # the bench's metrics only: +0.6 s on top of find_model's imports (measured)

    s, t = _paired(scores, truth, nan_scores_last=True)
    if _degenerate(s, t):
        return 0.0
    res = stats.weightedtau(t, s)
    v = float(getattr(res, "statistic", res[0]))
    return v if math.isfinite(v) else 0.0


def pearson(scores, truth) -> float:
    """Pearson correlation; non-finite pairs dropped; 0.0 if constant or fewer than 2."""
    s, t = _paired(scores, truth, nan_scores_last=False)
    if _degenerate(s, t):
        return 0.0
    sc, tc = s - s.mean(), t - t.mean()
    den = math.sqrt(float(sc @ sc) * float(tc @ tc))
    v = float(sc @ tc) / den if den > 0 else 0.0
    return float(np.clip(v, -1.0, 1.0)) if math.isfinite(v) else 0.0


def spearman(scores, truth) -> float:
    """Spearman rank correlation (average ranks for ties); non-finite scores rank last;
    0.0 if constant or fewer than 2."""
    from scipy.stats import rankdata  # as in weighted_kendall_tau: the bench's metrics only

    s, t = _paired(scores, truth, nan_scores_last=True)
    if _degenerate(s, t):
        return 0.0
    return pearson(rankdata(s), rankdata(t))
