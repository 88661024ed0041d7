"""Evidence from the data a model declares: the class means of a few images of the dataset its card names.

A model card that says which data the model was trained on (``datasets:`` in its metadata) lets the index store a
*data fingerprint*: the means, in the index's frozen feature space, of :data:`PER_CLASS` images of each class of
that dataset (only the classes the model predicts, when the dataset's class names and the model's labels meet; at
most :data:`MAX_CLASSES`). It costs one small download and one backbone pass over ``PER_CLASS`` x classes images
at index time, and no model run. A dataset is scored against a fingerprint by the mean over the dataset's classes
of the best cosine between its class mean and the fingerprint's (:func:`data_scores`); the user's class means are
the ones the query vector is made from, so searching costs nothing more.

Closeness to the user's classes is also closeness to everything: to a backbone trained on photographs, glyphs of
any script sit close together, and a model declaring Hebrew letters outscored the digits model on a digits task.
So each declared class is discounted by how close it is to the index's other data: :data:`HUBNESS_WEIGHT` times
its mean cosine to its :data:`HUBNESS_NEIGHBOURS` nearest class means of other data (:func:`hubness`; CSLS,
Conneau et al., 2018). It needs nothing but the index's fingerprints, is computed once per loaded index, and costs
one matrix product over at most :data:`MAX_REFERENCE` class means per class. Chosen on the validation split with
``benchmarks/hubness.py`` (``benchmarks/results/hubness.json``, pooled over two zoo builds, 104 tasks; weights 0 to
1, k 10 to 40): the data score's R@1 0.7404 -> 0.8173, the first stage's 0.7692 -> 0.8462 (unseen models' tasks
0.6562 -> 0.8438), LEEP on its first three 0.8269 -> 0.8461; with half the cards hidden and inferred, the first
stage 0.6539 -> 0.6635 and LEEP on three 0.8365 -> 0.8269. CSLS's own setting (0.5, k 10) was the best.

A card's ``model-index`` may also report the model's accuracy on that dataset (:func:`reported_accuracy`). Among
models that declare the same data (same source, same classes: the same fingerprint) it is what tells them apart:
the data score adds :data:`ACCURACY_WEIGHT` times it (:func:`data_scores`), so it moves a model by at most 0.02 and
decides between near ties, and a card that overstates its accuracy gains little. Chosen on the bench's validation
split (R@1 on its 52 tasks 0.731 without, 0.808 with; `k2v-hub bench` re-checks it, ``data_accuracy_weight``).

Models without a fingerprint (a card that names no dataset, or one that cannot be read, and whose data could not be
inferred: :mod:`k2v_hub.inferred`) keep their knowledge vector: :func:`first_stage_scores` puts both on one scale,
each such model taking the data score at the quantile its cosine ranks at (:func:`place_vector`). Chosen on the
validation split with half the cards hidden (``benchmarks/results/inferred-data.json``, pooled over two zoo builds)
over the same mean and spread, which let an unsure vector top every data score: with the hidden half's data inferred,
R@1 0.6058 -> 0.6539 and LEEP on the first three 0.8173 -> 0.8365; with none inferred, LEEP on three 0.5866 -> 0.7212
but the first stage alone 0.4904 -> 0.4423 (before the hub discount; with it the same choice: 0.6634 -> 0.6635 and
0.8173 -> 0.8269). The choice of the fingerprint alone over a mix with the
vector was made on the bench's validation split (``benchmarks/results/declared-data.json``): on models the
retriever never trained on, any weight on the vector pulled the right model out of the first candidates.

Among the models a retriever *was* trained on, its vector knows more than the data score: when the best data match
is one of them, :func:`first_stage_scores` lets the vector put the :data:`TRAINED_VECTOR_TOP` best data matches in
order (by the data score plus :data:`TRAINED_VECTOR_WEIGHT` of the standardised vector); they keep the data stage's
scores, and every other model keeps its place. Chosen on the validation split
(``benchmarks/results/trained-vector.json``): R@1 on its 52 tasks 0.7885 -> 0.8269 (seen models' tasks 0.806 ->
0.861, 0.861 -> 0.917 with the trained models the only candidates; unseen models' 0.75 unchanged), the first
candidates unchanged by construction (the two best stay the two best). Letting the vector
move every model gave the same R@1 but lost candidates (recall@3 0.962 -> 0.904; LEEP on them 0.865 -> 0.788), and
so did the evaluation run that tried it; without the condition the mix drops the unseen models' tasks to 0.
"""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from huggingface_hub.repocard_data import model_index_to_eval_results

from .query_data import class_means, find_columns, select_query_rows

