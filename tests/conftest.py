"""Shared fixtures: one tiny zoo, one quickly trained retriever and one index per test session.

Everything is real: the zoo holds `transformers` classifiers trained on real images, the retriever is trained
with Accelerate, the index is built black-box. Built once per session (about two minutes on 2 cores) in a
temporary folder, so tests never depend on anything on this machine but the installed packages.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DISABLE_SAFETENSORS_CONVERSION", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_STEPS = 60


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one intra-op torch thread is faster, and much faster on 2 shared, loaded cores."""
    from fakes import one_torch_thread

    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def k2v_home(tmp_path_factory) -> Path:
    """A private k2v-hub cache for the session (backbone, knowledge cache)."""
    home = tmp_path_factory.mktemp("k2v_home")
    os.environ["K2V_HUB_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory, k2v_home) -> Path:
    """The tiny offline zoo, built once per machine.

    It is deterministic and `build_zoo` skips what exists, so it lives in a persistent cache
    (``$K2V_TEST_CACHE``, default ``~/.cache/k2v_hub/test``) shared by test sessions under a file lock.
    ``K2V_TEST_FRESH=1`` builds it in a temporary folder instead. Tests must not modify it (copy first).
    """
    import fcntl

    from k2v_hub.zoo.build import build_zoo

    if os.environ.get("K2V_TEST_FRESH") == "1":
        root = tmp_path_factory.mktemp("zoo")
        build_zoo(root, "tiny", seed=0, show_progress=False)
        return root
    cache = Path(os.environ.get("K2V_TEST_CACHE", Path.home() / ".cache" / "k2v_hub" / "test"))
    cache.mkdir(parents=True, exist_ok=True)
    root = cache / "zoo-tiny"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            build_zoo(root, "tiny", seed=0, show_progress=False)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return root


@pytest.fixture(scope="session")
def tiny_retriever(tiny_zoo, tmp_path_factory) -> Path:
    """A retriever trained for a few steps on the tiny zoo, saved to a folder."""
    from k2v_hub.zoo.training import train_from_zoo
    from k2v_hub.train import TrainingArguments

    out = tmp_path_factory.mktemp("retriever")
    train_from_zoo(tiny_zoo, out, args=TrainingArguments(steps=TINY_STEPS, batch_tasks=16), show_progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_index(tiny_zoo, tiny_retriever, tmp_path_factory) -> Path:
    """The tiny zoo's org indexed with the tiny retriever."""
    from k2v_hub.hub import LocalSource
    from k2v_hub.index import build_index
    from k2v_hub.index import load_retriever
    from k2v_hub.pipeline import make_indexer
    from k2v_hub.zoo.data import ZooData

    out = tmp_path_factory.mktemp("index")
    retriever, rid, rev = load_retriever(str(tiny_retriever))
    indexer = make_indexer(retriever, retriever_id=rid, retriever_revision=rev)
    build_index(LocalSource(tiny_zoo), ZooData(tiny_zoo).org, out, indexer, show_progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_task(tiny_zoo) -> Path:
    """An evaluation task folder (save_to_disk DatasetDict) with held-out images."""
    from k2v_hub.zoo.data import ZooData

    zoo = ZooData(tiny_zoo)
    ids = zoo.task_ids(split="eval", kind="nnr") or zoo.task_ids(kind="nnr")
    return zoo.task_path(ids[0])
