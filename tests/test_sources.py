"""Tests of the zoo image sources (`k2v_hub.zoo.sources`) and the probe set (`k2v_hub.probes`). Fast: < 30 s."""

from __future__ import annotations

import os

import datasets
import numpy as np
import pytest
from PIL import Image

from k2v_hub import fonts
from k2v_hub import probes as P
from k2v_hub.errors import K2VError
from k2v_hub.zoo import sources as S

RESERVED = {
    "Thai": (0x0E00, 0x0E7F),
    "Devanagari": (0x0900, 0x097F),
    "Bengali": (0x0980, 0x09FF),
    "Tamil": (0x0B80, 0x0BFF),
    "Ethiopic": (0x1200, 0x139F),
}

HAVE_CORE_FONTS = not S.missing_apt_packages(["greek", "hiragana"])
HAVE_EMOJI_FONT = not S.missing_apt_packages(["emoji-food-fruit"])
needs_fonts = pytest.mark.skipif(
    not HAVE_CORE_FONTS,
    reason="Debian fonts missing: apt-get install fonts-noto-core fonts-noto-cjk fonts-liberation "
    "fonts-urw-base35 fonts-freefont-ttf fonts-dejavu-core fonts-dejavu-extra",
)
needs_emoji = pytest.mark.skipif(not HAVE_EMOJI_FONT, reason="apt-get install fonts-noto-color-emoji")


def _arrays(ds) -> list[np.ndarray]:
    return [np.asarray(im) for im in ds["image"]]


def _check_dataset(ds, spec: S.SourceSpec, n_per_class: int, size: int) -> None:
    assert isinstance(ds.features["image"], datasets.Image)
    assert isinstance(ds.features["label"], datasets.ClassLabel)
    assert tuple(ds.features["label"].names) == spec.class_names
    assert len(ds) == n_per_class * len(spec.class_names)
    assert sorted(set(ds["label"])) == list(range(len(spec.class_names)))
    for im in ds["image"][:10]:
        assert isinstance(im, Image.Image)
        assert im.mode == "RGB" and im.size == (size, size)


# ---------------------------------------------------------------------------------------------------- registry


def test_registry_shape():
    bench, tiny = S.list_sources("bench"), S.list_sources("tiny")
    assert len(bench) >= 20
    assert set(tiny) <= set(bench) and len(tiny) >= 4
    assert bench == list(S.SOURCES)  # deterministic order
    assert list(P.SOURCE_DOMAINS) == bench  # the core's domain table names exactly the zoo's sources, in order
    for name, spec in S.SOURCES.items():
        assert spec.name == name
        assert 5 <= len(spec.class_names) <= 20, name
        assert len(set(spec.class_names)) == len(spec.class_names), name
        assert spec.needs_system_fonts == bool(spec.apt_packages), name
        assert spec.description and spec.domain
    for name in tiny:
        assert not S.SOURCES[name].needs_system_fonts
    with pytest.raises(K2VError):
        S.list_sources("huge")
    with pytest.raises(K2VError, match="Unknown image source"):
        S.build_source("no-such-source")


def _in_reserved(text: str) -> list[str]:
    return [f"{c!r} in {script}" for c in text for script, (lo, hi) in RESERVED.items() if lo <= ord(c) <= hi]


def test_no_reserved_script_anywhere():
    for spec in S.SOURCES.values():
        for name in spec.class_names:
            assert not _in_reserved(name), (spec.name, _in_reserved(name))
    for chars in list(S._GLYPH_SOURCES.values()):
        assert not _in_reserved(chars[0])
    for chars in list(P._GLYPH_SETS.values()) + list(P._EMOJI_SETS.values()):
        assert not _in_reserved(chars), _in_reserved(chars)
    assert fonts.RESERVED_RANGES == tuple(RESERVED.values())
    # no font file of a reserved script is ever a candidate
    for group in {g for _, g, _ in S._GLYPH_SOURCES.values()} | {P._GLYPH_SYSTEM_FONTS}:
        for path in fonts.group_files(group):
            base = os.path.basename(path).lower()
            assert not any(w.lower() in base for w in RESERVED), path


def test_probe_emoji_and_glyphs_disjoint_from_sources():
    source_emoji = {ch for _, items in S._EMOJI_SOURCES.values() for ch, _ in items}
    probe_emoji = set("".join(P._EMOJI_SETS.values()))
    assert not source_emoji & probe_emoji
    source_glyphs = set("".join(chars for chars, _, _ in S._GLYPH_SOURCES.values()))
    assert not source_glyphs & set("".join(P._GLYPH_SETS.values()))


# ---------------------------------------------------------------------------------------------------- building


@pytest.mark.parametrize("name", S.list_sources("tiny"))
def test_tiny_source_builds_and_is_deterministic(name):
    spec = S.SOURCES[name]
    ds = S.build_source(name, n_per_class=3, size=32, seed=1)
    _check_dataset(ds, spec, 3, 32)
    again = S.build_source(name, n_per_class=3, size=32, seed=1)
    assert ds["label"] == again["label"]
    assert all(np.array_equal(a, b) for a, b in zip(_arrays(ds), _arrays(again)))
    other = S.build_source(name, n_per_class=3, size=32, seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(_arrays(ds), _arrays(other)))


