"""A Hub token, given with --token or HF_TOKEN, is used but never shown or stored: not in stdout/stderr (also with
--verbose and HF_DEBUG=1), not in any file k2v-hub writes (retriever, index, parquet, cards, caches), and not in
anything pushed to the Hub (every blob and commit the server stored)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from k2v_hub.testing.hub_server import HubServer

from fakes import console_script, start_process  # noqa: E402

TOKEN = "hf_" + secrets.token_hex(16)
_ENV_DROP = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
             "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_ENDPOINT", "HF_HOME", "HF_DEBUG")


def files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in Path(root).rglob("*"):
        if path.is_file() and not path.is_symlink():
            if needle in path.read_bytes():
                hits.append(str(path))
    return hits


@pytest.fixture(scope="module")
def session(tmp_path_factory, tiny_zoo, tiny_retriever, k2v_home):
    from k2v_hub.zoo.data import ZooData

    zoo = ZooData(tiny_zoo)
    work = tmp_path_factory.mktemp("secrets")
    (work / "k2v_home").mkdir()
    if (k2v_home / "backbones").is_dir():
        (work / "k2v_home" / "backbones").symlink_to(k2v_home / "backbones", target_is_directory=True)
    with HubServer(work / "hub", token=TOKEN) as server:
        for model_id in zoo.model_ids:
            folder = tiny_zoo / model_id
            server.add_files(model_id, {f.relative_to(folder).as_posix(): f for f in folder.rglob("*") if f.is_file()})
        outputs = []

        def start(*args, token_env: bool, extra_env=None, check=True):
            """Start ``k2v-hub ARGS``; return a function that waits for it, records its output and returns it
            (checked, with ``check``, once every run started before it has been waited for)."""
            env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
            env.update({"HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(work / "hf_home"),
                        "K2V_HUB_HOME": str(work / "k2v_home"), "HF_HUB_DISABLE_TELEMETRY": "1",
                        "HF_HUB_DISABLE_UPDATE_CHECK": "1", "PYTHONWARNINGS": "ignore"})
            if token_env:
                env["HF_TOKEN"] = TOKEN
            env.update(extra_env or {})
            wait = start_process([*console_script("k2v-hub"), *map(str, args)], env=env, timeout=600)

            def result():
                proc = wait()
                outputs.append((args, proc.stdout, proc.stderr))
                return proc

            result.check = check
            return result

        def checked(run, proc):
            assert not run.check or proc.returncode == 0, \
                f"{proc.args[1:]}: {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}"
            return proc

        def k2v(*args, **kw):
            run = start(*args, **kw)
            return checked(run, run())

        org = zoo.org
        # a retriever pushed from Python with token=... (what `k2v-hub train --push --token` does after training),
        # with debug logging on
        push = (f"import logging, sys; logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)\n"
                f"from k2v_hub.pipeline import save_retriever\nfrom k2v_hub.retriever import Retriever\n"
                f"print(save_retriever(Retriever.from_pretrained({str(tiny_retriever)!r}), {str(work / 'retriever')!r},"
                f" push_to_hub='{org}/k2v-retriever', token={TOKEN!r}))")
        env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
        env.update({"HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(work / "hf_home")})
        proc = subprocess.run([sys.executable, "-c", push], capture_output=True, text=True, env=env, timeout=300)
        outputs.append((("save_retriever",), proc.stdout, proc.stderr))
        assert proc.returncode == 0, proc.stderr[-3000:]
        # --token: index one model with the Hub retriever, push the index and its card
        report = json.loads(k2v("index", "--org", org, "--limit", "1", "--out", work / "index", "--retriever",
                                f"{org}/k2v-retriever", "--push", f"{org}/k2v-index", "--push-cards",
                                "--token", TOKEN, "--verbose", "--format", "json", token_env=False).stdout)
        # HF_TOKEN: find on the Hub index, push a card again, a failing Hub call with the traceback shown; and a
        # wrong --token. None needs another's result: they run side by side (most of each is start-up).
        runs = [start("find", "--dataset", zoo.task_path(zoo.task_ids()[0]), "--index", f"{org}/k2v-index",
                      "--verbose", "--format", "human", "--max-images-per-class", "4", token_env=True),
                start("push-card", "--model", report["indexed"][0], "--index", work / "index", "--verbose",
                      token_env=True),
                start("push-card", "--model", f"{org}/not-in-the-index", "--index", f"{org}/k2v-index",
                      token_env=True, extra_env={"HF_DEBUG": "1"}, check=False),
                start("push-card", "--model", report["indexed"][0], "--index", work / "index", "--token",
                      TOKEN[:-4] + "beef", "--verbose", token_env=False, check=False)]
        _, _, failed, denied = [checked(run, proc) for run, proc in [(run, run()) for run in runs]]
        yield {"work": work, "server": server, "outputs": outputs, "report": report, "zoo": zoo,
               "failed": failed, "denied": denied}


def test_the_token_was_really_used(session):
    server = session["server"]
    assert len(session["report"]["indexed"]) == 1  # --limit 1
    assert server.store.exists("dataset", f"{session['zoo'].org}/k2v-index")
    assert server.store.exists("model", f"{session['zoo'].org}/k2v-retriever")
    assert session["failed"].returncode != 0 and "Traceback" in session["failed"].stderr
    assert session["denied"].returncode == 6 and "401" in session["denied"].stderr  # a wrong token is refused


def test_token_never_printed(session):
    for args, stdout, stderr in session["outputs"]:
        assert TOKEN not in stdout and TOKEN not in stderr, args
        assert TOKEN[3:] not in stdout + stderr  # not even without its prefix


def test_token_never_written_to_local_files(session):
    work = session["work"]
    assert (work / "retriever" / "model.safetensors").is_file() and (work / "retriever" / "README.md").is_file()
    assert (work / "index" / "data" / "train-00000-of-00001.parquet").is_file()
    for folder in ("retriever", "index", "hf_home", "k2v_home"):
        assert files_containing(work / folder, TOKEN.encode()) == [], folder
        assert files_containing(work / folder, TOKEN[3:].encode()) == [], folder
    assert not (work / "hf_home" / "token").exists()  # k2v-hub never saves a login


def test_token_never_pushed_to_the_hub(session):
    root = Path(session["server"].root)
    stored = [p for p in root.rglob("*") if p.is_file()]
    assert any("blobs" in p.parts for p in stored) and any(p.name == "repo.json" for p in stored)
    assert files_containing(root, TOKEN.encode()) == []
    assert files_containing(root, TOKEN[3:].encode()) == []
