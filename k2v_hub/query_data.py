"""The user's dataset as a query: load it, find its image and label columns, decode its images, class means.

The dataset (a ``datasets.Dataset``/``DatasetDict``/``IterableDataset``, a folder written by ``save_to_disk``, an
image folder, or a Hub dataset id) is resolved into one ``Dataset`` (:func:`load_query_dataset`); its columns are
found from the features (:func:`find_columns`); at most ``max_images_per_class`` rows per class are drawn
(:func:`select_query_rows`) and turned into class means in a feature space (:func:`class_means`).

What is accepted and what is refused (every refusal is a :class:`~k2v_hub.errors.DatasetError` whose one-line
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
"""

from __future__ import annotations

import io
import math
import numbers
from pathlib import Path

import datasets
import numpy as np
from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError
from PIL import Image

from .errors import DatasetError, K2VError, one_line
from .hub import dataset_reference, hub_error
from .oracle import to_rgb
from .utils import progress

MAX_SIDE = 1024
MAX_STREAMING_ROWS = 50_000
FEATURE_CHUNK = 64
_LABEL_NAMES = ("label", "labels")


def load_query_dataset(dataset, *, split: str | None = None, revision: str | None = None,
                       token: str | bool | None = None, cache_dir: str | None = None):
    """Resolve what the user handed us into one ``datasets.Dataset``.

    Accepts a Dataset, a DatasetDict (``split`` or ``support``/``train`` or the first split), an IterableDataset
    (materialised, at most :data:`MAX_STREAMING_ROWS` rows), a ``save_to_disk`` folder, an image folder
    (``class/xxx.png``), or a Hub id (``org/name`` or ``org/name@revision``). ``cache_dir``: where ``datasets``
    caches an image folder or a Hub dataset (default: its own cache; the web app passes a private temporary
    folder, so nothing of a visitor's data stays behind).

    Raises:
        DatasetError: anything else, an empty stream, a missing split, an unreadable folder, an unreachable
            Hub dataset (offline, not found).
        HubError: the Hub refused the request (gated, unauthorised).
    """
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
            raise DatasetError(one_line(f"Could not read the streaming dataset ({type(exc).__name__}: {exc})."),
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
    path, repo_id, rev = dataset_reference(dataset)
    if path is not None:
        if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
            try:
                loaded = datasets.load_from_disk(str(path))
            except Exception as exc:  # noqa: BLE001 - a damaged folder must be a clear error
                raise DatasetError(one_line(f"{path} looks like a save_to_disk folder but cannot be read "
                                            f"({type(exc).__name__}: {exc})."),
                                   "Save the dataset again with save_to_disk.") from None
            return load_query_dataset(loaded, split=split)
        try:
            loaded = datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=cache_dir)
        except Exception as exc:  # noqa: BLE001
            raise DatasetError(f"{path} is neither a save_to_disk folder nor an image folder ({type(exc).__name__}).",
                               "Lay images out as FOLDER/<class name>/<image>.png.") from None
        return load_query_dataset(loaded, split=split)
    try:
        loaded = datasets.load_dataset(repo_id, revision=revision or rev, token=token, cache_dir=cache_dir)
    except HfHubHTTPError as exc:
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
        raise DatasetError(one_line(f"Could not load dataset {repo_id}: {type(exc).__name__}: {exc}"),
                           "Check the id and that it holds images with labels.") from None
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


def _feature_name(feature) -> str:
    return one_line(repr(feature), 80)


def find_columns(ds, image_column: str | None = None, label_column: str | None = None, *, require_labels=True):
    """``(image_column, label_column, class_names)`` found from the features (``Image``/``ClassLabel``).

    Raises:
        DatasetError: no image column, no label column, several candidates with no override, a named column
            that does not exist or has the wrong type (an image column that is not ``Image``, a label column
            holding images or lists).
    """
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
                    raise DatasetError(f"Row {row} points to a remote image ({one_line(path, 80)}).",
                                       "k2v-hub reads only embedded images and local files: embed the image bytes.")
                if not Path(path).is_file():
                    raise DatasetError(f"Row {row} points to a missing file ({one_line(path, 120)}).",
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
        raise DatasetError(one_line(f"Row {row} is too large to decode safely ({exc})."),
                           "Downscale the image first.") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds on corrupt bytes
        raise DatasetError(one_line(f"Row {row}: the image could not be decoded ({type(exc).__name__}: {exc})."),
                           "Remove or fix corrupt images.") from None


def iter_images(ds, image_column: str, rows):
    """Decoded images of ``rows`` (original row numbers), one at a time, never asking datasets to decode."""
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
    means = class_means(ds, image_column, chosen, keys, extractor, show_progress=show_progress)
    return means, names, {n: len(chosen[k]) for n, k in zip(names, keys)}


def class_means(ds, image_column: str, chosen: dict, keys: list, extractor, *, show_progress: bool) -> np.ndarray:
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
    chunks, batch = [], []
    bar = progress(desc="Features", total=len(rows), disable=not show_progress or None)

    def flush():
        chunks.append(np.asarray(extractor(batch, show_progress=False), dtype=np.float32))
        bar.update(len(batch))
        batch.clear()

    for image in iter_images(ds, image_column, rows):
        batch.append(image)
        if len(batch) == FEATURE_CHUNK:
            flush()
    if batch:
        flush()
    bar.close()
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
