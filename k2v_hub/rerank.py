"""The second stage of `find_model`: re-score the top-k candidates with a transferability estimator.

Black-box methods (``leep``, ``nce``, ``logme-probs``, ``head-accuracy``) ask each candidate, through the same
:class:`~k2v_hub.oracle.Oracle` interface used for indexing, for its predictions on at most ``n_images`` of the
user's images; the query cost is counted. ``logme`` needs each candidate's penultimate features (grey-box: the
weights are downloaded and run). Which methods can re-rank, and how: :mod:`k2v_hub.methods`.

The re-rank keeps the first stage's evidence: :func:`fuse_scores` orders the candidates by
``z(estimator) + weight * z(first-stage score)`` over them (`find_model` does so with its declared-data first stage,
``weight`` :data:`FUSION_WEIGHT`); ``weight = 0`` is the estimator alone.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification

from .errors import K2VError
from .features import penultimate_features
from .hub import HubSource, LocalSource, RepoRef
from .methods import METHODS, RERANK_METHODS, rerank_method
from .oracle import InferenceOracle, TransformersOracle, check_model_folder, to_rgb
from .utils import logger, standardise

#: How much of the first stage's score the re-rank keeps (`find_model`'s default): chosen with LEEP on the bench's
#: validation split, label-blind, pooled over two builds of the zoo (R@1 0.8654 against 0.8462 for LEEP alone with 3
#: or 5 candidates; ``benchmarks/fused_rerank.py``, README "Benchmark"). A small gain: one to three tasks in 52.
FUSION_WEIGHT = 0.5

#: What an endpoint can re-rank with: the black-box methods (``leep, nce, logme-probs or head-accuracy``).
_BLACK_BOX = [m.option for m in METHODS if m.rerank == "black-box"]


def _sample(ds, label_column: str, n_images: int, seed: int):
    rng = np.random.default_rng(seed)
    idx = np.arange(len(ds))
    if len(idx) > n_images:
        idx = np.sort(rng.choice(idx, size=n_images, replace=False))
    sub = ds.select(idx.tolist())
    raw = list(sub[label_column])
    keys = sorted({str(x) for x in raw})
    labels = np.asarray([keys.index(str(x)) for x in raw])
    return sub, labels, keys


def fuse_scores(rerank_values, first_values, weight: float = FUSION_WEIGHT) -> np.ndarray:
    """The candidates' fused second-stage values: ``z(rerank_values) + weight * z(first_values)``, each standardised
    over the candidates (a single candidate, or equal values, standardise to 0). A non-finite estimate counts as
    one below the lowest finite one, so it ranks last; ``weight = 0`` keeps the estimator's order."""
    r = np.asarray(rerank_values, dtype=np.float64).copy()
    f = np.asarray(first_values, dtype=np.float64)
    bad = ~np.isfinite(r)
    r[bad] = (r[~bad].min() - 1.0) if (~bad).any() else 0.0
    return standardise(r) + (weight * standardise(f) if weight else 0.0)


def rerank_matches(matches, ds, image_column: str, label_column: str, *, method: str, n_images: int = 64,
                   token: str | None = None, models_root: str | None = None, endpoint: str | None = None,
                   seed: int = 0, class_names: dict | None = None) -> int:
    """Set each match's ``rerank_score`` (the estimator's raw value) and ``stage`` in place; return black-box
    queries spent. (`find_model` maps ``rerank_score`` onto its one ``score`` scale.)

    Each candidate is asked through an :class:`~k2v_hub.oracle.Oracle`: a remote endpoint when ``endpoint`` (a URL
    template with ``{model_id}``) is given, and no weights are downloaded; otherwise a local pipeline on the
    model's files from ``models_root`` or the Hub. ``class_names`` (``str(label value) -> class name``) names the
    classes for a method that reads names (``head-accuracy``); without it a label value is its own name.
    """
    chosen = rerank_method(method)
    if chosen is None:
        raise K2VError(f"Unknown rerank method {method!r}.", f"Choose one of {', '.join(RERANK_METHODS)}.")
    if endpoint is not None and (chosen.rerank == "grey-box" or "{model_id}" not in endpoint):
        raise K2VError(f"Cannot re-rank with {chosen.option!r} through endpoint {endpoint!r}.",
                       f"An endpoint answers predictions only: use {', '.join(_BLACK_BOX[:-1])} or {_BLACK_BOX[-1]}, "
                       "and a URL template with {model_id} (e.g. https://my-endpoints.example/{model_id}).")
    source = None if endpoint else (LocalSource(models_root) if models_root else HubSource(token=token))
    sub, labels, keys = _sample(ds, label_column, n_images, seed)
    names = [(class_names or {}).get(k, k) for k in keys]
    images = [to_rgb(im) for im in sub[image_column]]
    queries = 0
    for match in matches:
        folder = None if endpoint else source.snapshot(RepoRef(match.model_id, match.revision))
        if chosen.inputs == "features":
            inputs = _penultimate_features(folder, images)
        else:
            oracle = InferenceOracle(endpoint.format(model_id=match.model_id), match.labels, view="full",
                                     token=token) if endpoint else TransformersOracle(folder, view="full")
            inputs = oracle.predict_proba(images)
            queries += oracle.n_queries
        # a method that reads names gets the columns' names: the black box's labels, in its column order
        value = float(chosen.estimator(inputs, labels, oracle.labels, names) if chosen.needs_names
                      else chosen.estimator(inputs, labels))
        match.rerank_score = value
        match.stage = f"rerank:{chosen.option}"
        logger.info("rerank %s %s = %.4f", chosen.option, match.model_id, value)
    return queries


def _penultimate_features(folder, images) -> np.ndarray:
    """A model's penultimate features ``[N, F]`` on ``images`` (grey-box: its weights are loaded and run)."""

    check_model_folder(folder)
    processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    model = AutoModelForImageClassification.from_pretrained(folder, use_safetensors=True, local_files_only=True).eval()
    with torch.inference_mode():
        feats = penultimate_features(model, processor(images=images, return_tensors="pt")["pixel_values"])
    return feats.numpy()
