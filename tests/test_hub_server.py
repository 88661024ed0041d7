"""The local Hub server (`k2v_hub.testing.hub_server`) against the real huggingface_hub / datasets / transformers clients.

Clients that read `HF_ENDPOINT` at import time run in a subprocess; calls that take `endpoint=` run in-process (that is
also where faults are switched between calls).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from k2v_hub.errors import K2VError
from k2v_hub.testing.hub_server import HubServer

TOKEN = "hf_local_test_token"

_CLIENT_ENV_DROP = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
                    "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_ENDPOINT", "HF_HUB_ENABLE_HF_TRANSFER")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubServer(tmp_path_factory.mktemp("hub-root"), token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def run_client(hub, tmp_path_factory):
    """Run client code in a fresh interpreter pointed at the server; the code prints one JSON line last."""
    home = tmp_path_factory.mktemp("hf-home")

    def run(code: str, token: str | None = TOKEN, timeout: float = 180) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ENV_DROP}
        env.update({"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(home),
                    "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                    "HF_HUB_DISABLE_UPDATE_CHECK": "1", "DISABLE_SAFETENSORS_CONVERSION": "1",
                    "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"})
        if token:
            env["HF_TOKEN"] = token
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                              text=True, timeout=timeout)
        assert proc.returncode == 0, f"client failed:\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-6000:]}"
        return json.loads(proc.stdout.strip().splitlines()[-1])

    return run


@pytest.fixture
def in_process():
    import huggingface_hub.constants as constants

    if constants.is_offline_mode():
        pytest.skip("huggingface_hub was imported in offline mode in this process")


def _requests(hub, method: str, path_part: str) -> list[dict]:
    return [e for e in hub.request_log if e["method"] == method and path_part in e["path"]]


# ---------------------------------------------------------------------------------------------------------------
def test_model_repo_lifecycle(hub, run_client):
    out = run_client('''
        import json, os, pathlib, tempfile
        from huggingface_hub import HfApi, ModelCard, CommitOperationAdd, hf_hub_download, snapshot_download

        api = HfApi()
        out = {"whoami": api.whoami()["name"]}
        out["url"] = str(api.create_repo("acme/vision-model"))
        out["url_again"] = str(api.create_repo("acme/vision-model", exist_ok=True))
        try:
            api.create_repo("acme/vision-model")
        except Exception as err:
            out["conflict"] = err.response.status_code

        folder = pathlib.Path(tempfile.mkdtemp())
        (folder / "README.md").write_text("---\\nlibrary_name: transformers\\npipeline_tag: image-classification\\n"
                                          "tags: [vision]\\nlicense: mit\\n---\\n# Vision model\\n")
        (folder / "config.json").write_text(json.dumps({"architectures": ["ViTForImageClassification"],
                                                        "model_type": "vit"}))
        weights = os.urandom(3 * 1024 * 1024)
        (folder / "model.safetensors").write_bytes(weights)
        (folder / "extra").mkdir()
        (folder / "extra" / "notes.txt").write_text("v1")
        c1 = api.upload_folder(folder_path=folder, repo_id="acme/vision-model", commit_message="v1")

        text = pathlib.Path(tempfile.mkdtemp())
        (text / "README.md").write_text("---\\npipeline_tag: text-classification\\n---\\n# Text model\\n")
        api.create_repo("acme/text-model")
        api.upload_folder(folder_path=text, repo_id="acme/text-model")

        info = api.model_info("acme/vision-model")
        out["info1"] = {"sha": info.sha, "pipeline_tag": info.pipeline_tag, "tags": info.tags,
                        "library_name": info.library_name, "license": info.card_data.license,
                        "siblings": sorted(s.rfilename for s in info.siblings)}
        out["c1"] = c1.oid
        out["by_task"] = [m.id for m in api.list_models(author="acme", pipeline_tag="image-classification")]
        out["by_filter"] = [m.id for m in api.list_models(author="acme", filter="text-classification")]
        out["by_search"] = [[m.id, len(m.siblings), m.card_data.pipeline_tag]
                            for m in api.list_models(search="vision", full=True, cardData=True)]
        out["expand"] = [[m.id, m.pipeline_tag, m.downloads] for m in
                         api.list_models(author="acme", expand=["pipeline_tag", "downloads"], sort="id")]
        out["files"] = api.list_repo_files("acme/vision-model")
        out["tree"] = sorted([e.path, type(e).__name__] for e in api.list_repo_tree("acme/vision-model"))

        c2 = api.upload_file(path_or_fileobj=b"v2", path_in_repo="extra/notes.txt", repo_id="acme/vision-model",
                             commit_message="v2")
        out["c2"] = c2.oid
        out["sha2"] = api.model_info("acme/vision-model").sha
        out["notes"] = [pathlib.Path(hf_hub_download("acme/vision-model", "extra/notes.txt", revision=c1.oid)).read_text(),
                        pathlib.Path(hf_hub_download("acme/vision-model", "extra/notes.txt")).read_text()]
        out["weights_ok"] = pathlib.Path(hf_hub_download("acme/vision-model", "model.safetensors")).read_bytes() == weights
        snap = pathlib.Path(snapshot_download("acme/vision-model", revision=c1.oid))
        out["snapshot"] = [snap.name, (snap / "extra" / "notes.txt").read_text(),
                           sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file())]

        pr = api.create_commit("acme/vision-model", operations=[CommitOperationAdd("extra/notes.txt", b"from a PR")],
                               commit_message="PR", create_pr=True)
        out["pr"] = [pr.pr_revision, pr.pr_num, pr.oid]
        out["main_after_pr"] = api.model_info("acme/vision-model").sha
        out["pr_sha"] = api.model_info("acme/vision-model", revision=pr.pr_revision).sha
        out["pr_notes"] = pathlib.Path(hf_hub_download("acme/vision-model", "extra/notes.txt",
                                                       revision=pr.pr_revision)).read_text()
        refs = api.list_repo_refs("acme/vision-model", include_pull_requests=True)
        out["refs"] = [[r.name, r.target_commit] for r in refs.branches + refs.pull_requests]
        out["commits"] = [c.title for c in api.list_repo_commits("acme/vision-model")]

        card = ModelCard.load("acme/vision-model")
        out["card"] = [card.data.pipeline_tag, card.data.license]
        card.data.tags = ["vision", "k2v"]
        card.push_to_hub("acme/vision-model", commit_message="card")
        out["tags_after_card"] = api.model_info("acme/vision-model").tags

        api.delete_repo("acme/text-model")
        out["after_delete"] = [m.id for m in api.list_models(author="acme")]
        print(json.dumps(out))
    ''')
    assert out["whoami"] == "user"
    assert out["url"] == out["url_again"] == f"{hub.url}/acme/vision-model"
    assert out["conflict"] == 409
    info = out["info1"]
    assert info["pipeline_tag"] == "image-classification" and info["library_name"] == "transformers"
    assert info["license"] == "mit"
    assert {"transformers", "safetensors", "vision", "image-classification", "license:mit"} <= set(info["tags"])
    assert info["siblings"] == [".gitattributes", "README.md", "config.json", "extra/notes.txt", "model.safetensors"]
    assert info["sha"] == out["c1"]
    assert out["by_task"] == ["acme/vision-model"]
    assert out["by_filter"] == ["acme/text-model"]
    assert out["by_search"] == [["acme/vision-model", 5, "image-classification"]]
    assert out["expand"] == [["acme/vision-model", "image-classification", 0],  # sort is descending by default
                             ["acme/text-model", "text-classification", 0]]
    assert sorted(out["files"]) == info["siblings"]
    assert ["extra", "RepoFolder"] in out["tree"] and ["model.safetensors", "RepoFile"] in out["tree"]
    # a new commit moves main; old revisions stay readable
    assert out["sha2"] == out["c2"] != out["c1"]
    assert out["notes"] == ["v1", "v2"]
    assert out["weights_ok"] is True
    assert out["snapshot"][0] == out["c1"] and out["snapshot"][1] == "v1"
    assert "model.safetensors" in out["snapshot"][2]
    # create_pr: a refs/pr/N ref, main untouched
    assert out["pr"][0] == "refs/pr/1" and out["pr"][1] == 1
    assert out["main_after_pr"] == out["c2"]
    assert out["pr_sha"] == out["pr"][2]
    assert out["pr_notes"] == "from a PR"
    assert ["main", out["c2"]] in out["refs"] and ["refs/pr/1", out["pr"][2]] in out["refs"]
    assert out["commits"] == ["v2", "v1", "initial commit"]
    assert out["card"] == ["image-classification", "mit"]
    assert "k2v" in out["tags_after_card"]
    assert out["after_delete"] == ["acme/vision-model"]

    # wire-level checks: the big file went through LFS, writes carried the token
    assert _requests(hub, "PUT", "/lfs-objects/")
    commits = _requests(hub, "POST", "/api/models/acme/vision-model/commit/")
    assert commits and all(e["headers"].get("Authorization") == f"Bearer {TOKEN}" for e in commits)
    pr_commits = [e for e in commits if "create_pr=1" in e["query"]]
    assert len(pr_commits) == 1
    assert _requests(hub, "POST", "/api/validate-yaml")


def test_dataset_push_to_hub_and_load_dataset(hub, run_client):
    out = run_client('''
        import json
        from datasets import Dataset, load_dataset
        from huggingface_hub import HfApi

        ds = Dataset.from_dict({"x": list(range(3000)), "label": ["cat", "dog", "fish"] * 1000})
        ds.push_to_hub("org/toy-images")
        api = HfApi()
        out = {"files": api.list_repo_files("org/toy-images", repo_type="dataset")}
        back = load_dataset("org/toy-images", split="train")
        out["rows"] = [len(back), back[7], back.column_names]
        pq = load_dataset("parquet", data_files="hf://datasets/org/toy-images/data/train-00000-of-00001.parquet",
                          split="train")
        out["parquet_rows"] = len(pq)
        info = api.dataset_info("org/toy-images")
        out["info"] = [info.id, info.sha is not None, sorted(s.rfilename for s in info.siblings)]
        out["listed"] = [d.id for d in api.list_datasets(author="org")]
        print(json.dumps(out))
    ''')
    assert "data/train-00000-of-00001.parquet" in out["files"] and "README.md" in out["files"]
    assert out["rows"] == [3000, {"x": 7, "label": "dog"}, ["x", "label"]]
    assert out["parquet_rows"] == 3000
    assert out["info"][0] == "org/toy-images" and out["info"][1]
    assert out["listed"] == ["org/toy-images"]
    assert _requests(hub, "POST", "/datasets/org/toy-images.git/info/lfs/objects/batch")


def test_transformers_push_and_from_pretrained(hub, run_client):
    out = run_client('''
        import json, torch
        from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification
        from huggingface_hub import HfApi

        torch.manual_seed(0)
        cfg = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                        image_size=32, patch_size=16, num_labels=3, id2label={0: "a", 1: "b", 2: "c"},
                        label2id={"a": 0, "b": 1, "c": 2})
        model = ViTForImageClassification(cfg)
        model.push_to_hub("org/tiny-vit")
        again = AutoModelForImageClassification.from_pretrained("org/tiny-vit")
        info = HfApi().model_info("org/tiny-vit")
        print(json.dumps({"cls": type(again).__name__, "labels": again.config.id2label,
                          "same": bool(torch.equal(again.classifier.weight, model.classifier.weight)),
                          "pipeline_tag": info.pipeline_tag, "library": info.library_name}))
    ''')
    assert out == {"cls": "ViTForImageClassification", "labels": {"0": "a", "1": "b", "2": "c"}, "same": True,
                   "pipeline_tag": "image-classification", "library": "transformers"}


# ---------------------------------------------------------------------------------------------------------------
def test_private_gated_missing_and_write_auth(hub, tmp_path, in_process):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    api = HfApi(endpoint=hub.url, token=TOKEN)
    anon = HfApi(endpoint=hub.url, token=False)

    def download(repo_id, filename, token=TOKEN, **kw):
        return hf_hub_download(repo_id, filename, endpoint=hub.url, token=token,
                               cache_dir=tmp_path / f"cache{time.monotonic_ns()}", **kw)

    # private: 401 without a token (RepositoryNotFoundError), fine with it
    api.create_repo("org/secret", private=True)
    api.upload_file(path_or_fileobj=b"top secret", path_in_repo="secret.txt", repo_id="org/secret")
    with pytest.raises(RepositoryNotFoundError) as err:
        anon.model_info("org/secret")
    assert err.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError):
        download("org/secret", "secret.txt", token=False)
    assert open(download("org/secret", "secret.txt")).read() == "top secret"
    assert api.model_info("org/secret").private is True
    assert "org/secret" not in [m.id for m in anon.list_models(author="org")]
    assert "org/secret" in [m.id for m in api.list_models(author="org")]

    # missing repo / revision / file
    with pytest.raises(RepositoryNotFoundError) as err:
        api.model_info("org/does-not-exist")
    assert err.value.response.status_code == 404
    with pytest.raises(RepositoryNotFoundError):
        download("org/does-not-exist", "config.json")
    with pytest.raises(RevisionNotFoundError):
        download("org/secret", "secret.txt", revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        download("org/secret", "nope.txt")

    # gated: metadata public, files need access
    api.create_repo("org/gated")
    api.upload_file(path_or_fileobj=b"weights", path_in_repo="w.txt", repo_id="org/gated")
    hub.set_gated("org/gated")
    hub.add_user("hf_reader_token", "reader")
    assert anon.model_info("org/gated").gated == "auto"
    with pytest.raises(GatedRepoError) as err:
        download("org/gated", "w.txt", token=False)
    assert err.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as err:
        download("org/gated", "w.txt", token="hf_reader_token")
    assert err.value.response.status_code == 403
    hub.grant_access("org/gated", "reader")
    assert open(download("org/gated", "w.txt", token="hf_reader_token")).read() == "weights"

    # writes need the owner token; unknown tokens are refused
    with pytest.raises(HfHubHTTPError) as err:
        anon.create_repo("org/anonymous-repo")
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=hub.url, token="hf_reader_token").upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="org/gated")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=hub.url, token="hf_wrong").model_info("org/gated")
    assert err.value.response.status_code == 401


def test_range_requests_and_headers(hub, in_process):
    import httpx2
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo("org/ranges", exist_ok=True)
    commit = api.upload_file(path_or_fileobj=b"0123456789", path_in_repo="digits.txt", repo_id="org/ranges")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{hub.url}/org/ranges/resolve/main/digits.txt"
    head = httpx2.head(url, headers=auth)
    assert head.status_code == 200 and head.headers["X-Repo-Commit"] == commit.oid
    assert head.headers["ETag"].startswith('"') and head.headers["Content-Length"] == "10"
    part = httpx2.get(url, headers={**auth, "Range": "bytes=2-4"})
    assert part.status_code == 206 and part.content == b"234"
    assert part.headers["Content-Range"] == "bytes 2-4/10"
    assert httpx2.get(url, headers={**auth, "Range": "bytes=-3"}).content == b"789"
    assert httpx2.get(url, headers={**auth, "Range": "bytes=20-"}).status_code == 416
    pr_url = f"{hub.url}/org/ranges/resolve/refs%2Fpr%2F99/digits.txt"
    assert httpx2.get(pr_url, headers=auth).headers["X-Error-Code"] == "RevisionNotFound"
    logged = [e for e in hub.request_log if e["path"] == "/org/ranges/resolve/main/digits.txt"]
    assert logged and logged[-1]["headers"]["authorization"] == f"Bearer {TOKEN}"


def test_listing_pagination_sort_and_server_side_seeding(hub, in_process):
    from huggingface_hub import HfApi

    for i, (downloads, task) in enumerate([(5, "image-classification"), (50, "image-classification"),
                                           (20, "text-classification")]):
        sha = hub.add_files(f"pager/m{i}", {"README.md": f"---\npipeline_tag: {task}\n---\n",
                                            "weights.bin": b"\x00\x01" * 10})
        hub.set_repo_stats(f"pager/m{i}", downloads=downloads, likes=i)
    api = HfApi(endpoint=hub.url, token=TOKEN)
    info = api.model_info("pager/m2", files_metadata=True)
    assert info.sha == sha and info.downloads == 20 and info.likes == 2
    assert {s.rfilename: s.lfs is not None for s in info.siblings} == {
        ".gitattributes": False, "README.md": False, "weights.bin": True}
    hub.list_page_size = 1
    hub.clear_log()
    try:
        ids = [m.id for m in api.list_models(author="pager", sort="downloads")]
    finally:
        hub.list_page_size = 1000
    assert ids == ["pager/m1", "pager/m2", "pager/m0"]
    assert len(_requests(hub, "GET", "/api/models")) == 3  # followed the Link: rel="next" pages
    assert [m.id for m in api.list_models(author="pager", sort="likes", limit=2)] == ["pager/m2", "pager/m1"]
    assert [m.id for m in api.list_models(author="pager", filter="image-classification", sort="downloads")] == [
        "pager/m1", "pager/m0"]


def test_inference_client_image_classification(hub, in_process):
    from huggingface_hub import InferenceClient
    from PIL import Image

    calls = []

    def predict(image, top_k, function_to_apply=None):
        calls.append((image.size, top_k, function_to_apply))
        labels = ["cat", "dog", "fish", "bird", "cow", "ant"]
        return [{"label": label, "score": 1.0 / (i + 1)} for i, label in enumerate(labels)]

    hub.add_inference_model("org/classifier", predict)
    buf = io.BytesIO()
    Image.new("RGB", (12, 10), "red").save(buf, format="PNG")
    client = InferenceClient(model=hub.inference_url("org/classifier"), token=TOKEN)
    top2 = client.image_classification(buf.getvalue(), top_k=2, function_to_apply="none")
    assert [(p.label, p.score) for p in top2] == [("cat", 1.0), ("dog", 0.5)]
    default = client.image_classification(buf.getvalue())  # raw bytes body, hosted default of 5 labels
    assert len(default) == 5
    endpoint = InferenceClient(model=f"{hub.url}/endpoints/org/classifier", token=TOKEN)
    assert endpoint.image_classification(buf.getvalue(), top_k=1)[0].label == "cat"
    assert calls[0] == ((12, 10), 2, "none") and calls[1][1] == 5


def test_rerank_through_remote_endpoints_answers_like_the_local_models(hub, in_process, tiny_zoo, tiny_index,
                                                                         tiny_task):
    """The second stage through Inference endpoints (no weights downloaded) gives the scores of the local models."""
    from transformers import pipeline

    from k2v_hub import find_model
    from k2v_hub.zoo.data import ZooData

    for model_id in ZooData(tiny_zoo).model_ids:  # each zoo model served as an endpoint; its files are not on the Hub
        pipe = pipeline("image-classification", model=str(tiny_zoo / model_id), trust_remote_code=False)
        hub.add_inference_model(model_id, lambda image, top_k, function_to_apply=None, pipe=pipe: pipe(
            image, top_k=top_k))
    kw = dict(top_k=3, rerank="leep", rerank_k=3, rerank_images=16, show_progress=False)
    remote = find_model(str(tiny_task), str(tiny_index), rerank_endpoint=hub.url + "/models/{model_id}", token=TOKEN,
                        **kw)
    local = find_model(str(tiny_task), str(tiny_index), models_root=str(tiny_zoo), **kw)
    assert [m.model_id for m in remote] == [m.model_id for m in local]
    assert [m.score for m in remote] == pytest.approx([m.score for m in local], abs=1e-4)
    assert {m.stage for m in remote} == {"rerank:leep"} and remote.queries == local.queries == 3 * 16
    with pytest.raises(K2VError, match="predictions only"):
        find_model(str(tiny_task), str(tiny_index), rerank="logme", rerank_endpoint=hub.url + "/models/{model_id}",
                   show_progress=False)


# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def flaky_repo(hub, in_process, request):
    """(api, repo_id) of a fresh repo with f0.txt ... f7.txt, uploaded with the real client."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=hub.url, token=TOKEN)
    repo_id = "flaky/" + request.node.name.replace("_", "-")
    api.create_repo(repo_id)
    api.create_commit(repo_id, commit_message="files",
                      operations=[CommitOperationAdd(f"f{i}.txt", f"file {i}".encode()) for i in range(8)])
    yield api, repo_id
    hub.set_faults()


