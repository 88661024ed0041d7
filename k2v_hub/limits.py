"""What a model repo may ask of the indexer: every size a repo states is checked here before it sizes anything.

A repo's files are a stranger's data. Its ``preprocessor_config.json`` sets how large every query image becomes, its
``config.json`` how many labels (score columns) and how large a model, its files how much is read and parsed. Each
limit below is derived from what the black-box oracle needs, with room for every real image classifier on the Hub;
a repo over one is refused (:class:`~k2v_hub.errors.ModelRefused`, one line) before the value is used.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

from .errors import ModelRefused, one_line

MiB = 2**20

# The probes are 32 px images, upsampled to the model's input. Real classifiers take 224 to 600 px (EfficientNet-B7
# 600, BEiT/ViT up to 512), so 1024 px per side leaves room; a 1024 px RGB image is 12 MiB as float32, the 30,000 px
# one a hostile repo asked for was 20 GiB as float64.
MAX_IMAGE_SIDE = 1024
# Pixels per query batch: 64 images of 224 x 224. Larger inputs get smaller batches (a 1024 px model: 3 per batch),
# so the memory a batch takes does not grow with the size the repo asks for.
PIXEL_BUDGET = 64 * 224 * 224
# The largest label sets in real use: ImageNet-21k, 21,843. A label costs the oracle one float32 score per probe
# (256 probes x 32,768 labels = 32 MiB) and the index one string.
MAX_LABELS = 2**15
# config.json holds id2label and label2id: 2 x 32,768 labels x up to ~250 bytes a pair fits in 16 MiB; a real
# config is a few KB (a few MB for ImageNet-21k's labels).
MAX_CONFIG_BYTES = 16 * MiB
# An image processor config is a dozen keys (< 2 KB); 1 MiB is room for any of them.
MAX_PREPROCESSOR_BYTES = 1 * MiB
# The card is read only for its YAML metadata; real cards with long evaluation tables stay under 1 MiB.
MAX_CARD_BYTES = 4 * MiB
# Weights are loaded whole: 16 GiB is 4 billion float32 parameters, beyond any public transformers image
# classifier (ViT-huge: 2.5 GB).
MAX_WEIGHT_BYTES = 16 * 2**30
# The model config.json describes is built on the meta device first (no memory) and may hold at most this many
# parameter and buffer elements per element of its weights files (buffers such as position ids are not saved)...
MODEL_ELEMENTS_PER_WEIGHT = 2
MODEL_ELEMENTS_SLACK = 2**20
# ... and at most this many modules: the deepest real classifiers have about a thousand.
MAX_MODULES = 20_000

# preprocessor_config.json keys that set how large an image becomes (any nesting: {"height": .., "width": ..}).
SIZE_KEYS = frozenset({"size", "crop_size", "image_size", "shortest_edge", "longest_edge", "height", "width",
                       "max_size", "max_height", "max_width", "pad_size", "size_divisor", "size_divisibility"})
# config.json keys that set the input size the model is built for (position embeddings).
CONFIG_SIZE_KEYS = frozenset({"image_size"})
# A declared dataset (the card's `datasets:`) is read from one parquet file for a fingerprint of a few images per
# class; 256 MiB holds tens of thousands of small images, and a larger first file is refused, not streamed.
MAX_DECLARED_DATA_BYTES = 256 * MiB
FILE_LIMITS = {"config.json": MAX_CONFIG_BYTES, "preprocessor_config.json": MAX_PREPROCESSOR_BYTES,
               "README.md": MAX_CARD_BYTES}
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def _size(n: int) -> str:
    if n < MiB:
        return f"{n:,} bytes"
    return f"{n / MiB:.1f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


def check_file_sizes(sizes: dict[str, int], name: str) -> None:
    """Refuse a repo whose config, preprocessor config, card or weights (``{path: bytes}``) are over their limits."""
    for path, limit in FILE_LIMITS.items():
        if sizes.get(path, 0) > limit:
            raise ModelRefused(f"{name}: {path} is {_size(sizes[path])} (limit {_size(limit)}).",
                               "No real image classifier's file is that large; it was skipped.")
    weights = sum(n for path, n in sizes.items() if path.endswith(WEIGHT_SUFFIXES))
    if weights > MAX_WEIGHT_BYTES:
        raise ModelRefused(f"{name}: weights are {_size(weights)} (limit {_size(MAX_WEIGHT_BYTES)}).",
                           "Models that large are not indexed; it was skipped.")


def folder_file_sizes(path: Path) -> dict[str, int]:
    """``{name: bytes}`` of the regular files at the top of a repo folder (symlinks followed, as in the Hub cache)."""
    return {f.name: f.stat().st_size for f in path.iterdir() if f.is_file()}


def read_json_object(path: Path, what: str, limit: int) -> dict:
    """A repo's JSON file as a dict, reading at most ``limit`` bytes; raise ModelRefused if larger or not an object."""
    name = path.parent.name
    with open(path, "rb") as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise ModelRefused(f"{name}: {what} is over {_size(limit)}.", f"Fix {what} in the repo; it was skipped.")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else e
        raise ModelRefused(one_line(f"{name}: {what} is not valid JSON ({reason})."),
                           f"Fix {what} in the repo; it was skipped.") from None
    if not isinstance(data, dict):
        raise ModelRefused(f"{name}: {what} is not a JSON object.", f"Fix {what}; it was skipped.")
    return data


