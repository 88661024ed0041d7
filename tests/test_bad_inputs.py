"""Bad datasets for `find_model` and `k2v-hub find`: each is either used correctly or refused with a one-line
`K2VError` subclass that says what to do, never another exception, never a silently wrong ranking.

The index here is small and fast: four black boxes that are linear classifiers over pixels, indexed by the real
`Indexer`/`write_index` with an untrained retriever in the ``pixels-8`` feature space (no backbone, no zoo), so
the file runs in seconds. The ``mobilenet_v2`` path is the same code after `FeatureExtractor`.
"""

from __future__ import annotations

import io
import math
import os
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from k2v_hub.errors import DatasetError, K2VError, UsageError
from k2v_hub.find import Matches, find_model
from k2v_hub.query_data import MAX_SIDE, task_class_means

from fakes import FEATURE_SPACE, build_fast_index  # noqa: E402

N_MODELS = 4


# --------------------------------------------------------------------------- a small, fast index


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    return build_fast_index(tmp_path_factory.mktemp("fast"))[0]


# --------------------------------------------------------------------------- dataset helpers

FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["ant", "bee", "cat"])})


def rgb(seed: int, size=(12, 12)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    arr = np.clip(base + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def image_in_mode(mode: str, seed: int, size=(12, 12)) -> Image.Image:
    im = rgb(seed, size)
    if mode == "I;16":
        return Image.fromarray((np.asarray(im.convert("L"), dtype=np.uint16) * 257))
    if mode == "F":
        return Image.fromarray(np.asarray(im.convert("L"), dtype=np.float32) / 255)
    if mode == "I":
        return im.convert("L").convert("I")
    return im.convert(mode)


def labelled(n_per_class=3, n_classes=3, **kw) -> datasets.Dataset:
    images = [rgb(10 * c + i) for c in range(n_classes) for i in range(n_per_class)]
    labels = [c for c in range(n_classes) for _ in range(n_per_class)]
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=FEATURES, **kw)


def ranking(matches) -> list[tuple[str, float]]:
    return [(m.model_id, round(m.score, 5)) for m in matches]


def check_matches(matches, n=min(3, N_MODELS)):
    assert isinstance(matches, Matches) and len(matches) == n
    assert [m.rank for m in matches] == list(range(1, n + 1))
    scores = [m.score for m in matches]
    assert all(math.isfinite(s) for s in scores) and scores == sorted(scores, reverse=True)
    return matches


def find(ds, index, **kw):
    kw.setdefault("top_k", 3)
    return find_model(ds, index, show_progress=False, **kw)


def refused(ds, index, error=DatasetError, match=None, **kw) -> str:
    with pytest.raises(error, match=match) as info:
        find(ds, index, **kw)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    assert info.value.hint, f"no hint in {message!r}"  # every refusal says what to do
    return message


# --------------------------------------------------------------------------- columns


def test_good_dataset_works(index):
    check_matches(find(labelled(), index))


def test_no_image_column(index):
    ds = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]})
    assert "image_column=" in refused(ds, index, match="No image column")


def test_several_image_columns(index):
    ds = datasets.Dataset.from_dict({"a": [rgb(0), rgb(1)], "b": [rgb(2), rgb(3)], "label": [0, 1]},
                                    features=datasets.Features({"a": datasets.Image(), "b": datasets.Image(),
                                                                "label": datasets.Value("int64")}))
    refused(ds, index, match="Several image columns: a, b")
    check_matches(find(ds, index, image_column="b"))


def test_no_label_column(index):
    ds = datasets.Dataset.from_dict({"image": [rgb(0), rgb(1)], "tag": ["x", "y"]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "tag": datasets.Value("string")}))
    assert "label_column=" in refused(ds, index, match="No label column")
    check_matches(find(ds, index, label_column="tag"))