def test_downloads_survive_faults_the_client_retries(hub, flaky_repo, tmp_path):
    """error_rate=0.2 / drop_rate=0.05 on the kinds of failure huggingface_hub retries: downloads all succeed."""
    from huggingface_hub import hf_hub_download, snapshot_download

    _, repo_id = flaky_repo

    def download(i, tag):
        path = hf_hub_download(repo_id, f"f{i}.txt", endpoint=hub.url, token=TOKEN,
                               cache_dir=tmp_path / f"{tag}{i}")
        assert open(path).read() == f"file {i}"

    # file GETs: 429 (Retry-After: 0) and dropped connections are retried/resumed by `http_get`
    hub.clear_log()
    hub.set_faults(error_rate=0.2, drop_rate=0.05, statuses=(429,), seed=1, paths=(f"/{repo_id}/resolve/",),
                   methods=("GET",))
    for i in range(8):
        download(i, "get")
    snap = snapshot_download(repo_id, endpoint=hub.url, token=TOKEN, cache_dir=tmp_path / "snap")
    assert sorted(os.listdir(snap)) == [".gitattributes"] + [f"f{i}.txt" for i in range(8)]
    assert any(e["status"] in (0, 429) for e in hub.request_log)

    # metadata HEADs: any 429/5xx is retried (a second HEAD with backoff) when the file is not cached
    hub.clear_log()
    hub.set_faults(error_rate=0.2, statuses=(429, 500, 502, 503), seed=1, paths=(f"/{repo_id}/resolve/",),
                   methods=("HEAD",))
    for i in range(8):
        download(i, "head")
    assert any(e["status"] in (429, 500, 502, 503) for e in hub.request_log)


