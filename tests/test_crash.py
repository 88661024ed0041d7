"""Crash safety of `k2v-hub index`: a real SIGKILL of the CLI process at random points, then a rerun.

The org is made bigger than the tiny zoo's: its model folders are copied under more names into a temporary zoo
(the copies' READMEs get a line more, so every repo has its own revision). Each run is a fresh `k2v-hub index`
process (``k2v_hub.cli.main`` in a new interpreter) with a fresh, empty K2V_HUB_HOME, so nothing can come from the
knowledge cache: a model the rerun does not query again can only come from the index's own journal.

Crash points (the random ones drawn from the seeds): at a random time before any row is written, after the N-th
journal row plus a random delay (so mostly in the middle of the next model, sometimes inside a journal write), and
inside the final parquet write (the process is made to stall there with the temp parquet half written, then
killed). After every kill: every row finished before it is still there, byte for byte; after each completed rerun:
every model exactly once in the parquet, finished rows identical (embedding, knowledge, created_at), the report
lists them as reused and the queries it counts are exactly those of the models it did index.

The retriever here is an untrained one on raw pixels with a small probe set: what is tested is the journal, not
retrieval quality, and it keeps each process to a few seconds.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from k2v_hub.index import DATA_FILE, ROWS_DIR, clean_stale_temp_files, load_index, row_filename

N_MODELS = 8
SEEDS = (0, 1, 5)  # kills after 4, 1 and 3 new rows (+ a random delay)
FINAL_WRITE_SEED = 0
RUN_TIMEOUT = 240
INDEX_OPTIONS = ["--bisection-steps", "3", "--max-classes", "6"]

# The CLI, optionally made to stall inside the final parquet write (after writing half of the temp file) so a
# test can SIGKILL it there. Nothing else is changed.
LAUNCHER = textwrap.dedent("""
    import os, sys, time
    marker = os.environ.get("K2V_TEST_STALL_IN_PARQUET_WRITE")
    if marker:
        import datasets

        _to_parquet = datasets.Dataset.to_parquet

        def _stalling_to_parquet(self, path, *args, **kwargs):
            written = _to_parquet(self, path, *args, **kwargs)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            with open(marker, "w") as f:
                f.write(str(path))
            time.sleep(600)
            return written

        datasets.Dataset.to_parquet = _stalling_to_parquet
    from k2v_hub.cli import main

    sys.argv[0] = "k2v-hub"
    main()
""")


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def pixel_retriever(tmp_path_factory) -> Path:
    """An untrained retriever on 8x8 pixels with 48 probes of the kinds that need no font discovery (cheap to load,
    cheap to build its probes in every process, cheap to query with)."""
    from k2v_hub.features import FeatureExtractor
    from k2v_hub.knowledge import load_probe_set
    from k2v_hub.pipeline import new_retriever, save_retriever

    out = tmp_path_factory.mktemp("pixel-retriever")
    _, fingerprint, spec = load_probe_set({"source": "builtin", "n": 48, "size": 32, "seed": 0,
                                         "kinds": ["shapes", "textures"]})
    retriever = new_retriever(FeatureExtractor.from_pretrained("pixels-8"), probe_spec=spec,
                              probe_fingerprint=fingerprint, embed_dim=32, hidden_dim=32, max_classes=6)
    save_retriever(retriever, out)
    return out


def make_big_zoo(tiny_zoo: Path, dest: Path, n_models: int = N_MODELS) -> tuple[str, list[str]]:
    """Copy the tiny zoo's model folders under more names into ``dest``; return ``(org, model ids)``."""
    from k2v_hub.zoo.data import ZooData

    zoo = ZooData(tiny_zoo)
    org = zoo.org
    names = [m.split("/", 1)[1] for m in zoo.model_ids]
    (dest / org).mkdir(parents=True)
    ids = []
    for i in range(n_models):
        src = tiny_zoo / org / names[i % len(names)]
        name = names[i % len(names)] if i < len(names) else f"{names[i % len(names)]}-copy{i // len(names)}"
        shutil.copytree(src, dest / org / name)
        if i >= len(names):
            with open(dest / org / name / "README.md", "a") as f:
                f.write(f"\nCopy {i // len(names)} of `{org}/{names[i % len(names)]}` (for the crash test).\n")
        ids.append(f"{org}/{name}")
    return org, sorted(ids)