def test_several_label_columns(index):
    feats = datasets.Features({"image": datasets.Image(), "fine": datasets.ClassLabel(names=["a", "b"]),
                               "coarse": datasets.ClassLabel(names=["x", "y"])})
    ds = datasets.Dataset.from_dict({"image": [rgb(0), rgb(1)], "fine": [0, 1], "coarse": [1, 0]}, features=feats)
    refused(ds, index, match="Several label columns: fine, coarse")
    check_matches(find(ds, index, label_column="coarse"))


def test_named_columns_that_are_wrong(index):
    ds = datasets.Dataset.from_dict({"image": [rgb(0), rgb(1)], "path": ["a.png", "b.png"], "label": [0, 1]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "path": datasets.Value("string"),
                                                                "label": datasets.Value("int64")}))
    assert "cast_column" in refused(ds, index, match="not an Image feature", image_column="path")
    refused(ds, index, match="No column 'nope'", image_column="nope")
    refused(ds, index, match="No column 'nope'", label_column="nope")
    refused(ds, index, match="both the image and the label", label_column="image")


def test_multi_label_column(index):
    ds = datasets.Dataset.from_dict({"image": [rgb(0), rgb(1)], "label": [[0, 1], [1]]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.List(datasets.Value("int64"))}))
    refused(ds, index, match="one class per image")


# --------------------------------------------------------------------------- classes and labels


def test_single_class(index):
    refused(labelled(n_classes=1), index, match="1 class \\('ant'\\)")


def test_empty_dataset(index):
    refused(labelled().select([]), index, match="empty")
    refused(datasets.DatasetDict(), index, match="no splits")


def test_one_sample_per_class_works(index):
    """Decision: one image is enough for a class; its mean is that image's features."""
    check_matches(find(labelled(n_per_class=1), index))
    from k2v_hub.features import FeatureExtractor

    ext = FeatureExtractor.from_pretrained(FEATURE_SPACE)
    ds = labelled(n_per_class=1)
    means, names, counts = task_class_means(ds, "image", "label", FEATURES["label"].names, ext, show_progress=False)
    np.testing.assert_allclose(means, ext([rgb(0), rgb(10), rgb(20)], show_progress=False), rtol=1e-5)
    assert names == ["ant", "bee", "cat"] and counts == {"ant": 1, "bee": 1, "cat": 1}


def test_uneven_classes_one_and_many(index):
    ds = datasets.Dataset.from_dict({"image": [rgb(i) for i in range(41)], "label": [0] + [1] * 40},
                                    features=FEATURES)
    check_matches(find(ds, index, max_images_per_class=8))


def test_labels_as_strings_ints_classlabel_and_floats_rank_the_same(index):
    images = [rgb(10 * c + i) for c in range(3) for i in range(3)]
    names = ["cat", "ant", "bee"]  # not in sorted order in the data
    strings = [names[i // 3] for i in range(9)]
    by_string = find(datasets.Dataset.from_dict({"image": images, "label": strings},
                                                features=datasets.Features({"image": datasets.Image(),
                                                                            "label": datasets.Value("string")})), index)
    encoded = datasets.Dataset.from_dict({"image": images, "label": strings},
                                         features=datasets.Features({"image": datasets.Image(),
                                                                     "label": datasets.Value("string")}))
    encoded = encoded.class_encode_column("label")  # ClassLabel with sorted names, as image folders give
    ids = encoded["label"]
    by_classlabel = find(encoded, index)
    by_int = find(datasets.Dataset.from_dict({"image": images, "label": ids}), index)
    by_float = find(datasets.Dataset.from_dict({"image": images, "label": [float(i) for i in ids]}), index)
    assert ranking(by_string) == ranking(by_classlabel) == ranking(by_int) == ranking(by_float)
    assert isinstance(encoded.features["label"], datasets.ClassLabel)


def test_int_labels_sort_numerically_like_classlabel(index):
    images = [rgb(7 * i) for i in range(12)]
    ints = list(range(12))
    as_int = find(datasets.Dataset.from_dict({"image": images, "label": ints}), index)
    as_cl = find(datasets.Dataset.from_dict({"image": images, "label": ints}, features=datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[f"n{i}" for i in ints])})), index)
    assert ranking(as_int) == ranking(as_cl)


