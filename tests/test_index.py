"""The index (`k2v_hub.index`): incremental reruns, its files (parquet, dataset card, k2v_index.json) and schema.

Runs in-process on copies of the session's tiny index and zoo (the fixtures are never modified). Queries are
counted with a private knowledge cache, so "0 queries" means no model was asked anything.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import k2v_hub
from k2v_hub.hub import LocalSource, folder_revision
from k2v_hub.index import (
    CARD_FILE,
    DATA_FILE,
    META_FILE,
    ROWS_DIR,
    best_first,
    Indexer,
    build_index,
    load_index,
    row_filename,
)
from k2v_hub.knowledge import KnowledgeRecord
from k2v_hub.zoo.data import ZooData

from fakes import one_torch_thread, rows_of  # noqa: E402

STRING, INT = "string", "int64"
PROMISED_COLUMNS = {  # name -> arrow type check
    "model_id": STRING, "revision": STRING, "labels": "list of strings", "embedding": "float32 vector",
    "knowledge": STRING, "retriever_id": STRING, "retriever_revision": STRING, "feature_space": STRING,
    "probe_fingerprint": STRING, "k2v_hub_version": STRING, "n_queries": INT, "created_at": STRING,
}


def _arrow_type_is(t, kind: str) -> bool:
    import pyarrow as pa

    if kind == STRING:
        return pa.types.is_string(t) or pa.types.is_large_string(t)
    if kind == INT:
        return pa.types.is_int64(t)
    is_list = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    if kind == "list of strings":
        return is_list and _arrow_type_is(t.value_type, STRING)
    return is_list and pa.types.is_float32(t.value_type)


class NoQuerySource(LocalSource):
    """A local zoo that fails the test if any model is downloaded (so: queried)."""

    def snapshot(self, ref, *, allow_pickle=False):
        raise AssertionError(f"{ref.model_id} was downloaded, so it would have been queried")


@pytest.fixture(scope="module")
def indexer(tiny_retriever, tmp_path_factory) -> Indexer:
    """The tiny index's settings (same retriever, probes, view), with a private, empty knowledge cache."""
    from k2v_hub.index import load_retriever
    from k2v_hub.pipeline import make_indexer

    retriever, rid, rev = load_retriever(str(tiny_retriever))
    return make_indexer(retriever, retriever_id=rid, retriever_revision=rev,
                        cache_dir=tmp_path_factory.mktemp("knowledge"))


@pytest.fixture
def index_copy(tiny_index, tmp_path) -> Path:
    out = tmp_path / "index"
    shutil.copytree(tiny_index, out)
    return out


@pytest.fixture
def zoo_copy(tiny_zoo, tmp_path) -> tuple[Path, str, list[str]]:
    """The tiny zoo's repos (only the org folder and popularity) in a folder a test may edit."""
    zoo = ZooData(tiny_zoo)
    root = tmp_path / "zoo"
    shutil.copytree(tiny_zoo / zoo.org, root / zoo.org)
    if (tiny_zoo / "popularity.json").is_file():
        shutil.copy(tiny_zoo / "popularity.json", root / "popularity.json")
    return root, zoo.org, zoo.model_ids


def assert_untouched(old: dict, new: dict):
    np.testing.assert_array_equal(np.asarray(old["embedding"], np.float32), np.asarray(new["embedding"], np.float32))
    for key in ("knowledge", "created_at", "revision", "n_queries", "retriever_fingerprint"):
        assert old[key] == new[key], key


# ------------------------------------------------------------------------------------------------ incremental
def test_rerun_reuses_every_row_without_a_query(tiny_zoo, index_copy, indexer):
    before = rows_of(index_copy)
    seen = []
    report = build_index(NoQuerySource(tiny_zoo), ZooData(tiny_zoo).org, index_copy, indexer,
                         show_progress=False, on_row=seen.append)
    assert sorted(report.reused) == sorted(before) == ZooData(tiny_zoo).model_ids
    assert report.indexed == report.reencoded == [] and report.skipped == {}
    assert report.queries == 0 and seen == []
    after = rows_of(index_copy)
    assert sorted(after) == sorted(before)
    for model_id in before:
        assert_untouched(before[model_id], after[model_id])


