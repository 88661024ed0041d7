"""Every method's score matrix ``[tasks, models]`` on a set of tasks, and the seconds per search it costs.

The baselines of the registry (:mod:`k2v_hub.methods`: the estimators, run on real forward passes, and the
rankings from metadata), Know2Vec's vector search, and the hybrids: Know2Vec plus label names, and the two-stage
search that re-ranks Know2Vec's candidates (or the declared-data stage's) by LEEP, alone or fused with the first
stage's score as `find_model` does.
"""

from __future__ import annotations

import time

import numpy as np

from ..declared import (HUBNESS_NEIGHBOURS, HUBNESS_WEIGHT, PLACEMENTS, TRAINED_VECTOR_WEIGHT, data_scores,
                        first_stage_scores, hubness)
from ..baselines import (card_dataset_scores, label_match_scores, param_count_from_safetensors, popularity_scores,
                         random_scores, size_scores)
from ..find import LABEL_WEIGHT
from ..hub import read_card_metadata
from ..methods import ESTIMATORS, METHODS
from ..rerank import FUSION_WEIGHT, fuse_scores
from ..utils import logger, progress
from .data import BenchData
from .finetune import finetune_scores
from .scoring import first_stage_candidates

#: What each method needs from a model: the registry's methods and the bench's own.
ACCESS = {
    "know2vec": "black-box", "know2vec+labels": "black-box", "know2vec-ssl": "black-box",
    "know2vec-adapted": "black-box", "know2vec+leep@3": "black-box (predictions on 3 models)",
    "two-stage-leep@3": "black-box (predictions on 3 models)",
    "data": "metadata (card datasets: 8 images per class, the accuracy the card reports; no model run)",
    "data-fingerprint": "metadata (card datasets: 8 images per class, no model run)",
    "data-no-hubness": "metadata (as data, without discounting each declared class's closeness to the index's "
                       "other data: the score before)",
    "data-half-cards": "metadata for a seeded half of the models, the vector for the others",
    "data-half-cards-inferred": "metadata for a seeded half of the models; for the others, the data inferred from "
                                "their predictions on the first half's declared data (8 images per shared class, at "
                                "index time), else the vector",
    "two-stage-data-half-cards-leep@3": "black-box (predictions on 3 models)",
    "two-stage-data-half-cards-inferred-leep@3": "black-box (predictions on 3 models)",
    "data+know2vec": "metadata and black-box (the data score; the vector orders the two best when the best data "
                     "match is a model the retriever trained on)",
    "two-stage-data+know2vec-leep@3": "black-box (predictions on 3 models)",
    "fused-data+know2vec-leep@3": "black-box (predictions on 3 models)",
    "finetune-fit": "metadata (card datasets and reported accuracy, an MLP trained on the seen models' measured "
                    "Ft.Acc; no model run)",
    "two-stage-data-leep@3": "black-box (predictions on 3 models)",
    "fused-data-leep@3": "black-box (predictions on 3 models)",
    "two-stage-data-head-accuracy@3": "black-box (predictions on 3 models; the task's class names)",
    **{m.name: m.access for m in METHODS},
    # the offline zoo has no downloads: its "popularity" is seeded random numbers, not a signal
    "popularity": "metadata (offline zoo: seeded random downloads)",
}


def baseline_scores(data: BenchData, fp: dict, task_ids, *, label_blind: bool = False) -> tuple[dict, dict]:
    """Score matrices ``[tasks, models]`` of every baseline, and seconds per task for each.

    ``fp``: :meth:`BenchData.forward_passes` of ``task_ids``. The estimators run once per set of tasks.
    """
    key = tuple(task_ids)
    if key not in data.estimates:
        data.estimates[key] = estimator_scores(data, fp, task_ids)
    methods, secs = data.estimates[key]
    methods, secs = {k: v.copy() for k, v in methods.items()}, dict(secs)
    if label_blind:  # the dataset's names are class_0..: a method that reads them has no evidence
        for method in ESTIMATORS:
            if method.needs_names and methods.pop(method.name, None) is not None:
                secs.pop(method.name)
                data.dropped[f"{method.name} (label-blind)"] = "reads the task's class names, which label-blind has not"
    for name, S in metadata_scores(data, task_ids, label_blind=label_blind).items():
        methods[name], secs[name] = S, 0.0
    return methods, secs