def test_size_and_split_offset():
    ds = S.build_source("animal-mnist", n_per_class=2, size=24)
    assert ds[0]["image"].size == (24, 24)
    a = S.build_source("mnist", n_per_class=2, seed=0)
    b = S.build_source("mnist", n_per_class=2, seed=0, split_seed_offset=1)
    assert not all(np.array_equal(x, y) for x, y in zip(_arrays(a), _arrays(b)))


def test_pick_is_without_replacement_and_splits_are_disjoint():
    first = S._pick(500, 100, 0, "mnist", 3, 0)
    second = S._pick(500, 100, 0, "mnist", 3, 1)
    assert len(set(first)) == 100 and len(set(second)) == 100
    assert not set(first) & set(second)
    assert len(set(S._pick(180, 300, 0, "sklearn-digits", 0, 0))) == 180  # cycles only when the pool is short


@needs_fonts
@pytest.mark.parametrize("name", ["latin-fonts", "greek", "arabic", "hiragana"])
def test_font_source_builds(name):
    spec = S.SOURCES[name]
    ds = S.build_source(name, n_per_class=2, size=32)
    _check_dataset(ds, spec, 2, 32)
    assert len(S._glyph_faces(name)) >= 4


@needs_emoji
def test_emoji_source_builds_and_names_match_emoji_test():
    spec = S.SOURCES["emoji-food-fruit"]
    ds = S.build_source("emoji-food-fruit", n_per_class=2)
    _check_dataset(ds, spec, 2, 32)
    path = "/usr/share/unicode/emoji/emoji-test.txt"
    if not os.path.exists(path):
        pytest.skip("unicode-data not installed: emoji-test.txt missing, names not checked")
    names = {}
    for line in open(path, encoding="utf-8"):
        if "; fully-qualified" in line:
            cps, comment = line.split(";")[0], line.split("#", 1)[1]
            names["".join(chr(int(c, 16)) for c in cps.split() if c != "FE0F")] = comment.split(" ", 3)[3].strip()
    for _, items in S._EMOJI_SOURCES.values():
        for ch, name in items:
            assert names.get(ch) == name, (ch, name, names.get(ch))


def test_missing_fonts_give_apt_hint(monkeypatch):
    monkeypatch.setattr(fonts, "package_installed", lambda package: False)
    assert S.missing_apt_packages(S.list_sources("tiny")) == []
    missing = S.missing_apt_packages(["greek", "emoji-sport"])
    assert "fonts-noto-core" in missing and "fonts-noto-color-emoji" in missing
    with pytest.raises(K2VError) as err:
        S.build_source("greek", n_per_class=1)
    assert "apt-get install" in str(err.value) and "fonts-noto-core" in err.value.hint
    # probes still build without any system font, and without emoji
    imgs = P.build_probe_images(8, seed=0)
    assert len(imgs) == 8
    with pytest.raises(K2VError, match="Emoji"):
        P.build_probe_images(4, kinds=("emoji",))


# ---------------------------------------------------------------------------------------------------- probes


def test_probes_deterministic_sized_and_mixed():
    a = P.build_probe_images(30, size=32, seed=0)
    b = P.build_probe_images(30, size=32, seed=0)
    assert len(a) == 30
    assert all(im.mode == "RGB" and im.size == (32, 32) for im in a)
    assert P.probe_fingerprint(a) == P.probe_fingerprint(b)
    assert len(P.probe_fingerprint(a)) == 16
    c = P.build_probe_images(30, size=32, seed=1)
    assert P.probe_fingerprint(a) != P.probe_fingerprint(c)
    # a kind's images do not depend on which other kinds are asked for
    shapes = P.build_probe_images(3, kinds=("shapes",), seed=0)
    kinds = P.available_probe_kinds()
    assert P.probe_fingerprint(shapes) == P.probe_fingerprint(a[0:len(kinds) * 3:len(kinds)])
    small = P.build_probe_images(7, size=20, kinds=("photos", "textures"))
    assert len(small) == 7 and small[0].size == (20, 20)
    # fingerprint also accepts a [P, H, W, 3] array
    arr = np.stack([np.asarray(im) for im in a])
    assert P.probe_fingerprint(arr) == P.probe_fingerprint(a)


def test_probe_exclusions_and_errors():
    kinds = P._resolve_kinds(None, ("greek", "textures"))
    assert "glyphs" not in kinds and "textures" not in kinds and "shapes" in kinds
    assert "emoji" not in P._resolve_kinds(None, ("emoji-sport",))
    with pytest.raises(K2VError):
        P.build_probe_images(4, kinds=("nope",))
    with pytest.raises(K2VError):
        P.build_probe_images(4, kinds=("glyphs",), exclude_sources=("latin-fonts",))
    with pytest.raises(K2VError):
        P.build_probe_images(4, exclude_sources=("no-such-source",))