# ------------------------------------------------------------------------------------------------ helpers
class IndexRuns:
    """Starts `k2v-hub index` processes on one index folder, each with a fresh K2V_HUB_HOME."""

    def __init__(self, zoo: Path, org: str, retriever: Path, out: Path, work: Path):
        self.zoo, self.org, self.retriever, self.out, self.work = zoo, org, retriever, out, work
        self.n = 0
        self.log: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def close(self) -> None:
        """Kill whatever is still running (a failed check must not leave a process behind)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)

    def start(self, *, stall_marker: Path | None = None) -> subprocess.Popen:
        self.n += 1
        home = self.work / f"home-{self.n}"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "K2V_TEST_STALL_IN_PARQUET_WRITE"}
        env.update({"K2V_HUB_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                    "HF_HUB_DISABLE_PROGRESS_BARS": "1", "DISABLE_SAFETENSORS_CONVERSION": "1",
                    "PYTHONWARNINGS": "ignore"})
        if stall_marker is not None:
            env["K2V_TEST_STALL_IN_PARQUET_WRITE"] = str(stall_marker)
        cmd = [sys.executable, "-c", LAUNCHER, "index", "--org", self.org, "--zoo", str(self.zoo), "--out",
               str(self.out), "--retriever", str(self.retriever), "--format", "json", *INDEX_OPTIONS]
        self._stdout = self.work / f"run-{self.n}.out"
        self._stderr = self.work / f"run-{self.n}.err"
        with open(self._stdout, "w") as so, open(self._stderr, "w") as se:
            proc = subprocess.Popen(cmd, env=env, stdout=so, stderr=se, start_new_session=True)
        proc.t0 = time.monotonic()
        self.procs.append(proc)
        return proc

    def output(self) -> str:
        return f"STDOUT:\n{self._stdout.read_text()[-3000:]}\nSTDERR:\n{self._stderr.read_text()[-5000:]}"

    def kill(self, proc: subprocess.Popen, point: str) -> dict[str, bytes]:
        """SIGKILL ``proc``; return the journal as it is right after the kill."""
        assert proc.poll() is None, f"the index run ended before the crash point ({point}):\n{self.output()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
        rows = journal(self.out)
        self.log.append(f"{point}: killed after {time.monotonic() - proc.t0:.1f} s with {len(rows)} row(s)")
        return rows

    def wait_until(self, proc: subprocess.Popen, condition, what: str) -> None:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not condition():
            assert proc.poll() is None, f"the index run ended before {what}:\n{self.output()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.output()}"
            time.sleep(0.02)

    def complete(self, proc: subprocess.Popen) -> dict:
        """Wait for a run to finish; return its JSON report."""
        try:
            proc.wait(RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"index run timed out:\n{self.output()}") from None
        assert proc.returncode == 0, f"index run failed:\n{self.output()}"
        return json.loads(self._stdout.read_text())


def journal(out: Path) -> dict[str, bytes]:
    """The journal's finished rows: file name -> bytes (temp files are not rows)."""
    folder = out / ROWS_DIR
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def parquet_rows(out: Path) -> list[dict]:
    return pq.read_table(out / DATA_FILE).to_pylist()


def assert_rows_kept(before: dict[str, bytes], after: dict[str, bytes], *, changed: set[str] = frozenset()):
    """Every journal row from ``before`` is still there, byte for byte (neither lost nor recomputed)."""
    lost = sorted(set(before) - set(after))
    assert not lost, f"journal rows lost: {lost}"
    rewritten = sorted(k for k in before if k not in changed and after[k] != before[k])
    assert not rewritten, f"journal rows recomputed: {rewritten}"


