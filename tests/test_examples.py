"""The scripts in examples/, run as their users would (subprocesses) on the tiny fixtures.

- choose_model_for_my_dataset.py: a task folder against the tiny index (table), and --json in-process;
- index_my_org_and_push_cards.py: the tiny zoo (--zoo, offline models) indexed and pushed, index and cards, to a
  local Hub server;
- train_retriever_with_accelerate.py: two processes under torchrun (plain python when torchrun is missing).

They share the session's K2V_HUB_HOME, so knowledge already gathered by the fixtures is not queried again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from k2v_hub.index import CARD_FILE, DATA_FILE, META_FILE, load_index
from k2v_hub.zoo.data import ZooData

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT = 420
TOKEN = "hf_examplesToken_0123456789abcdef"
_ENV_DROP = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE",
             "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def example_env(k2v_home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    env.update({"K2V_HUB_HOME": str(k2v_home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                "PYTHONWARNINGS": "ignore", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                "DISABLE_SAFETENSORS_CONVERSION": "1"})
    env.update({k: str(v) for k, v in extra.items()})
    return {k: v for k, v in env.items() if v != ""}


def run(cmd: list, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                                  f"STDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-6000:]}")
    return proc


def test_examples_are_documented_scripts():
    for script in sorted(EXAMPLES.glob("*.py")):
        source = script.read_text()
        assert source.startswith('"""') and "argparse" in source and 'if __name__ == "__main__":' in source, script
    assert {p.name for p in EXAMPLES.glob("*.py")} >= {"choose_model_for_my_dataset.py",
                                                        "index_my_org_and_push_cards.py",
                                                        "train_retriever_with_accelerate.py"}


def test_choose_model_for_my_dataset(tiny_index, tiny_task, k2v_home, capsys):
    proc = run([sys.executable, EXAMPLES / "choose_model_for_my_dataset.py", "--dataset", tiny_task,
                "--index", tiny_index, "--top-k", "3", "--max-images-per-class", "8"], example_env(k2v_home))
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("RANK"))
    table = [line.split() for line in lines[header + 1:header + 4]]
    indexed = {r["model_id"] for r in load_index(tiny_index).rows}
    assert [row[0] for row in table] == ["1", "2", "3"]
    assert all(row[1] in indexed for row in table), table
    scores = [float(row[2]) for row in table]
    assert scores == sorted(scores, reverse=True)
    assert any(line.startswith("Try it: ") and table[0][1] in line for line in lines)

    # the same ranking as JSON (in-process: the script's main() is importable)
    sys.path.insert(0, str(EXAMPLES))
    try:
        import choose_model_for_my_dataset as example
    finally:
        sys.path.remove(str(EXAMPLES))
    capsys.readouterr()
    example.main(["--dataset", str(tiny_task), "--index", str(tiny_index), "--top-k", "3",
                  "--max-images-per-class", "8", "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert [m["model_id"] for m in answer["matches"]] == [row[1] for row in table]
    assert answer["queries"] == 0 and answer["timings"]["search_s"] >= 0


def _get(url: str) -> str:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read().decode()


def _siblings(url: str) -> set[str]:
    return {s["rfilename"] for s in json.loads(_get(url))["siblings"]}


def test_index_my_org_and_push_cards(tiny_zoo, tiny_retriever, k2v_home, tmp_path):
    from k2v_hub.testing.hub_server import HubServer

    zoo = ZooData(tiny_zoo)
    out = tmp_path / "index"
    with HubServer(tmp_path / "hub", token=TOKEN) as hub:
        for model_id in zoo.model_ids:  # the org's model repos on the Hub (their cards get the section)
            folder = tiny_zoo / model_id
            hub.add_files(model_id, {f.relative_to(folder).as_posix(): f for f in folder.rglob("*") if f.is_file()})
        env = example_env(k2v_home, HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HUB_DISABLE_XET=1,
                          HF_HOME=tmp_path / "hf-home", HF_HUB_OFFLINE="", HF_HUB_DISABLE_UPDATE_CHECK=1)
        proc = run([sys.executable, EXAMPLES / "index_my_org_and_push_cards.py", "--org", zoo.org,
                    "--zoo", tiny_zoo, "--retriever", tiny_retriever, "--out", out, "--push", "user/k2v-index",
                    "--push-cards", "--json"], env)
        summary = json.loads(proc.stdout)
        assert sorted(summary["indexed"] + summary["reused"]) == zoo.model_ids and not summary["skipped"]
        assert "user/k2v-index" in summary["pushed"] and sorted(summary["cards"]) == zoo.model_ids

        files = _siblings(f"{hub.url}/api/datasets/user/k2v-index")
        assert {DATA_FILE, META_FILE, CARD_FILE} <= files and not any(f.startswith("rows/") for f in files)
        card = _get(f"{hub.url}/datasets/user/k2v-index/resolve/main/{CARD_FILE}")
        assert "user/k2v-index" in card and all(m in card for m in zoo.model_ids)
        for model_id in zoo.model_ids:
            files = _siblings(f"{hub.url}/api/models/{model_id}")
            assert {"k2v/embedding.safetensors", "k2v/metadata.json"} <= files, model_id
            readme = _get(f"{hub.url}/{model_id}/resolve/main/README.md")
            assert readme.count("<!-- k2v-hub:start -->") == 1 and "pipeline_tag: image-classification" in readme
    assert sorted(r["model_id"] for r in load_index(out).rows) == zoo.model_ids


def test_train_retriever_with_accelerate(tiny_zoo, k2v_home, tmp_path):
    from k2v_hub.retriever import Retriever

    out = tmp_path / "retriever"
    script_args = [EXAMPLES / "train_retriever_with_accelerate.py", "--zoo", tiny_zoo, "--out", out,
                   "--steps", "5", "--batch-tasks", "4"]
    if shutil.which("torchrun"):
        cmd, processes = ["torchrun", "--standalone", "--nproc_per_node", "2", *script_args], 2
    else:
        cmd, processes = [sys.executable, *script_args], 1
    proc = run(cmd, example_env(k2v_home))
    metrics = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert metrics["processes"] == processes and metrics["steps"] == 5 and metrics["mode"] == "supervised"
    retriever = Retriever.from_pretrained(str(out))
    assert retriever.fingerprint() == metrics["fingerprint"]
    assert (out / "README.md").is_file() and (out / "config.json").is_file()