@pytest.mark.parametrize("labels, match", [
    (["ant", None, "bee", "bee"], "1 of 4 rows have no label \\(row 1\\)"),
    ([0.0, float("nan"), 1.0, 1.0], "1 of 4 rows have no label \\(row 1\\)"),
    ([0.5, 1.0, 0.0, 1.0], "non-integral"),
])
def test_bad_label_values(index, labels, match):
    ds = datasets.Dataset.from_dict({"image": [rgb(i) for i in range(4)], "label": labels})
    message = refused(ds, index, match=match)
    assert "filter" in message or "ClassLabel" in message


def test_classlabel_minus_one_means_unlabelled(index):
    ds = datasets.Dataset.from_dict({"image": [rgb(i) for i in range(4)], "label": [-1] * 4}, features=FEATURES)
    assert "--split" in refused(ds, index, match="No row has a label")


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "1", "LA", "I", "F"])
def test_every_image_mode_works(index, mode):
    ds = datasets.Dataset.from_dict({"image": [image_in_mode(mode, i) for i in range(4)], "label": [0, 1, 0, 1]},
                                    features=FEATURES)
    assert ds[0]["image"].mode == mode or mode == "I"  # the mode survives the dataset
    check_matches(find(ds, index))


def test_mixed_modes_in_one_dataset(index):
    modes = ["L", "RGBA", "P", "CMYK", "I;16", "RGB"]
    ds = datasets.Dataset.from_dict({"image": [image_in_mode(m, i) for i, m in enumerate(modes)],
                                     "label": [0, 1, 2, 0, 1, 2]}, features=FEATURES)
    check_matches(find(ds, index))


class RecordingExtractor:
    """Stands in for a feature space; records the images it is given."""

    name, dim = FEATURE_SPACE, 3

    def __init__(self, value=None):
        self.seen: list[tuple[str, tuple[int, int]]] = []
        self.value = value

    def __call__(self, images, show_progress=False):
        self.seen.extend((im.mode, im.size) for im in images)
        feats = np.stack([np.asarray(im, dtype=np.float32).mean((0, 1)) for im in images])
        return feats if self.value is None else np.full_like(feats, self.value)


def test_huge_images_are_downscaled_before_features(index, tmp_path):
    big = Image.new("RGB", (5000, 5000), (200, 30, 30))
    big.paste((20, 20, 220), (0, 0, 2500, 5000))
    ds = datasets.Dataset.from_dict({"image": [big, rgb(1), rgb(2), rgb(3)], "label": [0, 0, 1, 1]},
                                    features=FEATURES)
    ext = RecordingExtractor()
    task_class_means(ds, "image", "label", FEATURES["label"].names, ext, show_progress=False)
    assert max(max(size) for _, size in ext.seen) <= MAX_SIDE and ext.seen[0][1] == (MAX_SIDE, MAX_SIDE)
    assert {mode for mode, _ in ext.seen} == {"RGB"}
    check_matches(find(ds, index))


def test_tiny_images(index):
    ds = datasets.Dataset.from_dict({"image": [rgb(0, (1, 1)), rgb(1, (2, 2)), rgb(2, (1, 1)), rgb(3, (2, 1))],
                                     "label": [0, 0, 1, 1]}, features=FEATURES)
    check_matches(find(ds, index))


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("cell, match", [
    ({"bytes": b"definitely not an image", "path": None}, "Row 1: the image could not be decoded"),
    ({"bytes": _png(rgb(5, (64, 64)))[:80], "path": None}, "Row 1: the image could not be decoded"),
    ({"bytes": b"%PDF-1.4 pretending", "path": "x.pdf"}, "Row 1: the image could not be decoded"),
    ({"bytes": _png_header_only(30_000, 30_000), "path": None}, "Row 1 is too large to decode safely"),
    ({"bytes": None, "path": "/nonexistent/k2v/image.png"}, "Row 1 points to a missing file"),
    (None, "Row 1 has no image"),
])
def test_corrupt_or_non_image_data_in_an_image_column(index, cell, match):
    ds = datasets.Dataset.from_dict({"image": [rgb(0), cell, rgb(2), rgb(3)], "label": [0, 0, 1, 1]},
                                    features=FEATURES)
    refused(ds, index, match=match)