def estimator_scores(data: BenchData, fp: dict, task_ids) -> tuple[dict, dict]:
    """Each estimator of the registry on every model's forward passes; seconds per task include the passes.

    A failed estimate is NaN (it ranks last).
    """
    methods, secs = {}, {}
    n, m = len(task_ids), len(data.models)
    for method in ESTIMATORS:
        if method.needs_n_above_d and not _n_above_d(fp, task_ids, data.models, method.name, data.dropped):
            continue
        S, T = np.zeros((n, m)), np.zeros(n)
        for i, t in enumerate(progress(task_ids, desc=method.name, disable=not data.show or None)):
            y = fp["labels"][t]
            for j, model in enumerate(data.models):
                t0 = time.perf_counter()
                names = (data.labels[model], data.zoo.task(t)["class_names"]) if method.needs_names else ()
                try:
                    S[i, j] = method.estimator(fp[method.inputs][(t, model)], y, *names)
                except Exception as exc:  # noqa: BLE001 - a failed estimate ranks last
                    logger.info("%s failed on %s/%s: %s", method.name, t, model, exc)
                    S[i, j] = np.nan
                T[i] += time.perf_counter() - t0 + fp["seconds"][(t, model)]
        methods[method.name], secs[method.name] = S, float(T.mean())
    return methods, secs


def _n_above_d(fp: dict, task_ids, models, name: str, dropped: dict) -> bool:
    """Whether every task has more images than every model has feature dimensions; if not, say so in ``dropped``."""
    n = [len(fp["labels"][t]) for t in task_ids]
    d = [fp["features"][(t, m)].shape[1] for t in task_ids for m in models]
    if min(n) > max(d):
        return True
    dropped[name] = (f"N <= D: {min(n)}-{max(n)} images per task, {min(d)}-{max(d)} feature dimensions per model "
                     "(its score is then C-1 or noise for every model)")
    return False


def metadata_scores(data: BenchData, task_ids, *, label_blind: bool) -> dict[str, np.ndarray]:
    """The rankings that run no model: random, popularity, size, label names, the card's datasets."""
    meta = {mid: data.zoo.models[mid] for mid in data.models}
    pop = popularity_scores({k: {"downloads": v.get("downloads", 0), "likes": v.get("likes", 0)}
                             for k, v in meta.items()})
    sizes = size_scores({mid: param_count_from_safetensors(data.zoo.root / mid / "model.safetensors")
                         for mid in data.models})
    cards = {mid: read_card_metadata(data.zoo.root / mid / "README.md").get("datasets") or [] for mid in data.models}
    rows = {"random": [], "popularity": [], "size": [], "label_match": [], "card_dataset": []}
    for i, t in enumerate(task_ids):
        by_model = {"random": random_scores(data.models, data.seed + i), "popularity": pop, "size": sizes,
                    "label_match": label_match_scores(data.class_names(t, label_blind=label_blind), data.labels),
                    "card_dataset": card_dataset_scores(f"{data.zoo.org}/{data.zoo.task(t)['source']}", cards)}
        for name, d in by_model.items():
            rows[name].append([d[mid] for mid in data.models])
    return {name: np.asarray(r, dtype=np.float64) for name, r in rows.items()}


def label_scores(data: BenchData, task_ids, *, label_blind: bool) -> np.ndarray:
    """Label-name overlap ``[tasks, models]`` (zero everywhere in label-blind mode)."""
    out = []
    for t in task_ids:
        d = label_match_scores(data.class_names(t, label_blind=label_blind), data.labels)
        out.append([d[m] for m in data.models])
    return np.asarray(out)


