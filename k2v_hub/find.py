"""`find_model`: which indexed model fits my dataset?

The dataset (a ``datasets.Dataset``/``DatasetDict``, a folder written by ``save_to_disk``, an image folder, or a
Hub dataset id) is turned into class means in the index's feature space, encoded by the retriever's Q_EXT, and
compared with every model vector by cosine (one matrix product). Where the index holds a model's *data
fingerprint* (class means of a few images of the data its card declares, :mod:`k2v_hub.declared`), the first
stage scores that model by how close its declared data is to the dataset instead, less how close that data is to
the index's other data (a *hub*, close to every dataset, counts less), plus a little for the accuracy its card
reports on that data, which tells apart models that declare the same data (``stage="data"``, its ``data_score``);
the others keep their cosine, placed on the same scale. When the best data match is a model the
retriever was trained on with ground truth (``training_info.trained_models``, e.g. a retriever trained on the org's
own zoo with ``k2v-hub train``; known by the row's knowledge record, :meth:`~k2v_hub.retriever.Retriever.trained_mask`,
not by its id alone), the vector puts the two best data matches in order (``stage="data+vector"``, the
same two scores, :func:`~k2v_hub.declared.first_stage_scores`): among its training models it knows more than the
data; on others it is kept out, as it pulls them towards a trained sibling. The class means are the ones the query
vector is made from, so this costs no model run. That ranks models for use as they are; ``goal="fine-tune"`` ranks
them for fine-tuning on the dataset instead, by a small predictor of the fine-tuned accuracy made from the
same evidence (``stage="finetune-fit"``, its ``finetune_score``; :mod:`k2v_hub.finetune_fit`). Optional extras,
each reported as its own stage:

- ``use_label_names=True`` adds label-name evidence (overlap between the dataset's class names and each model's
  labels) to the knowledge score: the ``know2vec+labels`` method. Off by default: the knowledge score alone is
  what the black-box vectors say.
- ``rerank="leep"|"nce"|"logme-probs"`` re-scores ``rerank_k`` candidates by asking each, as a black box,
  about at most ``rerank_images`` of the user's images (predictions only; query cost is counted). Grey-box
  ``rerank="logme"`` needs each candidate's penultimate features, so it downloads the weights. The candidates
  come from the vectors *and* from label-name evidence (:func:`first_stage_order`): the second stage cannot
  recover a model the first one dropped, and on image domains nobody indexed the vectors alone often drop it.
  ``rerank="head-accuracy"`` asks the same black boxes and measures what "as it is" means: each candidate's own
  head's accuracy on the user's images, over the dataset's class names it has (a class it lacks counts as wrong);
  it needs class names that mean something (models whose labels share none of them score 0).
- With the declared-data first stage and ``goal="as-is"``, the re-rank keeps that stage's evidence: the candidates
  are ordered by ``z(rerank_score) + rerank_fusion * z(first-stage score)`` over them
  (:func:`~k2v_hub.rerank.fuse_scores`; ``rerank_fusion`` :data:`~k2v_hub.rerank.FUSION_WEIGHT` by default, chosen
  on the bench's validation split; ``0`` re-ranks by the estimator alone, as without fingerprints or with
  ``goal="fine-tune"``).
- ``rerank="auto"`` (the default): a small org, whose whole index fits in ``rerank_k``, gets the full black-box
  re-rank when its models can be fetched (``models_root=`` given, or a Hub index): ``head-accuracy`` when the goal
  is ``"as-is"`` and some model's labels name one of the dataset's classes exactly, LEEP otherwise; a larger index
  stays on the first stage. Each match says which stage produced its score (``stage``).

**One score along the list.** ``score`` never rises with rank, so sorting by it gives the ranking: a first-stage
match scores its data score or cosine (:func:`~k2v_hub.declared.first_stage_scores`, in [-1, 1.02]; plus
``LABEL_WEIGHT`` x the label overlap with ``use_label_names``), at most 1.5; a
re-ranked one scores its estimator's value (fused with the first stage's, above) mapped into the band (2, 3), order
kept (:func:`rerank_band_score`), so
every re-ranked candidate sits above every match that was not re-ranked. Each stage's raw value stays in its own
field (``knowledge_score``, ``label_score``, ``rerank_score``) and ``score_meaning`` says which formula applies.

What is accepted and what is refused (every refusal is a :class:`~k2v_hub.errors.K2VError` subclass whose one-line
message says what to do): for the dataset, see :mod:`k2v_hub.query_data` and ``tests/test_bad_inputs.py``; for the
index, ``tests/test_bad_indexes.py``:

- **Indexes.** The index must be readable, non-empty, made with this retriever (weights fingerprint) and feature
  space, and by a k2v-hub with the same ``major.minor`` version (:func:`check_index_version`): record and
  encoder formats may change between minor versions before 1.0, so an older index is refused rather than
  silently mis-ranked; re-encode it with ``k2v-hub index`` (no new queries).
"""

