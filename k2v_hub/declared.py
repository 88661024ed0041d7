"""Evidence from the data a model declares: the class means of a few images of the dataset its card names.

A model card that says which data the model was trained on (``datasets:`` in its metadata) lets the index store a
*data fingerprint*: the means, in the index's frozen feature space, of :data:`PER_CLASS` images of each class of
that dataset (only the classes the model predicts, when the dataset's class names and the model's labels meet; at
most :data:`MAX_CLASSES`). It costs one small download and one backbone pass over ``PER_CLASS`` x classes images
at index time, and no model run. A dataset is scored against a fingerprint by the mean over the dataset's classes
of the best cosine between its class mean and the fingerprint's (:func:`data_scores`); the user's class means are
the ones the query vector is made from, so searching costs nothing more.

Models without a fingerprint (a card that names no dataset, or one that cannot be read) keep their knowledge
vector: :func:`first_stage_scores` puts both on one scale. The choice of the fingerprint alone over a mix with the
vector was made on the bench's validation split (``benchmarks/results/declared-data.json``): on models the
retriever never trained on, any weight on the vector pulled the right model out of the first candidates.
"""

from __future__ import annotations

import base64
import io
import re

import numpy as np

from .query_data import class_means, find_columns, select_query_rows

#: Images per class that make a fingerprint.
PER_CLASS = 8
#: Classes a fingerprint keeps at most (evenly spaced over the dataset's classes when it has more).
MAX_CLASSES = 256


def _norm(name) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().lower()


def fingerprint_classes(class_names: list[str], model_labels: list[str]) -> list[int]:
    """Which of a declared dataset's classes a fingerprint keeps: those named like one of the model's labels,
    else all of them; at most :data:`MAX_CLASSES`, evenly spaced."""
    labels = {_norm(x) for x in model_labels}
    keep = [i for i, n in enumerate(class_names) if _norm(n) in labels] or list(range(len(class_names)))
    if len(keep) > MAX_CLASSES:
        keep = [keep[i] for i in np.linspace(0, len(keep) - 1, MAX_CLASSES).round().astype(int)]
    return keep


def data_fingerprint(ds, model_labels: list[str], extractor, *, per_class: int = PER_CLASS,
                     seed: int = 0) -> np.ndarray:
    """``[C, D]`` float32 class means of ``per_class`` images per kept class of ``ds`` (a labelled
    ``datasets.Dataset``) in ``extractor``'s space.

    Raises:
        DatasetError: the dataset has no image or label column, fewer than two classes, or unreadable images.
    """
    image_column, label_column, names = find_columns(ds)
    chosen, keys, key_names = select_query_rows(ds, label_column, names, max_images_per_class=per_class, seed=seed)
    kept = fingerprint_classes(key_names, model_labels)
    keys = [keys[i] for i in kept]
    return class_means(ds, image_column, chosen, keys, extractor, show_progress=False)


def encode_fingerprint(fingerprint: np.ndarray) -> str:
    """A fingerprint as the index stores it: base64 of a float16 ``.npy`` (``""`` for none)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(fingerprint, dtype=np.float16), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_fingerprint(text: str, dim: int) -> np.ndarray | None:
    """A stored fingerprint as float32 ``[C, dim]`` (``None`` for ``""``).

    Raises:
        ValueError: not a finite float16 ``[C, dim]`` array with ``1 <= C <= MAX_CLASSES`` (a damaged or tampered
            index).
    """
    if not text:
        return None
    arr = np.load(io.BytesIO(base64.b64decode(text, validate=True)), allow_pickle=False)
    if arr.dtype != np.float16 or arr.ndim != 2 or arr.shape[1] != dim or not 1 <= len(arr) <= MAX_CLASSES \
            or not np.isfinite(arr).all():
        raise ValueError(f"a data fingerprint of {arr.dtype} {arr.shape}, not float16 [1..{MAX_CLASSES}, {dim}]")
    return arr.astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def data_scores(task_means: np.ndarray, fingerprints: list) -> np.ndarray:
    """Per model: the mean over the task's classes of the best cosine between the task's class mean and one of
    the model's fingerprint class means; ``nan`` for a model without a fingerprint."""
    task = _unit(task_means)
    out = np.full(len(fingerprints), np.nan)
    for j, fp in enumerate(fingerprints):
        if fp is not None and len(fp):
            out[j] = float((task @ _unit(fp).T).max(axis=1).mean())
    return out


def first_stage_scores(vector: np.ndarray, data: np.ndarray) -> np.ndarray:
    """One first-stage score per model: the data score where there is one; for the other models their vector
    cosine placed on the data scores' scale (same mean and spread over the index), clipped to [-1, 1].

    With no data score anywhere this is ``vector``; with one everywhere, ``data``.
    """
    vector = np.asarray(vector, dtype=np.float64)
    data = np.asarray(data, dtype=np.float64)
    has = np.isfinite(data)
    if not has.any():
        return vector
    if has.all():
        return data
    spread = vector.std() or 1.0
    data_spread = data[has].std() if has.sum() > 1 else spread
    placed = data[has].mean() + data_spread * (vector - vector.mean()) / spread
    return np.where(has, data, np.clip(placed, -1.0, 1.0))
