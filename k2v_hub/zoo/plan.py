"""The zoo plan: profiles, and which sources, class subsets, models, roles and tasks a zoo has (no images yet).

Profiles (`PROFILES`):

- ``"tiny"``: 5 models (4 architectures) on 5 pip-only sources plus one held-out source, 20 NNR + 7 transfer
  tasks; about 50 s of CPU in one process. Used by the tests and the quick start.
- ``"bench"``: 48 models on 22 sources (5 more sources held out), 2 class subsets per source, 4 architectures,
  2 seeds for 4 subsets; 473 NNR tasks (4 per model, plus 8 more training tasks per seen model) + 42 transfer
  tasks; about 25 min of CPU, run on 2 worker processes. Needs
  Debian font packages (see `k2v_hub.zoo.sources.missing_apt_packages`).

`plan_zoo` is deterministic given `(profile, seed, org)` and the source registry; `k2v_hub.zoo.build.build_zoo`
builds a plan.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import K2VError
from . import sources as S
from .tasks import TaskSpec, label_key

__all__ = ["PROFILES", "ZooProfile", "ModelSpec", "ZooPlan", "get_profile", "keyed_rng", "plan_zoo"]


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
        n_pool: held-out images per class for tasks (another split offset of the source), cut into disjoint parts
            (`k2v_hub.zoo.tasks.POOL_PARTS`): training tasks draw from the first, validation tasks from the
            second, every evaluation task from the third, so no image of a training task is in a validation or
            evaluation task. Each part must hold `n_support + n_query` images.
        n_support / n_query: images per class in a task's splits.
        nnr_tasks_per_model: NNR tasks per model (seen models: half train the retriever, the rest evaluate it;
            unseen models: all inductive; validation-unseen models: all validation).
        extra_train_tasks_per_model: up to this many more NNR *training* tasks per seen model (fewer when the
            model has few distinct class subsets), drawn after the others: the evaluation tasks stay the same.
        val_tasks_per_model: NNR validation tasks per seen model (split "val").
        val_unseen_models: models held out of retriever training and evaluation whose tasks are all validation
            tasks (role "val-unseen"): where choices about models the retriever never saw are made.
        task_classes: (min, max) classes per task. No validation or evaluation task has the class set of a
            training task of its source.
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
    val_tasks_per_model: int = 0
    val_unseen_models: int = 0

    def settings(self) -> dict[str, Any]:
        """Every field but the name and the description (the manifest's ``settings``)."""
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
        n_pool=48,
        n_support=6,
        n_query=10,
        nnr_tasks_per_model=4,
        transfer_tasks_per_held_out_source=2,
        transfer_tasks_per_source=1,
        task_classes=(3, 4),
        unseen_frac=0.25,
        transfer_train_frac=0.0,
        val_tasks_per_model=1,
    ),
    "bench": ZooProfile(
        name="bench",
        description="52 models, 4 architectures, 22 trained + 5 held-out sources; under 45 min on 2 CPU cores.",
        source_profile="bench",
        trained_sources=None,
        held_out_sources=("mpl-greek", "armenian", "katakana", "emoji-sport", "emoji-food-prepared"),
        held_out_class_frac=0.3,
        max_subset_classes=8,
        subsets_per_source=2,
        archs=("resnet", "convnext", "resnet", "vit", "resnet", "mobilenet_v2"),
        extra_seed_models=8,
        epochs={"resnet": 15, "convnext": 30, "vit": 30, "mobilenet_v2": 25},
        n_train=96,
        n_val=20,
        n_pool=58,  # 3 parts of 19 from originals 116..173: sklearn digits (>= 174 a class) never wraps
        n_support=8,
        n_query=11,
        nnr_tasks_per_model=4,
        transfer_tasks_per_held_out_source=4,
        transfer_tasks_per_source=1,
        task_classes=(3, 6),
        extra_train_tasks_per_model=8,
        unseen_frac=0.23,  # 12 of 52 models
        transfer_train_frac=0.3,
        val_tasks_per_model=1,
        val_unseen_models=4,
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
        """The names of the plan's sources (trained, then held out)."""
        return [s["name"] for s in self.sources]

    def fingerprint(self) -> str:
        """sha256[:16] of everything that determines the zoo: profile settings, seed, org, sources, every model's
        weights fingerprint and role, every task."""
        d = {"profile": self.profile.name, "seed": self.seed, "org": self.org, "sources": self.sources,
             "models": [[m.name, m.role, m.fingerprint(self.profile)] for m in self.models],
             "tasks": [asdict(t) for t in self.tasks]}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=list).encode()).hexdigest()[:16]