def test_remote_image_path_is_refused_without_a_request(index, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("k2v-hub opened a connection for a dataset image")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    ds = datasets.Dataset.from_dict({"image": [rgb(0), {"bytes": None, "path": "https://example.com/x.png"},
                                               rgb(2), rgb(3)], "label": [0, 0, 1, 1]}, features=FEATURES)
    refused(ds, index, match="remote image")
    refused(ds.to_iterable_dataset(), index, match="remote image")  # streaming does not fetch it either


def test_local_image_paths_work(index, tmp_path):
    paths = []
    for i in range(4):
        rgb(i).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    ds = datasets.Dataset.from_dict({"image": paths, "label": [0, 0, 1, 1]}, features=FEATURES)
    check_matches(find(ds, index))


def test_nan_pixels_work_and_nan_features_are_refused(index, monkeypatch):
    nan_image = Image.fromarray(np.full((8, 8), np.nan, dtype=np.float32))
    ds = datasets.Dataset.from_dict({"image": [nan_image, rgb(1), rgb(2), rgb(3)], "label": [0, 0, 1, 1]},
                                    features=FEATURES)
    check_matches(find(ds, index))
    from k2v_hub import find as find_module

    monkeypatch.setitem(find_module._EXTRACTORS, FEATURE_SPACE, RecordingExtractor(value=np.nan))
    assert "feature backbone" in refused(ds, index, match="NaN/inf for rows 0, 1, 2, 3")


def test_many_classes_one_image_each(index):
    ds = datasets.Dataset.from_dict({"image": [rgb(i) for i in range(40)], "label": [f"c{i:02d}" for i in range(40)]})
    check_matches(find(ds, index))


def test_animated_gif_uses_the_first_frame(index):
    frames = [rgb(1).convert("P"), rgb(2).convert("P")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    gif = {"bytes": buf.getvalue(), "path": None}
    ds = datasets.Dataset.from_dict({"image": [gif, rgb(3), rgb(4), rgb(5)], "label": [0, 0, 1, 1]}, features=FEATURES)
    check_matches(find(ds, index))


# --------------------------------------------------------------------------- how the dataset is handed over


def test_streaming_dataset_works_and_ranks_the_same(index):
    ds = labelled()
    streamed = find(ds.to_iterable_dataset(), index)
    assert ranking(streamed) == ranking(find(ds, index))
    assert ranking(find(datasets.IterableDatasetDict({"train": ds.to_iterable_dataset()}), index)) == \
        ranking(streamed)

    def gen():  # no declared features: inferred from the rows
        for i in range(6):
            yield {"image": rgb(i), "label": ["x", "y"][i % 2]}

    check_matches(find(datasets.IterableDataset.from_generator(gen), index))
    broken = datasets.Dataset.from_dict({"image": [rgb(0), {"bytes": b"junk", "path": None}, rgb(2), rgb(3)],
                                         "label": [0, 0, 1, 1]}, features=FEATURES).to_iterable_dataset()
    refused(broken, index, match="Row 1: the image could not be decoded")
    empty = datasets.IterableDataset.from_generator(lambda: iter(()), features=FEATURES)
    refused(empty, index, match="streaming dataset is empty")


def test_folders_files_and_objects(index, tmp_path):
    ds = labelled()
    ds.save_to_disk(tmp_path / "saved")
    ref = ranking(find(ds, index))
    assert ranking(find(str(tmp_path / "saved"), index)) == ref
    datasets.DatasetDict({"train": ds, "test": ds.select([0, 3])}).save_to_disk(tmp_path / "dict")
    assert ranking(find(tmp_path / "dict", index)) == ref
    refused(tmp_path / "dict", index, match="No split 'validation'", split="validation")
    for name in FEATURES["label"].names:  # an image folder: class/xxx.png
        (tmp_path / "folder" / name).mkdir(parents=True)
    for i in range(9):
        ds[i]["image"].save(tmp_path / "folder" / FEATURES["label"].names[ds[i]["label"]] / f"{i}.png")
    check_matches(find(tmp_path / "folder", index))
    (tmp_path / "file.txt").write_text("hello")
    refused(tmp_path / "file.txt", index, match="is a file")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", index, match="neither a save_to_disk folder nor an image folder")
    damaged = tmp_path / "damaged"
    ds.save_to_disk(damaged)
    for f in damaged.glob("*.arrow"):
        f.write_bytes(b"garbage")
    refused(damaged, index, match="cannot be read")
    refused(["not", "a", "dataset"], index, match="Cannot use a list")
    refused("../../etc/passwd-k2v", index, match="not a folder and not a valid Hub dataset id")


def test_real_task_folder_in_every_form_ranks_the_same(index, tiny_task):
    """A tiny-zoo task (real images): folder, Dataset, stream, plain ints and strings give one ranking."""
    support = datasets.load_from_disk(str(tiny_task))["support"]
    label = next(k for k, f in support.features.items() if isinstance(f, datasets.ClassLabel))
    image = next(k for k, f in support.features.items() if isinstance(f, datasets.Image))
    ref = ranking(find(str(tiny_task), index))
    assert ranking(find(support, index)) == ref
    assert ranking(find(support.to_iterable_dataset(), index)) == ref
    plain = support.cast_column(label, datasets.Value("int64"))
    assert ranking(find(plain, index, label_column=label)) == ref
    names = support.features[label].names
    strings = support.cast_column(label, datasets.Value("string"))  # ids as text: "0", "1", ...
    strings = strings.map(lambda r: {label: names[int(r[label])]})
    encoded = strings.class_encode_column(label)
    assert ranking(find(strings, index, label_column=label)) == ranking(find(encoded, index, label_column=label))
    assert image in support.column_names


def test_hub_id_that_does_not_exist_offline(index, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    message = refused("k2v-nobody/no-such-dataset", index, match="cannot be reached \\(HF_HUB_OFFLINE is set\\)")
    assert "local folder" in message


@pytest.mark.parametrize("kwargs, match", [
    ({"top_k": 0}, "top_k must be an integer >= 1"),
    ({"top_k": 2.5}, "top_k must be an integer >= 1"),
    ({"max_images_per_class": 0}, "max_images_per_class"),
    ({"rerank": "magic"}, "Unknown rerank method"),
    ({"rerank_fusion": -0.5}, "rerank_fusion must be a finite number >= 0"),
    ({"rerank_fusion": float("nan")}, "rerank_fusion must be a finite number >= 0"),
])
def test_bad_arguments(index, kwargs, match):
    with pytest.raises(UsageError, match=match) as info:
        find(labelled(), index, **kwargs)
    assert isinstance(info.value, ValueError)


def test_top_k_larger_than_the_index(index):
    check_matches(find(labelled(), index, top_k=50), n=N_MODELS)


# --------------------------------------------------------------------------- property-based

from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

MODES = ["RGB", "L", "RGBA", "P", "CMYK", "I;16", "1", "F", "LA"]


@st.composite
def small_datasets(draw):
    n_classes = draw(st.integers(1, 5))
    counts = draw(st.lists(st.integers(0, 6), min_size=n_classes, max_size=n_classes))
    kind = draw(st.sampled_from(["str", "int", "classlabel"]))
    corrupt = draw(st.booleans()) and draw(st.booleans())  # a quarter of the datasets hold one corrupt image
    images, labels = [], []
    for c, count in enumerate(counts):
        for _ in range(count):
            side = (draw(st.integers(1, 64)), draw(st.integers(1, 64)))
            images.append(image_in_mode(draw(st.sampled_from(MODES)), draw(st.integers(0, 10_000)), side))
            labels.append(c)
    if corrupt and images:
        images[draw(st.integers(0, len(images) - 1))] = {"bytes": b"\x89PNG broken", "path": None}
    names = [f"class-{c}" for c in range(n_classes)]
    if kind == "str":
        feats = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
        labels = [names[c] for c in labels]
    elif kind == "int":
        feats = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    else:
        feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    ds = datasets.Dataset.from_dict({"image": images, "label": labels}, features=feats)
    usable = sum(1 for c in counts if c > 0) >= 2 and not corrupt
    return ds, usable


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=small_datasets(), top_k=st.integers(1, 6))
def test_property_ranked_list_or_k2v_error(index, case, top_k):
    ds, usable = case
    try:
        matches = find_model(ds, index, top_k=top_k, show_progress=False)
    except K2VError as exc:
        event(f"refused: {type(exc).__name__}")
        assert not usable, f"a usable dataset was refused: {exc}"
        assert isinstance(exc, DatasetError) and "\n" not in str(exc) and exc.hint
        return
    event("ranked")
    assert usable, "an unusable dataset was ranked"
    check_matches(matches, n=min(top_k, N_MODELS))


# --------------------------------------------------------------------------- the CLI


def run_cli(*args) -> tuple[int, str, str]:
    """``k2v-hub find`` in this process (fast); returns ``(exit code, stdout, stderr)``."""
    import contextlib

    from k2v_hub.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["find", *map(str, args), "--format", "json"])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, stderr: str, expected_code: int, match: str):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == expected_code, stderr
    assert len(lines) == 1 and lines[0].startswith("Error: ") and match in lines[0], stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("make, code, match", [
    (lambda: datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}), 2, "No image column"),
    (lambda: labelled(n_classes=1), 2, "1 class"),
    (lambda: datasets.Dataset.from_dict({"image": [rgb(0), {"bytes": b"junk", "path": None}], "label": [0, 1]},
                                        features=FEATURES), 2, "could not be decoded"),
    (lambda: datasets.Dataset.from_dict({"image": [rgb(0), rgb(1)], "label": ["a", None]}), 2, "no label"),
])
def test_cli_bad_dataset_one_line_no_traceback(index, tmp_path, make, code, match):
    make().save_to_disk(tmp_path / "ds")
    exit_code, stdout, stderr = run_cli("--dataset", tmp_path / "ds", "--index", index)
    assert_one_line_error(exit_code, stderr, code, match)
    assert stdout == ""


