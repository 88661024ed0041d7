"""Pictures: the model-embedding space in 2-D (like Fig. 5 of the paper)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from sklearn.manifold import TSNE


def project_2d(vectors: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D projection of ``[n, d]`` vectors: ``pca`` (numpy SVD) or ``tsne`` (scikit-learn)."""
    x = np.asarray(vectors, dtype=np.float64)
    if method == "tsne" and len(x) > 5:
        return TSNE(n_components=2, perplexity=min(30, len(x) - 1), random_state=seed, init="pca").fit_transform(x)
    x = x - x.mean(0)
    if len(x) < 2:
        return np.zeros((len(x), 2))
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    out = u[:, :2] * s[:2]
    return out if out.shape[1] == 2 else np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def plot_embedding_space(vectors: np.ndarray, groups: list[str], path: str | Path, *, names: list[str] | None = None,
                         title: str = "k2v-hub model-embedding space", method: str = "pca",
                         highlight: np.ndarray | None = None) -> Path:
    """Save a PNG scatter of model vectors coloured by ``groups`` (e.g. source domain); return its path.

    ``highlight`` (a task vector) is projected with the models and drawn as a star.
    """
    pts_in = vectors if highlight is None else np.vstack([vectors, highlight[None]])
    pts = project_2d(pts_in, method)
    fig = Figure(figsize=(7, 5.5), dpi=110)  # no pyplot: no global backend or figure state in the caller's process
    ax = fig.subplots()
    cmap = colormaps["tab20"]
    for i, group in enumerate(sorted(set(groups))):
        sel = [j for j, g in enumerate(groups) if g == group]
        ax.scatter(pts[sel, 0], pts[sel, 1], s=46, color=cmap(i % 20), label=group, edgecolors="white", linewidths=0.6)
    if names and len(names) <= 30:
        for j, name in enumerate(names):
            ax.annotate(name.split("/")[-1], pts[j], fontsize=6, alpha=0.75, xytext=(3, 3), textcoords="offset points")
    if highlight is not None:
        ax.scatter(pts[-1, 0], pts[-1, 1], marker="*", s=260, color="black", label="your dataset")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, loc="best", framealpha=0.8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