from __future__ import annotations

import json
import math
import numbers
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from huggingface_hub import constants
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
from transformers.utils import logging as hf_logging

from . import __version__
from .baselines import exact_label, label_match_scores
from .declared import TRAINED_VECTOR_TOP, TRAINED_VECTOR_WEIGHT
from .errors import HubError, IndexError_, K2VError, UsageError, one_line
from .features import FeatureExtractor
from .finetune_fit import FinetunePredictor, load_finetune_predictor
from .hub import split_revision
from .index import best_first, load_index, load_retriever
from .methods import RERANK_METHODS, rerank_method
from .query_data import class_means, find_columns, load_query_dataset, select_query_rows
from .rerank import FUSION_WEIGHT, fuse_scores, rerank_matches
from .retriever import Retriever
from .utils import logger

RerankMethod = Literal[("auto", *RERANK_METHODS)]
#: What ``find_model(goal=...)`` accepts: rank for use as is, or for fine-tuning.
GOALS = ("as-is", "fine-tune")
Goal = Literal[GOALS]
AUTO_RERANK = "leep"
#: ``rerank="auto"``'s method when the dataset's class names are among the models' labels and ``goal="as-is"``: their
#: own heads' accuracy on the dataset (bench validation split, names known, every model run: R@1 0.9038 against
#: LEEP's 0.7692; fused with the data score as find_model does: 0.9038 against 0.8654; benchmarks/head_accuracy.py).
AUTO_RERANK_NAMED = "head-accuracy"
LABEL_WEIGHT = 0.5
#: Re-ranked scores lie in (RERANK_BAND, RERANK_BAND + 1): above every first-stage score (at most 1 + LABEL_WEIGHT).
RERANK_BAND = 2.0


@dataclass
class Match:
    """One ranked model.

    Attributes:
        model_id: the model repo id.
        revision: the commit the index describes.
        score: the final score, on one scale along the whole list: it never rises with rank. A first-stage match's
            ``data_score`` or cosine (plus ``LABEL_WEIGHT`` x ``label_score`` with label evidence), at most 1.5; for a
            re-ranked one, ``rerank_score`` (fused with the first stage's score: ``rerank_fusion``) mapped into
            (2, 3) with its order kept (:func:`rerank_band_score`).
        rank: 1-based rank.
        url: the model page.
        labels: the model's labels.
        stage: which stage produced ``score``: ``"data"``, ``"finetune-fit"``, ``"vector"`` (each ``+labels``) or
            ``"rerank:<method>"``.
        knowledge_score: cosine between the task vector and the model vector.
        label_score: label-name overlap in [0, 1] (``None`` unless label evidence was used).
        rerank_score: the re-ranking estimator's value (``None`` unless re-ranked).
        data_score: how close the data the model's card declares is to the dataset, less
            :data:`~k2v_hub.declared.HUBNESS_WEIGHT` x how close it is to the index's other data, plus
            :data:`~k2v_hub.declared.ACCURACY_WEIGHT` x the accuracy the card reports on it (:mod:`k2v_hub.declared`;
            ``None`` when the index holds no fingerprint of it).
        finetune_score: with ``goal="fine-tune"``, the model's predicted fine-tuned accuracy on the dataset,
            standardised over the index's models (:mod:`k2v_hub.finetune_fit`; ``None`` otherwise, or without a
            fingerprint).
        score_meaning: how ``score`` was computed from the fields above (for readers of the JSON output).
    """

    model_id: str
    revision: str
    score: float
    rank: int
    url: str
    labels: list = field(default_factory=list, repr=False)
    stage: str = "vector"
    knowledge_score: float = 0.0
    label_score: float | None = None
    rerank_score: float | None = None
    score_meaning: str = "cosine"
    data_score: float | None = None
    finetune_score: float | None = None

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return asdict(self)