def test_cli_good_dataset_and_missing_index(index, tmp_path):
    labelled().save_to_disk(tmp_path / "ds")
    exit_code, stdout, stderr = run_cli("--dataset", tmp_path / "ds", "--index", index, "--top-k", "2")
    assert exit_code == 0 and '"model_id"' in stdout and stderr == "", stderr
    exit_code, _, stderr = run_cli("--dataset", tmp_path / "ds", "--index", tmp_path / "no-index")
    assert_one_line_error(exit_code, stderr, 4, "neither a folder nor a Hub dataset id")
    exit_code, _, stderr = run_cli("--dataset", tmp_path / "ds", "--index", index, "--top-k", "0")
    assert_one_line_error(exit_code, stderr, 2, "top_k must be")


def test_cli_hub_id_that_does_not_exist_fails_fast(index, tmp_path):
    """A fresh process, offline, with HF_ENDPOINT on a closed local port: a clear error in seconds, no hang."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_DEBUG", "K2V_HUB_VERBOSE")}
    env.update({"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"),
                "PYTHONWARNINGS": "ignore"})
    proc = subprocess.run([sys.executable, "-m", "k2v_hub.cli", "find", "--dataset", "k2v-nobody/no-such-dataset",
                           "--index", str(index), "--format", "json"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert_one_line_error(proc.returncode, proc.stderr, 2, "cannot be reached (HF_HUB_OFFLINE is set)")
