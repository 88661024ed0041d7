"""`find_model`: which indexed model fits my dataset?

The dataset (a ``datasets.Dataset``/``DatasetDict``, a folder written by ``save_to_disk``, an image folder, or a
Hub dataset id) is turned into class means in the index's feature space, encoded by the retriever's Q_EXT, and
compared with every model vector by cosine (one matrix product; FAISS for very large indexes). Optional extras,
each reported as its own stage:

- ``use_label_names=True`` adds label-name evidence (overlap between the dataset's class names and each model's
  labels) to the knowledge score: the ``know2vec+labels`` method. Off by default: the knowledge score alone is
  what the black-box vectors say.
- ``rerank="leep"|"nce"|"logme-probs"`` re-scores the top ``rerank_k`` candidates by asking each, as a black box,
  about at most ``rerank_images`` of the user's images (predictions only; query cost is counted). Grey-box
  ``rerank="logme"`` needs each candidate's penultimate features, so it downloads the weights.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .errors import DatasetError, IndexError_, K2VError
from .utils import logger

RerankMethod = Literal["leep", "nce", "logme-probs", "logme"]
LABEL_WEIGHT = 0.5
MAX_PIXELS = 4096 * 4096


@dataclass
class Match:
    """One ranked model.

    Attributes:
        model_id: the model repo id.
        revision: the commit the index describes.
        score: the final score (higher is better).
        rank: 1-based rank.
        url: the model page.
        labels: the model's labels.
        stage: which stage produced ``score``: ``"vector"``, ``"vector+labels"`` or ``"rerank:<method>"``.
        knowledge_score: cosine between the task vector and the model vector.
        label_score: label-name overlap in [0, 1] (``None`` unless label evidence was used).
        rerank_score: the re-ranking estimator's value (``None`` unless re-ranked).
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

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return asdict(self)


class Matches(list):
    """A list of :class:`Match`, best first, with ``timings`` (seconds per stage) and ``queries`` (black-box)."""

    timings: dict
    queries: int = 0


