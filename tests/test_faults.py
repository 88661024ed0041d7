"""A flaky Hub: with 20 % of requests answered 429/5xx and 5 % of connections dropped (seeded, so the same faults
every run), `k2v-hub index --push`, `k2v-hub push-card` and `find` on a Hub index finish with the same results as
without faults. huggingface_hub does not retry repo info, create repo, preupload/commit POSTs, 5xx downloads or
dropped HEADs itself: `k2v_hub.hub` does (bounded, fast here through K2V_HUB_RETRY_BASE_DELAY)."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from k2v_hub.testing.hub_server import HubServer

from fakes import assert_same_ranking, console_script, fresh_k2v_home, upload_declared_datasets  # noqa: E402

TOKEN = "hf_faultsToken_abcdef0123456789"
SECTION_START = "<!-- k2v-hub:start -->"
FAULTS = {"error_rate": 0.2, "drop_rate": 0.05, "statuses": (429, 500, 502, 503)}
_ENV_DROP = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
             "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_ENDPOINT", "HF_HOME", "HF_DEBUG", "K2V_HUB_RETRIES")


def k2v_env(server, hf_home: Path, k2v_home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    env.update({"HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(hf_home), "HF_TOKEN": TOKEN,
                "K2V_HUB_HOME": str(k2v_home), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
                "K2V_HUB_RETRY_BASE_DELAY": "0.01", "PYTHONWARNINGS": "ignore"})
    return env


def k2v(*args, env) -> subprocess.CompletedProcess:
    proc = subprocess.run([*console_script("k2v-hub"), *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, (f"k2v-hub {' '.join(map(str, args))} exited {proc.returncode}\n"
                                  f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-6000:]}")
    return proc


def faults_in(log: list[dict]) -> int:
    """Requests the server answered with an injected fault: a dropped connection (0) or 429/5xx."""
    injected = [e for e in log if e["status"] is not None and (e["status"] == 0 or e["status"] >= 429)]
    assert len(injected) == sum(bool(e.get("fault") or e.get("dropped")) for e in log)  # no real server error
    return len(injected)


def _kind(path: str) -> str:
    """A request's endpoint, without repo names: /api/models/o/n/tree/main -> api/tree."""
    for key in ("preupload", "commit", "tree", "paths-info", "revision", "validate-yaml", "repos/create",
                "lfs/objects/batch", "lfs-objects", "lfs-verify", "resolve", "whoami"):
        if f"/{key}" in path:
            return key
    if path.startswith("/api/models") or path.startswith("/api/datasets"):
        return "list" if path.count("/") <= 2 else "repo_info"
    return path


@pytest.fixture(scope="module")
def flaky(tmp_path_factory, tiny_zoo):
    from k2v_hub.zoo.data import ZooData

    zoo = ZooData(tiny_zoo)
    with HubServer(tmp_path_factory.mktemp("flaky-hub"), token=TOKEN) as server:
        shas = {}
        for model_id in zoo.model_ids:
            folder = tiny_zoo / model_id
            shas[model_id] = server.add_files(model_id, {f.relative_to(folder).as_posix(): f
                                                         for f in folder.rglob("*") if f.is_file()})
        upload_declared_datasets(server, tiny_zoo, zoo.org)  # what the cards name, for the data fingerprints
        server.zoo, server.shas, server.faults_seen = zoo, shas, {}
        yield server
        server.set_faults()
        print(f"\n[faults] injected and survived per step: {server.faults_seen}")


def run_with_faults(server, name: str, seed: int, fn):
    server.clear_log()
    server.set_faults(seed=seed, **FAULTS)
    try:
        result = fn()
    finally:
        server.set_faults()
    n = faults_in(server.request_log)
    kinds = Counter(f"{e['method']} {_kind(e['path'])} -> {'dropped' if e['status'] == 0 else e['status']}"
                    for e in server.request_log if e["status"] == 0 or e["status"] >= 429)
    server.faults_seen[name] = f"{n} of {len(server.request_log)} requests"
    print(f"\n[faults] {name}: {n} faults injected in {len(server.request_log)} requests, all survived: "
          + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())))
    return result, n


@pytest.fixture(scope="module")
def indexed(flaky, tiny_retriever, k2v_home, tmp_path_factory):
    work = tmp_path_factory.mktemp("flaky-work")
    env = k2v_env(flaky, work / "hf_home", fresh_k2v_home(work / "k2v_home", k2v_home))
    repo = f"{flaky.zoo.org}/k2v-index"
    proc, n = run_with_faults(flaky, "index --push", 1, lambda: k2v(
        "index", "--org", flaky.zoo.org, "--limit", "3", "--out", work / "index", "--retriever", tiny_retriever,
        "--push", repo, "--format", "json", env=env))
    return {"work": work, "env": env, "repo": repo, "report": json.loads(proc.stdout), "faults": n}


def _rows(path: Path) -> dict:
    import pyarrow.parquet as pq

    return {r["model_id"]: r for r in pq.read_table(path / "data/train-00000-of-00001.parquet").to_pylist()}


