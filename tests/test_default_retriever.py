"""The default retriever: the recorded build matches the bench plan, the command builds one, and with it the whole
path runs with no ``--retriever`` anywhere (index an org, find, adapt); without it, the error says how to build it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from safetensors import safe_open

from k2v_hub.bench.default_retriever import COMMAND, MAX_BYTES
from k2v_hub.retriever import BUNDLED_REVISION, DEFAULT_RETRIEVER_ID, WEIGHTS_NAME, Retriever
from k2v_hub.zoo.plan import plan_zoo

from fakes import console_script, fresh_k2v_home

BUILD_RECORD = Path(__file__).parents[1] / "benchmarks" / "results" / "default-retriever.json"


def k2v(*args, home: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``k2v-hub`` offline with ``home`` as its K2V_HUB_HOME."""
    env = {**os.environ, "K2V_HUB_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([*console_script("k2v-hub"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    if check:
        assert proc.returncode == 0, f"k2v-hub {' '.join(map(str, args))}: {proc.stderr[-3000:]}"
    return proc


def _dtypes(weights) -> set[str]:
    with safe_open(str(weights), "pt") as f:
        return {str(f.get_slice(k).get_dtype()) for k in f.keys()}


def test_the_recorded_build_is_of_the_current_bench_plan():
    """The build the README quotes was made by the documented command on the zoo plan the code now draws."""
    info = json.loads(BUILD_RECORD.read_text())
    assert info["command"] == COMMAND.format(profile="bench", seed=0)
    assert info["zoo_plan_fingerprint"] == plan_zoo("bench", seed=0).fingerprint()
    assert info["chosen_on"] == "validation" and info["dtype"] == "float16"
    assert info["bench"] == info["bench_float32"]  # float16 did not move the numbers
    assert info["weights_bytes"] <= MAX_BYTES


def test_without_a_built_retriever_index_says_how_to_build_one(tiny_zoo, tmp_path, k2v_home):
    from k2v_hub.zoo.data import ZooData

    proc = k2v("index", "--org", ZooData(tiny_zoo).org, "--zoo", tiny_zoo, "--out", tmp_path / "idx",
               home=fresh_k2v_home(tmp_path / "home", k2v_home), check=False)
    assert proc.returncode != 0 and not (tmp_path / "idx" / "k2v_index.json").exists()
    assert "k2v-hub build-retriever" in proc.stderr and "--retriever" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_build_then_index_find_and_adapt_with_no_retriever_anywhere(tiny_zoo, tiny_task, tmp_path, k2v_home,
                                                                     one_torch_thread):
    from k2v_hub.zoo.data import ZooData

    home = fresh_k2v_home(tmp_path / "home", k2v_home)
    (tmp_path / "work").mkdir()
    shutil.copytree(tiny_zoo, tmp_path / "work" / "zoo")
    command = COMMAND.format(profile="tiny", seed=0)
    info = json.loads(k2v(*command.split()[1:], "--work", tmp_path / "work", "--format", "json", home=home).stdout)
    built = home / "default_retriever"
    saved = json.loads((built / "config.json").read_text())["training_info"]
    assert saved["command"] == info["command"] == command
    assert saved["zoo_plan_fingerprint"] == plan_zoo("tiny", seed=0).fingerprint()
    assert _dtypes(built / WEIGHTS_NAME) == {"F16"}
    assert 0 <= saved["bench"]["r@1"] <= 1 and saved["bench"]["eval_tasks"] > 0
    assert (built / "README.md").read_text().count("|") > 10

    org = ZooData(tiny_zoo).org
    report = json.loads(k2v("index", "--org", org, "--zoo", tiny_zoo, "--out", tmp_path / "idx", "--format", "json",
                            home=home).stdout)
    assert report["indexed"] and not report["skipped"]
    meta = json.loads((tmp_path / "idx" / "k2v_index.json").read_text())
    assert (meta["retriever_id"], meta["retriever_revision"]) == (DEFAULT_RETRIEVER_ID, BUNDLED_REVISION)
    assert meta["retriever_fingerprint"] == Retriever.from_pretrained(str(built)).float().fingerprint()
    matches = json.loads(k2v("find", "--dataset", tiny_task, "--index", tmp_path / "idx", "--rerank", "none",
                             "--format", "json", home=home).stdout)
    assert {m["model_id"] for m in matches} <= set(ZooData(tiny_zoo).model_ids) and matches
    assert [m["score"] for m in matches] == sorted((m["score"] for m in matches), reverse=True)
    adapted = json.loads(k2v("train", "--index", tmp_path / "idx", "--out", tmp_path / "adapted", "--steps", 2,
                             "--format", "json", home=home).stdout)
    assert adapted["mode"] == "self-supervised" and (tmp_path / "adapted" / WEIGHTS_NAME).is_file()