def load_query_dataset(dataset, *, split: str | None = None, revision: str | None = None, token: str | None = None):
    """Resolve what the user handed us into one ``datasets.Dataset``.

    Accepts a Dataset, a DatasetDict (``split`` or ``train`` or the only/first split), an IterableDataset
    (materialised, at most 50k rows), a ``save_to_disk`` folder, an image folder (``class/xxx.png``), or a Hub id.
    """
    import datasets

    if isinstance(dataset, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        if isinstance(dataset, datasets.IterableDatasetDict):
            dataset = dataset[_pick_split(list(dataset), split)]
        rows = list(dataset.take(50_000))
        if not rows:
            raise DatasetError("The streaming dataset is empty.", "Pass a dataset with labelled images.")
        return datasets.Dataset.from_list(rows, features=dataset.features)
    if isinstance(dataset, datasets.DatasetDict):
        if not dataset:
            raise DatasetError("The DatasetDict has no splits.")
        return dataset[_pick_split(list(dataset), split)]
    if isinstance(dataset, datasets.Dataset):
        return dataset
    if not isinstance(dataset, (str, Path)):
        raise DatasetError(f"Cannot use a {type(dataset).__name__} as a dataset.",
                           "Pass a datasets.Dataset, a folder or a Hub dataset id.")
    path = Path(dataset)
    if path.exists():
        if not path.is_dir():
            raise DatasetError(f"{path} is a file, not a dataset folder.", "Pass a folder or a Hub dataset id.")
        if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
            return load_query_dataset(datasets.load_from_disk(str(path)), split=split)
        try:
            loaded = datasets.load_dataset("imagefolder", data_dir=str(path))
        except Exception as exc:  # noqa: BLE001
            raise DatasetError(f"{path} is neither a save_to_disk folder nor an image folder ({type(exc).__name__}).",
                               "Lay images out as FOLDER/<class name>/<image>.png.") from None
        return load_query_dataset(loaded, split=split)
    from .hub import split_revision, validate_repo_id

    repo_id, rev = split_revision(str(dataset))
    try:
        validate_repo_id(repo_id, "dataset id")
    except K2VError:
        raise DatasetError(f"{dataset!r} is not a folder and not a valid Hub dataset id.",
                           "Pass an existing folder or ORG/NAME.") from None
    from huggingface_hub.errors import HfHubHTTPError

    try:
        loaded = datasets.load_dataset(repo_id, revision=revision or rev, token=token)
    except HfHubHTTPError as exc:
        from .hub import hub_error

        raise hub_error(exc, repo_id, "dataset") from None
    except FileNotFoundError:
        raise DatasetError(f"Dataset {repo_id} was not found on the Hub (or it is private).",
                           "Check the id, or pass --token.") from None
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds
        raise DatasetError(f"Could not load dataset {repo_id}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    return load_query_dataset(loaded, split=split)


def _pick_split(splits: list[str], split: str | None) -> str:
    if split is not None:
        if split not in splits:
            raise DatasetError(f"No split {split!r}; the dataset has {', '.join(splits)}.", "Pick one with --split.")
        return split
    for preferred in ("support", "train"):
        if preferred in splits:
            return preferred
    return splits[0]


def find_columns(ds, image_column: str | None = None, label_column: str | None = None, *, require_labels=True):
    """``(image_column, label_column, class_names)`` found from the features (``Image``/``ClassLabel``).

    Raises:
        DatasetError: no image column, no label column, or several candidates with no override.
    """
    import datasets

    feats = ds.features
    if image_column is None:
        candidates = [k for k, f in feats.items() if isinstance(f, datasets.Image)]
        if not candidates:
            raise DatasetError(f"No image column (columns: {', '.join(feats) or 'none'}).",
                               "The dataset needs an Image feature; pass image_column= to name it.")
        if len(candidates) > 1:
            raise DatasetError(f"Several image columns: {', '.join(candidates)}.", "Choose one with image_column=.")
        image_column = candidates[0]
    elif image_column not in feats:
        raise DatasetError(f"No column {image_column!r}; columns are {', '.join(feats)}.")
    if not require_labels:
        return image_column, None, None
    if label_column is None:
        candidates = [k for k, f in feats.items() if isinstance(f, datasets.ClassLabel)]
        if not candidates:
            candidates = [k for k in ("label", "labels") if k in feats]
        if not candidates:
            raise DatasetError(f"No label column (columns: {', '.join(feats)}).",
                               "A query needs labelled images: add a ClassLabel column or pass label_column=.")
        if len(candidates) > 1:
            raise DatasetError(f"Several label columns: {', '.join(candidates)}.", "Choose one with label_column=.")
        label_column = candidates[0]
    elif label_column not in feats:
        raise DatasetError(f"No column {label_column!r}; columns are {', '.join(feats)}.")
    feature = feats[label_column]
    names = feature.names if isinstance(feature, datasets.ClassLabel) else None
    return image_column, label_column, names


def _check_image(image, i: int):
    from PIL import Image

    if image is None:
        raise DatasetError(f"Row {i} has no image.", "Drop rows with missing images.")
    if not isinstance(image, Image.Image):
        raise DatasetError(f"Row {i} of the image column holds {type(image).__name__}, not an image.")
    w, h = image.size
    if w < 1 or h < 1:
        raise DatasetError(f"Row {i} has an empty image ({w}x{h}).")
    if w * h > MAX_PIXELS:
        image.thumbnail((1024, 1024))
    return image


def task_class_means(ds, image_column: str, label_column: str, class_names, extractor, *,
                     max_images_per_class: int = 32, seed: int = 0, show_progress: bool = True):
    """Class means of the dataset's features, ``[K, D]``, plus class names and the images used per class.

    Raises:
        DatasetError: empty dataset, fewer than two classes, unreadable images.
    """
    if len(ds) == 0:
        raise DatasetError("The dataset is empty.", "A query needs at least two classes of labelled images.")
    labels_raw = ds[label_column]
    labels_raw = list(labels_raw)
    if any(lab is None for lab in labels_raw):
        raise DatasetError("Some rows have no label.", "Drop unlabelled rows first.")
    keys = sorted({str(x) if class_names is None else int(x) for x in labels_raw}, key=lambda v: (str(type(v)), v))
    if class_names is not None:
        keys = [k for k in keys if k >= 0]
    if len(keys) < 2:
        raise DatasetError(f"The dataset has {len(keys)} class(es).", "Retrieval needs at least two classes.")
    names = [class_names[k] if class_names is not None else str(k) for k in keys]
    rng = np.random.default_rng(seed)
    key_of = [str(x) if class_names is None else int(x) for x in labels_raw]
    chosen: dict = {}
    for k in keys:
        idx = np.flatnonzero(np.asarray([v == k for v in key_of]))
        if len(idx) > max_images_per_class:
            idx = np.sort(rng.choice(idx, size=max_images_per_class, replace=False))
        chosen[k] = idx
    order = np.concatenate([chosen[k] for k in keys])
    try:
        images = [_check_image(im, int(i)) for im, i in zip(ds.select(order.tolist())[image_column], order)]
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds on corrupt bytes
        raise DatasetError(f"An image could not be decoded ({type(exc).__name__}: {exc}).".splitlines()[0],
                           "Remove or fix corrupt images.") from None
    feats = extractor(images, show_progress=show_progress)
    means, start = [], 0
    for k in keys:
        n = len(chosen[k])
        means.append(feats[start : start + n].mean(0))
        start += n
    return np.stack(means).astype(np.float32), names, {n: len(chosen[k]) for n, k in zip(names, keys)}


def load_retriever(retriever, index_meta: dict, *, token: str | None = None):
    """The retriever to use with an index: given, or the one the index names; checked against the index."""
    from .hub import split_revision
    from .retriever import Retriever

    if retriever is None:
        retriever = index_meta.get("retriever_id")
        revision = index_meta.get("retriever_revision")
        if not retriever:
            raise IndexError_("The index does not name its retriever.", "Pass retriever=.")
    elif isinstance(retriever, Retriever):
        revision = None
    else:
        retriever, revision = split_revision(str(retriever))
    if not isinstance(retriever, Retriever):
        try:
            retriever = Retriever.from_pretrained(retriever, revision=revision if revision != "local" else None,
                                                  token=token)
        except K2VError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise IndexError_(f"Could not load retriever {retriever!r} ({type(exc).__name__}).",
                              "Pass --retriever with a folder or Hub id made by `k2v-hub train`.") from None
    if retriever.fingerprint() != index_meta.get("retriever_fingerprint"):
        raise IndexError_(
            f"The retriever (weights {retriever.fingerprint()}) is not the one the index was built with "
            f"({index_meta.get('retriever_id')}, weights {index_meta.get('retriever_fingerprint')}).",
            "Use the index's retriever, or re-encode the index with `k2v-hub index ... --retriever R` (no new queries).")
    if retriever.feature_space != index_meta.get("feature_space"):
        raise IndexError_(f"Feature space mismatch: retriever {retriever.feature_space!r}, index "
                          f"{index_meta.get('feature_space')!r}.", "Rebuild the index with this retriever.")
    return retriever


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
    rerank: RerankMethod | None = None,
    rerank_k: int = 5,
    rerank_images: int = 64,
    models_root: str | None = None,
    show_progress: bool = True,
    seed: int = 0,
) -> Matches:
    """Rank the index's models for a labelled image dataset, best first.

    Args:
        dataset: a ``datasets.Dataset``/``DatasetDict``, a ``save_to_disk`` folder, an image folder or a Hub id.
        index: an index folder or a Hub dataset repo id (``org/k2v-index`` or ``org/k2v-index@rev``).
        retriever: a :class:`~k2v_hub.Retriever`, a folder or Hub id; default: the one the index names.
        top_k: how many matches to return.
        image_column, label_column: override the columns found from the features.
        split: which split of a DatasetDict (default ``train``/the first).
        revision: revision of a Hub dataset; ``index_revision``: of a Hub index.
        token: Hub token (default: the saved login).
        max_images_per_class: images per class used for the task vector.
        use_label_names: add label-name evidence to the knowledge score (``know2vec+labels``).
        rerank: re-score the top ``rerank_k`` with a transferability estimator on up to ``rerank_images`` images.
        models_root: a local zoo folder to load candidate models from when re-ranking (default: the Hub).

    Returns:
        :class:`Matches`: a list of :class:`Match` with ``timings`` (``load_s``, ``features_s``, ``encode_s``,
        ``search_s``, ``rerank_s``) and ``queries`` (black-box queries spent re-ranking).

    Example:
        >>> from k2v_hub import find_model
        >>> matches = find_model("./my_dataset", index="./k2v-out/index")  # doctest: +SKIP
        >>> matches[0].model_id  # doctest: +SKIP
        'k2v-zoo/resnet-mnist-a-s0'
    """
    from .features import FeatureExtractor
    from .index import load_index

    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    timings: dict = {}
    t0 = time.perf_counter()
    ds = load_query_dataset(dataset, split=split, revision=revision, token=token)
    image_column, label_column, class_names = find_columns(ds, image_column, label_column)
    idx = load_index(index, revision=index_revision, token=token)
    retriever = load_retriever(retriever, idx.meta, token=token)
    extractor = FeatureExtractor.from_pretrained(retriever.feature_space, token=token)
    timings["load_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    means, names, _counts = task_class_means(ds, image_column, label_column, class_names, extractor,
                                             max_images_per_class=max_images_per_class, seed=seed,
                                             show_progress=show_progress)
    timings["features_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    query = retriever.embed_task(means)
    timings["encode_s"] = time.perf_counter() - t2
    t2 = time.perf_counter()
    knowledge = idx.scores(query)
    final, stage, label_scores = knowledge.copy(), "vector", None
    if use_label_names:
        from .baselines import label_match_scores

        label_scores = label_match_scores(names, {r["model_id"]: r["labels"] for r in idx.rows})
        final = final + LABEL_WEIGHT * np.asarray([label_scores[r["model_id"]] for r in idx.rows])
        stage = "vector+labels"
    order = np.argsort(-final, kind="stable")
    timings["search_s"] = time.perf_counter() - t2
    matches = Matches()
    matches.queries = 0
    for rank, i in enumerate(order[: max(top_k, rerank_k if rerank else 0)], start=1):
        row = idx.rows[i]
        from huggingface_hub import constants

        matches.append(Match(
            model_id=row["model_id"], revision=row["revision"], score=float(final[i]), rank=rank,
            url=f"{constants.ENDPOINT}/{row['model_id']}", labels=list(row["labels"]), stage=stage,
            knowledge_score=float(knowledge[i]),
            label_score=None if label_scores is None else float(label_scores[row["model_id"]]),
        ))
    if rerank:
        t3 = time.perf_counter()
        from .rerank import rerank_matches

        matches.queries = rerank_matches(matches[:rerank_k], ds, image_column, label_column, method=rerank,
                                         n_images=rerank_images, token=token, models_root=models_root, seed=seed)
        head = sorted(matches[:rerank_k], key=lambda m: -m.score)
        rest = matches[rerank_k:]
        matches[:] = head + rest
        for rank, m in enumerate(matches, start=1):
            m.rank = rank
        timings["rerank_s"] = time.perf_counter() - t3
    del matches[top_k:]
    matches.timings = {k: round(v, 4) for k, v in timings.items()}
    logger.info("find_model timings: %s", matches.timings)
    return matches