class Matches(list):
    """A list of :class:`Match`, best first, with ``timings`` (seconds per stage), ``queries`` (black-box) and
    ``task_vector`` (the dataset as the retriever embeds it, in the space of the index's model vectors)."""

    timings: dict
    queries: int = 0
    task_vector: np.ndarray | None = None


def match_rows(matches) -> list[dict]:
    """The rows `k2v-hub find` prints, best first: each match's fields, with ``n_labels`` instead of ``labels``."""
    rows = [m.to_dict() for m in matches]
    for r in rows:
        r["n_labels"] = len(r.pop("labels"))
    return rows


def matches_json(matches) -> str:
    """What `k2v-hub find --format json` prints (its last newline aside): :func:`match_rows` as a JSON array."""
    return json.dumps(match_rows(matches), indent=2, default=str)


def rerank_band_score(value: float) -> float:
    """A re-ranking estimator's value (any real, e.g. LEEP <= 0) mapped into ``(RERANK_BAND, RERANK_BAND + 1)``,
    order kept: ``RERANK_BAND + 0.5 + atan(value) / pi``. Above every first-stage score, and strictly increasing."""
    return RERANK_BAND + 0.5 + math.atan(value) / math.pi


def check_index_version(meta: dict, rows=()) -> None:
    """An index is usable only by a k2v-hub with the same ``major.minor`` version as the one that built it.

    Raises:
        IndexError_: the index (or one of its rows) was built by another ``major.minor``, or does not say.
    """
    mine = _major_minor(__version__)
    built = meta.get("k2v_hub_version")
    if not isinstance(built, str) or _major_minor(built) is None:
        raise IndexError_("The index does not say which k2v-hub version built it (k2v_index.json).",
                          "Rebuild it with `k2v-hub index`.")
    if _major_minor(built) != mine:
        raise IndexError_(f"The index was built by k2v-hub {built}; this is {__version__} (major.minor must match).",
                          f"Re-encode it with `k2v-hub index` (no new queries), or install k2v-hub=={built}.")
    for row in rows:
        v = row.k2v_hub_version
        if not isinstance(v, str) or _major_minor(v) != mine:
            raise IndexError_(f"Row {row.model_id!r} was built by k2v-hub {v}; this is {__version__}.",
                              "Re-encode the index with `k2v-hub index` (no new queries).")


def _major_minor(version: str):
    parts = str(version).split(".")
    if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return int(parts[0]), int(parts[1])


def _load_index(index, *, revision, token):
    """``load_index`` with every unexpected failure turned into an :class:`IndexError_`."""
    try:
        idx = load_index(index, revision=revision, token=token)
    except K2VError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged index must be a clear error, never a traceback
        if isinstance(exc, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError)):
            raise IndexError_(one_line(f"Index {index} is not a local folder and could not be downloaded "
                                       f"({type(exc).__name__})."),
                              "Check the id, your connection and HF_ENDPOINT / HF_HUB_OFFLINE, or pass a folder.") \
                from None
        raise IndexError_(one_line(f"Index {index} could not be loaded ({type(exc).__name__}: {exc})."),
                          "It is damaged: rebuild it with `k2v-hub index`, or download it again.") from None
    if not isinstance(idx.meta, dict):
        raise IndexError_(f"Index {index}: k2v_index.json is not a JSON object.", "Rebuild it with `k2v-hub index`.")
    return idx


