"""The scripts in examples/, run as their users would (subprocesses) on the tiny fixtures.

- choose_model_for_my_dataset.py: a task folder against the tiny index (table), and --json in-process;
- index_my_org_and_push_cards.py: the tiny zoo (--zoo: models read locally) indexed, then the index and a card
  section per model pushed to a local Hub server;
- train_retriever_with_accelerate.py: two processes under torchrun (the one next to the interpreter, or
  ``python -m torch.distributed.run``).

The selected examples are started side by side when the first of these tests runs (each process is
single-threaded), then each test checks its own. They share the session's K2V_HUB_HOME, so knowledge already
gathered by the fixtures is not queried again.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from k2v_hub.index import CARD_FILE, DATA_FILE, META_FILE, load_index
from k2v_hub.zoo.data import ZooData

from fakes import console_script  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT = 420
TOKEN = "hf_examplesToken_0123456789abcdef"
INDEX_REPO = "user/k2v-index"
_ENV_DROP = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE",
             "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def example_env(k2v_home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    env.update({"K2V_HUB_HOME": str(k2v_home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                "PYTHONWARNINGS": "ignore", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                "DISABLE_SAFETENSORS_CONVERSION": "1"})
    env.update({k: str(v) for k, v in extra.items()})
    return {k: v for k, v in env.items() if v != ""}


class Examples:
    """Example processes started side by side; ``result(name)`` waits for one and returns its stdout."""

    def __init__(self, work: Path):
        self.work = work
        self.procs: dict[str, tuple[subprocess.Popen, list]] = {}
        self.hub = None
        self.paths: dict[str, Path] = {}

    def start(self, name: str, cmd: list, env: dict) -> None:
        with open(self.work / f"{name}.out", "w") as out, open(self.work / f"{name}.err", "w") as err:
            self.procs[name] = (subprocess.Popen([str(c) for c in cmd], env=env, stdout=out, stderr=err), cmd)

    def result(self, name: str) -> str:
        proc, cmd = self.procs[name]
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stdout, stderr = ((self.work / f"{name}.{s}").read_text() for s in ("out", "err"))
        assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                                      f"STDOUT:\n{stdout[-3000:]}\nSTDERR:\n{stderr[-6000:]}")
        return stdout

    def close(self) -> None:
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def examples(request, k2v_home, tiny_zoo, tmp_path_factory):
    """Start every selected example of this module at once."""
    selected = {item.name for item in request.session.items if item.module is request.module}
    work = tmp_path_factory.mktemp("examples")
    running = Examples(work)
    with contextlib.ExitStack() as stack:
        stack.callback(running.close)
        if "test_choose_model_for_my_dataset" in selected:
            index, task = request.getfixturevalue("tiny_index"), request.getfixturevalue("tiny_task")
            running.paths.update(index=index, task=task)
            running.start("choose", [sys.executable, EXAMPLES / "choose_model_for_my_dataset.py", "--dataset", task,
                                     "--index", index, "--top-k", "3", "--max-images-per-class", "8"],
                          example_env(k2v_home))
        if "test_index_my_org_and_push_cards" in selected:
            from k2v_hub.testing.hub_server import HubServer

            retriever = request.getfixturevalue("tiny_retriever")
            hub = running.hub = stack.enter_context(HubServer(work / "hub", token=TOKEN))
            for model_id in ZooData(tiny_zoo).model_ids:  # the org's model repos on the Hub get the card section
                folder = tiny_zoo / model_id
                hub.add_files(model_id, {f.relative_to(folder).as_posix(): f for f in folder.rglob("*")
                                         if f.is_file()})
            running.paths["index_out"] = work / "org-index"
            env = example_env(k2v_home, HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HUB_DISABLE_XET=1,
                              HF_HOME=work / "hf-home", HF_HUB_OFFLINE="", HF_HUB_DISABLE_UPDATE_CHECK=1)
            running.start("index", [sys.executable, EXAMPLES / "index_my_org_and_push_cards.py", "--org",
                                    ZooData(tiny_zoo).org, "--zoo", tiny_zoo, "--retriever", retriever, "--out",
                                    running.paths["index_out"], "--push", INDEX_REPO, "--push-cards", "--json"], env)
        if "test_train_retriever_with_accelerate" in selected:
            running.paths["retriever_out"] = work / "retriever"
            script = [EXAMPLES / "train_retriever_with_accelerate.py", "--zoo", tiny_zoo, "--out",
                      running.paths["retriever_out"], "--steps", "5", "--batch-tasks", "4"]
            running.processes = 2
            cmd = [*console_script("torchrun"), "--standalone", "--nproc_per_node", "2", *script]
            running.start("train", cmd, example_env(k2v_home))
        yield running


def test_examples_are_documented_scripts():
    names = {p.name for p in EXAMPLES.glob("*.py")}
    assert names >= {"choose_model_for_my_dataset.py", "index_my_org_and_push_cards.py",
                     "train_retriever_with_accelerate.py"}
    for script in sorted(EXAMPLES.glob("*.py")):
        source = script.read_text()
        assert source.startswith('"""') and "argparse" in source and 'if __name__ == "__main__":' in source, script