def _values_under(data, keys: frozenset) -> list:
    """Every number stored under one of ``keys``, at any depth of a JSON value (bools are not numbers)."""
    found, stack = [], [(data, False)]
    while stack:
        value, inside = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, inside or k in keys) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, inside) for v in value)
        elif inside and isinstance(value, numbers.Real) and not isinstance(value, bool):
            found.append(value)
    return found


def _too_large(name: str, what: str, side) -> ModelRefused:
    return ModelRefused(f"{name}: {what} asks for {side:g} px images (limit {MAX_IMAGE_SIDE}).",
                        "The probes are small images and no real classifier needs that; it was skipped.")


def image_side(preprocessor: dict, name: str) -> int:
    """The largest side (px) an image processor config resizes, crops or pads to (0: it keeps the image's size).

    ``crop_pct`` counts: a processor resizes to ``size / crop_pct`` before cropping.

    Raises:
        ModelRefused: a side over :data:`MAX_IMAGE_SIDE`, or a ``crop_pct`` that is not a positive number.
    """
    sides = _values_under(preprocessor, SIZE_KEYS)
    side = max(sides, default=0)
    if not side <= MAX_IMAGE_SIDE or any(math.isnan(s) for s in sides):
        raise _too_large(name, "preprocessor_config.json", side)
    pct = preprocessor.get("crop_pct")
    if pct is not None:
        if not isinstance(pct, numbers.Real) or isinstance(pct, bool) or not 0 < pct < math.inf:
            raise ModelRefused(one_line(f"{name}: preprocessor_config.json has crop_pct {pct!r}.", 200),
                               "crop_pct must be a positive number such as 0.875; it was skipped.")
        side = side / min(pct, 1.0)
        if side > MAX_IMAGE_SIDE:
            raise _too_large(name, "preprocessor_config.json (size / crop_pct)", side)
    return int(math.ceil(side))


def check_config(config: dict, name: str) -> None:
    """Refuse a ``config.json`` with more than :data:`MAX_LABELS` labels or an ``image_size`` over the limit."""
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and len(id2label) > MAX_LABELS:
        raise ModelRefused(f"{name}: {len(id2label)} labels (limit {MAX_LABELS}).",
                           "Models with that many labels are not indexed.")
    side = max(_values_under(config, CONFIG_SIZE_KEYS), default=0)
    if not side <= MAX_IMAGE_SIDE:
        raise _too_large(name, "config.json `image_size`", side)


def batch_for(side: int, batch_size: int) -> int:
    """Images per query batch for inputs of ``side`` px: at most ``batch_size``, and :data:`PIXEL_BUDGET` pixels."""
    return max(1, min(batch_size, PIXEL_BUDGET // max(side, 1) ** 2))
