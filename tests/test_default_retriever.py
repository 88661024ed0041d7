"""The retriever bundled with the package: how it was built (and that the command rebuilds one), and the whole path
with no ``--retriever`` anywhere: index an org, find, adapt."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch
from safetensors import safe_open

from k2v_hub.retriever import (BUNDLED_REVISION, DEFAULT_RETRIEVER_ID, WEIGHTS_NAME, bundled_retriever_dir,
                               load_bundled_retriever)
from k2v_hub.zoo.plan import plan_zoo

from fakes import console_script

BUNDLED_COMMAND = "k2v-hub build-retriever --profile bench --seed 0"


def k2v(*args, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run([*console_script("k2v-hub"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"k2v-hub {' '.join(map(str, args))}: {proc.stderr[-3000:]}"
    return proc


def _dtypes(weights) -> set[str]:
    with safe_open(str(weights), "pt") as f:
        return {str(f.get_slice(k).get_dtype()) for k in f.keys()}


def test_bundled_retriever_says_how_it_was_built_and_what_it_scores():
    folder = bundled_retriever_dir()
    weights = folder / WEIGHTS_NAME
    assert weights.is_file() and weights.stat().st_size <= 10 * 1024 * 1024
    assert _dtypes(weights) == {"F16"}
    info = json.loads((folder / "config.json").read_text())["training_info"]
    assert info["command"] == BUNDLED_COMMAND
    assert info["zoo_plan_fingerprint"] == plan_zoo("bench", seed=0).fingerprint()
    assert info["k2v_hub_version"] and info["chosen_on"] == "validation" and info["dtype"] == "float16"
    assert info["bench"] == info["bench_float32"]  # float16 did not move the numbers
    card = (folder / "README.md").read_text()
    assert BUNDLED_COMMAND in card and str(info["bench"]["r@1"]) in card and DEFAULT_RETRIEVER_ID in card
    retriever = load_bundled_retriever()
    assert retriever.feature_space == "mobilenet_v2-imagenet"
    assert all(p.dtype == torch.float32 for p in retriever.parameters())  # upcast on load


@pytest.mark.slow
def test_the_recorded_command_rebuilds_a_retriever_on_the_tiny_profile(tiny_zoo, tmp_path, one_torch_thread):
    (tmp_path / "work").mkdir()
    shutil.copytree(tiny_zoo, tmp_path / "work" / "zoo")
    bundled = json.loads((bundled_retriever_dir() / "config.json").read_text())["training_info"]["command"]
    command = bundled.replace("--profile bench", "--profile tiny")
    proc = k2v(*command.split()[1:], "--out", tmp_path / "out", "--work", tmp_path / "work", "--format", "json")
    info = json.loads(proc.stdout)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())["training_info"]
    assert saved["command"] == info["command"] == command
    assert saved["zoo_plan_fingerprint"] == plan_zoo("tiny", seed=0).fingerprint()
    assert _dtypes(tmp_path / "out" / WEIGHTS_NAME) == {"F16"}
    assert 0 <= saved["bench"]["r@1"] <= 1 and saved["bench"]["eval_tasks"] > 0
    assert (tmp_path / "out" / "README.md").read_text().count("|") > 10


@pytest.mark.slow
def test_index_find_and_adapt_with_no_retriever_anywhere(tiny_zoo, tiny_task, tmp_path):
    from k2v_hub.zoo.data import ZooData

    org = ZooData(tiny_zoo).org
    report = json.loads(k2v("index", "--org", org, "--zoo", tiny_zoo, "--out", tmp_path / "idx",
                            "--format", "json").stdout)
    assert report["indexed"] and not report["skipped"]
    meta = json.loads((tmp_path / "idx" / "k2v_index.json").read_text())
    assert (meta["retriever_id"], meta["retriever_revision"]) == (DEFAULT_RETRIEVER_ID, BUNDLED_REVISION)
    assert meta["retriever_fingerprint"] == load_bundled_retriever().fingerprint()
    matches = json.loads(k2v("find", "--dataset", tiny_task, "--index", tmp_path / "idx", "--rerank", "none",
                             "--format", "json").stdout)
    assert {m["model_id"] for m in matches} <= set(ZooData(tiny_zoo).model_ids) and matches
    assert [m["score"] for m in matches] == sorted((m["score"] for m in matches), reverse=True)
    adapted = json.loads(k2v("train", "--index", tmp_path / "idx", "--out", tmp_path / "adapted", "--steps", 2,
                             "--format", "json").stdout)
    assert adapted["mode"] == "self-supervised" and (tmp_path / "adapted" / WEIGHTS_NAME).is_file()
