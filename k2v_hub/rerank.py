"""The second stage of `find_model`: re-score the top-k candidates with a transferability estimator.

Black-box methods (``leep``, ``nce``, ``logme-probs``) ask each candidate, through the same
:class:`~k2v_hub.oracle.Oracle` interface used for indexing, for its predictions on at most ``n_images`` of the
user's images; the query cost is counted. ``logme`` needs each candidate's penultimate features (grey-box: the
weights are downloaded and run).
"""

from __future__ import annotations

import numpy as np

from .errors import K2VError
from .utils import logger

BLACK_BOX = ("leep", "nce", "logme-probs")
GREY_BOX = ("logme",)


def _sample(ds, label_column: str, n_images: int, seed: int):
    rng = np.random.default_rng(seed)
    idx = np.arange(len(ds))
    if len(idx) > n_images:
        idx = np.sort(rng.choice(idx, size=n_images, replace=False))
    sub = ds.select(idx.tolist())
    raw = list(sub[label_column])
    keys = sorted({str(x) for x in raw})
    labels = np.asarray([keys.index(str(x)) for x in raw])
    return sub, labels


def rerank_matches(matches, ds, image_column: str, label_column: str, *, method: str, n_images: int = 64,
                   token: str | None = None, models_root: str | None = None, endpoint: str | None = None,
                   seed: int = 0) -> int:
    """Re-score ``matches`` in place (``score``, ``rerank_score``, ``stage``); return black-box queries spent.

    Each candidate is asked through an :class:`~k2v_hub.oracle.Oracle`: a remote endpoint when ``endpoint`` (a URL
    template with ``{model_id}``) is given, and no weights are downloaded; otherwise a local pipeline on the
    model's files from ``models_root`` or the Hub.
    """
    from . import baselines
    from .hub import HubSource, LocalSource, RepoRef
    from .oracle import InferenceOracle, TransformersOracle, to_rgb

    if method not in BLACK_BOX + GREY_BOX:
        raise K2VError(f"Unknown rerank method {method!r}.", f"Choose one of {', '.join(BLACK_BOX + GREY_BOX)}.")
    if endpoint is not None and (method in GREY_BOX or "{model_id}" not in endpoint):
        raise K2VError(f"Cannot re-rank with {method!r} through endpoint {endpoint!r}.",
                       "An endpoint answers predictions only: use leep, nce or logme-probs, and a URL template with "
                       "{model_id} (e.g. https://my-endpoints.example/{model_id}).")
    source = None if endpoint else (LocalSource(models_root) if models_root else HubSource(token=token))
    sub, labels = _sample(ds, label_column, n_images, seed)
    images = [to_rgb(im) for im in sub[image_column]]
    queries = 0
    for match in matches:
        folder = None if endpoint else source.snapshot(RepoRef(match.model_id, match.revision))
        if method in GREY_BOX:
            value = _logme_grey_box(folder, images, labels)
        else:
            oracle = InferenceOracle(endpoint.format(model_id=match.model_id), match.labels, view="full",
                                     token=token) if endpoint else TransformersOracle(folder, view="full")
            probs = oracle.predict_proba(images)
            queries += oracle.n_queries
            fn = {"leep": baselines.leep, "nce": baselines.nce_from_probs, "logme-probs": baselines.logme_probs}
            value = float(fn[method](probs, labels))
        match.rerank_score = value
        match.score = value
        match.stage = f"rerank:{method}"
        logger.info("rerank %s %s = %.4f", method, match.model_id, value)
    return queries


def _logme_grey_box(folder, images, labels) -> float:
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from . import baselines
    from .oracle import check_model_folder
    from .features import penultimate_features

    check_model_folder(folder)
    processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    model = AutoModelForImageClassification.from_pretrained(folder, use_safetensors=True, local_files_only=True).eval()
    with torch.inference_mode():
        feats = penultimate_features(model, processor(images=images, return_tensors="pt")["pixel_values"])
    return float(baselines.logme(feats.numpy(), labels))
