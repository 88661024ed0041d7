"""Sharded indexing: two `torchrun` processes split the org, and manual `--shard i/n` runs, against one process.

The reference is the session's tiny index (one process, same retriever and settings). The torchrun run starts
from an empty K2V_HUB_HOME, so both processes really query their models; the gathered index must hold the same
models with the same embeddings (to 1e-5).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from k2v_hub.hub import LocalSource
from k2v_hub.index import META_FILE, ROWS_DIR, build_index, load_index
from k2v_hub.zoo.data import ZooData

from fakes import console_script, one_torch_thread, rows_of  # noqa: E402

TIMEOUT = 420


def assert_same_index(got_dir: Path, ref_dir: Path):
    """Same models at the same revisions, same embeddings (1e-5), same shared settings."""
    got, ref = rows_of(got_dir), rows_of(ref_dir)
    assert sorted(got) == sorted(ref)
    for model_id, row in ref.items():
        assert got[model_id]["revision"] == row["revision"]
        assert got[model_id]["labels"] == row["labels"]
        np.testing.assert_allclose(got[model_id]["embedding"], row["embedding"], atol=1e-5, err_msg=model_id)
    meta_got, meta_ref = (json.loads((d / META_FILE).read_text()) for d in (got_dir, ref_dir))
    for key in ("retriever_id", "retriever_fingerprint", "feature_space", "probe_fingerprint", "oracle_view",
                "embed_dim", "n_models"):
        assert meta_got[key] == meta_ref[key], key
    load_index(got_dir)


def test_torchrun_two_processes_gather_the_single_process_index(tiny_zoo, tiny_retriever, tiny_index, k2v_home,
                                                                 tmp_path):
    ids = ZooData(tiny_zoo).model_ids
    home = tmp_path / "home"  # no knowledge cache: both processes query their share
    home.mkdir()
    if (k2v_home / "backbones").is_dir():  # the converted backbone only, to save a conversion
        shutil.copytree(k2v_home / "backbones", home / "backbones")
    out, logs = tmp_path / "index", tmp_path / "logs"
    env = {**os.environ, "K2V_HUB_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "DISABLE_SAFETENSORS_CONVERSION": "1"}
    cmd = [*console_script("torchrun"), "--standalone", "--nproc_per_node", "2", "--log-dir", str(logs), "--redirects", "3",
           "-m", "k2v_hub.cli", "index", "--org", ZooData(tiny_zoo).org, "--zoo", str(tiny_zoo), "--out", str(out),
           "--retriever", str(tiny_retriever), "--format", "json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    rank_logs = {int(p.parent.name): p for p in logs.rglob("stdout.log")}
    detail = "\n".join(f"rank {r} stdout:\n{p.read_text()[-2000:]}\n"
                       f"stderr:\n{(p.parent / 'stderr.log').read_text()[-3000:]}"
                       for r, p in sorted(rank_logs.items()))
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stderr[-3000:]}\n{detail}"
    assert sorted(rank_logs) == [0, 1], detail
    reports = {r: json.loads(p.read_text()) for r, p in rank_logs.items()}

    # each process queried its own contiguous slice; the main process's report covers both
    part0, part1 = reports[0]["indexed"], reports[1]["indexed"]
    assert part1 and set(part1) < set(part0) and sorted(part0) == ids, reports
    mine0 = [m for m in part0 if m not in part1]
    assert mine0 == ids[:len(mine0)] and part1 == ids[len(mine0):], "not contiguous slices"
    assert abs(len(mine0) - len(part1)) <= 1
    rows = rows_of(out)
    assert reports[0]["queries"] == sum(r["n_queries"] for r in rows.values()) > 0
    assert reports[1]["queries"] == sum(rows[m]["n_queries"] for m in part1)
    assert len(list((out / ROWS_DIR).glob("*.json"))) == len(ids)
    assert_same_index(out, tiny_index)


@pytest.fixture(scope="module")
def indexer(tiny_retriever):
    """The tiny index's settings; knowledge comes from the session cache (what is tested here is the split)."""
    from k2v_hub.index import load_retriever
    from k2v_hub.pipeline import make_indexer

    retriever, rid, rev = load_retriever(str(tiny_retriever))
    return make_indexer(retriever, retriever_id=rid, retriever_revision=rev)


def test_manual_shards_then_a_plain_run_give_the_single_process_index(tiny_zoo, tiny_index, indexer, tmp_path):
    org, ids = ZooData(tiny_zoo).org, ZooData(tiny_zoo).model_ids
    source, out = LocalSource(tiny_zoo), tmp_path / "index"
    with one_torch_thread():
        first = build_index(source, org, out, indexer, shard=(0, 2), show_progress=False)
        assert first.indexed == ids[0::2]
        assert sorted(rows_of(out)) == ids[0::2]  # a shard's index holds what is done so far
        second = build_index(source, org, out, indexer, shard=(1, 2), show_progress=False)
        assert second.indexed == ids[1::2] and second.reused == []
        assert sorted(rows_of(out)) == ids
        final = build_index(source, org, out, indexer, show_progress=False)
    assert sorted(final.reused) == ids and final.indexed == final.reencoded == [] and final.queries == 0
    assert_same_index(out, tiny_index)


def test_shards_on_separate_folders_merge_through_a_plain_run(tiny_zoo, tiny_index, indexer, tmp_path):
    """Two machines without a shared folder: each shard writes its own index; copying one's journal into the
    other and running once more completes it without a query."""
    org, ids = ZooData(tiny_zoo).org, ZooData(tiny_zoo).model_ids
    source = LocalSource(tiny_zoo)
    a, b = tmp_path / "machine-a", tmp_path / "machine-b"
    with one_torch_thread():
        build_index(source, org, a, indexer, shard=(0, 2), show_progress=False)
        build_index(source, org, b, indexer, shard=(1, 2), show_progress=False)
        for f in (b / ROWS_DIR).glob("*.json"):
            shutil.copy(f, a / ROWS_DIR / f.name)
        final = build_index(source, org, a, indexer, show_progress=False)
    assert sorted(final.reused) == ids and final.queries == 0
    assert_same_index(a, tiny_index)


def test_torch_distributed_state_is_not_made_for_one_process(monkeypatch):
    from k2v_hub.index import _partial_state

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert _partial_state(None) is None
    assert _partial_state(False) is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert _partial_state(None) is None
