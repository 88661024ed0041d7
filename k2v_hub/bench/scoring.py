"""How the bench scores a method's ranking against the measured ground truth.

A method's scores ``S`` are a ``[tasks, models]`` matrix. Ties are broken by a fixed random permutation per task
(never by model name), so a constant method scores like ``random``.
"""

from __future__ import annotations

import numpy as np

from ..baselines import pearson, spearman, weighted_kendall_tau
from ..find import first_stage_order
from .data import BenchData
from .uncertainty import bootstrap_interval, random_expectation


def best_first(scores: np.ndarray, rng_seed: int) -> np.ndarray:
    """Models best first; ties broken by a fixed random permutation."""
    perm = np.random.default_rng(rng_seed).permutation(len(scores))
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64)[perm], nan=-np.inf)
    return perm[np.argsort(-s, kind="stable")]


METRICS = ("r@1", "r@3", "rel@1", "rel@3", "v_acc", "ft_acc", "tau_w")
#: The headline metrics that get a 95 % bootstrap interval over tasks.
INTERVAL_METRICS = ("r@1", "rel@1", "tau_w")


def task_metrics(S: np.ndarray, truth: np.ndarray, v_acc: np.ndarray, ft_acc: np.ndarray,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Per task, each metric of :data:`METRICS` of one method: ``S``, ``truth``, ``v_acc``, ``ft_acc`` are
    ``[tasks, models]``."""
    out = {k: [] for k in METRICS}
    for i in range(len(S)):
        order = best_first(S[i], seed + i)
        best = truth[i].max()
        winners = set(np.flatnonzero(truth[i] >= best - 1e-9))
        out["r@1"].append(float(order[0] in winners))
        out["r@3"].append(float(bool(winners & set(order[:3]))))
        denom = best if best > 0 else 1.0
        out["rel@1"].append(float(truth[i][order[0]] / denom))
        out["rel@3"].append(float(truth[i][order[:3]].max() / denom))
        out["v_acc"].append(float(v_acc[i][order[0]]))
        out["ft_acc"].append(float(ft_acc[i][order[0]]))
        s = np.nan_to_num(S[i], nan=-1e9) + 1e-9 * np.random.default_rng(seed + i).random(len(S[i]))
        out["tau_w"].append(float(weighted_kendall_tau(s, truth[i])))
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def summarise(per_task: dict[str, np.ndarray], *, intervals: bool = False, seed: int = 0) -> dict:
    """Means over tasks (rounded), and with ``intervals`` a ``ci95`` entry: the 95 % bootstrap interval over tasks
    of each :data:`INTERVAL_METRICS`."""
    out = {k: round(float(np.mean(v)), 4) if len(v) else None for k, v in per_task.items()}
    if intervals:
        out["ci95"] = {k: bootstrap_interval(per_task[k], seed=seed) for k in INTERVAL_METRICS}
    return out


def score_method(S: np.ndarray, truth: np.ndarray, v_acc: np.ndarray, ft_acc: np.ndarray, seed: int = 0) -> dict:
    """Metrics of one method over tasks (means of :func:`task_metrics`)."""
    return summarise(task_metrics(S, truth, v_acc, ft_acc, seed))


def pool_truth(data: BenchData, task_ids, columns=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(truth, v_acc, ft_acc)`` of ``task_ids``, restricted to the candidate model ``columns`` (default all)."""
    truth, v, ft = data.truth(task_ids), data.rows(task_ids, data.v), data.rows(task_ids, data.ft)
    if columns is not None:
        truth, v, ft = truth[:, columns], v[:, columns], ft[:, columns]
    return truth, v, ft


def pool_task_metrics(data: BenchData, name: str, S: np.ndarray, task_ids, columns=None,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """:func:`task_metrics` of method ``name`` against ``task_ids``' truth; ``random`` gets the exact expectation
    of a uniformly random ranking instead of one draw."""
    truth, v, ft = pool_truth(data, task_ids, columns)
    if name == "random":
        return random_expectation(truth, v, ft)
    return task_metrics(S, truth, v, ft, seed)


def score_pool(data: BenchData, S: np.ndarray, task_ids, columns=None, seed: int = 0) -> dict:
    """:func:`score_method` of ``S [tasks, models]`` against ``task_ids``' truth, the candidates being the model
    ``columns`` (default: every model)."""
    return score_method(S, *pool_truth(data, task_ids, columns), seed)


def correlations(S: np.ndarray, truth: np.ndarray) -> dict:
    """Mean Pearson, Spearman and weighted tau between scores and truth over tasks (rows)."""
    vals = {"pearson": [], "spearman": [], "tau_w": []}
    for s, t in zip(S, truth):
        s = np.nan_to_num(s, nan=np.nanmin(s) if np.isfinite(s).any() else 0.0)
        vals["pearson"].append(pearson(s, t))
        vals["spearman"].append(spearman(s, t))
        vals["tau_w"].append(weighted_kendall_tau(s, t))
    return {k: round(float(np.mean(v)), 4) for k, v in vals.items()}


def first_stage_candidates(vector: np.ndarray, labels: np.ndarray | None, i: int) -> np.ndarray:
    """Task ``i``'s first-stage order: the vector ranking, or `find_model`'s vectors + label names interleaved."""
    return best_first(vector[i], i) if labels is None else first_stage_order(vector[i], labels[i])


def first_stage_recall(vector: np.ndarray, truth: np.ndarray, k: int, labels: np.ndarray | None) -> float | None:
    """Fraction of tasks whose best model is among the first stage's ``k`` candidates."""
    hits = []
    for i in range(len(truth)):
        order = first_stage_candidates(vector, labels, i)
        hits.append(bool(set(np.flatnonzero(truth[i] >= truth[i].max() - 1e-9)) & set(order[:k])))
    return round(float(np.mean(hits)), 4) if hits else None
