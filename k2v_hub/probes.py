"""The probe set: a fixed, fingerprinted mix of generic images used to query black-box models.

Why: a model's knowledge is recorded in terms of the probes it is shown (which probe each class wins, where its
decisions flip between probes), so records of different models are comparable only if the probes are the same
images. The probes must also be broad (a model of any domain should react to some of them) yet stay clear of
the training data of the zoo sources (`k2v_hub.zoo.sources`), or retrieval would be judged on seen data.

Kinds, mixed evenly and interleaved (any prefix of the list is mixed):

- ``shapes``: procedural ellipses, polygons, stars, arcs and pen strokes (numpy/PIL only, always available);
- ``textures``: procedural gratings, plaids, checkers, dots, fractal noise, Voronoi cells, rings and hatching;
- ``photos``: random crops of the non-face sample photos bundled with scikit-image and scikit-learn;
- ``glyphs``: symbols and scripts that no source uses (math, arrows, box drawing, geometric shapes, dingbats,
  Braille, Ogham, Canadian syllabics, Tifinagh, N'Ko from the fonts inside matplotlib; with Debian's
  fonts-noto-core also Runic, Cherokee, Mongolian, Vai, Yi, Glagolitic and Linear B);
- ``emoji``: Noto colour emoji of subgroups that no emoji source uses (needs fonts-noto-color-emoji).

The set is deterministic for the same arguments on the same machine; which kinds (and glyph fonts) are available
depends on the installed Debian fonts, so compare `probe_fingerprint` values, never assume them.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import skimage.data
from PIL import Image, ImageDraw

from . import fonts
from .errors import K2VError
from .images import (add_noise, background, compose_mask, compose_rgba, random_color, smooth_noise, supersample,
                     to_image, unit_grid)

logger = logging.getLogger(__name__)

__all__ = ["PROBE_KINDS", "SOURCE_DOMAINS", "build_probe_images", "probe_fingerprint", "available_probe_kinds",
           "source_domain"]

PROBE_KINDS = ("shapes", "textures", "photos", "glyphs", "emoji")

# The image domain of each zoo source, in the zoo's order (`k2v_hub.zoo.sources` builds the sources and takes their
# domains from here): the names in ``exclude_sources`` resolve through it.
SOURCE_DOMAINS: dict[str, str] = {
    "mnist": "handwritten-digits", "sklearn-digits": "handwritten-digits", "animal-mnist": "animal-silhouettes",
    "textures": "textures",
    "mpl-latin": "latin-glyphs", "mpl-greek": "script-glyphs", "latin-fonts": "latin-glyphs",
    "digits-fonts": "printed-digits", "greek": "script-glyphs", "cyrillic": "script-glyphs",
    "hebrew": "script-glyphs", "arabic": "script-glyphs", "georgian": "script-glyphs", "armenian": "script-glyphs",
    "hiragana": "script-glyphs", "katakana": "script-glyphs", "hangul": "script-glyphs", "han": "script-glyphs",
    **dict.fromkeys(("emoji-face-smiling", "emoji-face-concerned", "emoji-animal-mammal", "emoji-animal-bird",
                     "emoji-animal-bug-marine", "emoji-food-fruit", "emoji-food-prepared", "emoji-transport-ground",
                     "emoji-sport"), "emoji"),
}

# Source domains each kind overlaps: excluding a source of such a domain drops the kind.
KIND_DOMAINS: dict[str, frozenset[str]] = {
    "shapes": frozenset(),
    "textures": frozenset({"textures"}),
    "photos": frozenset(),
    "glyphs": frozenset({"latin-glyphs", "script-glyphs", "printed-digits"}),
    "emoji": frozenset({"emoji"}),
}

# Glyph sets no source uses. Reserved scripts (Thai, Devanagari, Bengali, Tamil, Ethiopic) are never listed.
_GLYPH_SETS: dict[str, str] = {
    "math": "∀∂∃∅∇∈∉∋∏∑∓∗∘√∝∞∟∠∧∨∩∪∫∮∴∵∼≃≅≈≠≡≤≥⊂⊃⊆⊇⊕⊗⊥⋅",
    "arrows": "←↑→↓↔↕↖↗↘↙↚↛↜↝↞↟↠↡↢↣↤↥↦↧↨↩↪↫↬↭↮↯↰↱↲↳↴↵↶↷↸↹↺↻⇐⇑⇒⇓⇔",
    "box-drawing": "─│┌┐└┘├┤┬┴┼═║╔╗╚╝╠╣╦╩╬╭╮╯╰╱╲╳",
    "geometric": "■□▢▣▤▥▦▧▨▩▬▭▮▯▰▱▲△▶▷►▻▼▽◀◁◄◅◆◇◈◉◊○◌◍◎●◐◑◒◓◔◕◖◗",
    "misc-symbols": "☀☁☂☃☄★☆☎☏☐☑☒☚☛☜☝☞☟☠☢☣☤☥☦☧☨☩☪☫☬☭☮☯♔♕♖♗♘♙♚♛♜♝♞♟♠♡♢♣♤♥♦♧♨♩♪♫♬♭♮♯",
    "dingbats": "✁✂✃✄✆✇✈✉✌✍✎✏✐✑✒✓✔✕✖✗✘✙✚✛✜✝✞✟✠✡✢✣✤✥✦✧✩✪✫✬✭✮✯✰✱✲✳✴✵✶✷✸✹✺✻✼✽✾✿❀❁❂❃❄❅❆❇❈❉❊❋",
    "braille": "⠁⠃⠉⠙⠑⠋⠛⠓⠊⠚⠅⠇⠍⠝⠕⠏⠟⠗⠎⠞⠥⠧⠺⠭⠽⠵",
    "ogham": "ᚁᚂᚃᚄᚅᚆᚇᚈᚉᚊᚋᚌᚍᚎᚏᚐᚑᚒᚓᚔ",
    "canadian-syllabics": "ᐁᐃᐅᐊᐍᐏᐑᐓᐕᐘᐚᐯᐱᐳᐸᑌᑎᑐᑕᑫᑭᑯᑲ",
    "tifinagh": "ⴰⴱⴲⴳⴴⴵⴶⴷⴸⴹⴺⴻⴼⴽⴾⴿⵀⵁⵂⵃ",
    "nko": "ߊߋߌߍߎߏߐߑߒߓߔߕߖߗߘ",
    "runic": "ᚠᚢᚦᚨᚱᚲᚷᚹᚺᚾᛁᛃᛇᛈᛉᛊᛏᛒᛖᛗᛚᛜᛞᛟ",
    "cherokee": "ᎣᎤᎦᎧᎨᎭᎯᎲᎴᎸᎹᎺᎼᎿᏁᏄᏅᏇᏈᏉᏊᏍᏐᏛᏟᏡᏯᏱ",  # no Latin look-alikes
    "mongolian": "ᠠᠡᠢᠣᠤᠥᠦᠧᠨᠩᠪᠫᠬᠭᠮᠯᠰᠱᠲᠳ",
    "vai": "ꔀꔁꔂꔃꔄꔅꔆꔇꔈꔉꔊꔋꔌꔍꔎꔏ",
    "yi": "ꀀꀁꀂꀃꀄꀅꀆꀇꀈꀉꀊꀋꀌꀍꀎꀏ",
    "glagolitic": "ⰀⰁⰂⰃⰄⰅⰆⰇⰈⰉⰊⰋⰌⰍⰎ",
    "linear-b": "𐀀𐀁𐀂𐀃𐀄𐀅𐀆𐀇𐀈𐀉𐀊𐀋",
}
_GLYPH_SYSTEM_FONTS = ("fonts-noto-core",)

# Noto emoji of subgroups (emoji-test.txt 15.0) that no emoji source uses; single code points only.
_EMOJI_SETS: dict[str, str] = {
    "clothing": "👓🕶🥽🥼🦺👔👕👖🧣🧤🧥🧦👗👘🥻🩱🩲🩳👙👚👛👜👝🛍🎒🩴👞👟🥾🥿👠👡🩰👢👑👒🎩🎓🧢🪖⛑📿💄💍💎",
    "household": "🚪🛗🪞🪟🛏🛋🪑🚽🪠🚿🛁🪤🪒🧴🧷🧹🧺🧻🪣🧼🪥🧽🧯🛒",
    "tool": "🔨🪓⛏⚒🛠🗡⚔💣🪃🏹🛡🪚🔧🪛🔩⚙🗜⚖🦯🔗⛓🪝🧰🧲🪜",
    "office": "💼📁📂🗂📅📆🗒🗓📇📈📉📊📋📌📍📎🖇📏📐✂🗃🗄🗑",
    "musical-instrument": "🎷🪗🎸🎹🎺🎻🪕🥁🪘",
    "sky & weather": "🌑🌒🌓🌔🌕🌖🌗🌘🌙🌚🌛🌜🌡☀🌝🌞🪐⭐🌟🌠🌌☁⛅⛈🌤🌥🌦🌧🌨🌩🌪🌫🌬🌀🌈🌂☂☔⛱⚡❄☃⛄☄🔥💧🌊",
    "plant-flower": "💐🌸💮🏵🌹🥀🌺🌻🌼🌷",
    "plant-other": "🌱🪴🌲🌳🌴🌵🌾🌿☘🍀🍁🍂🍃🍄",
    "place-building": "🏟🏛🏗🧱🪨🪵🛖🏘🏚🏠🏡🏢🏣🏤🏥🏦🏨🏩🏪🏫🏬🏭🏯🏰💒🗼🗽",
    "event": "🎃🎄🎆🎇🧨✨🎈🎉🎊🎋🎍🎎🎏🎐🎑🧧🎀🎁🎗🎟🎫",
    "light & video": "🎥🎞📽🎬📺📷📸📹📼🔍🔎🕯💡🔦🏮🪔",
    "computer": "🔋🔌💻🖥🖨⌨🖱🖲💽💾💿📀🧮",
    "drink": "🍼🥛☕🫖🍵🍶🍾🍷🍸🍹🍺🍻🥂🥃🥤🧋🧃🧉🧊",
    "food-sweet": "🍦🍧🍨🍩🍪🎂🍰🧁🥧🍫🍬🍭🍮🍯",
    "transport-air": "✈🛩🛫🛬🪂💺🚁🚟🚠🚡🛰🚀🛸",
    "transport-water": "⚓⛵🛶🚤🛳⛴🛥🚢",
    "science": "⚗🧪🧫🧬🔬🔭📡",
    "game": "🎯🪀🪁🔫🎱🔮🪄🎮🕹🎰🎲🧩🧸🪅🪆♠♥♦♣♟🃏🀄🎴",
}

# Bundled sample photos without faces (skimage astronaut/camera/lfw_subset are faces or people: never used).
_PHOTOS = ("skimage:chelsea", "skimage:coffee", "skimage:rocket", "skimage:clock", "skimage:stereo_motorcycle",
           "sklearn:china.jpg", "sklearn:flower.jpg")


def _system_glyphs() -> bool:
    return all(fonts.package_installed(p) for p in _GLYPH_SYSTEM_FONTS)


def _emoji_font() -> bool:
    return fonts.package_installed("fonts-noto-color-emoji")


def source_domain(name: str) -> str:
    """The image domain of zoo source ``name`` (`SOURCE_DOMAINS`); K2VError for an unknown name."""
    try:
        return SOURCE_DOMAINS[name]
    except KeyError:
        raise K2VError(f"Unknown image source {name!r}.", f"Known sources: {', '.join(SOURCE_DOMAINS)}.") from None


def available_probe_kinds() -> tuple[str, ...]:
    """The probe kinds this machine can build (``emoji`` needs Debian's fonts-noto-color-emoji)."""
    return tuple(k for k in PROBE_KINDS if k != "emoji" or _emoji_font())


# ---------------------------------------------------------------------------------------------------------------
# One generator per kind: f(rng, size) -> PIL RGB image.
# ---------------------------------------------------------------------------------------------------------------


def _rand_rgb(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in (random_color(rng, bool(rng.random() < 0.5)) * 255).round())


def _shape(rng: np.random.Generator, size: int) -> Image.Image:
    s = supersample(size)
    bg = background(rng, s, bool(rng.random() < 0.5))
    im = Image.fromarray(np.clip(bg * 255 + 0.5, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(1, 5))):
        kind = int(rng.integers(6))
        cx, cy = rng.uniform(0.15, 0.85, 2) * s
        r = rng.uniform(0.1, 0.4) * s
        fill, width = _rand_rgb(rng), int(rng.integers(1, max(2, s // 10)))
        if kind == 0:  # ellipse
            rx, ry = r, r * rng.uniform(0.4, 1.0)
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=fill if rng.random() < 0.6 else None,
                         outline=fill, width=width)
        elif kind == 1:  # rotated rectangle or regular polygon
            n = int(rng.integers(3, 9))
            a0 = rng.uniform(0, 2 * np.pi)
            pts = [(cx + r * np.cos(a0 + 2 * np.pi * i / n), cy + r * np.sin(a0 + 2 * np.pi * i / n)) for i in range(n)]
            draw.polygon(pts, fill=fill if rng.random() < 0.6 else None, outline=fill, width=width)
        elif kind == 2:  # star
            n = int(rng.integers(4, 9))
            a0 = rng.uniform(0, 2 * np.pi)
            pts = [(cx + (r if i % 2 == 0 else r * 0.45) * np.cos(a0 + np.pi * i / n),
                    cy + (r if i % 2 == 0 else r * 0.45) * np.sin(a0 + np.pi * i / n)) for i in range(2 * n)]
            draw.polygon(pts, fill=fill)
        elif kind == 3:  # random irregular polygon
            pts = [tuple(p) for p in rng.uniform(0.05, 0.95, (int(rng.integers(3, 7)), 2)) * s]
            draw.polygon(pts, fill=fill)
        elif kind == 4:  # arc
            a = rng.uniform(0, 360)
            draw.arc((cx - r, cy - r, cx + r, cy + r), a, a + rng.uniform(60, 300), fill=fill, width=width + 1)
        else:  # a smooth pen stroke (random walk with momentum)
            n = int(rng.integers(8, 30))
            ang = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.35, n))
            step = s / n * rng.uniform(0.8, 2.0)
            xs = np.clip(cx + np.cumsum(np.cos(ang) * step), 0, s - 1)
            ys = np.clip(cy + np.cumsum(np.sin(ang) * step), 0, s - 1)
            draw.line(list(zip(xs.tolist(), ys.tolist())), fill=fill, width=width + 1, joint="curve")
    arr = np.asarray(im, dtype=np.float32) / 255.0
    return to_image(add_noise(rng, arr, rng.uniform(0.0, 0.03)), size)


def _texture(rng: np.random.Generator, size: int) -> Image.Image:
    s = size
    x, y = unit_grid(s)
    a = rng.uniform(0, np.pi)
    u, v = np.cos(a) * x + np.sin(a) * y, -np.sin(a) * x + np.cos(a) * y
    f = rng.uniform(2, 10)
    kind = int(rng.integers(8))
    if kind == 0:  # grating
        t = 0.5 + 0.5 * np.sin(2 * np.pi * f * u + rng.uniform(0, 2 * np.pi))
    elif kind == 1:  # plaid
        t = 0.5 + 0.25 * (np.sin(2 * np.pi * f * u) + np.sin(2 * np.pi * rng.uniform(2, 10) * v))
    elif kind == 2:  # checkerboard
        t = ((np.floor(f * u) + np.floor(f * v)) % 2).astype(np.float32)
    elif kind == 3:  # dot lattice
        d = np.hypot((f * u) % 1 - 0.5, (f * v) % 1 - 0.5)
        t = (d < rng.uniform(0.15, 0.45)).astype(np.float32)
    elif kind == 4:  # fractal noise
        t = sum(smooth_noise(rng, s, 2 ** o + 1) / 2 ** (o - 1) for o in range(1, 5))
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    elif kind == 5:  # Voronoi cells (edges or flat cells)
        pts = rng.random((int(rng.integers(5, 30)), 2)).astype(np.float32)
        d = np.sort(np.hypot(x[..., None] - pts[:, 0], y[..., None] - pts[:, 1]), axis=-1)
        t = np.clip((d[..., 1] - d[..., 0]) * rng.uniform(5, 20), 0, 1) if rng.random() < 0.5 else \
            (np.argmin(np.hypot(x[..., None] - pts[:, 0], y[..., None] - pts[:, 1]), axis=-1) % 3) / 2.0
    elif kind == 6:  # rings
        cx, cy = rng.random(2)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * f * np.hypot(x - cx, y - cy) * 2)
    else:  # hatching
        im = Image.new("L", (s, s), 0)
        draw = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(8, 40))):
            p = rng.uniform(-0.2, 1.2, 2) * s
            ang = a + rng.normal(0, 0.2)
            d = np.array([np.cos(ang), np.sin(ang)]) * s
            draw.line([tuple(p - d), tuple(p + d)], fill=255, width=int(rng.integers(1, 3)))
        t = np.asarray(im, dtype=np.float32) / 255.0
    t = np.asarray(t, dtype=np.float32)
    dark = bool(rng.random() < 0.5)
    c1, c2 = random_color(rng, dark), random_color(rng, not dark)
    out = c1[None, None] * (1 - t[..., None]) + c2[None, None] * t[..., None]
    return to_image(add_noise(rng, out, rng.uniform(0.0, 0.05)), size)