def retriever_for_index(retriever, index_meta: dict, *, token: str | None = None) -> Retriever:
    """The retriever to use with an index: given, or the one the index names; checked against the index.

    ``retriever``: a :class:`~k2v_hub.Retriever`, a folder or Hub id (loaded by :func:`~k2v_hub.index.load_retriever`),
    or ``None`` for the one the index names (at the revision it records).

    Raises:
        IndexError_: the index names no retriever, the retriever cannot be loaded, or it is not the one the index
            was built with (weights fingerprint, feature space), or the index was built by another k2v-hub
            ``major.minor``.
    """
    if not isinstance(index_meta, dict):
        raise IndexError_("The index settings (k2v_index.json) are not a JSON object.", "Rebuild the index.")
    check_index_version(index_meta)
    revision = None
    if retriever is None:
        retriever = index_meta.get("retriever_id")
        revision = index_meta.get("retriever_revision")
        if not retriever or not isinstance(retriever, str):
            raise IndexError_("The index does not name its retriever.", "Pass retriever=.")
    if not isinstance(retriever, Retriever):
        name = split_revision(str(retriever))[0]
        try:
            retriever, _, _ = load_retriever(str(retriever), token, revision=revision)
        except K2VError as exc:
            if not isinstance(exc, HubError):
                raise
            # not a folder, and the Hub could not give it: named after the Hub's own error when there is one
            raise _unloadable(name, exc.__context__ or exc) from None
        except Exception as exc:  # noqa: BLE001
            raise _unloadable(name, exc) from None
    if retriever.fingerprint() != index_meta.get("retriever_fingerprint"):
        raise IndexError_(
            f"The retriever (weights {retriever.fingerprint()}) is not the one the index was built with "
            f"({index_meta.get('retriever_id')}, weights {index_meta.get('retriever_fingerprint')}).",
            "Use the index's retriever, or re-encode the index with `k2v-hub index ... --retriever R` (no new queries).")
    if retriever.feature_space != index_meta.get("feature_space"):
        raise IndexError_(f"Feature space mismatch: retriever {retriever.feature_space!r}, index "
                          f"{index_meta.get('feature_space')!r}.", "Rebuild the index with this retriever.")
    return retriever


def _unloadable(name: str, exc: BaseException) -> IndexError_:
    return IndexError_(f"Could not load retriever {name!r} ({type(exc).__name__}).",
                       "Pass --retriever with a folder or Hub id made by `k2v-hub train`.")


_EXTRACTORS: dict = {}


def _feature_extractor(name: str, *, token: str | None, show_progress: bool):
    """The feature space ``name``, kept in memory across calls (at most two), loaded quietly unless asked."""
    if name in _EXTRACTORS:
        return _EXTRACTORS[name]
    bars = hf_logging.is_progress_bar_enabled()
    if not show_progress:
        hf_logging.disable_progress_bar()
    try:
        extractor = FeatureExtractor.from_pretrained(name, token=token)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    while len(_EXTRACTORS) >= 2:
        _EXTRACTORS.pop(next(iter(_EXTRACTORS)))
    _EXTRACTORS[name] = extractor
    return extractor


def first_stage_order(vector_scores: np.ndarray, label_scores: np.ndarray | None = None) -> np.ndarray:
    """Model indices in the order the second stage takes its candidates: vectors and label names interleaved.

    The label ranking (models sharing at least one of the dataset's class names, most shared first, vector score
    breaking ties) and the vector ranking take turns, label first, each skipping what the other already placed;
    the rest follow in vector order. With no label evidence this is the vector ranking.
    """
    vector_scores = np.asarray(vector_scores, dtype=np.float64)
    by_vector = np.argsort(-vector_scores, kind="stable")
    if label_scores is None or not np.any(np.asarray(label_scores) > 0):
        return by_vector
    label_scores = np.asarray(label_scores, dtype=np.float64)
    by_label = [i for i in np.lexsort((-vector_scores, -label_scores)) if label_scores[i] > 0]
    out, placed = [], set()
    for a, b in zip(by_label + [None] * len(by_vector), by_vector):
        for i in (a, b):
            if i is not None and i not in placed:
                placed.add(i)
                out.append(int(i))
    return np.asarray(out, dtype=np.int64)


def _auto_rerank(names, rows, goal: str) -> str:
    """``rerank="auto"``'s method for a small org: each model's own accuracy on the dataset when the goal is to use
    a model as it is and at least one model names one of the dataset's classes exactly (the match
    :func:`~k2v_hub.baselines.head_accuracy` makes); else LEEP."""
    wanted = {exact_label(n) for n in names}
    shared = any(wanted & {exact_label(label) for label in row.labels} for row in rows)
    return AUTO_RERANK_NAMED if goal == "as-is" and shared else AUTO_RERANK