def know2vec_scores(retriever, graphs: dict, data: BenchData, task_ids) -> tuple[np.ndarray, float]:
    """Cosine scores ``[tasks, models]`` and the mean seconds per task (encode + search)."""
    M = retriever.embed_models([graphs[m] for m in data.models])
    t0 = time.perf_counter()
    T = np.stack([retriever.embed_task(data.means[t]) for t in task_ids]) if task_ids else np.zeros((0, M.shape[1]))
    S = T @ M.T
    return S, (time.perf_counter() - t0) / max(1, len(task_ids))


def declared_scores(data: BenchData, task_ids, accuracy_weight: float | None = None, *,
                    hubness_weight: float = HUBNESS_WEIGHT, neighbours: int = HUBNESS_NEIGHBOURS
                    ) -> tuple[np.ndarray, float]:
    """`find_model`'s data scores ``[tasks, models]`` (:func:`k2v_hub.declared.data_scores`: each model's card
    data against the task's class means, less ``hubness_weight`` times its classes' centrality among the zoo's
    fingerprints (:func:`k2v_hub.declared.hubness` over ``neighbours``), plus ``accuracy_weight`` (default
    ``data.accuracy_weight``) times the accuracy its card reports) and the mean seconds per task of scoring them."""
    fingerprints, accuracies = data.fingerprints, data.reported_accuracies
    weight = data.accuracy_weight if accuracy_weight is None else accuracy_weight
    t0 = time.perf_counter()
    hubs = hubness(fingerprints, neighbours)
    S = np.stack([data_scores(data.means[t], fingerprints, accuracies, accuracy_weight=weight,
                              hubness_weight=hubness_weight, hubs=hubs)
                  for t in task_ids]) if task_ids else np.zeros((0, len(data.models)))
    return S, (time.perf_counter() - t0) / max(1, len(task_ids))


def half_cards(vector: np.ndarray, declared: np.ndarray, hidden: np.ndarray, place: str = PLACEMENTS[0]) -> np.ndarray:
    """`find_model`'s first stage (:func:`k2v_hub.declared.first_stage_scores`) when the ``hidden`` models' cards
    name no data: the others keep their data score, the hidden ones their vector placed on its scale (``place``:
    :func:`k2v_hub.declared.place_vector`)."""
    masked = declared.copy()
    masked[:, hidden] = np.nan
    return np.stack([first_stage_scores(v, d, place=place) for v, d in zip(vector, masked)])


def half_cards_inferred(data: BenchData, vector: np.ndarray, task_ids, held: dict | None = None,
                        place: str = PLACEMENTS[0], hubness_weight: float = HUBNESS_WEIGHT) -> tuple[np.ndarray, float]:
    """`find_model`'s first stage when a seeded half of the cards name no data and the index inferred theirs
    (``held``: :meth:`BenchData.inferred_half_cards`, default :attr:`BenchData.half_cards`): the data score where
    there is a fingerprint (its hubs discounted by ``hubness_weight``), else the vector placed on its scale
    (``place``); and the mean seconds per task of scoring it."""
    held = data.half_cards if held is None else held
    t0 = time.perf_counter()
    hubs = hubness(held["fingerprints"])
    S = np.stack([first_stage_scores(v, data_scores(data.means[t], held["fingerprints"], held["accuracies"],
                                                    accuracy_weight=data.accuracy_weight, hubness_weight=hubness_weight,
                                                    hubs=hubs), place=place)
                  for v, t in zip(vector, task_ids)]) if task_ids else np.zeros((0, len(data.models)))
    return S, (time.perf_counter() - t0) / max(1, len(task_ids))


def data_know2vec(vector: np.ndarray, declared: np.ndarray, trained: np.ndarray,
                  vector_weight: float = TRAINED_VECTOR_WEIGHT) -> np.ndarray:
    """``data+know2vec`` ``[tasks, models]``: `find_model`'s first stage (:func:`k2v_hub.declared.first_stage_scores`)
    per task from the vector and data scores, with ``trained`` (a mask over the models) those the retriever trained
    on."""
    return np.stack([first_stage_scores(v, d, trained, vector_weight=vector_weight) for v, d in zip(vector, declared)])


