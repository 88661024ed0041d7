"""The data of a model whose card names none, inferred from its black-box answers on the index's declared data.

A card that names its training data gives the model a data fingerprint (:mod:`k2v_hub.declared`), which ranks it for
a user's dataset whether or not the retriever ever saw it. A card that names none, or names data that cannot be
read, leaves the model to its knowledge vector, which does not travel to models the retriever never trained on.
Other models of the same index often declare the data it was trained on. So when the model's labels name at least
two classes of a dataset that some card of the index names, the model is asked (as a black box, predictions only)
about the images a fingerprint of that dataset reads (:data:`~k2v_hub.declared.PER_CLASS` per class, its shared
classes only); if it labels them at least :data:`MIN_CHANCE_RATIO` times as well as chance, the dataset it labels
best stands for its data: the row stores that dataset's fingerprint, as if its card named it, and says so in
``data_note``; its accuracy is the one its card reports on that dataset, if any (else the index's mean stands in). A
model whose labels name no such dataset, or that labels none well enough, keeps no fingerprint, and its vector
stands in as before; its row lists the datasets it was sought among (``data_pool``), and it is sought again once a card
of the index names another (:func:`k2v_hub.index.data_unread`).

Chosen on the bench's validation split, label-blind, with half the cards hidden (``benchmarks/inferred_data.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import datasets
import numpy as np
import pyarrow.parquet as pq

from .declared import PER_CLASS, _norm, data_fingerprint, encode_fingerprint
from .errors import DatasetError, one_line
from .hub import RepoSource
from .oracle import Oracle
from .query_data import find_columns, iter_images, select_query_rows
from .utils import logger

#: How much better than chance a model must label a declared dataset's images for it to stand for the model's
#: data (2.0 and 1.5 chose the same datasets on the validation split; 3.0 dropped right ones).
MIN_CHANCE_RATIO = 2.0
#: Declared datasets a model is asked about at most (those sharing the most labels with it first).
MAX_INFERRED_TRIES = 8
#: How the ``data_note`` of a row whose data was inferred begins.
INFERRED_NOTE = "inferred:"


class DeclaredPool:
    """The datasets an index's cards name, each read once on first use: what a cardless model may be asked about.

    Args:
        source: where the dataset repos are (:meth:`~k2v_hub.hub.RepoSource.declared_data`).
        names: the dataset ids the cards name (duplicates and order do not matter).
    """

    def __init__(self, source: RepoSource, names):
        self.source = source
        self.names = sorted({str(n) for n in names})
        self._read: dict[str, tuple | None] = {}

    def read(self, name: str):
        """``(rows, image column, revision, {normalised class name: row numbers})`` of ``name``, or ``None`` if it
        cannot be read (the reason is logged; a broken dataset repo costs only itself). Only the rows a fingerprint
        reads are selected (:data:`~k2v_hub.declared.PER_CLASS` per class) from the memory-mapped file."""
        if name not in self._read:
            try:
                path, revision = self.source.declared_data(name)
                ds = datasets.Dataset(pq.read_table(path, memory_map=True))
                image_column, label_column, class_names = find_columns(ds)
                chosen, keys, key_names = select_query_rows(ds, label_column, class_names,
                                                            max_images_per_class=PER_CLASS, seed=0)
                kept = np.sort(np.concatenate([chosen[k] for k in keys]))
                at = {int(r): i for i, r in enumerate(kept)}
                rows = {_norm(n): np.array([at[int(r)] for r in chosen[k]]) for k, n in zip(keys, key_names)}
                self._read[name] = (ds.select(kept.tolist()), image_column, revision, rows)
            except Exception as exc:  # noqa: BLE001 - an unreadable dataset is not asked about
                logger.info("Declared data %s not readable for inference: %s", name, one_line(exc, limit=300))
                self._read[name] = None
        return self._read[name]


def infer_data_columns(pool: DeclaredPool, model_labels: list[str], oracle: Callable[[], Oracle], extractor, *,
                       min_ratio: float = MIN_CHANCE_RATIO,
                       why: str = "the card names no dataset") -> tuple[dict | None, int]:
    """A cardless model's declared-data columns inferred from ``pool`` (see the module docstring), and the
    black-box queries spent; ``(None, queries)`` when no dataset qualifies.

    ``oracle`` makes the model's oracle (called only if some dataset shares two of its labels); ``min_ratio``: how
    many times chance its accuracy on a dataset's images must reach; ``why``: why the card's own data gave no
    fingerprint (the note says it).
    """
    labels = {_norm(x) for x in model_labels}
    candidates = []
    for name in pool.names:
        read = pool.read(name)
        if read is not None:
            shared = sorted(c for c in read[3] if c in labels)
            if len(shared) >= 2:
                candidates.append((-len(shared), name, shared))
    if not candidates:
        return None, 0
    asked, best, queries = oracle(), None, 0
    answer_names = [_norm(x) for x in asked.labels]
    for _, name, shared in sorted(candidates)[:MAX_INFERRED_TRIES]:
        ds, image_column, revision, rows = pool.read(name)
        order = np.concatenate([rows[c] for c in shared])
        truth = np.concatenate([[c] * len(rows[c]) for c in shared])
        try:
            images = list(iter_images(ds, image_column, order))
        except DatasetError as exc:  # a broken image costs only its dataset
            logger.info("Declared data %s not asked about: %s", name, one_line(exc, limit=300))
            continue
        before = asked.n_queries
        probs = asked.predict_proba(images)
        queries += asked.n_queries - before
        top = np.where(np.isnan(probs), -np.inf, probs).argmax(axis=1)  # a view's unknown scores (NaN) never win
        accuracy = float(np.mean(np.asarray(answer_names)[top] == truth))
        chance = 1.0 / len(shared)
        if accuracy >= min_ratio * chance and (best is None or accuracy > best[0]):
            best = (accuracy, chance, name, revision, ds, len(order), len(shared))
    if best is None:
        return None, queries
    accuracy, chance, name, revision, ds, n_images, n_classes = best
    note = one_line(f"{INFERRED_NOTE} {why}; the model labels {accuracy:.0%} of {n_images} images of {name} "
                    f"({n_classes} classes it shares, chance {chance:.0%}) right", limit=500)
    fingerprint = data_fingerprint(ds, model_labels, extractor)
    return {"data_fingerprint": encode_fingerprint(fingerprint), "data_source": f"{name}@{revision}",
            "data_note": note}, queries