def test_index_push_survives_faults(flaky, indexed, tiny_index):
    assert indexed["faults"] > 0
    report = indexed["report"]
    assert len(report["indexed"]) == 3 and set(report["indexed"]) <= set(flaky.zoo.model_ids)  # --limit 3
    assert not report["skipped"]
    rows = _rows(indexed["work"] / "index")
    local = _rows(Path(tiny_index))  # the same models indexed from local folders, no Hub, no fault
    assert sorted(rows) == sorted(report["indexed"])
    for model_id, row in rows.items():
        assert row["revision"] == flaky.shas[model_id]
        assert row["labels"] == local[model_id]["labels"] and row["n_queries"] == local[model_id]["n_queries"]
        np.testing.assert_allclose(row["embedding"], local[model_id]["embedding"], atol=1e-4)
    # what the server holds is that index
    from k2v_hub.hub import get_api

    api = get_api(TOKEN, endpoint=flaky.url)
    files = api.list_repo_files(indexed["repo"], repo_type="dataset")
    assert {"README.md", "k2v_index.json", "data/train-00000-of-00001.parquet"} <= set(files)
    pushed = Path(api.hf_hub_download(indexed["repo"], "data/train-00000-of-00001.parquet", repo_type="dataset",
                                      cache_dir=indexed["work"] / "check"))
    import pyarrow.parquet as pq

    assert {r["model_id"]: r["embedding"] for r in pq.read_table(pushed).to_pylist()} == \
        {m: r["embedding"] for m, r in rows.items()}


def test_push_card_survives_faults(flaky, indexed):
    model_id = flaky.zoo.model_ids[0]
    args = ("push-card", "--model", model_id, "--index", indexed["repo"], "--format", "json")
    proc, n = run_with_faults(flaky, "push-card", 2, lambda: k2v(*args, env=indexed["env"]))
    assert n > 0
    head = flaky.store.load_meta("model", model_id)["branches"]["main"]
    assert head != flaky.shas[model_id]
    # the same push without faults changes nothing: the faulty run wrote exactly the fault-free result
    k2v(*args, env=indexed["env"])
    assert flaky.store.load_meta("model", model_id)["branches"]["main"] == head
    tree = flaky.store.read_commit("model", model_id, head)["tree"]
    assert {"k2v/embedding.safetensors", "k2v/metadata.json", "README.md"} <= set(tree)
    readme = flaky.store.file_bytes(tree["README.md"]).decode()
    assert readme.count(SECTION_START) == 1
    meta = json.loads(flaky.store.file_bytes(tree["k2v/metadata.json"]))
    assert meta["revision"] == flaky.shas[model_id] and meta["index"] == indexed["repo"]


def test_find_on_hub_index_survives_faults(flaky, indexed, tiny_task, tmp_path, k2v_home):
    from k2v_hub.find import find_model

    env = k2v_env(flaky, tmp_path / "fresh_hf_home", fresh_k2v_home(tmp_path / "k2v_home", k2v_home))
    proc, n = run_with_faults(flaky, "find (Hub index)", 3, lambda: k2v(
        "find", "--dataset", tiny_task, "--index", indexed["repo"], "--top-k", "10", "--max-images-per-class", "8",
        "--rerank", "none", "--format", "json", env=env))
    answer = json.loads(proc.stdout)
    # the same index written locally by the faulty run (its rows are the fault-free ones, above): first-stage
    # scores are standardised over an index's rows, so the reference has the same rows
    local = find_model(str(tiny_task), str(indexed["work"] / "index"), top_k=10, max_images_per_class=8,
                       show_progress=False)
    assert_same_ranking(answer, local)
    assert all(m["revision"] == flaky.shas[m["model_id"]] for m in answer)
    if n == 0:  # a handful of requests: the seed may inject nothing; then a denser run must still succeed
        proc, n = run_with_faults(flaky, "find (Hub index, denser)", 4, lambda: k2v(
            "find", "--dataset", tiny_task, "--index", indexed["repo"], "--top-k", "10", "--max-images-per-class", "8",
            "--rerank", "none", "--format", "json",
            env={**env, "HF_HOME": str(tmp_path / "fresh2")}))
        assert json.loads(proc.stdout) == answer
    assert n > 0


def test_retry_policy_unit():
    """What is retried and what is not, without a server: 5xx/429, dropped connections and their wrapped forms."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    from k2v_hub.hub import _retryable, with_retries

    def http_error(status, cls=HfHubHTTPError):
        response = httpx2.Response(status, request=httpx2.Request("GET", "http://127.0.0.1/x"))
        return cls(f"{status}", response=response)

    dropped = httpx2.RemoteProtocolError("Server disconnected without sending a response.")
    assert _retryable(http_error(503)) and _retryable(http_error(429)) and _retryable(http_error(500))
    assert not _retryable(http_error(404)) and not _retryable(http_error(401))
    assert not _retryable(http_error(404, RepositoryNotFoundError))
    assert _retryable(dropped) and _retryable(httpx2.ConnectError("refused"))
    for wrapped in (LocalEntryNotFoundError("cannot find the requested files"),
                    ValueError("Force download failed due to the above error.")):
        wrapped.__cause__ = dropped
        assert _retryable(wrapped)
        wrapped.__cause__ = http_error(404, RepositoryNotFoundError)
        assert not _retryable(wrapped)
    assert not _retryable(LocalEntryNotFoundError("offline, nothing cached"))
    assert not _retryable(ValueError("bad argument"))

    calls = []

    def flaky_call():
        calls.append(1)
        if len(calls) < 3:
            raise http_error(502)
        return "ok"

    assert with_retries(flaky_call, base_delay=0) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(HfHubHTTPError):
        with_retries(lambda: calls.append(1) or (_ for _ in ()).throw(http_error(503)), retries=2, base_delay=0)
    assert len(calls) == 3  # bounded: first try + 2 retries