def method_scores(data: BenchData, fp: dict, retrievers: dict, graphs: dict, task_ids, *,
                  label_blind: bool = False) -> tuple[dict, dict, np.ndarray]:
    """The baselines, each Know2Vec retriever (``retrievers``: by method name) and the declared-data first stage
    (``data``; ``data-half-cards`` with half the cards hidden; ``finetune-fit`` once the run has chosen its
    predictor, ``data.finetune_predictor``) on ``task_ids``: score matrices, seconds per task,
    and the label-name overlap the hybrids need."""
    meths, secs = baseline_scores(data, fp, task_ids, label_blind=label_blind)
    for name, retriever in retrievers.items():
        meths[name], secs[name] = know2vec_scores(retriever, graphs, data, task_ids)
        secs[name] += data.feature_pass_s  # a search also pays the backbone pass over the user's images
    meths["data"], secs["data"] = declared_scores(data, task_ids)
    secs["data"] += data.feature_pass_s
    meths["data-fingerprint"], secs["data-fingerprint"] = declared_scores(data, task_ids, accuracy_weight=0.0)
    secs["data-fingerprint"] += data.feature_pass_s
    meths["data-no-hubness"], secs["data-no-hubness"] = declared_scores(data, task_ids, hubness_weight=0.0)
    secs["data-no-hubness"] += data.feature_pass_s
    if data.finetune_predictor is not None:
        meths["finetune-fit"], secs["finetune-fit"] = finetune_scores(data, data.finetune_predictor, task_ids)
        secs["finetune-fit"] += data.feature_pass_s
    if "know2vec" in meths:
        meths["data-half-cards"] = half_cards(meths["know2vec"], meths["data"], data.hidden_cards())
        secs["data-half-cards"] = secs["know2vec"] + secs["data"] - data.feature_pass_s
        meths["data-half-cards-inferred"], s = half_cards_inferred(data, meths["know2vec"], task_ids)
        secs["data-half-cards-inferred"] = secs["know2vec"] + s
    return meths, secs, label_scores(data, task_ids, label_blind=label_blind)


def two_stage(first: np.ndarray, second: np.ndarray, k: int, labels: np.ndarray | None = None,
              fusion: float = 0.0) -> np.ndarray:
    """Re-rank ``k`` candidates of ``first`` by ``second``; the rest keep their first-stage order below them.

    With ``labels`` (label-name overlap ``[tasks, models]``) the candidates are those `find_model` takes: vectors
    and label names interleaved (:func:`k2v_hub.find.first_stage_order`); without, the top-k of ``first``. With
    ``fusion`` the candidates are ordered as `find_model` orders them with its declared-data first stage:
    ``z(second) + fusion * z(first)`` over them (:func:`k2v_hub.rerank.fuse_scores`; ``0``: by ``second`` alone).
    Candidates the second stage ties keep their first-stage order (as `find_model`'s stable sort keeps them).
    """
    out = np.full_like(first, -1e6, dtype=np.float64)
    for i in range(len(first)):
        order = first_stage_candidates(first, labels, i)
        top = order[:k]
        rest = order[k:]
        sec = fuse_scores(second[i][top], first[i][top], fusion)
        out[i, top] = 1e3 + (sec - sec.min()) / (np.ptp(sec) + 1e-12) - 1e-9 * np.arange(len(top))
        out[i, rest] = -np.arange(len(rest), dtype=np.float64)
    return out