def test_choose_model_for_my_dataset(examples, capsys):
    index, task = examples.paths["index"], examples.paths["task"]
    lines = examples.result("choose").splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("RANK"))
    table = [line.split() for line in lines[header + 1:header + 4]]
    indexed = {r.model_id for r in load_index(index).rows}
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
    example.main(["--dataset", str(task), "--index", str(index), "--top-k", "3", "--max-images-per-class", "8",
                  "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert [m["model_id"] for m in answer["matches"]] == [row[1] for row in table]
    assert answer["queries"] == 0 and answer["timings"]["search_s"] >= 0
    # ranked for fine-tuning instead: every match says so and carries its predicted fine-tuned accuracy
    example.main(["--dataset", str(task), "--index", str(index), "--top-k", "3", "--max-images-per-class", "8",
                  "--rerank", "none", "--goal", "fine-tune", "--json"])
    tuned = json.loads(capsys.readouterr().out)["matches"]
    assert len(tuned) == 3 and {m["model_id"] for m in tuned} <= indexed
    assert all(m["stage"] == "finetune-fit" and isinstance(m["finetune_score"], float) for m in tuned)


def _get(url: str) -> str:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read().decode()


def _siblings(url: str) -> set[str]:
    return {s["rfilename"] for s in json.loads(_get(url))["siblings"]}


def test_index_my_org_and_push_cards(examples, tiny_zoo):
    ids = ZooData(tiny_zoo).model_ids
    summary = json.loads(examples.result("index"))
    assert sorted(summary["indexed"] + summary["reused"]) == ids and not summary["skipped"]
    assert INDEX_REPO in summary["pushed"] and sorted(summary["cards"]) == ids
    assert sorted(r.model_id for r in load_index(examples.paths["index_out"]).rows) == ids

    url = examples.hub.url
    files = _siblings(f"{url}/api/datasets/{INDEX_REPO}")
    assert {DATA_FILE, META_FILE, CARD_FILE} <= files and not any(f.startswith("rows/") for f in files)
    card = _get(f"{url}/datasets/{INDEX_REPO}/resolve/main/{CARD_FILE}")
    assert INDEX_REPO in card and all(m in card for m in ids)
    for model_id in ids:
        assert {"k2v/embedding.safetensors", "k2v/metadata.json"} <= _siblings(f"{url}/api/models/{model_id}")
        readme = _get(f"{url}/{model_id}/resolve/main/README.md")
        assert readme.count("<!-- k2v-hub:start -->") == 1 and "pipeline_tag: image-classification" in readme


def test_train_retriever_with_accelerate(examples):
    from k2v_hub.retriever import Retriever

    stdout = examples.result("train")
    metrics = json.loads(stdout[stdout.index("{"):])
    assert metrics["processes"] == examples.processes and metrics["steps"] == 5
    assert metrics["mode"] == "supervised"
    out = examples.paths["retriever_out"]
    assert Retriever.from_pretrained(str(out)).fingerprint() == metrics["fingerprint"]
    assert (out / "README.md").is_file() and (out / "config.json").is_file()
