"""A model whose card names no dataset (`k2v_hub.inferred`): the index asks it about the datasets the org's other
cards name, and a dataset it labels well stands for its data; a model that labels none keeps no fingerprint."""

from __future__ import annotations

import io
import json
import re
import shutil

import datasets
import numpy as np
import pytest
from PIL import Image

from k2v_hub import find_model
from k2v_hub.declared import PER_CLASS, decode_fingerprint
from k2v_hub.hub import LocalSource, folder_revision
from k2v_hub.index import NO_DATASET_NOTE, ROWS_DIR, build_index, data_unread, load_retriever, row_filename
from k2v_hub.inferred import DeclaredPool, infer_data_columns
from k2v_hub.oracle import Oracle
from k2v_hub.pipeline import make_indexer
from k2v_hub.zoo.data import ZooData

from fakes import rows_of  # noqa: E402

COPY = "k2v-zoo/resnet-mnist-uncarded"
UNREADABLE = "k2v-zoo/resnet-mnist-unreadable-data"
ORIGINAL = "k2v-zoo/resnet-mnist-a-s0"
TEXTURES = "k2v-zoo/vit-textures-a-s0"
JOINED = "k2v-zoo/vit-textures-second"
FAILED_NOTE = (f"{NO_DATASET_NOTE}; it labels none of the index's declared datasets 2 times as well as chance "
               "(80 images asked)")


def _strip_datasets(card_path) -> None:
    """Remove the ``datasets:`` list from a card's front matter."""
    text = card_path.read_text()
    card_path.write_text(re.sub(r"^datasets:\n(?:- .*\n)+", "", text, count=1, flags=re.M))


@pytest.fixture(scope="module")
def uncarded(tiny_zoo, tiny_retriever, tmp_path_factory):
    """The tiny zoo plus two more uploads of the MNIST model, one with a bare card (no data, no results), one whose
    card names a dataset that is not there, with the textures model's card stripped too (its labels name no other
    dataset's classes); indexed twice."""
    root = tmp_path_factory.mktemp("uncarded") / "zoo"
    shutil.copytree(tiny_zoo, root)
    shutil.copytree(root / ORIGINAL, root / COPY)
    (root / COPY / "README.md").write_text("---\nlibrary_name: transformers\npipeline_tag: image-classification\n"
                                           "---\n# A digits classifier\n")
    shutil.copytree(root / ORIGINAL, root / UNREADABLE)
    (root / UNREADABLE / "README.md").write_text("---\nlibrary_name: transformers\n"
                                                 "pipeline_tag: image-classification\ndatasets:\n- k2v-zoo/nowhere\n"
                                                 "---\n# Trained on data not on the Hub\n")
    _strip_datasets(root / TEXTURES / "README.md")
    retriever, rid, rev = load_retriever(str(tiny_retriever))
    out = root.parent / "index"
    indexers = [make_indexer(retriever, retriever_id=rid, retriever_revision=rev) for _ in range(2)]
    reports = [build_index(LocalSource(root), ZooData(root).org, out, indexer, show_progress=False)
               for indexer in indexers]
    return root, out, list(zip(reports, indexers))


def test_a_cardless_model_gets_the_declared_data_it_labels(uncarded):
    """The copy is asked about the digit datasets the other cards name and labels its own training data best
    (0.6 against 0.4 for sklearn digits): its row stores that dataset's fingerprint (the same as the original's),
    says how it was inferred, and reports no accuracy (its card reports none)."""
    root, out, _ = uncarded
    rows = rows_of(out)
    copy, original = rows[COPY], rows[ORIGINAL]
    assert copy["card_datasets"] == []
    dataset = "k2v-zoo/mnist"
    assert copy["data_source"] == f"{dataset}@{folder_revision(root / 'datasets' / dataset)}"
    assert copy["data_note"].startswith("inferred: the card names no dataset") and dataset in copy["data_note"]
    assert copy["reported_accuracy"] is None and original["reported_accuracy"] is not None
    np.testing.assert_allclose(decode_fingerprint(copy["data_fingerprint"], 1280),
                               decode_fingerprint(original["data_fingerprint"], 1280))


def test_a_model_whose_declared_data_cannot_be_read_gets_it_inferred_too(uncarded):
    """A card naming a dataset that is not there: the note keeps why, and the data the model labels stands in."""
    root, out, _ = uncarded
    row = rows_of(out)[UNREADABLE]
    assert row["card_datasets"] == ["k2v-zoo/nowhere"] and row["data_source"].startswith("k2v-zoo/mnist@")
    assert row["data_note"].startswith("inferred: k2v-zoo/nowhere: ") and "not found" in row["data_note"]
    assert row["data_fingerprint"] == rows_of(out)[COPY]["data_fingerprint"]


