"""`find_model`: which indexed model fits my dataset?

The dataset (a ``datasets.Dataset``/``DatasetDict``, a folder written by ``save_to_disk``, an image folder, or a
Hub dataset id) is turned into class means in the index's feature space, encoded by the retriever's Q_EXT, and
compared with every model vector by cosine (one matrix product; FAISS for very large indexes). Optional extras,
each reported as its own stage:

- ``use_label_names=True`` adds label-name evidence (overlap between the dataset's class names and each model's
  labels) to the knowledge score: the ``know2vec+labels`` method. Off by default: the knowledge score alone is
  what the black-box vectors say.
- ``rerank="leep"|"nce"|"logme-probs"`` re-scores ``rerank_k`` candidates by asking each, as a black box,
  about at most ``rerank_images`` of the user's images (predictions only; query cost is counted). Grey-box
  ``rerank="logme"`` needs each candidate's penultimate features, so it downloads the weights. The candidates
  come from the vectors *and* from label-name evidence (:func:`first_stage_order`): the second stage cannot
  recover a model the first one dropped, and on image domains nobody indexed the vectors alone often drop it.
- ``rerank="auto"`` (the default): a small org, whose whole index fits in ``rerank_k``, gets the full black-box
  LEEP re-rank when its models can be fetched (``models_root=`` given, or a Hub index); otherwise the vector
  ranking. Each match says which stage produced its score (``stage``).

What is accepted and what is refused (every refusal is a :class:`~k2v_hub.errors.K2VError` subclass whose one-line
message says what to do; see ``tests/test_bad_inputs.py``):

- **Columns.** The image column is the one ``Image`` feature; the label column the one ``ClassLabel`` feature, else
  a column named ``label``/``labels``. None or several candidates: :class:`DatasetError` naming them (pass
  ``image_column=``/``label_column=``). A named image column must be an ``Image`` feature (cast it first).
- **Labels.** ``ClassLabel`` ids, plain ints, integral floats or strings. Classes are ordered by ``ClassLabel`` id,
  numerically for ints and alphabetically for strings, which is the order ``Dataset.class_encode_column`` and
  image folders give, so the same data labelled either way gets the same ranking. Unlabelled rows (``None``,
  NaN, ``ClassLabel`` -1), lists (multi-label) and non-integral numbers are refused, with the rows.
- **Classes.** At least two. One image is enough for a class (its mean is that image's features).
- **Images.** Every mode (``1``, ``L``, ``LA``, ``P``, ``RGBA``, ``CMYK``, ``I;16``, ``I``, ``F``...) is turned into RGB
  (alpha on white, 16-bit/float rescaled to their range, NaN pixels as black). Images are decoded one at a
  time; any side above :data:`MAX_SIDE` is downscaled before features, so a 5000x5000 image costs no more
  than a 1024x1024 one; 1x1 images work. Undecodable bytes, missing files and decompression bombs are
  refused with the row number. Images are read only from embedded bytes or local files: an image *path*
  that is a URL is refused (no network request is made on a dataset's behalf).
- **Streaming.** An ``IterableDataset`` is materialised (at most :data:`MAX_STREAMING_ROWS` rows).
- **Features.** Non-finite features (a broken backbone) are refused instead of ranking on NaN.
- **Indexes.** The index must be readable, non-empty, made with this retriever (weights fingerprint) and feature
  space, and by a k2v-hub with the same ``major.minor`` version (:func:`check_index_version`): record and
  encoder formats may change between minor versions before 1.0, so an older index is refused rather than
  silently mis-ranked; re-encode it with ``k2v-hub index`` (no new queries).
"""

from __future__ import annotations

import io
import math
import numbers
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from . import __version__
from .errors import DatasetError, IndexError_, K2VError, UsageError
from .methods import RERANK_METHODS, rerank_method
from .utils import logger

