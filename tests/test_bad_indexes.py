"""Bad indexes: another feature space, another retriever, another library version, truncated or tampered parquet,
no rows, missing settings. Each is a one-line `IndexError_` that says what to do, never a silently wrong ranking.

Version policy (decided here, documented in `k2v_hub.find`): an index is usable only by a k2v-hub with the same
``major.minor`` as the one that built it; patch releases are compatible.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from k2v_hub import __version__
from k2v_hub.errors import IndexError_, K2VError
from k2v_hub.find import find_model
from k2v_hub.index import DATA_FILE, META_FILE

from fakes import FEATURE_SPACE, build_fast_index  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_fast_index(tmp_path_factory.mktemp("fast"))


@pytest.fixture()
def index(built, tmp_path) -> Path:
    """A private copy of the good index (tests tamper with it)."""
    copy = tmp_path / "index"
    shutil.copytree(built[0], copy)
    return copy


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)) for _ in range(6)]
    return datasets.Dataset.from_dict({"image": images, "label": [0, 1, 2] * 2})


def find(index, dataset, **kw):
    return find_model(dataset, index, top_k=3, show_progress=False, **kw)


def refused(index, dataset, match, **kw) -> str:
    with pytest.raises(IndexError_, match=match) as info:
        find(index, dataset, **kw)
    message = str(info.value)
    assert "\n" not in message and info.value.hint, message
    assert isinstance(info.value, K2VError) and info.value.exit_code == 4
    return message


def rewrite_rows(index: Path, change) -> None:
    """Apply ``change(rows)`` to the parquet rows (list of dicts) and write them back with the same schema."""
    table = pq.read_table(index / DATA_FILE)
    rows = table.to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), index / DATA_FILE)


def rewrite_meta(index: Path, **changes) -> None:
    meta = json.loads((index / META_FILE).read_text())
    meta.update(changes)
    (index / META_FILE).write_text(json.dumps(meta))


def set_everywhere(index: Path, key: str, value) -> None:
    """Change a shared setting consistently (meta and every row), as a real build with other settings would."""
    rewrite_meta(index, **{key: value})

    def change(rows):
        for r in rows:
            r[key] = value

    rewrite_rows(index, change)


# --------------------------------------------------------------------------- the good index works


def test_good_index(index, dataset):
    matches = find(index, dataset)
    assert len(matches) == 3 and all(np.isfinite(m.score) for m in matches)


# --------------------------------------------------------------------------- incompatible builds


def test_another_feature_space(index, dataset):
    set_everywhere(index, "feature_space", "pixels-16")
    refused(index, dataset, match="Feature space mismatch: retriever 'pixels-8', index 'pixels-16'")


def test_another_retriever(index, dataset, built, tmp_path):
    from k2v_hub.pipeline import new_retriever
    from k2v_hub.retriever import Retriever

    original = Retriever.from_pretrained(built[1])
    other = new_retriever(type("E", (), {"name": FEATURE_SPACE, "dim": original.config["feature_dim"]})(),
                          probe_spec=original.probe_spec, probe_fingerprint=original.probe_fingerprint,
                          max_classes=4, embed_dim=16, hidden_dim=16, seed=1)
    assert other.fingerprint() != original.fingerprint()
    message = refused(index, dataset, match="is not the one the index was built with", retriever=other)
    assert "re-encode" in message
    other.save_pretrained(tmp_path / "other")  # the retriever folder the index names was replaced
    rewrite_meta(index, retriever_id=str(tmp_path / "other"))
    set_everywhere(index, "retriever_id", str(tmp_path / "other"))
    refused(index, dataset, match="is not the one the index was built with")


def test_retriever_the_index_names_is_gone(index, dataset, tmp_path):
    set_everywhere(index, "retriever_id", str(tmp_path / "gone"))
    refused(index, dataset, match="Could not load retriever")


@pytest.mark.parametrize("version, ok", [
    (__version__, True),
    (".".join(__version__.split(".")[:2] + ["99"]), True),  # another patch release: compatible
    ("0.0.9", False),
    ("9.1.0", False),
    ("garbage", False),
])
def test_library_version(index, dataset, version, ok):
    set_everywhere(index, "k2v_hub_version", version)
    if ok:
        assert len(find(index, dataset)) == 3
    else:
        refused(index, dataset, match="k2v-hub")


def test_library_version_of_one_row(index, dataset):
    def change(rows):
        rows[1]["k2v_hub_version"] = "0.0.1"

    rewrite_rows(index, change)
    refused(index, dataset, match="Row 'fake-org/linear-1' was built by k2v-hub 0.0.1")


def test_library_version_missing(index, dataset):
    meta = json.loads((index / META_FILE).read_text())
    del meta["k2v_hub_version"]
    (index / META_FILE).write_text(json.dumps(meta))
    refused(index, dataset, match="does not say which k2v-hub version")


# --------------------------------------------------------------------------- damaged files


def test_truncated_parquet(index, dataset):
    data = (index / DATA_FILE).read_bytes()
    (index / DATA_FILE).write_bytes(data[: len(data) // 2])
    refused(index, dataset, match="truncated or not parquet")
    (index / DATA_FILE).write_bytes(b"")
    refused(index, dataset, match="truncated or not parquet")


def test_parquet_without_a_column(index, dataset):
    table = pq.read_table(index / DATA_FILE)
    pq.write_table(table.drop_columns(["embedding"]), index / DATA_FILE)
    refused(index, dataset, match="could not be loaded")


@pytest.mark.parametrize("tamper, match", [
    (lambda r: r[0].update(embedding=[x * 2 for x in r[0]["embedding"]]), "not unit vectors"),
    (lambda r: r[2].update(embedding=[float("nan")] * len(r[2]["embedding"])), "malformed embeddings"),
    (lambda r: r[1].update(retriever_fingerprint="0123456789abcdef"), "retriever_fingerprint"),
    (lambda r: r[3].update(feature_space="pixels-16"), "feature_space"),
    (lambda r: r[0].update(probe_fingerprint="feedfeedfeedfeed"), "probe_fingerprint"),
    (lambda r: r[0].update(oracle_view="top5"), "oracle_view"),
])
def test_tampered_rows(index, dataset, tamper, match):
    rewrite_rows(index, tamper)
    refused(index, dataset, match=match)


def test_embeddings_of_another_dimension(index, dataset):
    def change(rows):
        for r in rows:
            v = np.asarray(r["embedding"][:8], dtype=np.float64)
            r["embedding"] = (v / np.linalg.norm(v)).tolist()

    table = pq.read_table(index / DATA_FILE)
    rows = table.to_pylist()
    change(rows)
    schema = table.schema.set(table.schema.get_field_index("embedding"), pa.field("embedding", pa.list_(pa.float32())))
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), index / DATA_FILE)
    refused(index, dataset, match="8-d vectors but the retriever makes 16-d ones")


def test_index_with_zero_rows(built, tmp_path, dataset):
    from k2v_hub.index import write_index

    (tmp_path / "empty").mkdir()
    write_index(tmp_path / "empty", {}, built[2])
    assert pq.read_table(tmp_path / "empty" / DATA_FILE).num_rows == 0
    assert "k2v-hub index" in refused(tmp_path / "empty", dataset, match="has no rows")


def test_missing_or_broken_settings(index, dataset):
    meta = (index / META_FILE).read_text()
    (index / META_FILE).unlink()
    refused(index, dataset, match="not a k2v-hub index")
    (index / META_FILE).write_text("{ not json")
    refused(index, dataset, match="not valid JSON")
    (index / META_FILE).write_text("[1, 2, 3]")
    refused(index, dataset, match="could not be loaded")
    (index / META_FILE).write_text(meta)
    (index / DATA_FILE).unlink()
    refused(index, dataset, match="not a k2v-hub index")


def test_not_an_index_at_all(tmp_path, dataset):
    refused(tmp_path / "nowhere", dataset, match="neither a folder nor a Hub dataset id")
    refused(tmp_path, dataset, match="not a k2v-hub index")


def test_hub_index_offline(dataset, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(K2VError) as info:
        find("k2v-nobody/k2v-index", dataset)
    assert "\n" not in str(info.value) and info.value.hint


def test_cli_bad_index_one_line(index, dataset, tmp_path):
    import contextlib
    import io

    from k2v_hub.cli import main

    dataset.save_to_disk(tmp_path / "ds")
    set_everywhere(index, "k2v_hub_version", "0.0.1")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as e:
        main(["find", "--dataset", str(tmp_path / "ds"), "--index", str(index), "--format", "json"])
    lines = err.getvalue().strip().splitlines()
    assert e.value.code == 4 and len(lines) == 1 and "built by k2v-hub 0.0.1" in lines[0]
    assert "Traceback" not in err.getvalue()