def _first_stage(has_data: bool, any_data: bool, labels: bool, finetune: bool = False,
                 vector: bool = False) -> tuple[str, str]:
    """A first-stage match's ``stage`` and ``score_meaning``: its declared-data score where it has one (with
    ``finetune``: ``tanh`` of its predicted fine-tuned accuracy), else its vector cosine (placed on that scale when
    other models have one); with ``vector``, one of the best data matches the vector put in order (the best is a
    model the retriever trained on); plus label evidence if used."""
    kind = "tanh(finetune_score)" if finetune else "data"
    if has_data:
        stage, meaning = ("finetune-fit", kind) if finetune else ("data", "data_score")
    elif any_data:
        stage, meaning = "vector", (f"cosine placed on the {kind} scores' scale (the {kind} score at the quantile "
                                    "its cosine ranks at among the index's)")
    else:
        stage, meaning = "vector", "cosine"
    if vector:
        stage = "data+vector" if has_data else stage
        meaning = (f"one of the {TRAINED_VECTOR_TOP} best first-stage scores ({meaning}), given in the order of "
                   f"score + {TRAINED_VECTOR_WEIGHT} x the scores' spread x the standardised knowledge_score (the best "
                   "data match is a model the retriever was trained on)")
    if labels:
        return f"{stage}+labels", f"{meaning} + {LABEL_WEIGHT} * label_score"
    return stage, meaning