RerankMethod = Literal[("auto", *RERANK_METHODS)]
AUTO_RERANK = "leep"
LABEL_WEIGHT = 0.5
MAX_SIDE = 1024
MAX_STREAMING_ROWS = 50_000
FEATURE_CHUNK = 64
_LABEL_NAMES = ("label", "labels")


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

    Accepts a Dataset, a DatasetDict (``split`` or ``support``/``train`` or the first split), an IterableDataset
    (materialised, at most :data:`MAX_STREAMING_ROWS` rows), a ``save_to_disk`` folder, an image folder
    (``class/xxx.png``), or a Hub id (``org/name`` or ``org/name@revision``).

    Raises:
        DatasetError: anything else, an empty stream, a missing split, an unreadable folder, an unreachable
            Hub dataset (offline, not found).
        HubError: the Hub refused the request (gated, unauthorised).
    """
    import datasets

    if isinstance(dataset, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        if isinstance(dataset, datasets.IterableDatasetDict):
            if not dataset:
                raise DatasetError("The IterableDatasetDict has no splits.", "Pass a dataset with labelled images.")
            dataset = dataset[_pick_split(list(dataset), split)]
        try:
            # images stay encoded while streaming: decoding (and refusing bad or remote images) happens row by
            # row later, like for any other dataset
            image_columns = [k for k, f in (dataset.features or {}).items() if isinstance(f, datasets.Image)]
            for k in image_columns:
                dataset = dataset.cast_column(k, datasets.Image(decode=False))
            rows = list(dataset.take(MAX_STREAMING_ROWS))
            if not rows:
                raise DatasetError("The streaming dataset is empty.", "Pass a dataset with labelled images.")
            loaded = datasets.Dataset.from_list(rows, features=dataset.features)
            for k in image_columns:
                loaded = loaded.cast_column(k, datasets.Image())
            return loaded
        except K2VError:
            raise
        except Exception as exc:  # noqa: BLE001 - a stream can fail in many ways
            raise DatasetError(_one_line(f"Could not read the streaming dataset ({type(exc).__name__}: {exc})."),
                               "Check the stream, or materialise it yourself with Dataset.from_list.") from None
    if isinstance(dataset, datasets.DatasetDict):
        if not dataset:
            raise DatasetError("The DatasetDict has no splits.", "Pass a dataset with labelled images.")
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
            try:
                loaded = datasets.load_from_disk(str(path))
            except Exception as exc:  # noqa: BLE001 - a damaged folder must be a clear error
                raise DatasetError(_one_line(f"{path} looks like a save_to_disk folder but cannot be read "
                                             f"({type(exc).__name__}: {exc})."),
                                   "Save the dataset again with save_to_disk.") from None
            return load_query_dataset(loaded, split=split)
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
        raise DatasetError(f"{str(dataset)!r} is not a folder and not a valid Hub dataset id.",
                           "Pass an existing folder or ORG/NAME.") from None
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError

    try:
        loaded = datasets.load_dataset(repo_id, revision=revision or rev, token=token)
    except HfHubHTTPError as exc:
        from .hub import hub_error

        raise hub_error(exc, repo_id, "dataset") from None
    except FileNotFoundError:
        raise DatasetError(f"Dataset {repo_id} was not found on the Hub (or it is private).",
                           "Check the id, or pass --token.") from None
    except ConnectionError as exc:
        offline = constants.HF_HUB_OFFLINE or "Offline" in str(exc)
        raise DatasetError(
            f"Dataset {repo_id} is not a local folder and the Hub cannot be reached"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ''}.",
            "Pass a local folder, or check the id, your connection and HF_ENDPOINT"
            + (", or unset HF_HUB_OFFLINE." if offline else "."),
        ) from None
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds
        raise DatasetError(_one_line(f"Could not load dataset {repo_id}: {type(exc).__name__}: {exc}"),
                           "Check the id and that it holds images with labels.") from None
    return load_query_dataset(loaded, split=split)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _pick_split(splits: list[str], split: str | None) -> str:
    if split is not None:
        if split not in splits:
            raise DatasetError(f"No split {split!r}; the dataset has {', '.join(splits)}.", "Pick one with --split.")
        return split
    for preferred in ("support", "train"):
        if preferred in splits:
            return preferred
    return splits[0]


def _feature_name(feature) -> str:
    return _one_line(repr(feature), 80)


def find_columns(ds, image_column: str | None = None, label_column: str | None = None, *, require_labels=True):
    """``(image_column, label_column, class_names)`` found from the features (``Image``/``ClassLabel``).

    Raises:
        DatasetError: no image column, no label column, several candidates with no override, a named column
            that does not exist or has the wrong type (an image column that is not ``Image``, a label column
            holding images or lists).
    """
    import datasets

    feats = ds.features
    if feats is None:
        raise DatasetError("The dataset declares no features.", "Give it features (datasets.Features) first.")
    if image_column is None:
        candidates = [k for k, f in feats.items() if isinstance(f, datasets.Image)]
        if not candidates:
            raise DatasetError(f"No image column (columns: {', '.join(feats) or 'none'}).",
                               "The dataset needs an Image feature; pass image_column= to name it.")
        if len(candidates) > 1:
            raise DatasetError(f"Several image columns: {', '.join(candidates)}.", "Choose one with image_column=.")
        image_column = candidates[0]
    elif image_column not in feats:
        raise DatasetError(f"No column {image_column!r}; columns are {', '.join(feats)}.",
                           "Pass an existing column to image_column=.")
    elif not isinstance(feats[image_column], datasets.Image):
        raise DatasetError(f"Column {image_column!r} is {_feature_name(feats[image_column])}, not an Image feature.",
                           f"Cast it first: ds = ds.cast_column({image_column!r}, datasets.Image()).")
    if not require_labels:
        return image_column, None, None
    if label_column is None:
        candidates = [k for k, f in feats.items() if isinstance(f, datasets.ClassLabel)]
        if not candidates:
            candidates = [k for k in _LABEL_NAMES if k in feats]
        if not candidates:
            raise DatasetError(f"No label column (columns: {', '.join(feats)}).",
                               "A query needs labelled images: add a ClassLabel column or pass label_column=.")
        if len(candidates) > 1:
            raise DatasetError(f"Several label columns: {', '.join(candidates)}.", "Choose one with label_column=.")
        label_column = candidates[0]
    elif label_column not in feats:
        raise DatasetError(f"No column {label_column!r}; columns are {', '.join(feats)}.",
                           "Pass an existing column to label_column=.")
    if label_column == image_column:
        raise DatasetError(f"Column {label_column!r} cannot be both the image and the label column.",
                           "Pass label_column= with the column that holds the classes.")
    feature = feats[label_column]
    if not isinstance(feature, (datasets.ClassLabel, datasets.Value)):
        raise DatasetError(f"Label column {label_column!r} is {_feature_name(feature)}: labels must be one class per "
                           "image (ClassLabel, int or string).",
                           "Multi-label and non-scalar labels are not supported; pass label_column=.")
    names = feature.names if isinstance(feature, datasets.ClassLabel) else None
    return image_column, label_column, names


def _row_list(rows, limit: int = 5) -> str:
    rows = list(rows)
    text = ", ".join(str(r) for r in rows[:limit])
    return text + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def _rows_text(rows) -> str:
    rows = list(rows)
    return ("row " if len(rows) == 1 else "rows ") + _row_list(rows)


def _label_key(value, class_names):
    """The class key of one label value, ``None`` if the row is unlabelled; raises ``TypeError`` if unusable."""
    if value is None:
        return None
    if class_names is not None:
        key = int(value)
        if key < 0:
            return None
        if key >= len(class_names):
            raise TypeError(f"id {key} is out of range for a ClassLabel with {len(class_names)} names")
        return key
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        if math.isnan(value):
            return None
        if not math.isfinite(value) or value != int(value):
            raise TypeError(f"{value!r} is not a class (non-integral number: a regression target?)")
        return int(value)
    raise TypeError(f"a {type(value).__name__} is not a class (multi-label or nested labels?)")


def class_keys(labels, class_names=None, label_column: str = "label") -> tuple[list, list, list[str]]:
    """Per-row class keys, the ordered distinct keys and their names.

    Order: ``ClassLabel`` id, numeric for ints, alphabetical for strings (see the module docstring).

    Raises:
        DatasetError: unlabelled rows, unusable label values, fewer than two classes.
    """
    per_row, missing = [], []
    for i, value in enumerate(labels):
        try:
            key = _label_key(value, class_names)
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"Row {i} of label column {label_column!r}: {exc}.",
                               "Labels must be one class per image: ClassLabel ids, ints or strings.") from None
        if key is None:
            missing.append(i)
        per_row.append(key)
    if not per_row:
        raise DatasetError("The dataset is empty (0 rows).", "A query needs at least two classes of labelled images.")
    if missing:
        what = "No row has a label" if len(missing) == len(per_row) else \
            f"{len(missing)} of {len(per_row)} rows have no label ({_rows_text(missing)})"
        raise DatasetError(f"{what} in column {label_column!r}.",
                           "Drop unlabelled rows first (ds.filter(...)), or pick a labelled split with --split.")
    distinct = set(per_row)
    if len({type(k) for k in distinct}) > 1:  # ints and strings mixed: compare as strings
        per_row = [str(k) for k in per_row]
        distinct = set(per_row)
    keys = sorted(distinct)
    if len(keys) < 2:
        shown = ", ".join(repr(class_names[k] if class_names is not None else k) for k in keys)
        raise DatasetError(f"The dataset has {len(keys)} class ({shown}).",
                           "Retrieval compares how models separate classes: give at least two labelled classes.")
    names = [class_names[k] if class_names is not None else str(k) for k in keys]
    return per_row, keys, names


def _decode_image(value, row: int, mode: str | None = None):
    """One image cell (PIL image or ``{"bytes", "path"}`` with decoding off) as a loaded, RGB, bounded PIL image.

    ``mode``: the ``Image(mode=...)`` of the column, applied first as ``datasets`` would.
    """
    from PIL import Image

    from .oracle import to_rgb

    if value is None:
        raise DatasetError(f"Row {row} has no image.", "Drop rows with missing images.")
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict) and ("bytes" in value or "path" in value):
            data, path = value.get("bytes"), value.get("path")
            if data is not None:
                image = Image.open(io.BytesIO(data))
            elif path:
                if "://" in str(path):
                    raise DatasetError(f"Row {row} points to a remote image ({_one_line(path, 80)}).",
                                       "k2v-hub reads only embedded images and local files: embed the image bytes.")
                if not Path(path).is_file():
                    raise DatasetError(f"Row {row} points to a missing file ({_one_line(path, 120)}).",
                                       "Fix the path or drop the row.")
                image = Image.open(path)
            else:
                raise DatasetError(f"Row {row} has no image.", "Drop rows with missing images.")
        else:
            raise DatasetError(f"Row {row} of the image column holds {type(value).__name__}, not an image.",
                               "Put images (or their encoded bytes) in an Image column.")
        w, h = image.size
        if w < 1 or h < 1:
            raise DatasetError(f"Row {row} has an empty image ({w}x{h}).", "Drop the row.")
        image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at reduced size directly
        image.load()
        if max(image.size) > MAX_SIDE:
            image.thumbnail((MAX_SIDE, MAX_SIDE))
        if mode and image.mode != mode:
            image = image.convert(mode)
        return to_rgb(image)
    except K2VError:
        raise
    except Image.DecompressionBombError as exc:
        raise DatasetError(_one_line(f"Row {row} is too large to decode safely ({exc})."),
                           "Downscale the image first.") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds on corrupt bytes
        raise DatasetError(_one_line(f"Row {row}: the image could not be decoded ({type(exc).__name__}: {exc})."),
                           "Remove or fix corrupt images.") from None


def _iter_images(ds, image_column: str, rows):
    """Decoded images of ``rows`` (original row numbers), one at a time, never asking datasets to decode."""
    import datasets

    sub = ds.select([int(r) for r in rows]).select_columns([image_column])
    feature = sub.features[image_column]
    mode = getattr(feature, "mode", None)
    if isinstance(feature, datasets.Image):
        sub = sub.cast_column(image_column, datasets.Image(decode=False))
    for row, value in zip(rows, sub[image_column]):
        yield _decode_image(value, int(row), mode)


def task_class_means(ds, image_column: str, label_column: str, class_names, extractor, *,
                     max_images_per_class: int = 32, seed: int = 0, show_progress: bool = True):
    """Class means of the dataset's features, ``[K, D]``, plus class names and the images used per class.

    Images are decoded one at a time (see :func:`_decode_image`) and featurised :data:`FEATURE_CHUNK` at a time.

    Raises:
        DatasetError: empty dataset, fewer than two classes, unlabelled rows, unreadable images, non-finite
            features.
    """
    chosen, keys, names = select_query_rows(ds, label_column, class_names,
                                            max_images_per_class=max_images_per_class, seed=seed)
    means = _class_means(ds, image_column, chosen, keys, extractor, show_progress=show_progress)
    return means, names, {n: len(chosen[k]) for n, k in zip(names, keys)}


def _class_means(ds, image_column: str, chosen: dict, keys: list, extractor, *, show_progress: bool) -> np.ndarray:
    """``[K, D]`` means of the features of the rows ``chosen[k]`` of each class ``k`` in ``keys``."""
    order = np.concatenate([chosen[k] for k in keys])
    feats = _extract(ds, image_column, order, extractor, show_progress=show_progress)
    bad = np.flatnonzero(~np.isfinite(feats).all(axis=1))
    if len(bad):
        raise DatasetError(f"The feature space returned NaN/inf for {_rows_text(order[bad].tolist())}.",
                           "Check the feature backbone (retriever.feature_space); the images decoded fine.")
    means, start = [], 0
    for k in keys:
        means.append(feats[start : start + len(chosen[k])].mean(0))
        start += len(chosen[k])
    return np.stack(means).astype(np.float32)


def select_query_rows(ds, label_column: str, class_names, *, max_images_per_class: int = 32, seed: int = 0):
    """``(rows per class key, ordered keys, names)``: at most ``max_images_per_class`` rows per class.

    Raises:
        DatasetError: see :func:`class_keys`.
    """
    if len(ds) == 0:
        raise DatasetError("The dataset is empty (0 rows).", "A query needs at least two classes of labelled images.")
    key_of, keys, names = class_keys(list(ds[label_column]), class_names, label_column)
    rng = np.random.default_rng(seed)
    key_arr = np.empty(len(key_of), dtype=object)
    key_arr[:] = key_of
    chosen: dict = {}
    for k in keys:
        idx = np.flatnonzero(key_arr == k)
        if len(idx) > max_images_per_class:
            idx = np.sort(rng.choice(idx, size=max_images_per_class, replace=False))
        chosen[k] = idx
    return chosen, keys, names


def _extract(ds, image_column: str, rows: np.ndarray, extractor, *, show_progress: bool) -> np.ndarray:
    """Features ``[len(rows), D]``, decoding and extracting :data:`FEATURE_CHUNK` images at a time."""
    from .utils import progress

    chunks, batch = [], []
    bar = progress(desc="Features", total=len(rows), disable=not show_progress or None)

    def flush():
        chunks.append(np.asarray(extractor(batch, show_progress=False), dtype=np.float32))
        bar.update(len(batch))
        batch.clear()

    for image in _iter_images(ds, image_column, rows):
        batch.append(image)
        if len(batch) == FEATURE_CHUNK:
            flush()
    if batch:
        flush()
    bar.close()
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


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
        v = row.get("k2v_hub_version")
        if not isinstance(v, str) or _major_minor(v) != mine:
            raise IndexError_(f"Row {row.get('model_id')!r} was built by k2v-hub {v}; this is {__version__}.",
                              "Re-encode the index with `k2v-hub index` (no new queries).")


def _major_minor(version: str):
    parts = str(version).split(".")
    if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return int(parts[0]), int(parts[1])


def _load_index(index, *, revision, token):
    """``load_index`` with every unexpected failure turned into an :class:`IndexError_`."""
    from .index import load_index

    try:
        idx = load_index(index, revision=revision, token=token)
    except K2VError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged index must be a clear error, never a traceback
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

        if isinstance(exc, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError)):
            raise IndexError_(_one_line(f"Index {index} is not a local folder and could not be downloaded "
                                        f"({type(exc).__name__})."),
                              "Check the id, your connection and HF_ENDPOINT / HF_HUB_OFFLINE, or pass a folder.") \
                from None
        raise IndexError_(_one_line(f"Index {index} could not be loaded ({type(exc).__name__}: {exc})."),
                          "It is damaged: rebuild it with `k2v-hub index`, or download it again.") from None
    if not isinstance(idx.meta, dict):
        raise IndexError_(f"Index {index}: k2v_index.json is not a JSON object.", "Rebuild it with `k2v-hub index`.")
    return idx


def load_retriever(retriever, index_meta: dict, *, token: str | None = None):
    """The retriever to use with an index: given, or the one the index names; checked against the index.

    Raises:
        IndexError_: the index names no retriever, the retriever cannot be loaded, or it is not the one the index
            was built with (weights fingerprint, feature space), or the index was built by another k2v-hub
            ``major.minor``.
    """
    from .hub import split_revision
    from .retriever import Retriever

    if not isinstance(index_meta, dict):
        raise IndexError_("The index settings (k2v_index.json) are not a JSON object.", "Rebuild the index.")
    check_index_version(index_meta)
    if retriever is None:
        retriever = index_meta.get("retriever_id")
        revision = index_meta.get("retriever_revision")
        if not retriever or not isinstance(retriever, str):
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


_EXTRACTORS: dict = {}


def _feature_extractor(name: str, *, token: str | None, show_progress: bool):
    """The feature space ``name``, kept in memory across calls (at most two), loaded quietly unless asked."""
    from .features import FeatureExtractor

    if name in _EXTRACTORS:
        return _EXTRACTORS[name]
    try:
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        if not show_progress:
            hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        hf_logging, bars = None, False
    try:
        extractor = FeatureExtractor.from_pretrained(name, token=token)
    finally:
        if hf_logging is not None and bars:
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


def _check_arguments(top_k, max_images_per_class, rerank, rerank_k, rerank_images):
    """Refuse bad arguments; return ``rerank`` with a method in the registry's spelling (``logme-probs`` is
    ``logme_probs``, :mod:`k2v_hub.methods`)."""
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
    models_root: str | None = None,
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
            to ``rerank_images`` images (drawn from the images already used for the class means). ``"auto"``: LEEP
            on every model when the whole index fits in ``rerank_k`` and its models can be fetched, else none.
        rerank_endpoint: re-rank through remote endpoints instead of running the models: a URL template with
            ``{model_id}`` (``InferenceClient.image_classification``; no weights are downloaded).
        models_root: a local zoo folder to load candidate models from when re-ranking (default: the Hub).

    Returns:
        :class:`Matches`: a list of :class:`Match` with ``timings`` (``load_s``, ``features_s``, ``encode_s``,
        ``search_s``, ``rerank_s``) and ``queries`` (black-box queries spent re-ranking). Every score is finite.

    Raises:
        DatasetError: the dataset cannot be a query (see the module docstring for what is accepted).
        IndexError_: the index is missing, damaged, empty, or incompatible with the retriever or this version.
        UsageError: a bad argument (``top_k < 1``, unknown ``rerank``...).
        HubError: a Hub request failed.

    Example:
        >>> from k2v_hub import find_model
        >>> matches = find_model("./my_dataset", index="./k2v-out/index")  # doctest: +SKIP
        >>> matches[0].model_id  # doctest: +SKIP
        'k2v-zoo/resnet-mnist-a-s0'
    """
    rerank = _check_arguments(top_k, max_images_per_class, rerank, rerank_k, rerank_images)
    timings: dict = {}
    t0 = time.perf_counter()
    ds = load_query_dataset(dataset, split=split, revision=revision, token=token)
    image_column, label_column, class_names = find_columns(ds, image_column, label_column)
    chosen, keys, names = select_query_rows(ds, label_column, class_names,
                                            max_images_per_class=max_images_per_class, seed=seed)
    idx = _load_index(index, revision=index_revision, token=token)
    check_index_version(idx.meta, idx.rows)
    retriever = load_retriever(retriever, idx.meta, token=token)
    if idx.embeddings.ndim != 2 or idx.embeddings.shape[1] != retriever.embed_dim:
        raise IndexError_(f"Index {index} holds {idx.embeddings.shape[-1]}-d vectors but the retriever makes "
                          f"{retriever.embed_dim}-d ones.", "Rebuild the index with this retriever.")
    extractor = _feature_extractor(retriever.feature_space, token=token, show_progress=show_progress)
    if extractor.name != idx.meta.get("feature_space"):
        raise IndexError_(f"The feature space loads as {extractor.name!r} but the index was built in "
                          f"{idx.meta.get('feature_space')!r}.", "Rebuild the index with this feature space.")
    timings["load_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    means = _class_means(ds, image_column, chosen, keys, extractor, show_progress=show_progress)
    timings["features_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    query = retriever.embed_task(means)
    if not np.isfinite(query).all():
        raise IndexError_("The retriever turned the dataset into a non-finite vector.",
                          "The retriever's weights are broken: use another retriever.")
    timings["encode_s"] = time.perf_counter() - t2
    t2 = time.perf_counter()
    knowledge = idx.scores(query)
    if rerank == "auto":
        reachable = models_root is not None or rerank_endpoint is not None or idx.repo_id is not None
        rerank = AUTO_RERANK if reachable and len(idx.rows) <= rerank_k else None
    final, stage, label_scores = knowledge.copy(), "vector", None
    if use_label_names or rerank:
        from .baselines import label_match_scores

        label_scores = label_match_scores(names, {r["model_id"]: r["labels"] for r in idx.rows})
    label_vec = None if label_scores is None else np.asarray([label_scores[r["model_id"]] for r in idx.rows])
    if use_label_names:
        final = final + LABEL_WEIGHT * label_vec
        stage = "vector+labels"
    if not np.isfinite(final).all():
        raise IndexError_(f"Index {index} gave non-finite scores.", "Rebuild the index.")
    order_models = np.argsort(-final, kind="stable")
    if rerank:
        candidates = [int(i) for i in first_stage_order(knowledge, label_vec)[:rerank_k]]
        order_models = candidates + [int(i) for i in order_models if int(i) not in candidates]
    timings["search_s"] = time.perf_counter() - t2
    from huggingface_hub import constants

    matches = Matches()
    matches.queries = 0
    for rank, i in enumerate(order_models[: max(top_k, rerank_k if rerank else 0)], start=1):
        row = idx.rows[i]
        matches.append(Match(
            model_id=row["model_id"], revision=row["revision"], score=float(final[i]), rank=rank,
            url=f"{constants.ENDPOINT}/{row['model_id']}", labels=list(row["labels"]), stage=stage,
            knowledge_score=float(knowledge[i]),
            label_score=None if label_scores is None else float(label_scores[row["model_id"]]),
        ))
    if rerank:
        t3 = time.perf_counter()
        from .rerank import rerank_matches

        # re-rank on the rows whose images and labels were validated above
        used = ds.select(np.sort(np.concatenate([chosen[k] for k in keys])).tolist())
        matches.queries = rerank_matches(matches[:rerank_k], used, image_column, label_column, method=rerank,
                                         n_images=rerank_images, token=token, models_root=models_root,
                                         endpoint=rerank_endpoint, seed=seed)
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
