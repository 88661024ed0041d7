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

Profiles (`PROFILES`):

- ``"tiny"``: 5 models (4 architectures) on 5 pip-only sources plus one held-out source, 20 NNR + 7 transfer
  tasks; about 50 s of CPU in one process. Used by the tests and the quick start.
- ``"bench"``: 48 models on 22 sources (5 more sources held out), 2 class subsets per source, 4 architectures,
  2 seeds for 4 subsets; 473 NNR tasks (4 per model, plus 8 more training tasks per seen model) + 42 transfer
  tasks; about 25 min of CPU, run on 2 worker processes. Needs
  Debian font packages (see `k2v_hub.zoo.sources.missing_apt_packages`).

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
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import K2VError
from ..utils import atomic_directory, logger, progress
from .tasks import TaskSpec, label_key

__all__ = [
    "PROFILES",
    "ZooProfile",
    "ModelSpec",
    "ZooPlan",
    "plan_zoo",
    "build_zoo",
    "load_manifest",
    "MANIFEST_NAME",
    "TASKS_FILE",
    "GROUND_TRUTH_FILE",
    "POPULARITY_FILE",
    "STATE_DIR",
]

MANIFEST_NAME = "zoo.json"
TASKS_FILE = "tasks.parquet"
GROUND_TRUTH_FILE = "ground_truth.parquet"
POPULARITY_FILE = "popularity.json"
STATE_DIR = ".k2v-build"
TASKS_DIR = "tasks"


@dataclass(frozen=True)
class ZooProfile:
    """What a zoo profile builds. All sizes are images per class unless stated otherwise.

    Attributes:
        trained_sources: sources that get models (`None`: every source of `source_profile` not held out).
        held_out_sources: sources no model sees (transfer tasks only).
        held_out_class_frac: fraction of each trained source's classes kept out of every model (transfer tasks).
            Classes are held out consistently by name across sources (e.g. the same digits in MNIST and
            scikit-learn digits).
        max_subset_classes: most classes per model; `subsets_per_source` overlapping windows of a source's
            remaining classes (subsets "a", "b", ...).
        archs: architectures assigned in turn to the (source, subset) pairs.
        extra_seed_models: extra models that repeat a (source, subset) with another seed and architecture.
        epochs: training epochs per architecture.
        n_train / n_val: images per class for training and validation (split offset 0 of the source).
        n_pool: held-out images per class for tasks (another split offset of the source).
        n_support / n_query: images per class in a task's splits.
        nnr_tasks_per_model: NNR tasks per model (seen models: the first half train the retriever, the rest
            evaluate it; unseen models: all inductive).
        extra_train_tasks_per_model: up to this many more NNR *training* tasks per seen model (fewer when the
            model has few distinct class subsets), drawn after those: the evaluation tasks stay the same.
        task_classes: (min, max) classes per task.
        unseen_frac: fraction of models whose tasks are kept for inductive evaluation (role "unseen").
        transfer_train_frac: fraction of held-out-class transfer tasks used for retriever training.
    """

    name: str
    description: str
    source_profile: str
    trained_sources: tuple[str, ...] | None
    held_out_sources: tuple[str, ...]
    held_out_class_frac: float
    max_subset_classes: int
    subsets_per_source: int
    archs: tuple[str, ...]
    extra_seed_models: int
    epochs: dict[str, int]
    n_train: int
    n_val: int
    n_pool: int
    n_support: int
    n_query: int
    nnr_tasks_per_model: int
    transfer_tasks_per_held_out_source: int
    transfer_tasks_per_source: int
    task_classes: tuple[int, int] = (3, 6)
    extra_train_tasks_per_model: int = 0
    unseen_frac: float = 0.25
    transfer_train_frac: float = 0.0
    batch_size: int = 64

    def settings(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("name")
        d.pop("description")
        return d


PROFILES: dict[str, ZooProfile] = {
    "tiny": ZooProfile(
        name="tiny",
        description="5 models, 4 architectures, 6 pip-only sources; about a minute on 2 CPU cores.",
        source_profile="tiny",
        trained_sources=("mnist", "animal-mnist", "textures", "mpl-latin", "sklearn-digits"),
        held_out_sources=("mpl-greek",),
        held_out_class_frac=0.2,
        max_subset_classes=5,
        subsets_per_source=1,
        archs=("resnet", "convnext", "vit", "mobilenet_v2", "resnet"),
        extra_seed_models=0,
        epochs={"resnet": 15, "convnext": 25, "vit": 15, "mobilenet_v2": 20},
        n_train=60,
        n_val=20,
        n_pool=30,
        n_support=10,
        n_query=10,
        nnr_tasks_per_model=4,
        transfer_tasks_per_held_out_source=2,
        transfer_tasks_per_source=1,
        task_classes=(3, 4),
        unseen_frac=0.25,
        transfer_train_frac=0.0,
    ),
    "bench": ZooProfile(
        name="bench",
        description="48 models, 4 architectures, 22 trained + 5 held-out sources; under 40 min on 2 CPU cores.",
        source_profile="bench",
        trained_sources=None,
        held_out_sources=("mpl-greek", "armenian", "katakana", "emoji-sport", "emoji-food-prepared"),
        held_out_class_frac=0.3,
        max_subset_classes=8,
        subsets_per_source=2,
        archs=("resnet", "convnext", "resnet", "vit", "resnet", "mobilenet_v2"),
        extra_seed_models=4,
        epochs={"resnet": 15, "convnext": 30, "vit": 30, "mobilenet_v2": 25},
        n_train=100,
        n_val=20,
        n_pool=40,
        n_support=10,
        n_query=15,
        nnr_tasks_per_model=4,
        transfer_tasks_per_held_out_source=4,
        transfer_tasks_per_source=1,
        task_classes=(3, 6),
        extra_train_tasks_per_model=8,
        unseen_frac=0.25,
        transfer_train_frac=0.3,
    ),
}


@dataclass
class ModelSpec:
    """One zoo model to train. `classes` are label names; `class_index` their indices in the source."""

    name: str
    model_id: str
    source: str
    domain: str
    arch: str
    subset: str
    replicate: int
    seed: int
    classes: tuple[str, ...]
    class_index: tuple[int, ...]
    epochs: int
    role: str = "seen"

    def fingerprint(self, profile: ZooProfile) -> str:
        """Hash of everything that determines the trained weights."""
        d = {k: v for k, v in asdict(self).items() if k != "role"}
        d.update(n_train=profile.n_train, n_val=profile.n_val, batch_size=profile.batch_size, v=1)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=list).encode()).hexdigest()[:16]