_photo_cache: dict[str, np.ndarray] = {}


def _photo_array(key: str) -> np.ndarray:
    if key not in _photo_cache:
        lib, name = key.split(":")
        if lib == "skimage":
            im = getattr(skimage.data, name)()
            if isinstance(im, tuple):  # stereo_motorcycle: (left, right, disparity)
                im = im[0]
        else:
            # imported here: sklearn.datasets takes 2.2-2.6 s to import (measured on 2 cores, after torch), and only
            # the photos kind needs it, for two of its seven photos
            from sklearn.datasets import load_sample_image

            im = load_sample_image(name)
        im = np.asarray(im)
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=2)
        _photo_cache[key] = np.ascontiguousarray(im[..., :3].astype(np.uint8))
    return _photo_cache[key]


def _photo(rng: np.random.Generator, size: int) -> Image.Image:
    im = _photo_array(_PHOTOS[int(rng.integers(len(_PHOTOS)))])
    h, w = im.shape[:2]
    c = max(8, int(min(h, w) * rng.uniform(0.08, 1.0)))
    y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
    crop = im[y:y + c, x:x + c]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    pim = Image.fromarray(np.ascontiguousarray(crop), "RGB").resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    return pim


def _glyph_sampler(system: bool):
    """``(set name, char, faces)`` triples to draw glyph probes from (chars without a face are left out)."""
    items = []
    for set_name, chars in _GLYPH_SETS.items():
        for ch in chars:
            if fonts.is_reserved(ch):  # never, by construction; kept as a guard
                continue
            faces = fonts.find_faces(fonts.MPL_FONTS, ch, True)
            if system:
                faces = faces + fonts.find_faces(_GLYPH_SYSTEM_FONTS, ch, True)
            if faces:
                items.append((set_name, ch, faces))
    sets = sorted({s for s, _, _ in items}, key=list(_GLYPH_SETS).index)
    return sets, items