def _check_arguments(top_k, max_images_per_class, rerank, rerank_k, rerank_images, rerank_fusion):
    """Refuse bad arguments; return ``rerank`` with a method in the registry's spelling (``logme-probs`` is
    ``logme_probs``, :mod:`k2v_hub.methods`)."""
    if (isinstance(rerank_fusion, bool) or not isinstance(rerank_fusion, numbers.Real)
            or not math.isfinite(rerank_fusion) or rerank_fusion < 0):
        raise UsageError(f"rerank_fusion must be a finite number >= 0, got {rerank_fusion!r}.",
                         f"Pass rerank_fusion={FUSION_WEIGHT} (the default), or 0 to re-rank by the estimator alone.")
    for name, value in (("top_k", top_k), ("max_images_per_class", max_images_per_class), ("rerank_k", rerank_k),
                        ("rerank_images", rerank_images)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise UsageError(f"{name} must be an integer >= 1, got {value!r}.", f"Pass {name}=5, say.")
    if rerank in (None, "auto"):
        return rerank
    method = rerank_method(rerank)
    if method is None:
        raise UsageError(f"Unknown rerank method {rerank!r}.", f"Choose one of {', '.join(RERANK_METHODS)}.")
    return method.name


def find_model(
    dataset,
    index,
    *,
    retriever=None,
    top_k: int = 5,
    image_column: str | None = None,
    label_column: str | None = None,
    split: str | None = None,
    revision: str | None = None,
    index_revision: str | None = None,
    token: str | None = None,
    max_images_per_class: int = 32,
    use_label_names: bool = False,
    rerank: RerankMethod | None = "auto",
    rerank_k: int = 5,
    rerank_images: int = 64,
    rerank_endpoint: str | None = None,
    rerank_fusion: float = FUSION_WEIGHT,
    models_root: str | None = None,
    goal: Goal = "as-is",
    finetune_predictor=None,
    show_progress: bool = True,
    seed: int = 0,
) -> Matches:
    """Rank the index's models for a labelled image dataset, best first.

    Args:
        dataset: a ``datasets.Dataset``/``DatasetDict``/``IterableDataset``, a ``save_to_disk`` folder, an image
            folder or a Hub id.
        index: an index folder or a Hub dataset repo id (``org/k2v-index`` or ``org/k2v-index@rev``).
        retriever: a :class:`~k2v_hub.Retriever`, a folder or Hub id; default: the one the index names.
        top_k: how many matches to return (fewer if the index is smaller).
        image_column, label_column: override the columns found from the features.
        split: which split of a DatasetDict (default ``support``/``train``/the first).
        revision: revision of a Hub dataset; ``index_revision``: of a Hub index.
        token: Hub token (default: the saved login).
        max_images_per_class: images per class used for the task vector (one is enough).
        use_label_names: add label-name evidence to the knowledge score (``know2vec+labels``).
        rerank: re-score ``rerank_k`` candidates (vectors plus label names) with a transferability estimator on up
            to ``rerank_images`` images (drawn from the images already used for the class means). ``"auto"``: every
            model when the whole index fits in ``rerank_k`` and its models can be fetched, else none; by
            ``head-accuracy`` when ``goal="as-is"`` and a model's labels name one of the dataset's classes, else LEEP.
        rerank_endpoint: re-rank through remote endpoints instead of running the models: a URL template with
            ``{model_id}`` (``InferenceClient.image_classification``; no weights are downloaded).
        rerank_fusion: with the declared-data first stage and ``goal="as-is"``, how much of the first stage's
            score the re-rank keeps: candidates ordered by ``z(rerank_score) + rerank_fusion * z(first-stage
            score)`` over them; ``0``: by the estimator alone (:func:`~k2v_hub.rerank.fuse_scores`).
        models_root: a local zoo folder to load candidate models from when re-ranking (default: the Hub).
        goal: ``"as-is"`` ranks models for use as they are (their accuracy on the dataset's classes: the data
            score); ``"fine-tune"`` for fine-tuning on the dataset: by a predictor of the fine-tuned accuracy made
            from the same evidence (the declared data's match, coverage and breadth, the card's reported accuracy;
            no model run; :mod:`k2v_hub.finetune_fit`). Models without a fingerprint keep their vector either way.
        finetune_predictor: a :class:`~k2v_hub.finetune_fit.FinetunePredictor` or its folder, for
            ``goal="fine-tune"`` (default: the one shipped beside the default retriever).

    Returns:
        :class:`Matches`: a list of :class:`Match` with ``timings`` (``load_s``, ``features_s``, ``encode_s``,
        ``search_s``, ``rerank_s``), ``queries`` (black-box queries spent re-ranking) and ``task_vector``. Every
        score is finite.

    Raises:
        DatasetError: the dataset cannot be a query (see the module docstring for what is accepted).
        IndexError_: the index is missing, damaged, empty, or incompatible with the retriever or this version.
        UsageError: a bad argument (``top_k < 1``, unknown ``rerank`` or ``goal``, negative ``rerank_fusion``...).
        HubError: a Hub request failed.

    Example:
        >>> from k2v_hub import find_model
        >>> matches = find_model("./my_dataset", index="./k2v-out/index")  # doctest: +SKIP
        >>> matches[0].model_id  # doctest: +SKIP
        'k2v-zoo/resnet-mnist-a-s0'
    """
    rerank = _check_arguments(top_k, max_images_per_class, rerank, rerank_k, rerank_images, rerank_fusion)
    if goal not in GOALS:
        raise UsageError(f"Unknown goal {goal!r}.", f"Choose one of {', '.join(GOALS)}.")
    predictor = None
    if goal == "fine-tune":
        predictor = (finetune_predictor if isinstance(finetune_predictor, FinetunePredictor)
                     else load_finetune_predictor(finetune_predictor))
    timings: dict = {}
    t0 = time.perf_counter()
    ds = load_query_dataset(dataset, split=split, revision=revision, token=token)
    image_column, label_column, class_names = find_columns(ds, image_column, label_column)
    chosen, keys, names = select_query_rows(ds, label_column, class_names,
                                            max_images_per_class=max_images_per_class, seed=seed)
    idx = _load_index(index, revision=index_revision, token=token)
    check_index_version(idx.meta, idx.rows)
    retriever = retriever_for_index(retriever, idx.meta, token=token)
    if idx.embeddings.ndim != 2 or idx.embeddings.shape[1] != retriever.embed_dim:
        raise IndexError_(f"Index {index} holds {idx.embeddings.shape[-1]}-d vectors but the retriever makes "
                          f"{retriever.embed_dim}-d ones.", "Rebuild the index with this retriever.")
    extractor = _feature_extractor(retriever.feature_space, token=token, show_progress=show_progress)
    if extractor.name != idx.meta.get("feature_space"):
        raise IndexError_(f"The feature space loads as {extractor.name!r} but the index was built in "
                          f"{idx.meta.get('feature_space')!r}.", "Rebuild the index with this feature space.")
    timings["load_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    means = class_means(ds, image_column, chosen, keys, extractor, show_progress=show_progress)
    timings["features_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    query = retriever.embed_task(means)
    if not np.isfinite(query).all():
        raise IndexError_("The retriever turned the dataset into a non-finite vector.",
                          "The retriever's weights are broken: use another retriever.")
    timings["encode_s"] = time.perf_counter() - t2
    t2 = time.perf_counter()
    if rerank == "auto":
        reachable = models_root is not None or rerank_endpoint is not None or idx.repo_id is not None
        rerank = _auto_rerank(names, idx.rows, goal) if reachable and len(idx.rows) <= rerank_k else None
    label_scores = None
    if use_label_names or rerank:
        label_scores = label_match_scores(names, {r.model_id: r.labels for r in idx.rows})
    label_vec = None if label_scores is None else np.asarray([label_scores[r.model_id] for r in idx.rows])
    n_ranked = max(top_k, rerank_k if rerank else 0)
    trained = retriever.trained_mask([r.model_id for r in idx.rows], [r.knowledge for r in idx.rows])
    stage_one = idx.first_stage(query, means, predictor, trained)
    knowledge, data, first = stage_one.knowledge, stage_one.data, stage_one.scores
    final = first + LABEL_WEIGHT * label_vec if use_label_names else first
    if not np.isfinite(final).all():
        raise IndexError_(f"Index {index} gave non-finite scores.", "Rebuild the index.")
    order_models = best_first(final, n_ranked)
    if rerank:
        candidates = [int(i) for i in first_stage_order(first, label_vec)[:rerank_k]]
        order_models = candidates + [int(i) for i in order_models if int(i) not in candidates]
    timings["search_s"] = time.perf_counter() - t2
    matches = Matches()
    matches.queries = 0
    for rank, i in enumerate(order_models[:n_ranked], start=1):
        row = idx.rows[i]
        stage, meaning = _first_stage(bool(np.isfinite(data[i])), bool(np.isfinite(data).any()), use_label_names,
                                      predictor is not None, i in stage_one.vector_head)
        matches.append(Match(
            model_id=row.model_id, revision=row.revision, score=float(final[i]), rank=rank,
            url=f"{constants.ENDPOINT}/{row.model_id}", labels=list(row.labels), stage=stage,
            knowledge_score=float(knowledge[i]),
            label_score=None if label_scores is None else float(label_scores[row.model_id]),
            score_meaning=meaning, data_score=float(data[i]) if np.isfinite(data[i]) else None,
            finetune_score=(float(stage_one.finetune[i]) if stage_one.finetune is not None
                            and np.isfinite(stage_one.finetune[i]) else None),
        ))
    if rerank:
        t3 = time.perf_counter()
        # re-rank on the rows whose images and labels were validated above
        used = ds.select(np.sort(np.concatenate([chosen[k] for k in keys])).tolist())
        matches.queries = rerank_matches(matches[:rerank_k], used, image_column, label_column, method=rerank,
                                         n_images=rerank_images, token=token, models_root=models_root,
                                         endpoint=rerank_endpoint, seed=seed,
                                         class_names={str(k): n for k, n in zip(keys, names)})
        head = matches[:rerank_k]
        fusion = float(rerank_fusion) if goal == "as-is" and np.isfinite(data).any() else 0.0
        fused = fuse_scores([m.rerank_score for m in head], first[order_models[:len(head)]], fusion)
        for m, value in zip(head, fused):
            by = m.stage.split(":", 1)[1]
            if fusion:
                m.score = rerank_band_score(float(value))
                m.score_meaning = (f"{RERANK_BAND + 0.5:g} + atan(z(rerank_score) + {fusion:g} * z(first-stage "
                                   f"score)) / pi, z over the {len(head)} candidates: re-ranked by {by} with the "
                                   "first stage's evidence, above every match that was not")
            else:
                m.score = rerank_band_score(m.rerank_score)
                m.score_meaning = (f"{RERANK_BAND + 0.5:g} + atan(rerank_score) / pi: re-ranked by {by}, above "
                                   "every match that was not")
        head = sorted(matches[:rerank_k], key=lambda m: -m.score)
        rest = matches[rerank_k:]
        matches[:] = head + rest
        for rank, m in enumerate(matches, start=1):
            m.rank = rank
        timings["rerank_s"] = time.perf_counter() - t3
    del matches[top_k:]
    matches.timings = {k: round(v, 4) for k, v in timings.items()}
    matches.task_vector = query
    logger.info("find_model timings: %s", matches.timings)
    return matches