def test_which_client_calls_are_retried(hub, flaky_repo, tmp_path):
    """One injected fault per call: which huggingface_hub calls recover (retry) and which raise at once."""
    from huggingface_hub import CommitOperationAdd, hf_hub_download

    api, repo_id = flaky_repo
    counter = iter(range(1000))

    def survives(fn, *, paths, methods=None, status=503, drop=False) -> bool:
        hub.set_faults(error_rate=0.0 if drop else 1.0, drop_rate=1.0 if drop else 0.0, statuses=(status,),
                       paths=paths, methods=methods, max_faults=1)
        try:
            fn()
            return True
        except Exception:
            return False
        finally:
            hub.set_faults()

    def commit():
        api.create_commit(repo_id, commit_message="c",
                          operations=[CommitOperationAdd("c.txt", f"{next(counter)}".encode())])

    def download():
        hf_hub_download(repo_id, "f0.txt", endpoint=hub.url, token=TOKEN,
                        cache_dir=tmp_path / f"c{next(counter)}")

    resolve = (f"/{repo_id}/resolve/",)
    observed = {
        "list_models (503)": survives(lambda: list(api.list_models(author="flaky")), paths=("/api/models",)),
        "model_info (503)": survives(lambda: api.model_info(repo_id), paths=(f"/api/models/{repo_id}",)),
        "create_repo (503)": survives(lambda: api.create_repo(repo_id, exist_ok=True),
                                      paths=("/api/repos/create",)),
        "create_commit: preupload (503)": survives(commit, paths=(f"/api/models/{repo_id}/preupload/",)),
        "create_commit: commit POST (503)": survives(commit, paths=(f"/api/models/{repo_id}/commit/",)),
        "hf_hub_download: HEAD (503)": survives(download, paths=resolve, methods=("HEAD",)),
        "hf_hub_download: HEAD (dropped)": survives(download, paths=resolve, methods=("HEAD",), drop=True),
        "hf_hub_download: GET (503)": survives(download, paths=resolve, methods=("GET",)),
        "hf_hub_download: GET (429)": survives(download, paths=resolve, methods=("GET",), status=429),
        "hf_hub_download: GET (dropped)": survives(download, paths=resolve, methods=("GET",), drop=True),
    }
    assert observed == {
        "list_models (503)": True,  # pagination goes through http_backoff
        "model_info (503)": False,  # plain session.get: wrap it yourself
        "create_repo (503)": False,
        "create_commit: preupload (503)": True,
        "create_commit: commit POST (503)": False,
        "hf_hub_download: HEAD (503)": True,  # retried with backoff when nothing is cached
        "hf_hub_download: HEAD (dropped)": False,  # RemoteProtocolError escapes the HEAD error handling
        "hf_hub_download: GET (503)": False,  # http_get retries only 408/429 ...
        "hf_hub_download: GET (429)": True,
        "hf_hub_download: GET (dropped)": True,  # ... and connection errors (resuming with Range)
    }