@dataclass
class ZooPlan:
    """The deterministic plan of a zoo: sources, models (with roles) and tasks; no images yet."""

    profile: ZooProfile
    seed: int
    org: str
    sources: list[dict[str, Any]]
    models: list[ModelSpec]
    tasks: list[TaskSpec] = field(default_factory=list)

    @property
    def source_names(self) -> list[str]:
        return [s["name"] for s in self.sources]


def _get_profile(profile: str | ZooProfile) -> ZooProfile:
    if isinstance(profile, ZooProfile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise K2VError(f"Unknown zoo profile {profile!r}.", f"Use one of: {', '.join(PROFILES)}.") from None


def _rng(seed: int, *keys: str) -> np.random.Generator:
    words = [int(seed) & 0xFFFFFFFF] + [int(hashlib.sha256(k.encode()).hexdigest()[:8], 16) for k in keys]
    return np.random.default_rng(words)


def _subset_letter(i: int) -> str:
    return "abcdefghijklmnopqrstuvwxyz"[i]


def plan_zoo(profile: str | ZooProfile = "tiny", *, seed: int = 0, org: str = "k2v-zoo") -> ZooPlan:
    """Plan a zoo without building anything: which sources, class subsets, models, roles and tasks.

    Deterministic given `(profile, seed, org)` and the source registry.
    """
    from . import sources as S

    prof = _get_profile(profile)
    available = S.list_sources(prof.source_profile)
    held_sources = [s for s in prof.held_out_sources if s in available]
    if prof.trained_sources is None:
        trained = [s for s in available if s not in held_sources]
    else:
        missing = [s for s in prof.trained_sources if s not in available]
        if missing:
            raise K2VError(f"Profile {prof.name!r} names unknown sources: {', '.join(missing)}.")
        trained = list(prof.trained_sources)

    # 1. Which classes of each trained source are held out (consistently by label name across sources).
    trained_names: set[str] = set()
    held_names: set[str] = set()
    source_rows: list[dict[str, Any]] = []
    model_classes: dict[str, list[int]] = {}
    for name in trained:
        spec = S.SOURCES[name]
        keys = [label_key(c) for c in spec.class_names]
        n = len(keys)
        target = int(math.floor(prof.held_out_class_frac * n + 0.5)) if n >= 6 else 0
        target = min(target, n - 4) if target else 0
        must = [i for i, k in enumerate(keys) if k in held_names]
        free = [i for i, k in enumerate(keys) if k not in held_names and k not in trained_names]
        rng = _rng(seed, "held-classes", name)
        extra = max(0, target - len(must))
        hold = sorted(must + sorted(rng.choice(free, size=min(extra, len(free)), replace=False).tolist()))
        avail = [i for i in range(n) if i not in hold]
        held_names.update(keys[i] for i in hold)
        trained_names.update(keys[i] for i in avail)
        model_classes[name] = avail
        source_rows.append(
            {
                "name": name,
                "domain": spec.domain,
                "classes": list(spec.class_names),
                "description": spec.description,
                "role": "trained",
                "held_out_classes": [spec.class_names[i] for i in hold],
            }
        )
    for name in held_sources:
        spec = S.SOURCES[name]
        source_rows.append(
            {
                "name": name,
                "domain": spec.domain,
                "classes": list(spec.class_names),
                "description": spec.description,
                "role": "held-out",
                "held_out_classes": list(spec.class_names),
            }
        )

    # 2. Models: overlapping class windows per source, architectures in turn, a few extra seeds.
    models: list[ModelSpec] = []
    pairs: list[tuple[str, str, list[int]]] = []
    for name in trained:
        avail = model_classes[name]
        order = [avail[i] for i in _rng(seed, "class-order", name).permutation(len(avail))]
        n_sub = prof.subsets_per_source if len(order) >= 6 else 1
        size = min(prof.max_subset_classes, len(order)) if n_sub == 1 else min(
            prof.max_subset_classes, max(4, math.ceil(0.6 * len(order)))
        )
        for j in range(n_sub):
            start = 0 if n_sub == 1 else round(j * (len(order) - size) / (n_sub - 1))
            pairs.append((name, _subset_letter(j), sorted(order[start : start + size])))

    def add_model(source: str, subset: str, idx: list[int], arch: str, replicate: int) -> None:
        spec = S.SOURCES[source]
        mname = f"{arch}-{source}-{subset}-s{replicate}"
        models.append(
            ModelSpec(
                name=mname,
                model_id=f"{org}/{mname}",
                source=source,
                domain=spec.domain,
                arch=arch,
                subset=subset,
                replicate=replicate,
                seed=int(seed) * 1000 + replicate,
                classes=tuple(spec.class_names[i] for i in idx),
                class_index=tuple(idx),
                epochs=int(prof.epochs[arch]),
            )
        )

    for k, (source, subset, idx) in enumerate(pairs):
        add_model(source, subset, idx, prof.archs[k % len(prof.archs)], 0)
    if prof.extra_seed_models:
        by_domain: dict[str, list[int]] = {}
        for k, (source, _, _) in enumerate(pairs):
            by_domain.setdefault(S.SOURCES[source].domain, []).append(k)
        picks = _round_robin(by_domain, prof.extra_seed_models, _rng(seed, "extra-seeds"))
        for k in sorted(picks):
            source, subset, idx = pairs[k]
            arch = prof.archs[(k + 1) % len(prof.archs)]
            if arch == prof.archs[k % len(prof.archs)]:
                arch = next(a for a in prof.archs if a != arch)
            add_model(source, subset, idx, arch, 1)
    order_key = {name: i for i, name in enumerate(trained)}
    models.sort(key=lambda m: (order_key[m.source], m.subset, m.replicate))

    # 3. Roles: ~unseen_frac of the models, spread over domains.
    n_unseen = max(1, int(math.floor(prof.unseen_frac * len(models) + 0.5))) if len(models) >= 2 else 0
    by_domain = {}
    for k, m in enumerate(models):
        by_domain.setdefault(m.domain, []).append(k)
    for k in _spread_pick(by_domain, n_unseen, _rng(seed, "roles")):
        models[k].role = "unseen"

    plan = ZooPlan(prof, int(seed), org, source_rows, models)
    plan.tasks = _plan_tasks(plan, trained_names)
    return plan


def _round_robin(groups: dict[str, list[int]], n: int, rng: np.random.Generator) -> list[int]:
    """Pick `n` items spread over the groups: groups in a random order, one random item from each in turn."""
    keys = sorted(groups)
    keys = [keys[i] for i in rng.permutation(len(keys))]
    pools = {k: [groups[k][i] for i in rng.permutation(len(groups[k]))] for k in keys}
    picked: list[int] = []
    while len(picked) < n and any(pools.values()):
        for k in keys:
            if pools[k] and len(picked) < n:
                picked.append(pools[k].pop(0))
    return picked


def _spread_pick(groups: dict[str, list[int]], n: int, rng: np.random.Generator) -> list[int]:
    """Pick `n` items over the groups, largest groups first, leaving every group a majority of unpicked items
    where possible (so each domain keeps seen models)."""
    keys = sorted(groups, key=lambda k: (-len(groups[k]), k))
    pools = {k: [groups[k][i] for i in rng.permutation(len(groups[k]))] for k in keys}
    picked: list[int] = []
    for cap in (lambda size: size // 2, lambda size: size - 1, lambda size: size):
        taken = {k: sum(1 for i in picked if i in groups[k]) for k in keys}
        progress_made = True
        while len(picked) < n and progress_made:
            progress_made = False
            for k in keys:
                if len(picked) < n and pools[k] and taken[k] < cap(len(groups[k])):
                    picked.append(pools[k].pop(0))
                    taken[k] += 1
                    progress_made = True
    return picked


def _sample_class_sets(
    rng: np.random.Generator, pool: list[int], n_tasks: int, kmin: int, kmax: int
) -> list[list[int]]:
    """Up to `n_tasks` distinct class subsets of `pool`, each of kmin..kmax classes (at least 2)."""
    if len(pool) < 2:
        return []
    kmax = min(kmax, len(pool))
    kmin = max(2, min(kmin, kmax))
    seen: set[tuple[int, ...]] = set()
    out: list[list[int]] = []
    for _ in range(50 * n_tasks):
        if len(out) == n_tasks:
            break
        k = int(rng.integers(kmin, kmax + 1))
        subset = tuple(sorted(rng.choice(pool, size=k, replace=False).tolist()))
        if subset not in seen:
            seen.add(subset)
            out.append(list(subset))
    return out


def _plan_tasks(plan: ZooPlan, trained_names: set[str]) -> list[TaskSpec]:
    from . import sources as S

    prof = plan.profile
    kmin, kmax = prof.task_classes
    tasks: list[TaskSpec] = []

    def make(task_id, kind, source, idx, origin, split):
        spec = S.SOURCES[source]
        return TaskSpec(
            task_id=task_id,
            kind=kind,
            source=source,
            domain=spec.domain,
            class_names=tuple(spec.class_names[i] for i in idx),
            origin_model=origin,
            split=split,
            n_support=prof.n_support,
            n_query=prof.n_query,
            seed=int(_rng(plan.seed, "task-images", task_id).integers(0, 2**31 - 1)),
            pool_class_index=tuple(idx),
        )

    # NNR tasks: classes of one model; seen models: half train, half eval; unseen: inductive.
    for m in plan.models:
        rng = _rng(plan.seed, "nnr", m.name)
        extra = prof.extra_train_tasks_per_model if m.role == "seen" else 0
        sets = _sample_class_sets(rng, list(m.class_index), prof.nnr_tasks_per_model + extra, kmin, kmax)
        n_train = min(len(sets), prof.nnr_tasks_per_model) // 2
        for j, idx in enumerate(sets):
            train = j < n_train or j >= prof.nnr_tasks_per_model
            split = "inductive" if m.role == "unseen" else ("train" if train else "eval")
            tasks.append(make(f"nnr-{m.name}-{j}", "nnr", m.source, idx, m.model_id, split))

    # Transfer tasks: held-out classes of trained sources, and classes of held-out sources no model knows.
    within: list[TaskSpec] = []
    for row in plan.sources:
        spec = S.SOURCES[row["name"]]
        pool = [i for i, c in enumerate(spec.class_names) if c in row["held_out_classes"]]
        pool = [i for i in pool if label_key(spec.class_names[i]) not in trained_names]
        rng = _rng(plan.seed, "transfer", row["name"])
        if row["role"] == "held-out":
            n_tasks = prof.transfer_tasks_per_held_out_source
        else:
            n_tasks = prof.transfer_tasks_per_source
        for j, idx in enumerate(_sample_class_sets(rng, pool, n_tasks, kmin, kmax)):
            t = make(f"transfer-{row['name']}-{j}", "transfer", row["name"], idx, None, "eval")
            (within if row["role"] == "trained" else tasks).append(t)
    n_train = int(math.floor(prof.transfer_train_frac * len(within) + 0.5))
    train_ids = {within[i].task_id for i in _rng(plan.seed, "transfer-split").permutation(len(within))[:n_train]}
    for t in within:
        if t.task_id in train_ids:
            t.split = "train"
    # Keep a stable order: NNR tasks (model order), then transfer tasks (source order).
    order = {row["name"]: i for i, row in enumerate(plan.sources)}
    transfer = sorted(
        [t for t in tasks if t.kind == "transfer"] + within, key=lambda t: (order[t.source], t.task_id)
    )
    return [t for t in tasks if t.kind == "nnr"] + transfer


# --------------------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_libraries():
    """Silence transformers/datasets progress bars and warnings (the zoo has its own bars); restore afterwards.

    transformers' `disable_progress_bar()` would also switch off every huggingface_hub bar, ours included, so its
    bars are replaced by empty ones through `set_tqdm_hook` instead.
    """
    import datasets
    import transformers

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
    import sklearn.linear_model  # noqa: F401  (load scipy's and numpy's BLAS before limiting them)
    import torch
    from threadpoolctl import threadpool_limits

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
    rng = _rng(seed, "popularity", model_id)
    downloads = int(round(10 ** rng.uniform(1.0, 5.0)))
    likes = int(downloads * rng.uniform(0.002, 0.03))
    return {"downloads": downloads, "likes": likes}


def _build_source_arrays(name: str, n_per_class: int, seed: int, offset: int) -> tuple[list, np.ndarray]:
    from . import sources as S

    ds = S.build_source(name, n_per_class=n_per_class, size=32, seed=seed, split_seed_offset=offset)
    batch = ds[:]
    return [im.convert("RGB") for im in batch["image"]], np.asarray(batch["label"], dtype=np.int64)


def _model_datasets(images: list, labels: np.ndarray, m: ModelSpec, prof: ZooProfile):
    """Train/val `datasets.Dataset`s of model `m` from a built source (first n_train of each class, then n_val)."""
    import datasets

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
    from . import sources as S
    from .models import save_hub_repo, train_classifier

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


def _unit_tasks_source(out: Path, prof: ZooProfile, seed: int, specs: list[TaskSpec]) -> int:
    """Build one source's held-out pool and write its tasks. Returns the number of tasks written."""
    from .tasks import make_task_dataset, save_task

    images, labels = _build_source_arrays(specs[0].source, prof.n_pool, seed, _pool_offset(prof))
    pool = np.stack([np.asarray(im) for im in images])
    for t in specs:
        dsd, _ = make_task_dataset(t, pool, labels)
        save_task(dsd, out / TASKS_DIR, t.task_id)
        _write_json(out / STATE_DIR / "tasks" / f"{t.task_id}.json", {"task_id": t.task_id, "spec": t.fingerprint()})
    return len(specs)


_TASK_DATA: dict[tuple[str, str], list] = {}


def _unit_ground_truth(out: Path, org: str, m: ModelSpec, sha256: str, tasks: list[TaskSpec], tasks_key: str):
    """Ground truth of one model on every task (task images loaded once per process). Cached on disk."""
    from transformers import AutoModelForImageClassification

    from .tasks import load_task_data, model_ground_truth

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
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

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
        from concurrent.futures import as_completed

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
    from . import sources as S
    from .tasks import task_exists, write_ground_truth_parquet, write_tasks_parquet

    t_start = time.perf_counter()
    prof = _get_profile(profile)
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
        from .tasks import PROBE_C, PROBE_MAX_ITER

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


def load_manifest(zoo_dir: str | Path) -> dict:
    """The manifest (`zoo.json`) of a built zoo.

    Raises:
        K2VError: `zoo_dir` has no (readable) `zoo.json`.
    """
    path = Path(zoo_dir) / MANIFEST_NAME
    if not path.is_file():
        raise K2VError(
            f"{zoo_dir} is not a k2v-hub zoo (no {MANIFEST_NAME}).",
            "Build one with k2v_hub.zoo.build.build_zoo(out_dir, 'tiny').",
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise K2VError(f"{path} is not valid JSON: {exc}", "Rebuild the zoo (finished parts are kept).") from exc
