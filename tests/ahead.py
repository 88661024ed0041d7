"""Work the tests start ahead, in a process of its own, on the second core while the tests before them run.

``python tests/ahead.py JOB OUT [ARGS...]`` runs one job and pickles its result to ``OUT/result.pickle`` (pickle, so
the result has the very types the job's function returned). Each job is
exactly what its test did inline before; the test checks the result as it did then. ``conftest.py`` queues the jobs
when collection finishes (only those whose fixture a selected test uses), runs them one at a time beside the tests
and ends them with the session.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path


def fresh_tiny_zoo(out: Path) -> dict:
    """The tiny zoo built from nothing into ``out/zoo``, with the wall and CPU time of the build (tests/test_zoo.py).

    The modules that test module imports are imported before the clocks start, as they were when the build ran in
    the tests' process: the CPU budget is for the build, not for importing torch."""
    import torch  # noqa: F401

    from k2v_hub.features import penultimate_features  # noqa: F401
    from k2v_hub.zoo import models, plan, tasks  # noqa: F401
    from k2v_hub.zoo.build import build_zoo

    wall, cpu = time.perf_counter(), time.process_time()
    manifest = build_zoo(out / "zoo", "tiny", seed=0, show_progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"dir": str(out / "zoo"), "manifest": manifest, "wall": wall, "cpu": cpu}


def cached_tiny_zoo() -> Path:
    """The tiny zoo in the persistent test cache (``$K2V_TEST_CACHE``, default ``~/.cache/k2v_hub/test``), built
    there under a file lock if it is not yet (``build_zoo`` skips what exists)."""
    import fcntl

    from k2v_hub.zoo.build import build_zoo

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


def cli_train_index_find(out: Path) -> dict:
    """``k2v-hub train``, ``index`` and ``find`` on the cached tiny zoo through ``python -m k2v_hub.cli``, in turn,
    stopping at the first failure, with a K2V_HUB_HOME of their own (tests/test_local_path.py): the folders they
    wrote and the exit code, stdout and stderr of each."""
    from k2v_hub.zoo.data import ZooData

    zoo_dir = cached_tiny_zoo()
    zoo = ZooData(zoo_dir)
    task = zoo.task_path((zoo.task_ids(split="eval", kind="nnr") or zoo.task_ids(kind="nnr"))[0])
    retriever, index = out / "retriever", out / "index"
    runs = [["train", "--zoo", str(zoo_dir), "--out", str(retriever), "--steps", "30", "--format", "json"],
            ["index", "--org", zoo.org, "--zoo", str(zoo_dir), "--out", str(index), "--retriever", str(retriever),
             "--format", "json"],
            ["find", "--dataset", str(task), "--index", str(index), "--format", "json", "--top-k", "3"]]
    env = {**os.environ, "K2V_HUB_HOME": str(out / "k2v_home")}
    results = []
    for args in runs:
        proc = subprocess.run([sys.executable, "-m", "k2v_hub.cli", *args], capture_output=True, text=True,
                              env=env, timeout=600)
        results.append(proc)
        if proc.returncode != 0:
            break
    return {"retriever": retriever, "index": index, "runs": results}