def test_the_index_card_counts_declared_inferred_and_missing_data(uncarded):
    """The index's dataset card says how many models have the data their card names, how many had it inferred,
    and how many have none."""
    _, out, _ = uncarded
    card = (out / "README.md").read_text()
    assert "| Declared data | 4 model(s) with the data their card names, 2 with data inferred" in card
    assert "1 without (their vector stands in)" in card


def test_a_cardless_model_whose_labels_name_no_declared_data_keeps_none(uncarded):
    """The textures model's labels name no class of the datasets the other cards name: it is not asked, and its row
    says why it has no fingerprint and which datasets it was sought among."""
    _, out, _ = uncarded
    rows = rows_of(out)
    row = rows[TEXTURES]
    assert row["data_fingerprint"] == "" and row["data_note"] == NO_DATASET_NOTE
    named = sorted({d for r in rows.values() for d in r["card_datasets"]})
    assert row["data_pool"] == named and "k2v-zoo/mnist" in named and "k2v-zoo/textures" not in named
    assert all(r["data_pool"] == [] for m, r in rows.items() if m != TEXTURES)


@pytest.fixture(scope="module")
def joined(uncarded, tiny_zoo, tiny_retriever, tmp_path_factory):
    """A copy of the indexed ``uncarded`` org, where the textures row says it was asked about the declared data and
    labelled none well enough (as a run leaves a model whose labels share classes with a dataset it labels badly),
    that a second textures model joins, whose card names the textures data; indexed twice more."""
    root, out, _ = uncarded
    base = tmp_path_factory.mktemp("joined")
    shutil.copytree(root, base / "zoo")
    shutil.copytree(out, base / "index")
    row = {**rows_of(out)[TEXTURES], "data_note": FAILED_NOTE}
    (base / "index" / ROWS_DIR / row_filename(TEXTURES)).write_text(json.dumps(row))
    shutil.copytree(tiny_zoo / TEXTURES, base / "zoo" / JOINED)
    retriever, rid, rev = load_retriever(str(tiny_retriever))
    runs = []
    for _ in range(2):
        indexer = make_indexer(retriever, retriever_id=rid, retriever_revision=rev)
        report = build_index(LocalSource(base / "zoo"), ZooData(base / "zoo").org, base / "index", indexer,
                             show_progress=False)
        runs.append((report, indexer))
    return base / "zoo", base / "index", runs


def test_a_model_without_data_is_asked_again_once_a_dataset_joins_the_org(joined):
    """Once a card of the org names the textures data, the next run asks the textures model, which labelled none
    of the earlier datasets, about it (without querying its knowledge again) and it gets that fingerprint; the run
    after that asks nothing."""
    root, out, ((first, first_indexer), (second, second_indexer)) = joined
    row = rows_of(out)[TEXTURES]
    assert first.indexed == [JOINED] and TEXTURES in first.reused
    assert row["data_source"] == f"k2v-zoo/textures@{folder_revision(root / 'datasets' / 'k2v-zoo/textures')}"
    assert row["data_note"].startswith("inferred: the card names no dataset") and row["data_pool"] == []
    assert first_indexer.data_queries > 0 and first.queries >= first_indexer.data_queries
    assert second.queries == 0 and second_indexer.data_queries == 0 and not second.indexed


def test_inference_queries_are_counted_once(uncarded):
    """The first run asks each of the two copies about 8 images of each of its 5 classes in both digit datasets
    (MNIST and sklearn digits) and counts them in the report; the second reuses every row and asks nothing."""
    _, out, ((first, first_indexer), (second, second_indexer)) = uncarded
    assert first_indexer.data_queries == 2 * 2 * 5 * PER_CLASS
    assert first.queries >= first_indexer.data_queries
    assert second.queries == 0 and second_indexer.data_queries == 0
    assert not second.indexed and len(second.reused) == len(rows_of(out))