#: Images per class that make a fingerprint.
PER_CLASS = 8
#: Classes a fingerprint keeps at most (evenly spaced over the dataset's classes when it has more).
MAX_CLASSES = 256
#: Weight of the accuracy a card reports on its declared data in the data score (validation-chosen, see above).
ACCURACY_WEIGHT = 0.02
#: Weight of the standardised vector among the models the retriever trained on (validation-chosen, see above).
TRAINED_VECTOR_WEIGHT = 0.5
#: How many of the best first-stage matches the vector puts in order (validation-chosen, see above): with 2 the
#: first candidates of a re-rank are the data stage's, whatever ``rerank_k``.
TRAINED_VECTOR_TOP = 2
#: How a model without a data score is put on the data scores' scale (:func:`place_vector`), the default first.
PLACEMENTS = ("quantile", "moment")
#: How many of a fingerprint class's nearest class means of other data measure how central it is (:func:`hubness`;
#: CSLS's k, validation-chosen, see above).
HUBNESS_NEIGHBOURS = 10
#: Weight of that centrality in the data score (:func:`data_scores`; 0.5 is CSLS's, validation-chosen, see above).
HUBNESS_WEIGHT = 0.5
#: Class means with a cosine above this are one class of one dataset (siblings that declare the same data).
SAME_CLASS_COSINE = 0.999
#: Class means of the index that a class's centrality is measured against, at most (evenly spaced when more).
MAX_REFERENCE = 2048
#: Class means whose centrality is computed in one matrix product.
_CHUNK = 2048


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


def reported_accuracy(card: dict, dataset_id: str) -> float | None:
    """The accuracy a card's ``model-index`` reports on ``dataset_id`` (not on its train split), in [0, 1]; a
    percentage (1 < value <= 100) is divided by 100. ``None`` when the card reports none, or only values that are
    not a number in range (a malformed ``model-index`` included)."""
    try:
        _, results = model_index_to_eval_results(card.get("model-index"))
    except Exception:  # noqa: BLE001 - a malformed model-index reports nothing
        return None
    for r in results:
        value = r.metric_value
        if (str(r.metric_type).lower() != "accuracy" or r.dataset_type != dataset_id
                or str(r.dataset_split or "").lower() == "train" or isinstance(value, bool)
                or not isinstance(value, (int, float)) or not np.isfinite(value)):
            continue
        value = value / 100 if 1 < value <= 100 else value
        if 0 <= value <= 1:
            return float(value)
    return None


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def fingerprint_cosines(task_means: np.ndarray, fingerprint) -> np.ndarray | None:
    """``[task classes, fingerprint classes]`` cosines between a task's class means and a fingerprint's, or
    ``None`` for a model without a fingerprint."""
    if fingerprint is None or not len(fingerprint):
        return None
    return _unit(task_means) @ _unit(fingerprint).T


def hubness(fingerprints: list, neighbours: int = HUBNESS_NEIGHBOURS, max_reference: int = MAX_REFERENCE) -> list:
    """Per fingerprint (``None`` where a model has none), per class: the mean cosine between its class mean and its
    ``neighbours`` nearest class means of the other fingerprints, those of the same class of the same data (cosine
    above :data:`SAME_CLASS_COSINE`) left out; 0 for a class with no such neighbour. A class that is close to many
    others (a *hub*: glyphs of any script, to a backbone trained on photographs) is close to most users' classes
    too; :func:`data_scores` subtracts it, as CSLS does (Conneau et al., 2018). At most ``max_reference`` class
    means of the index are compared with (evenly spaced), so the cost grows linearly on a large index; there the
    neighbours come from that sample (the bench's zoos hold about 320 class means, so it was chosen and measured
    without one)."""
    units = [None if fp is None or not len(fp) else _unit(fp) for fp in fingerprints]
    have = [u for u in units if u is not None]
    if not have:
        return units
    means = np.concatenate(have).astype(np.float32)  # float32: twice as fast, and the order is what counts
    reference = means
    if len(means) > max_reference:
        reference = means[np.linspace(0, len(means) - 1, max_reference).round().astype(int)]
    k = max(1, min(neighbours, len(reference)))
    centrality = np.empty(len(means))
    for start in range(0, len(means), _CHUNK):
        cos = means[start:start + _CHUNK] @ reference.T
        cos[cos > SAME_CLASS_COSINE] = -np.inf
        nearest = -np.partition(-cos, k - 1, axis=1)[:, :k]  # the k largest, in no order
        found = np.isfinite(nearest)
        centrality[start:start + _CHUNK] = np.where(found, nearest, 0.0).sum(axis=1) / np.maximum(found.sum(axis=1), 1)
    ends = np.cumsum([len(u) for u in have])
    parts = iter(np.split(centrality, ends[:-1]))
    return [None if u is None else next(parts) for u in units]