def _offline_runs(runs: list[list[str]], home: Path) -> list[subprocess.CompletedProcess]:
    """Each ``k2v-hub`` command of ``runs`` in turn through the console script, offline, with ``home`` as its
    K2V_HUB_HOME, stopping at the first failure."""
    from fakes import console_script

    env = {**os.environ, "K2V_HUB_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    results = []
    for args in runs:
        proc = subprocess.run([*console_script("k2v-hub"), *args], capture_output=True, text=True, env=env,
                              timeout=900)
        results.append(proc)
        if proc.returncode != 0:
            break
    return results


def shipped_default_retriever(out: Path) -> dict:
    """With no retriever anywhere (an empty K2V_HUB_HOME) and no ``--retriever``: ``k2v-hub index`` of the cached
    tiny zoo's org, then ``find`` on its first evaluation task, through the console script, offline, stopping at
    the first failure (tests/test_default_retriever.py): the folders and the CompletedProcess of each."""
    from k2v_hub.zoo.data import ZooData

    zoo_dir = cached_tiny_zoo()
    zoo = ZooData(zoo_dir)
    task = zoo.task_path((zoo.task_ids(split="eval", kind="nnr") or zoo.task_ids(kind="nnr"))[0])
    home, index = out / "home", out / "idx"
    home.mkdir()
    runs = [["index", "--org", zoo.org, "--zoo", str(zoo_dir), "--out", str(index), "--format", "json"],
            ["find", "--dataset", str(task), "--index", str(index), "--rerank", "none", "--format", "json"]]
    results = _offline_runs(runs, home)
    return {"home": home, "index": index, "task": task, "runs": results}


def built_default_retriever(out: Path) -> dict:
    """``k2v-hub build-retriever --profile tiny --seed 0`` (the documented command) with ``--work`` a copy of the
    cached tiny zoo and a K2V_HUB_HOME of its own with no retriever in it, then, with no ``--retriever`` anywhere,
    ``index`` of the zoo's org, ``find`` on its first evaluation task and ``train`` (adapt) on that index, in turn
    through the console script, offline, stopping at the first failure (tests/test_default_retriever.py): the
    folders they wrote and the CompletedProcess of each."""
    import shutil

    from k2v_hub.bench.default_retriever import COMMAND
    from k2v_hub.zoo.data import ZooData

    zoo_dir = cached_tiny_zoo()
    zoo = ZooData(zoo_dir)
    task = zoo.task_path((zoo.task_ids(split="eval", kind="nnr") or zoo.task_ids(kind="nnr"))[0])
    home, work, index, adapted = out / "home", out / "work", out / "idx", out / "adapted"
    home.mkdir()
    work.mkdir()
    shutil.copytree(zoo_dir, work / "zoo")
    runs = [[*COMMAND.format(profile="tiny", seed=0).split()[1:], "--work", str(work), "--format", "json"],
            ["index", "--org", zoo.org, "--zoo", str(zoo_dir), "--out", str(index), "--format", "json"],
            ["find", "--dataset", str(task), "--index", str(index), "--rerank", "none", "--format", "json"],
            ["train", "--index", str(index), "--out", str(adapted), "--steps", "2", "--format", "json"]]
    results = _offline_runs(runs, home)
    return {"home": home, "built": home / "default_retriever", "index": index, "adapted": adapted, "task": task,
            "runs": results}


def task_image_hashes(profile: str) -> dict[str, set[str]]:
    """Replay a zoo plan's tasks and their image draws (no model is trained): ``{pool part: sha256 of every
    support and query image of its tasks}`` (tests/test_splits.py)."""
    import hashlib
    from collections import defaultdict

    import numpy as np

    from k2v_hub.zoo.build import source_pool
    from k2v_hub.zoo.plan import plan_zoo
    from k2v_hub.zoo.tasks import POOL_PARTS, task_pool_indices

    plan = plan_zoo(profile)
    by_source = defaultdict(list)
    for t in plan.tasks:
        by_source[t.source].append(t)
    hashes = {part: set() for part in POOL_PARTS}
    for source, tasks in by_source.items():
        images, labels = source_pool(source, plan.profile, plan.seed)
        for t in tasks:
            support, _, query, _ = task_pool_indices(t, labels)
            hashes[t.pool_part].update(hashlib.sha256(np.ascontiguousarray(images[i]).tobytes()).hexdigest()
                                       for i in np.concatenate([support, query]))
    return hashes


def bench_task_image_hashes(out: Path) -> dict[str, set[str]]:
    """``task_image_hashes("bench")``: the bench plan's draws take a while."""
    return task_image_hashes("bench")


JOBS = {"fresh_tiny_zoo": fresh_tiny_zoo, "cli_train_index_find": cli_train_index_find,
        "shipped_default_retriever": shipped_default_retriever, "built_default_retriever": built_default_retriever,
        "bench_task_image_hashes": bench_task_image_hashes}

if __name__ == "__main__":
    job, out, *args = sys.argv[1:]
    result = JOBS[job](Path(out), *args)
    tmp = Path(out) / "result.pickle.tmp"
    tmp.write_bytes(pickle.dumps(result))
    tmp.rename(Path(out) / "result.pickle")