def assert_same_row(index_row: dict, journal_bytes: bytes):
    """An index row equals the journal row it came from (the parquet stores float32)."""
    row = json.loads(journal_bytes)
    assert index_row["model_id"] == row["model_id"]
    np.testing.assert_array_equal(np.asarray(index_row["embedding"], np.float32),
                                  np.asarray(row["embedding"], np.float32))
    for key in ("knowledge", "created_at", "revision", "n_queries", "labels", "retriever_fingerprint"):
        assert index_row[key] == row[key], (row["model_id"], key)


def check_completed(out: Path, ids: list[str], report: dict, finished_before: dict[str, bytes]):
    """After a completed rerun: each model once, earlier rows untouched and reused, queries only for new rows."""
    rows = parquet_rows(out)
    got = [r["model_id"] for r in rows]
    assert sorted(got) == ids, f"models missing or duplicated in the index: {got}"
    by_id = {r["model_id"]: r for r in rows}
    before = {json.loads(b)["model_id"]: b for b in finished_before.values()}
    for model_id, data in before.items():
        assert_same_row(by_id[model_id], data)
    for key in ("indexed", "reused", "reencoded"):
        assert len(report[key]) == len(set(report[key])), f"{key} lists a model twice: {report[key]}"
    assert not report["skipped"] and not report["reencoded"]
    assert sorted(report["indexed"] + report["reused"]) == ids
    assert set(report["reused"]) == set(before), "finished rows must be reused, the rest indexed"
    assert report["queries"] == sum(by_id[m]["n_queries"] for m in report["indexed"]), \
        "the rerun spent queries on models it reused"
    assert all(by_id[m]["n_queries"] > 0 for m in report["indexed"])


# ------------------------------------------------------------------------------------------------ tests
def crash_and_rerun(seed: int, tiny_zoo: Path, retriever: Path, work: Path) -> list[str]:
    """One zoo and index folder: killed at a random time into start-up (before the first row can be finished),
    rerun and killed after a random number of new rows plus a random part of a model's time, rerun to completion;
    checked after each step. Returns the crash log."""
    rng = random.Random(seed)
    work.mkdir()
    zoo, out = work / "zoo", work / "index"
    org, ids = make_big_zoo(tiny_zoo, zoo)
    runs = IndexRuns(zoo, org, retriever, out, work)
    try:
        # 1. early
        proc = runs.start()
        time.sleep(rng.uniform(0.3, 3.0))
        finished = runs.kill(proc, f"seed {seed}: early")
        assert not (out / DATA_FILE).exists()

        # 2. mid-way
        last = len(ids) - 2  # kill before the last two rows whatever the delay, so the kill is mid-way
        target = min(last, len(finished) + rng.randint(1, 4))
        proc = runs.start()
        runs.wait_until(proc, lambda: len(journal(out)) >= target, f"{target} journal rows")
        deadline = time.monotonic() + rng.uniform(0.0, 1.5)
        while time.monotonic() < deadline and len(journal(out)) < last:
            time.sleep(0.01)
        now = runs.kill(proc, f"seed {seed}: after row {target} + delay")
        assert_rows_kept(finished, now)
        assert target <= len(now) < len(ids)
        finished = now
        # a kill leaves at most a hidden temp file behind, never a half row under a row's name
        assert all(p.name.endswith(".json") or (p.name.startswith(".") and p.name.endswith(".tmp"))
                   for p in (out / ROWS_DIR).iterdir())

        # 3. rerun to completion: nothing lost, nothing queried twice
        report = runs.complete(runs.start())
        check_completed(out, ids, report, finished)
        assert len(journal(out)) == len(ids)
        assert sorted(r.model_id for r in load_index(out).rows) == ids
        runs.log.append(f"seed {seed}: rerun reused {len(report['reused'])}, indexed {len(report['indexed'])} "
                        f"with {report['queries']} queries")
        return runs.log
    finally:
        runs.close()


