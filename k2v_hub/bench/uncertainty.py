"""How sure a bench figure is: bootstrap intervals over tasks, paired differences, and the exact random baseline.

A bench row is a mean over a few dozen tasks; a 95 % percentile bootstrap over tasks says how far it could move with
another draw of tasks, and a paired bootstrap (the same resampled tasks for both methods) says whether one method
beats another.
"""

from __future__ import annotations

from math import comb

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


def bootstrap_interval(values, *, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> list[float] | None:
    """Percentile bootstrap interval ``[lo, hi]`` of the mean of per-task ``values`` (None for no tasks)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    means = x[idx].mean(axis=1)
    a = (1.0 - level) / 2.0
    return [round(float(np.quantile(means, a)), 4), round(float(np.quantile(means, 1.0 - a)), 4)]


def paired_difference(a, b, *, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> dict | None:
    """Mean of ``a - b`` over the same tasks with its paired bootstrap interval, and how often ``a`` wins.

    ``a`` and ``b`` are per-task values of two methods on the same tasks, in the same order.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired_difference needs values on the same tasks, got {x.shape} and {y.shape}.")
    if x.size == 0:
        return None
    d = x - y
    return {"mean": round(float(d.mean()), 4), "ci95": bootstrap_interval(d, n_boot=n_boot, seed=seed, level=level),
            "p_a_better": round(float(np.mean(_boot_means(d, n_boot, seed) > 0)), 4)}


def _boot_means(d: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))
    return d[idx].mean(axis=1)


def _expected_top_max(values: np.ndarray, k: int) -> float:
    """E[max of ``k`` values drawn without replacement from ``values``] (exact, order statistics)."""
    a = np.sort(np.asarray(values, dtype=np.float64))
    n = len(a)
    k = min(k, n)
    weights = np.array([comb(j, k - 1) for j in range(n)], dtype=np.float64) / comb(n, k)
    return float(weights @ a)


def random_expectation(truth: np.ndarray, v_acc: np.ndarray, ft_acc: np.ndarray) -> dict:
    """The exact expected metrics of a uniformly random ranking (what ``score_method`` averages), per task.

    Returns per-task arrays for ``r@1``, ``r@3``, ``rel@1``, ``rel@3``, ``v_acc``, ``ft_acc`` and ``tau_w``
    (whose expectation is 0 for a random order).
    """
    out = {k: [] for k in ("r@1", "r@3", "rel@1", "rel@3", "v_acc", "ft_acc", "tau_w")}
    for t, v, f in zip(truth, v_acc, ft_acc):
        n = len(t)
        best = t.max()
        w = int(np.sum(t >= best - 1e-9))
        denom = best if best > 0 else 1.0
        k3 = min(3, n)
        out["r@1"].append(w / n)
        out["r@3"].append(1.0 - comb(n - w, k3) / comb(n, k3))
        out["rel@1"].append(float(t.mean() / denom))
        out["rel@3"].append(_expected_top_max(t, 3) / denom)
        out["v_acc"].append(float(v.mean()))
        out["ft_acc"].append(float(f.mean()))
        out["tau_w"].append(0.0)
    return {k: np.asarray(v) for k, v in out.items()}
