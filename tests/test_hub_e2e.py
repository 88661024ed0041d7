"""The whole Hub path against the local Hub server, through the real CLI in subprocesses.

The tiny zoo's model repos are uploaded under their org on a `HubServer`; then `k2v-hub index --org ORG` (with
`HF_ENDPOINT` pointing at the server) downloads them, queries them black-box, pushes the index as a dataset repo
and a card section + embedding file into every model repo; `k2v-hub find` from a fresh cache reads the index back
from the server and must answer exactly what the same retriever answers on the local index.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from k2v_hub.testing.hub_server import HubServer

from fakes import assert_same_ranking, console_script, fresh_k2v_home, upload_declared_datasets  # noqa: E402

TOKEN = "hf_e2eSecretToken_0123456789abcdef"
INDEX_REPO_NAME = "k2v-index"
SECTION_START = "<!-- k2v-hub:start -->"
_ENV_DROP = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
             "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_ENDPOINT", "HF_HOME", "HF_DEBUG", "NO_COLOR")


def upload_zoo(server: HubServer, zoo_root: Path, org: str) -> list[str]:
    """Every model folder of the zoo as a model repo ``org/<name>`` on the server, and every dataset repo its cards
    name as a dataset repo; returns the model repo ids."""
    ids = []
    for folder in sorted(p for p in (zoo_root / org).iterdir() if p.is_dir()):
        files = {f.relative_to(folder).as_posix(): f for f in folder.rglob("*") if f.is_file()}
        server.add_files(f"{org}/{folder.name}", files, message="Upload model")
        ids.append(f"{org}/{folder.name}")
    upload_declared_datasets(server, zoo_root, org)
    return ids


def k2v_env(server: HubServer, hf_home: Path, k2v_home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    env.update({"HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(hf_home), "HF_TOKEN": TOKEN,
                "K2V_HUB_HOME": str(k2v_home), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
                "K2V_HUB_RETRY_BASE_DELAY": "0.01", "PYTHONWARNINGS": "ignore"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def k2v(*args, env: dict, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([*console_script("k2v-hub"), *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"k2v-hub {' '.join(map(str, args))} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubServer(tmp_path_factory.mktemp("e2e-hub"), token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def org_on_hub(hub, tiny_zoo):
    from k2v_hub.zoo.data import ZooData

    zoo = ZooData(tiny_zoo)
    ids = upload_zoo(hub, tiny_zoo, zoo.org)
    assert sorted(ids) == zoo.model_ids
    return zoo


@pytest.fixture(scope="module")
def pushed(hub, org_on_hub, tiny_retriever, k2v_home, tmp_path_factory):
    """`k2v-hub index --org ORG --push ORG/k2v-index --push-cards` run once against the server."""
    work = tmp_path_factory.mktemp("e2e")
    env = k2v_env(hub, work / "hf_home", fresh_k2v_home(work / "k2v_home", k2v_home))
    index_repo = f"{org_on_hub.org}/{INDEX_REPO_NAME}"
    before = {m: hub.store.load_meta("model", m)["branches"]["main"] for m in org_on_hub.model_ids}
    hub.clear_log()
    proc = k2v("index", "--org", org_on_hub.org, "--out", work / "index", "--retriever", tiny_retriever,
               "--push", index_repo, "--push-cards", "--format", "json", env=env)
    report = json.loads(proc.stdout)
    return {"work": work, "env": env, "report": report, "index_dir": work / "index", "index_repo": index_repo,
            "before": before, "log": list(hub.request_log), "stderr": proc.stderr}


def api(hub):
    from k2v_hub.hub import get_api

    return get_api(TOKEN, endpoint=hub.url)


def read_hub_file(hub, repo_id, filename, *, repo_type="model", revision=None) -> bytes:
    """A file as served by the server's resolve endpoint (what any client downloads)."""
    import urllib.request

    rev = revision or "main"
    prefix = "datasets/" if repo_type == "dataset" else ""
    req = urllib.request.Request(f"{hub.url}/{prefix}{repo_id}/resolve/{rev}/{filename}",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read()


# ---------------------------------------------------------------------------------------------------------------
def test_index_org_pushes_index_dataset_and_cards(hub, org_on_hub, pushed):
    report = pushed["report"]
    models = org_on_hub.model_ids
    assert sorted(report["indexed"]) == models, report
    assert not report["skipped"] and report["queries"] > 0
    assert "/datasets/" in report["pushed"] and set(report["cards"]) == set(models)

    # the index dataset repo: parquet rows + card + settings
    files = set(api(hub).list_repo_files(pushed["index_repo"], repo_type="dataset"))
    assert {"README.md", "k2v_index.json"} <= files
    parquet = [f for f in files if f.startswith("data/train-") and f.endswith(".parquet")]
    assert len(parquet) == 1
    import io

    import pyarrow.parquet as pq

    rows = pq.read_table(io.BytesIO(read_hub_file(hub, pushed["index_repo"], parquet[0], repo_type="dataset")))
    rows = rows.to_pylist()
    assert sorted(r["model_id"] for r in rows) == models
    # each card's dataset was read from the Hub for the row's data fingerprint, at a commit of that dataset repo
    for r in rows:
        dataset, commit = r["data_source"].split("@")
        assert r["data_fingerprint"] and r["data_note"] == "" and dataset == r["card_datasets"][0]
        assert commit == api(hub).dataset_info(dataset).sha
    card = read_hub_file(hub, pushed["index_repo"], "README.md", repo_type="dataset").decode()
    assert card.startswith("---") and "k2v-hub" in card and pushed["index_repo"] in card
    meta = json.loads(read_hub_file(hub, pushed["index_repo"], "k2v_index.json", repo_type="dataset"))
    assert meta["n_models"] == len(models)

    # every model repo: one new commit with the embedding file, its metadata and the card section
    from safetensors import safe_open

    by_id = {r["model_id"]: r for r in rows}
    for model_id in models:
        head = hub.store.load_meta("model", model_id)["branches"]["main"]
        assert head != pushed["before"][model_id]
        raw = read_hub_file(hub, model_id, "k2v/embedding.safetensors")
        path = pushed["work"] / (model_id.replace("/", "--") + ".safetensors")
        path.write_bytes(raw)
        with safe_open(str(path), framework="numpy") as f:
            vec = f.get_tensor("embedding")
            st_meta = f.metadata()
        assert vec.shape == (meta["embed_dim"],) and abs(float(np.linalg.norm(vec)) - 1) < 1e-3
        assert vec.tobytes() == np.asarray(by_id[model_id]["embedding"], dtype=np.float32).tobytes()
        assert st_meta["model_id"] == model_id and st_meta["revision"] == by_id[model_id]["revision"]
        assert st_meta["index"] == pushed["index_repo"] and st_meta["retriever_fingerprint"]
        # the row's revision is the commit the weights come from (the upload), not the card commit
        assert by_id[model_id]["revision"] == pushed["before"][model_id]
        readme = read_hub_file(hub, model_id, "README.md").decode()
        assert readme.count(SECTION_START) == 1 and "<!-- k2v-hub:end -->" in readme
        original = (org_on_hub.root / model_id / "README.md").read_text()
        assert readme.startswith(original.rstrip("\n")), "".join(__import__("difflib").unified_diff(
            original.splitlines(True), readme.splitlines(True)))  # the model's own card is kept as it was

    # every request identified k2v-hub in its user agent
    api_requests = [e for e in pushed["log"] if not e["path"].startswith("/lfs-")]
    assert api_requests
    missing = [(e["method"], e["path"]) for e in api_requests
               if "k2v-hub" not in (e["headers"].get("user-agent") or "")]
    assert not missing, missing[:5]


def test_push_card_twice_replaces_the_section(hub, org_on_hub, pushed):
    model_id = org_on_hub.model_ids[0]

    def head():
        return hub.store.load_meta("model", model_id)["branches"]["main"]

    def push(index) -> dict:
        proc = k2v("push-card", "--model", model_id, "--index", index, "--format", "json", env=pushed["env"])
        out = json.loads(proc.stdout)
        assert out["model_id"] == model_id and out["url"].startswith(hub.url)
        return out

    # the same card as `index --push-cards` wrote: byte-identical files, so no new (empty) commit
    before = head()
    push(pushed["index_repo"])
    assert head() == before
    # a card naming another index: the section is replaced, not added
    push(pushed["index_dir"])
    assert head() != before
    readme = read_hub_file(hub, model_id, "README.md").decode()
    assert readme.count(SECTION_START) == 1 and readme.count("<!-- k2v-hub:end -->") == 1
    assert f'index="{pushed["index_dir"]}"' in readme and f'index="{pushed["index_repo"]}"' not in readme
    assert readme.count("## Model details") == 1  # the model's own card text is kept, once


def test_find_from_a_fresh_cache_matches_the_local_index(hub, org_on_hub, pushed, tiny_index, tiny_task, tmp_path,
                                                         k2v_home):
    from k2v_hub.find import find_model

    env = k2v_env(hub, tmp_path / "fresh_hf_home", fresh_k2v_home(tmp_path / "fresh_k2v_home", k2v_home))
    proc = k2v("find", "--dataset", tiny_task, "--index", pushed["index_repo"], "--format", "json", "--top-k", "10",
               "--max-images-per-class", "8", "--rerank", "none", env=env)
    answer = json.loads(proc.stdout)
    assert isinstance(answer, list) and len(answer) == len(org_on_hub.model_ids)
    assert [m["rank"] for m in answer] == list(range(1, len(answer) + 1))
    assert [m["score"] for m in answer] == sorted((m["score"] for m in answer), reverse=True)
    assert all({"model_id", "revision", "score"} <= set(m) for m in answer)
    # each answer names the commit of the weights it describes (the card commits since then changed no weights)
    assert all(m["revision"] == pushed["before"][m["model_id"]] for m in answer)
    assert list((tmp_path / "fresh_hf_home" / "hub").glob("datasets--*--k2v-index"))  # downloaded, fresh cache

    local = find_model(str(tiny_task), str(tiny_index), top_k=10, max_images_per_class=8, show_progress=False)
    assert_same_ranking(answer, local)  # Hub path == local path

    # by default a small org (all 5 models fit in --rerank-k) is re-ranked by querying each model from the Hub
    full = json.loads(k2v("find", "--dataset", tiny_task, "--index", pushed["index_repo"], "--format", "json",
                          "--top-k", "10", "--max-images-per-class", "8", env=env).stdout)
    assert {m["stage"] for m in full} == {"rerank:head-accuracy"} and len(full) == len(answer)  # the names are theirs
    assert [m["score"] for m in full] == sorted((m["score"] for m in full), reverse=True)
    assert list((tmp_path / "fresh_hf_home" / "hub").glob("models--*"))  # the candidates came from the Hub

    task_id = Path(tiny_task).name
    truth = org_on_hub.scores([task_id], org_on_hub.model_ids, org_on_hub.truth_metric(task_id))[0]
    best = org_on_hub.model_ids[int(np.argmax(truth))]
    print(f"\n[e2e] task {task_id}: k2v-hub top-1 {answer[0]['model_id']}, ground-truth best {best} "
          f"({'same' if answer[0]['model_id'] == best else 'different'}); truth rank of top-1: "
          f"{int((truth > truth[org_on_hub.model_ids.index(answer[0]['model_id'])]).sum()) + 1}")


def test_rerun_requeries_only_the_changed_model_and_a_pr_leaves_main(hub, org_on_hub, pushed, tiny_retriever):
    env, out_dir = pushed["env"], pushed["index_dir"]
    import pyarrow.parquet as pq

    def rows():
        return {r["model_id"]: r for r in pq.read_table(out_dir / "data/train-00000-of-00001.parquet").to_pylist()}

    before = rows()
    # One rerun after two kinds of commits: the card commits `--push-cards` made to every model (they do not touch
    # what the black box reads: those models are reused, zero queries, same revision) and a new commit that changes
    # one model's config (only that model is queried again).
    target = org_on_hub.model_ids[-1]
    config = json.loads((org_on_hub.root / target / "config.json").read_text())
    config["k2v_e2e_note"] = "a new commit"
    new_sha = hub.add_files(target, {"config.json": json.dumps(config, indent=2)}, message="Update config")
    others = [m for m in org_on_hub.model_ids if m != target]
    assert all(hub.store.load_meta("model", m)["branches"]["main"] != pushed["before"][m] for m in others)
    # a card edit that changes the accuracy the card reports: the row follows it without querying the model
    edited = others[0]
    card = read_hub_file(hub, edited, "README.md").decode()
    card, n = re.subn(r"(- type: accuracy\n\s+value: )[0-9.]+", r"\g<1>0.123", card)
    assert n == 1 and before[edited]["reported_accuracy"] != pytest.approx(0.123)
    hub.add_files(edited, {"README.md": card}, message="Report another accuracy")
    report = json.loads(k2v("index", "--org", org_on_hub.org, "--out", out_dir, "--retriever", tiny_retriever,
                            "--format", "json", env=env).stdout)
    assert sorted(report["reused"]) == others and not report["reencoded"] and not report["skipped"]
    assert report["indexed"] == [target]
    after = rows()
    assert report["queries"] == after[target]["n_queries"] > 0  # every query went to the changed model
    assert after[target]["revision"] == new_sha != before[target]["revision"]
    assert all(after[m]["revision"] == before[m]["revision"] for m in others)
    assert all(after[m]["embedding"] == before[m]["embedding"] for m in others)
    assert after[edited]["reported_accuracy"] == pytest.approx(0.123)

    # --create-pr: main is left alone, refs/pr/N carries the new vector and card
    main_before = hub.store.load_meta("model", target)["branches"]["main"]
    out = json.loads(k2v("push-card", "--model", target, "--index", out_dir, "--create-pr", "--format", "json",
                         env=env).stdout)
    assert hub.store.load_meta("model", target)["branches"]["main"] == main_before
    refs = api(hub).list_repo_refs(target, include_pull_requests=True)
    prs = [r.ref for r in refs.pull_requests]
    assert len(prs) == 1 and prs[0].startswith("refs/pr/"), "no pull request was opened"
    assert out["url"].endswith("/discussions/" + prs[0].rsplit("/", 1)[1]), out["url"]
    pr_meta = json.loads(read_hub_file(hub, target, "k2v/metadata.json", revision=prs[-1]))
    assert pr_meta["revision"] == new_sha
    main_meta = json.loads(read_hub_file(hub, target, "k2v/metadata.json"))
    assert main_meta["revision"] == before[target]["revision"]


def test_push_retriever_publishes_the_built_default(hub, tmp_path, k2v_home, tiny_retriever):
    """With no --retriever, push-retriever publishes the copy `build-retriever` put in $K2V_HUB_HOME."""
    from k2v_hub.retriever import DEFAULT_RETRIEVER_ID

    home = fresh_k2v_home(tmp_path / "k2v_home", k2v_home)
    shutil.copytree(tiny_retriever, home / "default_retriever")
    env = k2v_env(hub, tmp_path / "hf_home", home)
    result = json.loads(k2v("push-retriever", "--format", "json", env=env).stdout)
    assert result["repo_id"] == DEFAULT_RETRIEVER_ID
    assert set(api(hub).list_repo_files(DEFAULT_RETRIEVER_ID)) >= {"config.json", "model.safetensors", "README.md"}
    for name in ("model.safetensors", "config.json"):
        assert read_hub_file(hub, DEFAULT_RETRIEVER_ID, name) == (tiny_retriever / name).read_bytes()
