"""Fonts: which Debian package ships which font files, which faces render given characters, and rendering.

Why: glyph and emoji images (the zoo's font sources, the probes' glyphs and emoji) must come from a known,
fixed set of font files, so the same arguments give the same pixels on every machine with the same packages.
Fonts come in groups: a tuple of Debian font packages (only their listed files are used) or `MPL_FONTS`, the
fonts inside matplotlib (always installed). Scripts reserved for an independent evaluation (`RESERVED_RANGES`)
are never rendered.
"""

from __future__ import annotations

import functools
import glob
import logging
import os
import struct
import zlib

import matplotlib
import numpy as np
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont

from .errors import K2VError

logger = logging.getLogger(__name__)

__all__ = ["RESERVED_RANGES", "MPL_FONTS", "package_installed", "apt_install_command", "is_reserved", "group_files",
           "find_faces", "glyph_mask", "emoji_rgba"]

_FONT_ROOT = "/usr/share/fonts"

# package -> (marker file, file globs), both relative to _FONT_ROOT. Only the listed files are ever used, so a
# font group renders the same faces on every machine that has its packages (other installed fonts are ignored).
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
MPL_FONTS = "matplotlib"  # pseudo font group: the fonts inside matplotlib's mpl-data


def package_installed(package: str) -> bool:
    """True if the marker font file of a Debian font package exists (tests monkeypatch this)."""
    entry = _FONT_PACKAGES.get(package)
    return entry is not None and os.path.isfile(os.path.join(_FONT_ROOT, entry[0]))


def apt_install_command(packages: list[str]) -> str:
    """The shell command that installs these Debian packages."""
    return "sudo apt-get install -y " + " ".join(packages)


def is_reserved(ch: str) -> bool:
    """True if any character of ``ch`` lies in a reserved script (`RESERVED_RANGES`)."""
    return any(lo <= ord(c) <= hi for c in ch for lo, hi in RESERVED_RANGES)


@functools.lru_cache(maxsize=None)
def group_files(group: tuple[str, ...] | str) -> tuple[str, ...]:
    """Font files of a font group: a tuple of Debian packages or `MPL_FONTS`; sorted, reserved scripts removed."""
    if group == MPL_FONTS:
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
def find_faces(group: tuple[str, ...] | str, chars: str, allow_symbol_fonts: bool = False
               ) -> tuple[tuple[str, int], ...]:
    """Faces ``(path, index)`` of a font group that cover every character of ``chars``, deduplicated.

    A face qualifies if its cmap maps each character (fontTools, for .ttf/.otf) and each renders non-empty and
    unlike the face's .notdef glyph. Faces whose renderings of ``chars`` are pixel-identical to an earlier face
    (e.g. the Latin copies inside Noto script fonts) are dropped.
    """
    px = 24
    faces, seen = [], set()
    for path in group_files(group):
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
def glyph_mask(path: str, index: int, px: int, ch: str) -> Image.Image:
    """The glyph ``ch`` as an 'L' mask cropped to its ink (do not mutate: cached)."""
    font = _font(path, index, px)
    im = Image.new("L", (3 * px, 2 * px), 0)
    ImageDraw.Draw(im).text((px // 2, px // 2), ch, fill=255, font=font)
    return im.crop(im.getbbox() or (0, 0, 1, 1))


@functools.lru_cache(maxsize=4096)
def emoji_rgba(ch: str) -> Image.Image:
    """A Noto colour emoji rendered at its native 109 px, cropped to its alpha (do not mutate: cached)."""
    font = ImageFont.truetype(os.path.join(_FONT_ROOT, _EMOJI_FONT), _EMOJI_PX,
                              layout_engine=ImageFont.Layout.BASIC)
    im = Image.new("RGBA", (2 * _EMOJI_PX, 2 * _EMOJI_PX), (0, 0, 0, 0))
    ImageDraw.Draw(im).text((_EMOJI_PX // 2, _EMOJI_PX // 2), ch, font=font, embedded_color=True)
    bbox = im.getchannel("A").getbbox()
    if bbox is None:
        raise K2VError(f"Emoji {ch!r} renders empty with Noto Color Emoji.", "Reinstall fonts-noto-color-emoji.")
    return im.crop(bbox)