def get_profile(profile: str | ZooProfile) -> ZooProfile:
    """The profile named `profile` (a `ZooProfile` is returned as is); `K2VError` for an unknown name."""
    if isinstance(profile, ZooProfile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise K2VError(f"Unknown zoo profile {profile!r}.", f"Use one of: {', '.join(PROFILES)}.") from None


def keyed_rng(seed: int, *keys: str) -> np.random.Generator:
    """A random generator determined by `seed` and the string `keys` (one independent stream per key tuple)."""
    words = [int(seed) & 0xFFFFFFFF] + [int(hashlib.sha256(k.encode()).hexdigest()[:8], 16) for k in keys]
    return np.random.default_rng(words)


def _subset_letter(i: int) -> str:
    return "abcdefghijklmnopqrstuvwxyz"[i]


def plan_zoo(profile: str | ZooProfile = "tiny", *, seed: int = 0, org: str = "k2v-zoo") -> ZooPlan:
    """Plan a zoo without building anything: which sources, class subsets, models, roles and tasks.

    Deterministic given `(profile, seed, org)` and the source registry.
    """
    prof = get_profile(profile)
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
        rng = keyed_rng(seed, "held-classes", name)
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
        order = [avail[i] for i in keyed_rng(seed, "class-order", name).permutation(len(avail))]
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
        picks = _round_robin(by_domain, prof.extra_seed_models, keyed_rng(seed, "extra-seeds"))
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
    for k in _spread_pick(by_domain, n_unseen, keyed_rng(seed, "roles")):
        models[k].role = "unseen"
    # ... and a few of the others held out for validation (choices about models the retriever never saw).
    by_domain = {}
    for k, m in enumerate(models):
        if m.role == "seen":
            by_domain.setdefault(m.domain, []).append(k)
    for k in _round_robin(by_domain, prof.val_unseen_models, keyed_rng(seed, "val-roles")):
        models[k].role = "val-unseen"

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
    rng: np.random.Generator, pool: list[int], n_tasks: int, kmin: int, kmax: int, *,
    exclude: set[tuple[int, ...]] = frozenset(),
) -> list[list[int]]:
    """Up to `n_tasks` distinct class subsets of `pool`, each of kmin..kmax classes (at least 2), none in
    `exclude` (sorted index tuples)."""
    if len(pool) < 2:
        return []
    kmax = min(kmax, len(pool))
    kmin = max(2, min(kmin, kmax))
    seen: set[tuple[int, ...]] = set(exclude)
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


_ROLE_SPLIT = {"unseen": "inductive", "val-unseen": "val"}


def _plan_tasks(plan: ZooPlan, trained_names: set[str]) -> list[TaskSpec]:
    """The tasks of a planned zoo: NNR tasks (model order), then transfer tasks (source order)."""
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
            seed=int(keyed_rng(plan.seed, "task-images", task_id).integers(0, 2**31 - 1)),
            pool_class_index=tuple(idx),
        )

    # NNR tasks: classes of one model. Validation and evaluation class sets first (their own draw, so extra
    # training tasks never change them), then training sets, never equal to a held-back set of the same source.
    held_back: dict[str, set[tuple[int, ...]]] = {}
    planned: list[tuple[ModelSpec, list[list[int]], list[str]]] = []
    n_eval = prof.nnr_tasks_per_model - prof.nnr_tasks_per_model // 2
    for m in plan.models:
        if m.role == "seen":
            splits = ["eval"] * n_eval + ["val"] * prof.val_tasks_per_model
        else:
            splits = [_ROLE_SPLIT[m.role]] * prof.nnr_tasks_per_model
        sets = _sample_class_sets(keyed_rng(plan.seed, "nnr", m.name), list(m.class_index), len(splits), kmin, kmax)
        held_back.setdefault(m.source, set()).update(tuple(s) for s in sets)
        planned.append((m, sets, splits[: len(sets)]))
    for m, sets, splits in planned:
        if m.role == "seen":
            n_train = prof.nnr_tasks_per_model // 2 + prof.extra_train_tasks_per_model
            train = _sample_class_sets(keyed_rng(plan.seed, "nnr-train", m.name), list(m.class_index), n_train,
                                       kmin, kmax, exclude=held_back[m.source])
            sets, splits = sets + train, splits + ["train"] * len(train)
        for j, (idx, split) in enumerate(zip(sets, splits)):
            tasks.append(make(f"nnr-{m.name}-{j}", "nnr", m.source, idx, m.model_id, split))

    # Transfer tasks: held-out classes of trained sources, and classes of held-out sources no model knows.
    within: list[TaskSpec] = []
    for row in plan.sources:
        spec = S.SOURCES[row["name"]]
        pool = [i for i, c in enumerate(spec.class_names) if c in row["held_out_classes"]]
        pool = [i for i in pool if label_key(spec.class_names[i]) not in trained_names]
        rng = keyed_rng(plan.seed, "transfer", row["name"])
        if row["role"] == "held-out":
            n_tasks = prof.transfer_tasks_per_held_out_source
        else:
            n_tasks = prof.transfer_tasks_per_source
        for j, idx in enumerate(_sample_class_sets(rng, pool, n_tasks, kmin, kmax)):
            t = make(f"transfer-{row['name']}-{j}", "transfer", row["name"], idx, None, "eval")
            (within if row["role"] == "trained" else tasks).append(t)
    n_train = int(math.floor(prof.transfer_train_frac * len(within) + 0.5))
    train_ids = {within[i].task_id for i in keyed_rng(plan.seed, "transfer-split").permutation(len(within))[:n_train]}
    for t in within:
        if t.task_id in train_ids:
            t.split = "train"
    # Keep a stable order: NNR tasks (model order), then transfer tasks (source order).
    order = {row["name"]: i for i, row in enumerate(plan.sources)}
    transfer = sorted(
        [t for t in tasks if t.kind == "transfer"] + within, key=lambda t: (order[t.source], t.task_id)
    )
    return [t for t in tasks if t.kind == "nnr"] + transfer