def data_scores(task_means: np.ndarray, fingerprints: list, accuracies: list | None = None, *,
                accuracy_weight: float = ACCURACY_WEIGHT, hubness_weight: float = HUBNESS_WEIGHT,
                hubs: list | None = None) -> np.ndarray:
    """Per model: the mean over the task's classes of the best cosine between the task's class mean and one of
    the model's fingerprint class means, less ``hubness_weight`` times that fingerprint class's centrality in the
    index (``hubs``: :func:`hubness` of ``fingerprints``, computed when not given; kept in [-1, 1]), plus
    ``accuracy_weight`` times the accuracy its card reports on that data (``accuracies``, ``None`` where it reports
    none: the mean of the others stands in); ``nan`` for a model without a fingerprint."""
    if hubness_weight and hubs is None:
        hubs = hubness(fingerprints)
    out = np.full(len(fingerprints), np.nan)
    for j, fp in enumerate(fingerprints):
        cos = fingerprint_cosines(task_means, fp)
        if cos is not None:
            if hubness_weight:
                cos = np.clip(cos - hubness_weight * hubs[j][None, :], -1.0, 1.0)
            out[j] = float(cos.max(axis=1).mean())
    if accuracies is not None and accuracy_weight:
        acc = np.array([np.nan if a is None else a for a in accuracies], dtype=np.float64)
        known = np.isfinite(acc) & np.isfinite(out)
        if known.any():
            out = out + accuracy_weight * np.where(known, acc, acc[known].mean())
    return out


def place_vector(vector: np.ndarray, data: np.ndarray, how: str = PLACEMENTS[0]) -> np.ndarray:
    """``data`` (per model, ``nan`` where a model has no data score) with the gaps filled by the models' vector
    cosines put on the data scores' scale, clipped to [-1, 1].

    ``how``: ``"quantile"`` (the default, :data:`PLACEMENTS`): a model whose cosine ranks at quantile q among every
    model's takes the data scores' q-quantile, so it ranks among them as its vector ranks and never above the best
    of them (with fewer than two data scores, ``"moment"`` instead); ``"moment"``: the same mean and spread as the
    data scores over the index.
    """
    if how not in PLACEMENTS:
        raise ValueError(f"how must be one of {PLACEMENTS}, not {how!r}")
    vector = np.asarray(vector, dtype=np.float64)
    data = np.asarray(data, dtype=np.float64)
    has = np.isfinite(data)
    if how == "quantile" and has.sum() > 1:
        q = (np.argsort(np.argsort(vector, kind="stable"), kind="stable") + 0.5) / len(vector)
        placed = np.quantile(data[has], q)
    else:
        spread = vector.std() or 1.0
        data_spread = data[has].std() if has.sum() > 1 else spread
        placed = data[has].mean() + data_spread * (vector - vector.mean()) / spread
    return np.where(has, data, np.clip(placed, -1.0, 1.0))


def first_stage_scores(vector: np.ndarray, data: np.ndarray, trained: np.ndarray | None = None, *,
                       vector_weight: float = TRAINED_VECTOR_WEIGHT,
                       top: int | None = TRAINED_VECTOR_TOP, place: str = PLACEMENTS[0]) -> np.ndarray:
    """One first-stage score per model: the data score where there is one; for the other models their vector
    cosine placed on the data scores' scale (:func:`place_vector`, ``how=place``).

    With no data score anywhere this is ``vector``; with one everywhere, ``data``. ``trained`` (a mask over the
    models: those the retriever was trained on): when the best of those scores is such a model
    (:func:`vector_weighs_in`), the ``top`` best (:func:`vector_head`; ``None``: every model) keep their scores but
    take them in the order of ``score + vector_weight x the scores' spread x the vector standardised over the
    index``; the others keep theirs.
    """
    vector = np.asarray(vector, dtype=np.float64)
    data = np.asarray(data, dtype=np.float64)
    has = np.isfinite(data)
    if not has.any():
        return vector
    scores = data if has.all() else place_vector(vector, data, place)
    head = vector_head(scores, trained, top) if vector_weight else np.zeros(0, dtype=int)
    return order_head(scores, vector, head, vector_weight)


def order_head(scores: np.ndarray, vector: np.ndarray, head,
               vector_weight: float = TRAINED_VECTOR_WEIGHT) -> np.ndarray:
    """``scores`` with the ``head`` rows' scores given in the order of ``score + vector_weight x the scores' spread x
    the vector standardised over the index``; every other row keeps its score (``head`` empty: ``scores``)."""
    head = np.asarray(head, dtype=int)
    if not len(head):
        return scores
    vector = np.asarray(vector, dtype=np.float64)
    mixed = scores + vector_weight * scores.std() * (vector - vector.mean()) / (vector.std() or 1.0)
    out = scores.copy()
    out[head[np.argsort(-mixed[head], kind="stable")]] = scores[head]  # the head's scores, in the mix's order
    return out


def vector_weighs_in(scores: np.ndarray, trained: np.ndarray | None) -> bool:
    """Whether the retriever's vector joins the first stage: the best of ``scores`` is a model it was trained on
    (``trained``: a mask over the models, ``None`` for none)."""
    return trained is not None and len(scores) > 0 and bool(np.asarray(trained, dtype=bool)[int(np.argmax(scores))])


def vector_head(scores: np.ndarray, trained: np.ndarray | None, top: int | None = TRAINED_VECTOR_TOP) -> np.ndarray:
    """The models whose order the vector decides: the ``top`` best by ``scores`` (``None``: all) when it weighs in
    (:func:`vector_weighs_in`), none otherwise."""
    if not vector_weighs_in(scores, trained):
        return np.zeros(0, dtype=int)
    return np.argsort(-np.asarray(scores), kind="stable")[: len(scores) if top is None else top]