def test_find_model_ranks_the_cardless_model_by_its_inferred_data(uncarded, tiny_retriever):
    """On an MNIST task the copy is scored by its data, like the original, not by its vector."""
    root, out, _ = uncarded
    zoo = ZooData(root)
    task = next(t for t in zoo.task_ids(kind="nnr") if zoo.task(t)["source"] == "mnist")
    matches = find_model(str(zoo.task_path(task)), str(out), top_k=10, rerank=None, show_progress=False,
                         retriever=str(tiny_retriever))
    by_id = {m.model_id: m for m in matches}
    assert by_id[COPY].data_score is not None and by_id[COPY].stage.startswith("data")
    assert by_id[COPY].data_score == pytest.approx(by_id[ORIGINAL].data_score, abs=0.03)


def test_a_row_without_data_is_sought_again_only_when_a_new_dataset_is_named():
    """The rule a rerun applies to a reused row: rows with a fingerprint are kept, a row without one is sought again
    only when the org's cards name a dataset its ``data_pool`` does not list (or it predates fingerprints)."""
    pool = DeclaredPool(None, ["org/b", "org/a", "org/a"])
    none = {"data_fingerprint": "", "data_note": NO_DATASET_NOTE}
    assert not data_unread({**none, "data_pool": ["org/a", "org/b"]}, pool)
    assert not data_unread({**none, "data_pool": ["org/a", "org/b", "org/gone"]}, pool)
    assert data_unread({**none, "data_pool": ["org/a"]}, pool)
    assert data_unread({**none, "data_note": FAILED_NOTE, "data_pool": ["org/a"]}, pool)
    assert data_unread(none, pool)  # written before the column existed
    assert not data_unread({"data_fingerprint": "AAAA", "data_pool": []}, pool)
    assert data_unread({"model_id": "org/m"}, pool)  # written before fingerprints
    assert not data_unread({**none, "data_pool": []}, DeclaredPool(None, []))


class _ColourOracle(Oracle):
    """A black box that answers ``a`` for reddish images and ``b`` for the others (``right=False``: the reverse),
    showing only its top label (the others NaN, as the ``label`` view does)."""

    def __init__(self, right: bool = True):
        super().__init__(["a", "b"])
        self.right = right

    def _predict_batch(self, images):
        red = np.array([np.asarray(im)[..., 0].mean() > 127 for im in images])
        red = red if self.right else ~red
        scores = np.stack([red, ~red], axis=1).astype(np.float32)
        scores[scores == 0] = np.nan  # as the `label` view answers: the top label only
        return scores


def _colour_dataset(root, dataset_id: str, *, corrupt: bool = False) -> None:
    """A dataset repo of 4 red ``a`` and 4 blue ``b`` images (one undecodable with ``corrupt``) under ``root``."""
    def png(colour):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
        return buf.getvalue()

    cells = [{"bytes": png((255, 0, 0)), "path": None}] * 4 + [{"bytes": png((0, 0, 255)), "path": None}] * 4
    if corrupt:
        cells[0] = {"bytes": b"not an image", "path": None}
    ds = datasets.Dataset.from_dict({"image": cells, "label": [0] * 4 + [1] * 4},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.ClassLabel(names=["a", "b"])}))
    folder = root / "datasets" / dataset_id / "data"
    folder.mkdir(parents=True)
    ds.to_parquet(str(folder / "train-00000-of-00001.parquet"))


class _Extractor:
    dim = 3

    def __call__(self, images, show_progress=False):
        return np.stack([np.asarray(im, dtype=np.float32).mean(axis=(0, 1)) for im in images])


def test_inference_skips_a_broken_dataset_and_a_model_at_chance(tmp_path):
    """A declared dataset with an undecodable image is not asked about and costs only itself; a model that labels
    the images worse than twice chance gets no fingerprint, and the images it was asked about are counted."""
    _colour_dataset(tmp_path, "org/broken", corrupt=True)
    _colour_dataset(tmp_path, "org/colours")
    pool = DeclaredPool(LocalSource(tmp_path), ["org/colours", "org/broken", "org/colours"])
    assert pool.names == ["org/broken", "org/colours"]
    cols, queries = infer_data_columns(pool, ["A", "b"], lambda: _ColourOracle(), _Extractor())
    assert queries == 8 and cols["data_source"].startswith("org/colours@")
    assert "100% of 8 images of org/colours" in cols["data_note"]
    assert decode_fingerprint(cols["data_fingerprint"], 3).shape == (2, 3)
    cols, queries = infer_data_columns(pool, ["a", "b"], lambda: _ColourOracle(right=False), _Extractor())
    assert cols is None and queries == 8
    asked = []
    cols, queries = infer_data_columns(pool, ["a", "z"], lambda: asked.append(1), _Extractor())
    assert cols is None and queries == 0 and not asked  # one shared label: nothing to ask about