def test_rows_from_before_fingerprints_gain_them_on_a_rerun_without_a_query(tiny_zoo, index_copy, indexer):
    """Rows journaled before the declared-data columns existed: the rerun reuses them (no query) and reads their
    cards' data and reported accuracy once."""
    before = rows_of(index_copy)
    for model_id, row in before.items():
        old = {k: v for k, v in row.items()
               if k not in ("data_fingerprint", "data_source", "data_note", "reported_accuracy", "data_pool")}
        (index_copy / ROWS_DIR / row_filename(model_id)).write_text(json.dumps(old))
    report = build_index(NoQuerySource(tiny_zoo), ZooData(tiny_zoo).org, index_copy, indexer, show_progress=False)
    assert sorted(report.reused) == sorted(before) and report.queries == 0
    after = rows_of(index_copy)
    for model_id in before:
        assert_untouched(before[model_id], after[model_id])
        for key in ("data_fingerprint", "data_source", "reported_accuracy"):
            assert after[model_id][key] == before[model_id][key] and after[model_id][key], key


def test_changed_revision_is_requeried_alone(zoo_copy, index_copy, indexer):
    root, org, ids = zoo_copy
    before = rows_of(index_copy)
    changed = ids[0]
    with open(root / changed / "README.md", "a") as f:
        f.write("\nRetrained: a new revision.\n")
    with one_torch_thread():
        report = build_index(LocalSource(root), org, index_copy, indexer, show_progress=False)
    assert report.indexed == [changed]
    assert sorted(report.reused) == sorted(set(ids) - {changed}) and report.reencoded == []
    after = rows_of(index_copy)
    assert report.queries == after[changed]["n_queries"] > 0
    assert after[changed]["revision"] == folder_revision(root / changed) != before[changed]["revision"]
    for model_id in set(ids) - {changed}:
        assert_untouched(before[model_id], after[model_id])
    # the journal holds the new row too
    journaled = json.loads((index_copy / ROWS_DIR / row_filename(changed)).read_text())
    assert journaled["revision"] == after[changed]["revision"]


def _other_retriever(indexer: Indexer, folder: Path) -> Indexer:
    """The same retriever with perturbed weights, saved to ``folder``, behind an indexer with the same probes."""
    import copy

    import torch

    from k2v_hub.index import load_retriever
    from k2v_hub.pipeline import save_retriever

    retriever = copy.deepcopy(indexer.retriever)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for p in retriever.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    save_retriever(retriever, folder)
    retriever, rid, rev = load_retriever(str(folder))
    settings = dataclasses.replace(indexer.settings, retriever_id=rid, retriever_revision=rev,
                                   retriever_fingerprint=retriever.fingerprint())
    assert settings.retriever_fingerprint != indexer.settings.retriever_fingerprint
    return Indexer(retriever, indexer.extractor, indexer.probes, settings, cache_dir=indexer.cache_dir)