def _make_glyph(system: bool):
    sets, items = _glyph_sampler(system)
    by_set = {s: [it for it in items if it[0] == s] for s in sets}

    def gen(rng: np.random.Generator, size: int) -> Image.Image:
        px = max(48, supersample(size))
        group = by_set[sets[int(rng.integers(len(sets)))]]
        _, ch, faces = group[int(rng.integers(len(group)))]
        path, index = faces[int(rng.integers(len(faces)))]
        return compose_mask(rng, fonts.glyph_mask(path, index, px, ch), size, 0.45, 0.9, 20.0)

    return gen


def _emoji(rng: np.random.Generator, size: int) -> Image.Image:
    names = list(_EMOJI_SETS)
    chars = _EMOJI_SETS[names[int(rng.integers(len(names)))]]
    return compose_rgba(rng, fonts.emoji_rgba(chars[int(rng.integers(len(chars)))]), size)


# ---------------------------------------------------------------------------------------------------------------
# Public API.
# ---------------------------------------------------------------------------------------------------------------


def _resolve_kinds(kinds: tuple[str, ...] | None, exclude_sources: tuple[str, ...]) -> tuple[str, ...]:
    excluded_domains = {source_domain(name) for name in exclude_sources}
    if kinds is None:
        chosen = list(available_probe_kinds())
        if "emoji" not in chosen:
            logger.info("Probe kind 'emoji' skipped: %s. Install it with: %s", "fonts-noto-color-emoji is missing",
                        fonts.apt_install_command(["fonts-noto-color-emoji"]))
        if not _system_glyphs():
            logger.info("Probe glyphs use matplotlib's fonts only (%s not installed).", ", ".join(_GLYPH_SYSTEM_FONTS))
    else:
        unknown = [k for k in kinds if k not in PROBE_KINDS]
        if unknown:
            raise K2VError(f"Unknown probe kind(s): {', '.join(unknown)}.", f"Use some of: {', '.join(PROBE_KINDS)}.")
        chosen = [k for k in PROBE_KINDS if k in kinds]
        if "emoji" in chosen and not _emoji_font():
            raise K2VError("Probe kind 'emoji' needs the Noto Color Emoji font, which is not installed.",
                           f"Install it with: {fonts.apt_install_command(['fonts-noto-color-emoji'])}")
    dropped = [k for k in chosen if KIND_DOMAINS[k] & excluded_domains]
    if dropped:
        logger.info("Probe kind(s) %s dropped: they overlap the excluded source domain(s) %s.", ", ".join(dropped),
                    ", ".join(sorted(excluded_domains)))
    chosen = [k for k in chosen if k not in dropped]
    if not chosen:
        raise K2VError("No probe kind is left to build.", "Ask for more kinds or exclude fewer sources.")
    return tuple(chosen)


