"""An org index no repo can stop: hostile repos (30,000 px images, 100,000 labels, configs larger than their weights,
oversized files, configs pointing elsewhere, a query that runs out of memory) are skipped with a one-line reason
before they size an allocation, the org's good models are indexed, ImageNet-21k sized heads (21,843 labels) too,
and the peak memory of `k2v-hub index` over the org stays near that of the same org without them.

The org is the tiny zoo's models plus the repos of ``k2v_hub.testing.hostile.HOSTILE``, made from its ResNet.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from k2v_hub.errors import ModelRefused
from k2v_hub.limits import (
    MAX_IMAGE_SIDE,
    MAX_LABELS,
    MAX_WEIGHT_BYTES,
    batch_for,
    check_config,
    check_file_sizes,
    image_side,
    read_json_object,
)
from k2v_hub.testing.hostile import BISECTION_STEPS, IMAGENET_21K, MAX_CLASSES, ORG, PROBE

# How far the hostile org's peak may rise above the clean org's: one 30,000 px image alone is 20 GiB as float64.
PEAK_BOUND_MIB = 512

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def check_outcomes(expect: dict, indexed, skipped: dict) -> None:
    """Every good model indexed, every hostile one skipped with a one-line reason holding the expected words."""
    assert sorted(indexed) == sorted(m for m, o in expect.items() if o == "indexed"), skipped
    assert sorted(skipped) == sorted(m for m, o in expect.items() if o != "indexed")
    for model_id, reason in skipped.items():
        assert "\n" not in reason and len(reason) < 400, reason
        for word in expect[model_id]:
            assert word in reason, (model_id, word, reason)


# --------------------------------------------------------------------------- the limits themselves


@pytest.mark.parametrize("processor, side", [
    ({"size": {"height": 224, "width": 224}}, 224),
    ({"size": 384, "crop_size": {"height": 256, "width": 256}}, 384),
    ({"size": {"shortest_edge": 224}, "crop_pct": 0.875}, 256),
    ({"size": [512, 512], "do_resize": True}, 512),
    ({"do_resize": False, "image_mean": [0.5, 0.5, 0.5]}, 0),
    ({"size": {"height": 224, "width": 224}, "do_pad": True, "pad_size": {"height": 1024, "width": 1024}}, 1024),
])
def test_image_side_of_real_processors(processor, side):
    assert image_side(processor, "m") == side


@pytest.mark.parametrize("processor", [
    {"size": {"height": 30_000, "width": 224}},
    {"size": {"shortest_edge": 224, "longest_edge": 30_000}},
    {"crop_size": 1025},
    {"size": {"shortest_edge": 224}, "crop_pct": 0.01},
    {"size": {"shortest_edge": 224}, "crop_pct": 0},
    {"size": {"shortest_edge": 224}, "crop_pct": "0.9"},
    {"size": float("inf")},
    {"size": float("nan")},
    {"size_divisor": 2**20},
    {"nested": [{"max_height": 50_000}]},
])
def test_image_side_refuses_sizes_the_oracle_does_not_need(processor):
    with pytest.raises(ModelRefused, match="px images|crop_pct") as info:
        image_side(processor, "m")
    assert "\n" not in str(info.value)


def test_label_and_config_limits():
    check_config({"id2label": {str(i): str(i) for i in range(IMAGENET_21K)}, "image_size": 224}, "m")
    with pytest.raises(ModelRefused, match=f"{MAX_LABELS + 1} labels"):
        check_config({"id2label": {str(i): str(i) for i in range(MAX_LABELS + 1)}}, "m")
    with pytest.raises(ModelRefused, match="`image_size` asks for 4096 px"):
        check_config({"vision_config": {"image_size": 4096}}, "m")


def test_query_batches_hold_a_bounded_number_of_pixels():
    assert batch_for(0, 64) == batch_for(32, 64) == batch_for(224, 64) == 64
    assert batch_for(MAX_IMAGE_SIDE, 64) == 3 and batch_for(448, 64) == 16 and batch_for(224, 8) == 8


def test_file_limits(tmp_path):
    (tmp_path / "m").mkdir()
    big = tmp_path / "m" / "config.json"
    big.write_text(json.dumps({"id2label": {"0": "a"}}) + " " * 100)
    assert read_json_object(big, "config.json", 1000) == {"id2label": {"0": "a"}}
    with pytest.raises(ModelRefused, match="config.json is over"):
        read_json_object(big, "config.json", 50)
    with pytest.raises(ModelRefused, match="weights are 16.0 GiB"):
        check_file_sizes({"model-00001.safetensors": MAX_WEIGHT_BYTES // 2,
                          "model-00002.safetensors": MAX_WEIGHT_BYTES // 2 + 1}, "m")
    check_file_sizes({"model.safetensors": MAX_WEIGHT_BYTES, "config.json": 2**20, "README.md": 2**20}, "m")


# --------------------------------------------------------------------------- the org, indexed in this process


@pytest.fixture(scope="module")
def hostile_run(tiny_zoo, tmp_path_factory):
    """The hostile org indexed in-process, queries of the `memory-error` repo raising MemoryError."""
    from k2v_hub.features import FeatureExtractor
    from k2v_hub.hub import LocalSource
    from k2v_hub.index import build_index, read_rows
    from k2v_hub.oracle import TransformersOracle
    from k2v_hub.pipeline import make_indexer
    from k2v_hub.testing.hostile import failing_predict, make_hostile_org, save_test_retriever
    from k2v_hub.retriever import Retriever

    tmp = tmp_path_factory.mktemp("hostile")
    expect = make_hostile_org(tiny_zoo, tmp / "zoo")
    retriever = Retriever.from_pretrained(str(save_test_retriever(tmp / "retriever")))
    indexer = make_indexer(retriever, retriever_id="untrained", probe=PROBE, max_classes=MAX_CLASSES,
                           bisection_steps=BISECTION_STEPS, extractor=FeatureExtractor.from_pretrained("pixels-8"),
                           cache_dir=tmp / "knowledge-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TransformersOracle, "_predict_batch", failing_predict(TransformersOracle._predict_batch))
        report = build_index(LocalSource(tmp / "zoo"), ORG, tmp / "index", indexer, show_progress=False)
    return expect, report, read_rows(tmp / "index")


def test_hostile_repos_are_skipped_and_the_org_is_indexed(hostile_run):
    expect, report, rows = hostile_run
    check_outcomes(expect, report.indexed, report.skipped)
    assert sorted(rows) == sorted(report.indexed)
    assert "MemoryError" in report.skipped[f"{ORG}/memory-error"]


def test_an_imagenet_21k_head_is_indexed(hostile_run):
    from k2v_hub.knowledge import KnowledgeRecord

    _, _, rows = hostile_run
    row = rows[f"{ORG}/labels-{IMAGENET_21K}"]
    record = KnowledgeRecord.from_json(row["knowledge"])
    assert len(row["labels"]) == len(record.labels) == IMAGENET_21K
    assert 2 <= len(record.classes) <= MAX_CLASSES
    assert record.n_queries <= PROBE["n"] + BISECTION_STEPS * MAX_CLASSES * (MAX_CLASSES - 1)
    assert np.isclose(np.linalg.norm(row["embedding"]), 1, atol=1e-4)


# --------------------------------------------------------------------------- `k2v-hub index`, peak memory


def test_index_peak_memory_with_hostile_repos_stays_near_the_clean_org(tiny_zoo, tmp_path):
    from k2v_hub.testing.hostile import measure_peak_memory

    result = measure_peak_memory(tiny_zoo, tmp_path)
    clean, hostile = result["clean"], result["hostile"]
    print(f"\n[hostile] peak RSS of `k2v-hub index`: clean org ({clean['models']} repos) {clean['peak_rss_mib']} MiB, "
          f"with hostile repos ({hostile['models']} repos) {hostile['peak_rss_mib']} MiB "
          f"({result['hostile_minus_clean_mib']:+} MiB)")
    for run in (clean, hostile):
        check_outcomes(run["expected"], run["indexed"], run["skipped"])
    assert not clean["skipped"] and len(hostile["skipped"]) >= 14
    assert hostile["peak_rss_mib"] <= clean["peak_rss_mib"] + PEAK_BOUND_MIB


def test_hub_source_refuses_oversized_files_before_downloading_any(tiny_zoo, tmp_path):
    """From the Hub, sizes come from the file listing: a repo over a limit costs one listing, not a download."""
    from k2v_hub.hub import HubSource, RepoRef
    from k2v_hub.testing.hub_server import HubServer
    from k2v_hub.zoo.data import ZooData

    folder = tiny_zoo / ZooData(tiny_zoo).model_ids[0]
    files = {f.name: f for f in folder.iterdir() if f.is_file()}
    files["config.json"] = folder.joinpath("config.json").read_text() + " " * (17 * 2**20)
    with HubServer(tmp_path / "hub") as server:
        sha = server.add_files(f"{ORG}/huge-config", files)
        server.clear_log()
        with pytest.raises(ModelRefused, match="config.json is 17.0 MiB"):
            HubSource(endpoint=server.url).snapshot(RepoRef(f"{ORG}/huge-config", sha))
        assert server.request_log and not any("/resolve/" in e["path"] for e in server.request_log)
