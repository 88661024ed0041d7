"""Shared fixtures: one tiny zoo, one quickly trained retriever and one index per test session, and the work
started ahead (``ahead.py``).

Everything is real: the zoo holds `transformers` classifiers trained on real images, the retriever is trained
with Accelerate, the index is built black-box. Built once per session (about two minutes on 2 cores) in a
temporary folder, so tests never depend on anything on this machine but the installed packages.

The tests run one at a time, on one core. A few long jobs that need nothing from the session (a fresh zoo build,
a train -> index -> find run of the CLI, the bench plan's image draws) are queued when collection finishes and run
one after another in processes of their own, so the second core does them while the tests before theirs run;
their fixtures wait for the result.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DISABLE_SAFETENSORS_CONVERSION", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op torch thread in the tests' process and every process it starts (read when torch is imported): the
# models are tiny, and the second core runs the work started ahead or a process beside.
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_STEPS = 60
AHEAD_SCRIPT = Path(__file__).with_name("ahead.py")
AHEAD_TIMEOUT = 1800


class Ahead:
    """The jobs of ``ahead.py`` for this session, run one after another in a background lane (one process at a
    time: the second core); ``result(job)`` waits for one and returns its result."""

    def __init__(self, jobs: list[str]):
        self.work = Path(tempfile.mkdtemp(prefix="k2v-ahead-"))
        self.queued = list(jobs)
        self.done = {job: threading.Event() for job in jobs}
        self.procs: dict[str, subprocess.Popen] = {}
        self.closed = False
        self.lane = threading.Thread(target=self._run_lane, name="k2v-ahead", daemon=True)
        self.lane.start()

    def _start(self, job: str) -> subprocess.Popen:
        out = self.work / job
        out.mkdir()
        env = dict(os.environ)
        if env.get("K2V_TEST_FRESH") == "1":  # nothing in the persistent cache: a zoo of the job's own
            env["K2V_TEST_CACHE"] = str(out / "cache")
        with open(out / "stderr", "w") as err:
            proc = self.procs[job] = subprocess.Popen([sys.executable, str(AHEAD_SCRIPT), job, str(out)], env=env,
                                                      stdout=subprocess.DEVNULL, stderr=err,
                                                      stdin=subprocess.DEVNULL)
        return proc

    def _run_lane(self) -> None:
        for job in self.queued:
            if not self.closed:
                proc = self._start(job)
                try:
                    proc.wait(AHEAD_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.done[job].set()

    def result(self, job: str):
        if job in self.done:
            self.done[job].wait()
        else:  # not queued (collection did not see a test use it): now, in the foreground
            self._start(job).wait(AHEAD_TIMEOUT)
        proc, out = self.procs[job], self.work / job
        assert proc.returncode == 0, f"ahead.py {job} exited {proc.returncode}:\n{(out / 'stderr').read_text()[-6000:]}"
        return pickle.loads((out / "result.pickle").read_bytes())

    def close(self) -> None:
        self.closed = True
        for proc in list(self.procs.values()):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.lane.join(60)
        shutil.rmtree(self.work, ignore_errors=True)


_ahead = pytest.StashKey[Ahead]()


def pytest_collection_finish(session):
    """Queue the ``ahead.py`` jobs whose fixture (same name) a selected test uses, in the order the tests use them."""
    from ahead import JOBS

    first_use = {}
    for i, item in enumerate(session.items):
        for name in getattr(item, "fixturenames", ()):
            if name in JOBS:
                first_use.setdefault(name, i)
    session.config.stash[_ahead] = Ahead(sorted(first_use, key=first_use.get))


def pytest_unconfigure(config):
    if _ahead in config.stash:
        config.stash[_ahead].close()


@pytest.fixture(scope="session")
def fresh_tiny_zoo(request) -> dict:
    """The tiny zoo built from nothing, started ahead: ``{dir, manifest, wall, cpu}`` (wall and CPU seconds of
    ``build_zoo`` in its process). Tests may modify it."""
    built = request.config.stash[_ahead].result("fresh_tiny_zoo")
    return {**built, "dir": Path(built["dir"])}


@pytest.fixture(scope="session")
def cli_train_index_find(request) -> dict:
    """``k2v-hub train``, ``index`` and ``find`` on the tiny zoo, run ahead: ``{retriever, index, runs}`` (folders
    and CompletedProcesses)."""
    return request.config.stash[_ahead].result("cli_train_index_find")


@pytest.fixture(scope="session")
def shipped_default_retriever(request) -> dict:
    """``k2v-hub index`` then ``find`` with no ``--retriever`` anywhere, on an empty cache, run ahead:
    ``{home, index, task, runs}`` (folders and CompletedProcesses)."""
    return request.config.stash[_ahead].result("shipped_default_retriever")


@pytest.fixture(scope="session")
def built_default_retriever(request) -> dict:
    """``k2v-hub build-retriever --profile tiny --seed 0``, then ``index``, ``find`` and ``train`` (adapt) with no
    ``--retriever`` anywhere, on an empty cache, run ahead: ``{home, built, index, adapted, task, runs}`` (folders
    and CompletedProcesses)."""
    return request.config.stash[_ahead].result("built_default_retriever")


@pytest.fixture(scope="session")
def bench_task_image_hashes(request) -> dict:
    """``ahead.task_image_hashes("bench")``, computed ahead."""
    return request.config.stash[_ahead].result("bench_task_image_hashes")


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
    from k2v_hub.zoo.build import build_zoo

    from ahead import cached_tiny_zoo

    if os.environ.get("K2V_TEST_FRESH") == "1":
        root = tmp_path_factory.mktemp("zoo")
        build_zoo(root, "tiny", seed=0, show_progress=False)
        return root
    return cached_tiny_zoo()


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