def test_faults_are_deterministic_and_logged(tmp_path):
    def outcomes(seed):
        server = HubServer(tmp_path / f"r{seed}")
        server.set_faults(error_rate=0.3, drop_rate=0.1, seed=seed)
        return [server._draw_fault("GET", "/api/models") for _ in range(50)]

    first = outcomes(3)
    assert first == outcomes(3)
    assert "drop" in first and any(isinstance(o, int) for o in first) and None in first
    server = HubServer(tmp_path / "paths")
    server.set_faults(error_rate=1.0, paths=("/api/datasets",), max_faults=2)
    assert server._draw_fault("GET", "/api/models") is None
    assert server._draw_fault("GET", "/api/datasets/x/y") in (429, 500, 502, 503)
    assert server._draw_fault("GET", "/api/datasets/x/y") is not None
    assert server._draw_fault("GET", "/api/datasets/x/y") is None  # max_faults reached


def test_serve_main_runs_in_foreground(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "k2v_hub.testing.hub_server", "--root", str(tmp_path / "root"),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line
        import httpx2

        resp = httpx2.get(f"http://127.0.0.1:{port}/api/models", timeout=10)
        assert resp.status_code == 200 and resp.json() == []
    finally:
        proc.terminate()
        proc.wait(timeout=10)