def complete_index(zoo: Path, org: str, retriever: Path, out: Path, knowledge: Path) -> None:
    """Index ``zoo`` in-process with the CLI runs' settings (single-threaded torch: this runs beside them)."""
    import torch

    from k2v_hub.hub import LocalSource
    from k2v_hub.index import build_index
    from k2v_hub.index import load_retriever
    from k2v_hub.pipeline import make_indexer

    model, rid, rev = load_retriever(str(retriever))
    indexer = make_indexer(model, retriever_id=rid, retriever_revision=rev, bisection_steps=3, max_classes=6,
                           cache_dir=knowledge)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build_index(LocalSource(zoo), org, out, indexer, show_progress=False)
    finally:
        torch.set_num_threads(threads)


def crash_in_final_write(seed: int, tiny_zoo: Path, retriever: Path, work: Path) -> list[str]:
    """A complete index; one model gets a new revision; the run that re-queries it is killed inside the final
    parquet write (temp file half written); the rerun completes. Returns the crash log."""
    rng = random.Random(seed)
    work.mkdir()
    zoo, out = work / "zoo", work / "index"
    org, ids = make_big_zoo(tiny_zoo, zoo)
    complete_index(zoo, org, retriever, out, work / "knowledge")
    runs = IndexRuns(zoo, org, retriever, out, work)
    try:
        old_parquet = (out / DATA_FILE).read_bytes()
        changed = rng.choice(ids)
        changed_file = row_filename(changed)
        with open(zoo / changed / "README.md", "a") as f:
            f.write("\nA new revision.\n")
        before = journal(out)
        marker = work / "in-parquet-write"
        proc = runs.start(stall_marker=marker)
        runs.wait_until(proc, marker.exists, "the final parquet write")
        after = runs.kill(proc, f"seed {seed}: inside the final parquet write")
        assert_rows_kept(before, after, changed={changed_file})
        new_row = json.loads(after[changed_file])
        assert new_row["revision"] != json.loads(before[changed_file])["revision"], "new revision not journaled"
        assert (out / DATA_FILE).read_bytes() == old_parquet, "a killed write must leave the old parquet whole"
        leftovers = [p for p in (out / DATA_FILE).parent.iterdir() if p.name != Path(DATA_FILE).name]
        assert leftovers and all(p.name.startswith(".") and p.name.endswith(".tmp") for p in leftovers), leftovers
        assert sorted(r.model_id for r in load_index(out).rows) == ids  # the old index still loads meanwhile

        report = runs.complete(runs.start())
        check_completed(out, ids, report, after)
        assert report["indexed"] == [] and report["queries"] == 0
        assert {r["model_id"]: r for r in parquet_rows(out)}[changed]["revision"] == new_row["revision"]
        runs.log.append(f"seed {seed}: rerun reused {len(report['reused'])}, indexed {len(report['indexed'])} "
                        f"with {report['queries']} queries")
    finally:
        runs.close()

    # the half-written temp file breaks nothing: the index, `datasets` and a glob over data/ all ignore it...
    import datasets

    assert all(p.exists() for p in leftovers)  # young temp files are left alone (a shard may be writing)
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train",
                               cache_dir=str(work / "ds-cache"))
    assert sorted(ds["model_id"]) == ids
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(work / "ds-cache2"))
    assert sorted(ds["model_id"]) == ids
    # ... and once it is old, the next run's clean-up removes it
    for p in leftovers:
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    assert sorted(clean_stale_temp_files(out)) == sorted(map(str, leftovers))
    assert not any(p.exists() for p in leftovers)
    return runs.log


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun(tiny_zoo, pixel_retriever, tmp_path):
    """Several seeds, each its own zoo, index folder and crash points, plus a crash inside the final parquet
    write. They run side by side: each process is single-threaded, so two cores serve two at once."""
    jobs = [(crash_and_rerun, seed) for seed in SEEDS] + [(crash_in_final_write, FINAL_WRITE_SEED)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(job, seed, tiny_zoo, pixel_retriever, tmp_path / f"{job.__name__}-{seed}")
                   for job, seed in jobs]
        logs = [f.result() for f in futures]
    print("\n" + "\n".join(line for log in logs for line in log))