def build_probe_images(n: int = 256, *, size: int = 32, seed: int = 0, kinds: tuple[str, ...] | None = None,
                       exclude_sources: tuple[str, ...] = ()) -> list[Image.Image]:
    """Build ``n`` probe images (RGB, ``size`` x ``size``), kinds mixed evenly and interleaved.

    Args:
        n: number of probes.
        size: side in pixels.
        seed: the probe set's seed; the same arguments give the same images on the same machine.
        kinds: subset of `PROBE_KINDS`; ``None`` means every kind this machine can build.
        exclude_sources: source names (`SOURCE_DOMAINS`, the zoo's sources) whose domains must stay out of the probes:
            a kind that overlaps one of their domains is dropped.

    Raises:
        K2VError: unknown kind or source, ``emoji`` asked for without its font, or no kind left.
    """
    if n < 1 or size < 8:
        raise K2VError(f"build_probe_images needs n >= 1 and size >= 8 (got {n}, {size}).")
    chosen = _resolve_kinds(tuple(kinds) if kinds is not None else None, tuple(exclude_sources))
    counts = [n // len(chosen) + (1 if i < n % len(chosen) else 0) for i in range(len(chosen))]
    per_kind: list[list[Image.Image]] = []
    for kind, count in zip(chosen, counts):
        gen = {"shapes": _shape, "textures": _texture, "photos": _photo, "emoji": _emoji}.get(kind)
        if kind == "glyphs":
            gen = _make_glyph(_system_glyphs())
        # one stream per kind (keyed by its index in PROBE_KINDS): a kind's images do not depend on the others
        rng = np.random.default_rng([seed, PROBE_KINDS.index(kind), size, 0x9B0BE])
        per_kind.append([gen(rng, size) for _ in range(count)])
    out: list[Image.Image] = []
    for i in range(max(counts)):
        out.extend(images[i] for images in per_kind if i < len(images))
    return out


def probe_fingerprint(images) -> str:
    """A stable 16-hex-digit sha256 fingerprint of a probe list (count, sizes and raw RGB bytes)."""
    h = hashlib.sha256(f"probes:{len(images)};".encode())
    for im in images:
        if not isinstance(im, Image.Image):
            im = Image.fromarray(np.asarray(im, dtype=np.uint8))
        im = im.convert("RGB")
        h.update(f"{im.size[0]}x{im.size[1]};".encode())
        h.update(im.tobytes())
    return h.hexdigest()[:16]