def test_new_retriever_reencodes_every_row_from_stored_knowledge(tiny_zoo, index_copy, indexer, tmp_path):
    org, ids = ZooData(tiny_zoo).org, ZooData(tiny_zoo).model_ids
    before = rows_of(index_copy)
    other = _other_retriever(indexer, tmp_path / "retriever-2")
    source = NoQuerySource(tiny_zoo)
    with one_torch_thread():
        # a partial run first: the index never mixes builds, so it holds only the re-encoded rows meanwhile
        report = build_index(source, org, index_copy, other, limit=2, show_progress=False)
        assert report.reencoded == ids[:2] and report.queries == 0
        assert sorted(r.model_id for r in load_index(index_copy).rows) == ids[:2]
        assert len(list((index_copy / ROWS_DIR).glob("*.json"))) == len(ids)  # the rest waits in the journal
        report = build_index(source, org, index_copy, other, show_progress=False)
    assert sorted(report.reencoded) == ids[2:] and sorted(report.reused) == ids[:2]
    assert report.indexed == [] and report.queries == 0
    after = rows_of(index_copy)
    assert sorted(after) == ids
    for model_id in ids:
        old, new = before[model_id], after[model_id]
        for key in ("knowledge", "created_at", "revision", "n_queries", "labels"):
            assert old[key] == new[key], key
        assert new["retriever_fingerprint"] == other.settings.retriever_fingerprint
        assert not np.allclose(old["embedding"], new["embedding"], atol=1e-4)
        record = KnowledgeRecord.from_json(new["knowledge"])
        with one_torch_thread():
            np.testing.assert_allclose(new["embedding"], other.embed(record), atol=1e-5)
    idx = load_index(index_copy)
    assert idx.meta["retriever_fingerprint"] == other.settings.retriever_fingerprint
    assert idx.meta["retriever_id"] == other.settings.retriever_id


def test_moved_retriever_keeps_rows_and_a_loadable_index(tiny_zoo, index_copy, indexer, tmp_path):
    """Same weights under another id (a moved folder, a Hub id instead of a path): no re-encoding, and the rows
    take the new id so the index still agrees with its k2v_index.json."""
    before = rows_of(index_copy)
    moved = Indexer(indexer.retriever, indexer.extractor, indexer.probes,
                    dataclasses.replace(indexer.settings, retriever_id="k2v-zoo/k2v-retriever",
                                        retriever_revision="a" * 40), cache_dir=indexer.cache_dir)
    report = build_index(NoQuerySource(tiny_zoo), ZooData(tiny_zoo).org, index_copy, moved, show_progress=False)
    assert sorted(report.reused) == sorted(before) and report.queries == 0
    idx = load_index(index_copy)
    assert {r.retriever_id for r in idx.rows} == {"k2v-zoo/k2v-retriever"}
    for row in idx.rows:
        assert_untouched(before[row.model_id], row.to_dict())


def test_other_bisection_steps_requery(tiny_zoo, index_copy, indexer):
    """Knowledge built with other settings is not reused (only the first model, to keep it short)."""
    coarse = Indexer(indexer.retriever, indexer.extractor, indexer.probes,
                     dataclasses.replace(indexer.settings, bisection_steps=2), cache_dir=indexer.cache_dir)
    with one_torch_thread():
        report = build_index(LocalSource(tiny_zoo), ZooData(tiny_zoo).org, index_copy, coarse, limit=1,
                             show_progress=False)
    first = ZooData(tiny_zoo).model_ids[0]
    assert report.indexed == [first] and report.queries > 0
    assert json.loads(rows_of(index_copy)[first]["knowledge"])["bisection_steps"] == 2


