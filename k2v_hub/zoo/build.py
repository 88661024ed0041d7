"""Build the offline model zoo: real `transformers` classifiers trained on CPU, query tasks and ground truth.

``build_zoo(out_dir, profile)`` writes::

    out_dir/
      zoo.json                 manifest: profile, seed, org, sources, models (role, accuracies, popularity), ...
      <org>/<name>/            one Hub model repo per model (config.json, model.safetensors,
                               preprocessor_config.json, README.md), e.g. k2v-zoo/resnet-mnist-a-s0
      tasks/<task_id>/         one DatasetDict (support, query) per task
      tasks.parquet            task_id, kind, source, domain, class_names, origin_model, split, n_support, n_query
      ground_truth.parquet     task_id, model_id, v_acc, ft_acc for every (task, model) pair
      popularity.json          {model_id: {"downloads", "likes"}}: SYNTHETIC, deterministic pseudo-random counts
                               for the popularity baseline (the zoo has no real usage)
      .k2v-build/              build state: done markers of models and tasks, cached ground truth per model

The plan (profiles, models, tasks) is `k2v_hub.zoo.plan`; this module runs it.

Everything runs with one torch thread and one BLAS thread per process: the weights are bit-identical whatever the
number of cores or workers (on the same platform and torch build), and busy shared machines do not make spinning
thread pools crawl. The build is deterministic given `seed` and idempotent: finished models (``model.safetensors``
plus a done marker in ``.k2v-build/models``), tasks and per-model ground truth are skipped, so an interrupted build
resumes where it stopped, and a finished one is re-checked in seconds.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import sklearn.linear_model  # noqa: F401  (load scipy's and numpy's BLAS before `_single_thread` limits them)
import torch
import transformers
from threadpoolctl import threadpool_limits
from transformers import AutoModelForImageClassification

from .. import __version__
from ..declared import PER_CLASS
from ..errors import K2VError
from ..utils import atomic_directory, logger, progress
from . import sources as S
from .data import MANIFEST_NAME
from .models import save_hub_repo, train_classifier
from .plan import ModelSpec, ZooProfile, get_profile, keyed_rng, plan_zoo
from .tasks import (
    PROBE_C,
    PROBE_MAX_ITER,
    TaskSpec,
    load_task_data,
    make_task_dataset,
    model_ground_truth,
    save_task,
    task_exists,
    write_ground_truth_parquet,
    write_tasks_parquet,
)

__all__ = ["build_zoo", "TASKS_FILE", "GROUND_TRUTH_FILE", "POPULARITY_FILE", "STATE_DIR"]

TASKS_FILE = "tasks.parquet"
GROUND_TRUTH_FILE = "ground_truth.parquet"
POPULARITY_FILE = "popularity.json"
STATE_DIR = ".k2v-build"
TASKS_DIR = "tasks"
#: Where the zoo keeps the dataset repos its model cards name (``datasets:``), laid out as the Hub does.
DATASETS_DIR = "datasets"


@contextlib.contextmanager
def _quiet_libraries():
    """Silence transformers/datasets progress bars and warnings (the zoo has its own bars); restore afterwards.

    transformers' `disable_progress_bar()` would also switch off every huggingface_hub bar, ours included, so its
    bars are replaced by empty ones through `set_tqdm_hook` instead.
    """
    tlog = transformers.utils.logging
    d_on = datasets.utils.logging.is_progress_bar_enabled()
    t_verbosity = tlog.get_verbosity()
    datasets.utils.logging.disable_progress_bar()
    tlog.set_verbosity_error()
    hooked = hasattr(tlog, "set_tqdm_hook") and hasattr(tlog, "EmptyTqdm")
    previous_hook = tlog.set_tqdm_hook(lambda factory, args, kwargs: tlog.EmptyTqdm(*args, **kwargs)) if hooked else None
    try:
        yield
    finally:
        if hooked:
            tlog.set_tqdm_hook(previous_hook)
        tlog.set_verbosity(t_verbosity)
        if d_on:
            datasets.utils.logging.enable_progress_bar()


@contextlib.contextmanager
def _single_thread():
    """One torch thread and one BLAS/OpenMP thread: bit-identical weights whatever the core count, and no
    thread thrashing (spinning OpenMP/OpenBLAS threads are 5-10x slower on a busy shared machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(n)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _popularity(model_id: str, seed: int) -> dict[str, int]:
    """Synthetic, deterministic downloads/likes (log-uniform downloads, likes a small random fraction)."""
    rng = keyed_rng(seed, "popularity", model_id)
    downloads = int(round(10 ** rng.uniform(1.0, 5.0)))
    likes = int(downloads * rng.uniform(0.002, 0.03))
    return {"downloads": downloads, "likes": likes}


def _build_source_arrays(name: str, n_per_class: int, seed: int, offset: int) -> tuple[list, np.ndarray]:
    ds = S.build_source(name, n_per_class=n_per_class, size=32, seed=seed, split_seed_offset=offset)
    batch = ds[:]
    return [im.convert("RGB") for im in batch["image"]], np.asarray(batch["label"], dtype=np.int64)


def _model_datasets(images: list, labels: np.ndarray, m: ModelSpec, prof: ZooProfile):
    """Train/val `datasets.Dataset`s of model `m` from a built source (first n_train of each class, then n_val)."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(m.classes))})
    tr_img, tr_lab, va_img, va_lab = [], [], [], []
    for j, c in enumerate(m.class_index):
        idx = np.flatnonzero(labels == c)
        for i in idx[: prof.n_train]:
            tr_img.append(images[i])
            tr_lab.append(j)
        for i in idx[prof.n_train : prof.n_train + prof.n_val]:
            va_img.append(images[i])
            va_lab.append(j)
    train = datasets.Dataset.from_dict({"image": tr_img, "label": tr_lab}, features=features)
    val = datasets.Dataset.from_dict({"image": va_img, "label": va_lab}, features=features)
    return train, val


def _pool_offset(prof: ZooProfile) -> int:
    """The source split offset of held-out task images: past the chunk of originals used for training."""
    return max(1, math.ceil((prof.n_train + prof.n_val) / prof.n_pool))


def _model_marker(m: ModelSpec, prof: ZooProfile, org: str, out: Path) -> dict | None:
    marker = _read_json(out / STATE_DIR / "models" / f"{m.name}.json")
    if not marker or marker.get("spec") != m.fingerprint(prof):
        return None
    repo = out / org / m.name
    if not (repo / "model.safetensors").is_file() or not (repo / "config.json").is_file():
        return None
    return marker


# ---- work units (run in-process or in worker processes) --------------------------------------------------------


_WORKER_CONTEXTS: list = []


def _worker_init() -> None:
    """Worker processes: quiet libraries and one thread for their whole lifetime.

    The entered context managers are kept referenced: a collected generator context would exit (and restore the
    default thread count) at once.
    """
    for ctx in (_quiet_libraries(), _single_thread()):
        ctx.__enter__()
        _WORKER_CONTEXTS.append(ctx)


def _unit_train_source(out: Path, prof: ZooProfile, org: str, seed: int, specs: list[ModelSpec]) -> list[dict]:
    """Build one source's training split and train + save its models (in order). Returns their done markers."""
    images, labels = _build_source_arrays(specs[0].source, prof.n_train + prof.n_val, seed, 0)
    markers = []
    for m in specs:
        train_ds, val_ds = _model_datasets(images, labels, m, prof)
        model, metrics = train_classifier(
            m.arch, train_ds, epochs=m.epochs, seed=m.seed, batch_size=prof.batch_size, val_ds=val_ds
        )
        final = out / org / m.name
        with atomic_directory(final) as tmp:
            save_hub_repo(
                model,
                tmp,
                model_id=m.model_id,
                source_name=m.source,
                source_description=S.SOURCES[m.source].description,
                arch=m.arch,
                metrics=metrics,
                seed=m.seed,
                domain=m.domain,
                dataset_id=f"{org}/{m.source}",
            )
        marker = {
            "model_id": m.model_id,
            "spec": m.fingerprint(prof),
            "sha256": _sha256_file(final / "model.safetensors"),
            "metrics": metrics,
        }
        _write_json(out / STATE_DIR / "models" / f"{m.name}.json", marker)
        markers.append(marker)
    return markers


def _unit_declared_source(out: Path, org: str, seed: int, source: str) -> str:
    """Write the dataset repo ``datasets/<org>/<source>/`` a model card names: :data:`~k2v_hub.declared.PER_CLASS`
    images per class of the source's training split (split offset 0, the part models train on; no task draws
    from it), as one parquet file with a dataset card."""
    ds = S.build_source(source, n_per_class=PER_CLASS, size=32, seed=seed, split_seed_offset=0)
    final = out / DATASETS_DIR / org / source
    with atomic_directory(final) as tmp:
        (tmp / "data").mkdir()
        ds.to_parquet(str(tmp / "data" / "train-00000-of-00001.parquet"))
        (tmp / "README.md").write_text(
            f"---\ntask_categories:\n- image-classification\npretty_name: {source}\n---\n\n# {org}/{source}\n\n"
            f"{S.SOURCES[source].description}\n\n{PER_CLASS} training images per class: what the models of the "
            "offline zoo trained on this source declare as their data (`datasets:` in their cards).\n")
    return source


def source_pool(source: str, prof: ZooProfile, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The held-out pool of a source that every task of it draws from: uint8 images [N, 32, 32, 3] and labels."""
    images, labels = _build_source_arrays(source, prof.n_pool, seed, _pool_offset(prof))
    return np.stack([np.asarray(im) for im in images]), labels


def _unit_tasks_source(out: Path, prof: ZooProfile, seed: int, specs: list[TaskSpec]) -> int:
    """Build one source's held-out pool and write its tasks. Returns the number of tasks written."""
    pool, labels = source_pool(specs[0].source, prof, seed)
    for t in specs:
        dsd, _ = make_task_dataset(t, pool, labels)
        save_task(dsd, out / TASKS_DIR, t.task_id)
        _write_json(out / STATE_DIR / "tasks" / f"{t.task_id}.json", {"task_id": t.task_id, "spec": t.fingerprint()})
    return len(specs)


_TASK_DATA: dict[tuple[str, str], list] = {}


def _unit_ground_truth(out: Path, org: str, m: ModelSpec, sha256: str, tasks: list[TaskSpec], tasks_key: str):
    """Ground truth of one model on every task (task images loaded once per process). Cached on disk."""
    key = (str(out), tasks_key)
    if key not in _TASK_DATA:
        _TASK_DATA.clear()
        _TASK_DATA[key] = [load_task_data(out / TASKS_DIR, t) for t in tasks]
    model = AutoModelForImageClassification.from_pretrained(
        out / org / m.name, use_safetensors=True, trust_remote_code=False
    ).eval()
    rows = model_ground_truth(model, m.model_id, _TASK_DATA[key])
    _write_json(out / STATE_DIR / "ground_truth" / f"{m.name}.json", {"tasks": tasks_key, "sha256": sha256, "rows": rows})
    return rows


class _Runner:
    """Runs work units in order in this process (workers=1) or on a spawn process pool, yielding results."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))
        self._pool = None

    def __enter__(self):
        if self.workers > 1:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
            )
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        return False

    def map_unordered(self, fn, jobs: list[tuple]):
        """Yield `(job_index, result)` as units finish."""
        if self._pool is None:
            for i, args in enumerate(jobs):
                yield i, fn(*args)
            return
        futures = {self._pool.submit(fn, *args): i for i, args in enumerate(jobs)}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def build_zoo(
    out_dir: str | Path,
    profile: str = "tiny",
    *,
    seed: int = 0,
    org: str = "k2v-zoo",
    show_progress: bool = True,
    workers: int | None = None,
) -> dict:
    """Build (or finish building) a model zoo in `out_dir` and return its manifest (`zoo.json`).

    Args:
        out_dir: the zoo folder (created if needed).
        profile: ``"tiny"`` (pip-only, about a minute) or ``"bench"`` (Debian fonts, under 40 min), see `PROFILES`.
        seed: the build seed: the plan, the images and every model's training depend on it only.
        org: the namespace of the model ids (`"<org>/<name>"`) and of the model repo folders.
        show_progress: show progress bars (also silenced by `HF_HUB_DISABLE_PROGRESS_BARS`).
        workers: processes for training, tasks and ground truth (default: 1 for "tiny", 2 for "bench"; each
            uses one torch thread, so results do not depend on it). With more than one, worker processes are
            spawned: call `build_zoo` from a script under `if __name__ == "__main__":`.

    Returns:
        The manifest dict also written to ``zoo.json``.

    Raises:
        K2VError: unknown profile, or Debian packages missing for the profile's sources (the message names the
            `apt-get install -y ...` command).
    """
    t_start = time.perf_counter()
    prof = get_profile(profile)
    if workers is None:
        workers = int(os.environ.get("K2V_ZOO_WORKERS", 2 if prof.name == "bench" else 1))
    out = Path(out_dir)
    state = out / STATE_DIR
    disable = (not show_progress) or None

    plan = plan_zoo(prof, seed=seed, org=org)
    missing = S.missing_apt_packages(plan.source_names)
    if missing:
        cmd = "apt-get install -y " + " ".join(missing)
        raise K2VError(
            f"The {prof.name!r} zoo needs Debian packages that are not installed: {', '.join(missing)}.",
            f"Install them with `{cmd}` (as root, or with sudo), or build the 'tiny' profile.",
        )
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    name = prof.name

    with _quiet_libraries(), _single_thread(), _Runner(workers) as runner:
        # 1. Models, grouped by source (each source's training split is built once).
        t0 = time.perf_counter()
        markers: dict[str, dict] = {}
        todo: dict[str, list[ModelSpec]] = {}
        for m in plan.models:
            marker = _model_marker(m, prof, org, out)
            if marker is None:
                todo.setdefault(m.source, []).append(m)
            else:
                markers[m.name] = marker
        jobs = [(out, prof, org, seed, specs) for specs in todo.values()]
        bar = progress(desc=f"Zoo {name}: models", total=len(plan.models), disable=disable)
        bar.update(len(markers))
        for i, result in runner.map_unordered(_unit_train_source, jobs):
            for m, marker in zip(jobs[i][4], result):
                markers[m.name] = marker
            bar.update(len(result))
        bar.close()
        n_trained = sum(len(v) for v in todo.values())
        timings["models"] = round(time.perf_counter() - t0, 1)

        # 1b. The dataset repos the model cards name (a few training images per class of each source).
        todo_data = sorted({m.source for m in plan.models} - {p.name for p in (out / DATASETS_DIR / org).glob("*")
                                                              if (p / "README.md").is_file()})
        jobs = [(out, org, seed, source) for source in todo_data]
        for _ in runner.map_unordered(_unit_declared_source, jobs):
            pass

        # 2. Tasks from held-out images, grouped by source.
        t0 = time.perf_counter()
        todo_tasks: dict[str, list[TaskSpec]] = {}
        for t in plan.tasks:
            tmark = _read_json(state / "tasks" / f"{t.task_id}.json")
            if not (task_exists(out / TASKS_DIR, t.task_id) and tmark and tmark.get("spec") == t.fingerprint()):
                todo_tasks.setdefault(t.source, []).append(t)
        n_new_tasks = sum(len(v) for v in todo_tasks.values())
        bar = progress(desc=f"Zoo {name}: tasks", total=len(plan.tasks), disable=disable)
        bar.update(len(plan.tasks) - n_new_tasks)
        jobs = [(out, prof, seed, specs) for specs in todo_tasks.values()]
        for _, n in runner.map_unordered(_unit_tasks_source, jobs):
            bar.update(n)
        bar.close()
        timings["tasks"] = round(time.perf_counter() - t0, 1)

        # 3. Ground truth per model, cached against the task set and the model weights.
        t0 = time.perf_counter()
        tasks_key = hashlib.sha256(
            json.dumps([[t.task_id, t.fingerprint()] for t in plan.tasks]).encode()
            + f"C={PROBE_C};it={PROBE_MAX_ITER};v=2".encode()
        ).hexdigest()[:16]
        gt: dict[str, list[dict]] = {}
        jobs = []
        for m in plan.models:
            cached = _read_json(state / "ground_truth" / f"{m.name}.json")
            if cached and cached.get("tasks") == tasks_key and cached.get("sha256") == markers[m.name]["sha256"]:
                gt[m.name] = cached["rows"]
            else:
                jobs.append((out, org, m, markers[m.name]["sha256"], plan.tasks, tasks_key))
        bar = progress(desc=f"Zoo {name}: ground truth", total=len(plan.models), disable=disable)
        bar.update(len(gt))
        for i, rows in runner.map_unordered(_unit_ground_truth, jobs):
            gt[jobs[i][2].name] = rows
            bar.update(1)
        bar.close()
        _TASK_DATA.clear()
        timings["ground_truth"] = round(time.perf_counter() - t0, 1)

    # 4. Files.
    write_tasks_parquet(plan.tasks, out / TASKS_FILE)
    write_ground_truth_parquet([r for m in plan.models for r in gt[m.name]], out / GROUND_TRUTH_FILE)
    popularity = {m.model_id: _popularity(m.model_id, seed) for m in plan.models}
    _write_json(out / POPULARITY_FILE, popularity)

    previous = _read_json(out / MANIFEST_NAME) or {}
    same = previous.get("profile") == prof.name and previous.get("seed") == seed and previous.get("org") == org
    created_at = previous.get("created_at") if same else None
    created_at = created_at or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    models = []
    for m in plan.models:
        metrics = markers[m.name]["metrics"]
        models.append(
            {
                "model_id": m.model_id,
                "name": m.name,
                "path": f"{org}/{m.name}",
                "source": m.source,
                "domain": m.domain,
                "arch": m.arch,
                "seed": m.seed,
                "subset": m.subset,
                "classes": list(m.classes),
                "role": m.role,
                "train_acc": metrics.get("train_acc"),
                "val_acc": metrics.get("val_acc"),
                "n_params": metrics.get("n_params"),
                "epochs": metrics.get("epochs"),
                "n_train": metrics.get("n_train"),
                "sha256": markers[m.name]["sha256"],
                **popularity[m.model_id],
            }
        )
    kinds = [t.kind for t in plan.tasks]
    splits = [t.split for t in plan.tasks]
    timings["total"] = round(time.perf_counter() - t_start, 1)
    manifest = {
        "profile": prof.name,
        "seed": int(seed),
        "org": org,
        "k2v_hub_version": __version__,
        "description": prof.description,
        "sources": plan.sources,
        "models": models,
        "n_tasks": {
            "total": len(plan.tasks),
            "nnr": kinds.count("nnr"),
            "transfer": kinds.count("transfer"),
            **{f"split_{s}": splits.count(s) for s in ("train", "eval", "inductive")},
        },
        "files": {
            "tasks": TASKS_FILE,
            "ground_truth": GROUND_TRUTH_FILE,
            "popularity": POPULARITY_FILE,
            "tasks_dir": TASKS_DIR,
        },
        "popularity_note": "downloads/likes are synthetic, deterministic pseudo-random numbers (popularity baseline)",
        "settings": prof.settings(),
        "ground_truth": {
            "v_acc": "own head restricted to the task's label names (exact match); unknown labels count as wrong",
            "ft_acc": f"logistic regression on standardised penultimate features (C={PROBE_C}, "
            f"max_iter={PROBE_MAX_ITER}), fit on support, scored on query",
        },
        "last_build": {
            "models_trained": n_trained,
            "tasks_written": n_new_tasks,
            "workers": workers,
            "seconds": timings,
        },
        "created_at": created_at,
    }
    _write_json(out / MANIFEST_NAME, manifest)
    logger.info("zoo %s built in %.1fs: %s", out, timings["total"], timings)
    return manifest