def with_hybrids(meths: dict, secs: dict, lab: np.ndarray, *, n_models: int, ks=(3,),
                 label_weight: float | None = None, fusion: float | None = None,
                 trained: np.ndarray | None = None, vector_weight: float | None = None) -> tuple[dict, dict]:
    """Add the label and two-stage hybrids to base score matrices (``lab``: label-name overlap, same shape).

    ``know2vec+labels`` adds ``label_weight`` (default: `find_model`'s) times the label overlap. The LEEP hybrids
    (``know2vec+leep@k``: vector candidates; ``two-stage-leep@k``: `find_model`'s candidates from vectors and
    label names; ``two-stage-data-leep@k``: from the declared-data first stage, ``data``, and label names;
    ``fused-data-leep@k``: the same candidates ordered by LEEP fused with the data score, weight ``fusion``
    (default: `find_model`'s), as `find_model` orders them) need a ``leep`` matrix; each is charged ``k`` of the
    ``n_models`` forward passes. With class names (a ``head_accuracy`` matrix: not label-blind),
    ``two-stage-data-head-accuracy@k`` re-ranks the same candidates by their own head's accuracy on the task.
    With ``trained`` (a mask over the models: those the retriever trained on), ``data+know2vec`` is `find_model`'s
    first stage with that retriever (:func:`k2v_hub.declared.first_stage_scores`: the vector, weight
    ``vector_weight``, default `find_model`'s, weighs in when the best data match is a trained model), and
    ``two-stage-data+know2vec-leep@k`` / ``fused-data+know2vec-leep@k`` re-rank its candidates by LEEP (fused:
    as `find_model --rerank leep` does with it).
    """
    meths, secs = dict(meths), dict(secs)
    weight = LABEL_WEIGHT if label_weight is None else label_weight
    fusion = FUSION_WEIGHT if fusion is None else fusion
    if trained is not None and "data" in meths and "know2vec" in meths:
        w = TRAINED_VECTOR_WEIGHT if vector_weight is None else vector_weight
        meths["data+know2vec"] = data_know2vec(meths["know2vec"], meths["data"], trained, w)
        secs["data+know2vec"] = secs["data"] + secs["know2vec"]  # charged both (the feature pass twice)
        for k in ks if "leep" in meths else ():
            for prefix, f in (("two-stage", 0.0), ("fused", fusion)):
                name = f"{prefix}-data+know2vec-leep@{k}"
                meths[name] = two_stage(meths["data+know2vec"], meths["leep"], k, labels=lab, fusion=f)
                secs[name] = secs["data+know2vec"] + secs["leep"] * k / n_models
    meths["know2vec+labels"] = meths["know2vec"] + weight * lab
    secs["know2vec+labels"] = secs["know2vec"]
    for k in ks if "leep" in meths else ():
        meths[f"know2vec+leep@{k}"] = two_stage(meths["know2vec"], meths["leep"], k)
        meths[f"two-stage-leep@{k}"] = two_stage(meths["know2vec"], meths["leep"], k, labels=lab)
        for name in (f"know2vec+leep@{k}", f"two-stage-leep@{k}"):
            secs[name] = secs["know2vec"] + secs["leep"] * k / n_models
        if "data" in meths:
            meths[f"two-stage-data-leep@{k}"] = two_stage(meths["data"], meths["leep"], k, labels=lab)
            meths[f"fused-data-leep@{k}"] = two_stage(meths["data"], meths["leep"], k, labels=lab, fusion=fusion)
            for name in (f"two-stage-data-leep@{k}", f"fused-data-leep@{k}"):
                secs[name] = secs["data"] + secs["leep"] * k / n_models
    for k in ks if "leep" in meths else ():
        for half in ("data-half-cards", "data-half-cards-inferred"):
            if half in meths:
                meths[f"two-stage-{half}-leep@{k}"] = two_stage(meths[half], meths["leep"], k, labels=lab)
                secs[f"two-stage-{half}-leep@{k}"] = secs[half] + secs["leep"] * k / n_models
    for k in ks if "head_accuracy" in meths and "data" in meths else ():
        name = f"two-stage-data-head-accuracy@{k}"
        meths[name] = two_stage(meths["data"], meths["head_accuracy"], k, labels=lab)
        secs[name] = secs["data"] + secs["head_accuracy"] * k / n_models
    return meths, secs