# ------------------------------------------------------------------------------------------------ files
def test_parquet_loads_with_datasets_and_load_index(tiny_index, tiny_zoo, tmp_path):
    import datasets

    ids = ZooData(tiny_zoo).model_ids
    meta = json.loads((tiny_index / META_FILE).read_text())
    ds = datasets.load_dataset("parquet", data_files=str(tiny_index / DATA_FILE), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert sorted(ds["model_id"]) == ids
    emb = ds.with_format("numpy")[:]["embedding"]
    assert emb.shape == (len(ids), meta["embed_dim"])
    # the card's `configs` make the folder itself loadable too (what `load_dataset("org/k2v-index")` does)
    ds2 = datasets.load_dataset(str(tiny_index), split="train", cache_dir=str(tmp_path / "cache2"))
    assert sorted(ds2["model_id"]) == ids

    idx = load_index(tiny_index)
    assert len(idx) == len(ids) and idx.embeddings.shape == (len(ids), meta["embed_dim"])
    np.testing.assert_allclose(np.linalg.norm(idx.embeddings, axis=1), 1, atol=1e-3)
    assert idx.meta["n_models"] == len(ids)
    stage = idx.first_stage(idx.embeddings[0])
    assert best_first(stage.scores, 1).tolist() == [0] and stage.knowledge[0] == pytest.approx(1, abs=1e-3)


def test_dataset_card_has_metadata_and_lists_models(tiny_index, tiny_zoo):
    from huggingface_hub import DatasetCard

    text = (tiny_index / CARD_FILE).read_text()
    assert text.startswith("---\n")
    card = DatasetCard.load(tiny_index / CARD_FILE)
    data = card.data.to_dict()
    assert "k2v-hub" in data["tags"] and data["license"]
    assert data["configs"][0]["data_files"][0]["path"] == "data/train-*.parquet"
    for model_id in ZooData(tiny_zoo).model_ids:
        assert model_id in card.text
    meta = json.loads((tiny_index / META_FILE).read_text())
    assert meta["retriever_fingerprint"] in card.text and meta["probe_fingerprint"] in card.text


def test_meta_file_describes_the_build(tiny_index, tiny_retriever):
    from k2v_hub.retriever import Retriever

    meta = json.loads((tiny_index / META_FILE).read_text())
    retriever = Retriever.from_pretrained(str(tiny_retriever))
    assert meta["retriever_id"] == str(Path(tiny_retriever).resolve())
    assert meta["retriever_revision"] == "local"
    assert meta["retriever_fingerprint"] == retriever.fingerprint()
    assert meta["feature_space"] == retriever.feature_space
    assert re.fullmatch(r"[0-9a-f]{16}", meta["probe_fingerprint"])
    assert isinstance(meta["probe_spec"], dict) and meta["probe_spec"]["source"] == "builtin"
    assert meta["oracle_view"] == "full" and meta["embed_dim"] == retriever.embed_dim
    assert meta["k2v_hub_version"] == k2v_hub.__version__
    datetime.fromisoformat(meta["updated_at"])


def test_schema_has_every_promised_column(tiny_index, tiny_zoo):
    table = pq.read_table(tiny_index / DATA_FILE)
    types = {f.name: f.type for f in table.schema}
    for name, kind in PROMISED_COLUMNS.items():
        assert name in types, f"column {name} missing"
        assert _arrow_type_is(types[name], kind), f"column {name} is {types[name]}, not a {kind}"
    meta = json.loads((tiny_index / META_FILE).read_text())
    zoo = ZooData(tiny_zoo)
    for row in table.to_pylist():
        folder = tiny_zoo / row["model_id"]
        assert row["revision"] == folder_revision(folder) and re.fullmatch(r"[0-9a-f]{40}", row["revision"])
        config = json.loads((folder / "config.json").read_text())
        assert row["labels"] == [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
        assert len(row["embedding"]) == meta["embed_dim"]
        record = KnowledgeRecord.from_json(row["knowledge"])  # the raw knowledge record, re-encodable
        assert record.n_queries == row["n_queries"] > 0 and record.probe_fingerprint == row["probe_fingerprint"]
        for key in ("retriever_id", "retriever_revision", "retriever_fingerprint", "feature_space",
                    "probe_fingerprint", "oracle_view"):
            assert row[key] == meta[key], key
        assert row["k2v_hub_version"] == k2v_hub.__version__
        assert datetime.fromisoformat(row["created_at"]).tzinfo is not None
        assert row["model_id"] in zoo.models


def test_every_vector_is_reproduced_from_its_stored_knowledge(tiny_index, indexer):
    """A row's embedding is the retriever applied to its `knowledge` column: a fresh query, a cache hit and a
    later re-encoding all give the same vector."""
    with one_torch_thread():
        for row in pq.read_table(tiny_index / DATA_FILE).to_pylist():
            vector = indexer.embed(KnowledgeRecord.from_json(row["knowledge"]))
            np.testing.assert_allclose(row["embedding"], vector, atol=1e-5, err_msg=row["model_id"])
