"""The whole path through the CLI on the embedded default: train -> index -> find, on the tiny zoo."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run_cli(*args, env=None, check=True):
    """Run `python -m k2v_hub.cli ...` in a subprocess, return the CompletedProcess."""
    proc = subprocess.run([sys.executable, "-m", "k2v_hub.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def test_train_index_find_through_cli(tiny_zoo, tiny_task, tmp_path, k2v_home):
    from k2v_hub.zoo.data import ZooData

    zoo = ZooData(tiny_zoo)
    retr = tmp_path / "retriever"
    out = run_cli("train", "--zoo", str(tiny_zoo), "--out", str(retr), "--steps", "30", "--format", "json")
    info = json.loads(out.stdout)
    assert info["mode"] == "supervised" and info["steps"] == 30 and info["models"] >= 1
    assert (retr / "model.safetensors").is_file() and (retr / "config.json").is_file()
    card = (retr / "README.md").read_text()
    assert "library_name: k2v-hub" in card and "Feature space" in card

    index_dir = tmp_path / "index"
    out = run_cli("index", "--org", zoo.org, "--zoo", str(tiny_zoo), "--out", str(index_dir),
                  "--retriever", str(retr), "--format", "json")
    report = json.loads(out.stdout)
    assert sorted(report["indexed"] + report["reused"] + report["reencoded"]) == zoo.model_ids
    assert not report["skipped"]
    assert (index_dir / "data" / "train-00000-of-00001.parquet").is_file()

    out = run_cli("find", "--dataset", str(tiny_task), "--index", str(index_dir), "--format", "json",
                  "--top-k", "3")
    matches = json.loads(out.stdout)
    assert [m["rank"] for m in matches] == [1, 2, 3]
    assert all(m["model_id"] in zoo.model_ids and len(m["revision"]) == 40 for m in matches)
    scores = [m["score"] for m in matches]
    assert scores == sorted(scores, reverse=True)


def test_find_model_python_api_matches_cli(tiny_index, tiny_task):
    from k2v_hub import find_model

    matches = find_model(str(tiny_task), str(tiny_index), top_k=10, show_progress=False)
    cli = json.loads(run_cli("find", "--dataset", str(tiny_task), "--index", str(tiny_index), "--format", "json",
                             "--top-k", "10").stdout)
    assert [m.model_id for m in matches] == [m["model_id"] for m in cli]
    assert [m.score for m in matches] == pytest.approx([m["score"] for m in cli], abs=1e-5)
    assert set(matches.timings) >= {"features_s", "encode_s", "search_s"}
